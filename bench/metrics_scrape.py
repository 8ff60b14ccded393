"""Measure ``/metrics`` of ``probe run``: scrape latency, size and samples per target.

Builds N synthetic results (tests/builders.py: 2 addresses, verified chain, one request
per address, default settings: no backend rule), records them in a real store, serves
them through the real web endpoint on 127.0.0.1 and scrapes it S times per encoding with
one keep-alive-free client, as Prometheus does. Prints p50/p99 wall time per scrape,
bytes, samples in total and per target, and the time to record (render) one cycle.

    .venv/bin/python bench/metrics_scrape.py [--targets 1000] [--scrapes 50] [--json]

Loopback only: the server listens on 127.0.0.1 and nothing else is contacted.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from probe.results import PhaseTimes, TargetResult  # noqa: E402
from probe.store import ResultStore  # noqa: E402
from tests import builders  # noqa: E402
from tests.builders import DAY, NOW  # noqa: E402

LEAF = builders.cert("www.corp.example", NOW + 60 * DAY, serial="1f")
INTERMEDIATE = builders.cert("Corp Intermediate CA", NOW + 400 * DAY, issuer="Corp Root CA", serial="a")
ROOT = builders.cert("Corp Root CA", NOW + 3000 * DAY, issuer="Corp Root CA", serial="a")
PHASES = PhaseTimes(connect=0.0011, tls=0.0042, processing=0.0103, transfer=0.0004)


def synthetic(index: int, cycle: int = 0) -> TargetResult:
    """Target ``t0042``: two addresses, each one verified handshake and one GET (200)."""
    addresses = []
    for host in (1, 2):
        ip = ipaddress.ip_address(f"10.{index // 250}.{index % 250}.{host}")
        tls = builders.tls_result(ip, (LEAF, INTERMEDIATE), (LEAF, INTERMEDIATE, ROOT))
        attempt = builders.http_attempt(phases=PHASES, duration=0.016)
        addresses.append(builders.address_result(ip, tls, [attempt]))
    return builders.target_result(
        f"t{index:04d}", addresses, started=NOW + 30 * cycle, duration=0.02 + index * 1e-6
    )


def make_server(store: ResultStore) -> Any:
    """The daemon's endpoint over ``store`` (whatever the current API of probe.web is)."""
    from probe import web

    try:
        app = web.make_app(store)  # type: ignore[call-arg,arg-type]
    except TypeError:  # before issue 9: a registry with the collector
        from prometheus_client import CollectorRegistry

        from probe.metrics import ProbeCollector

        registry = CollectorRegistry()
        registry.register(ProbeCollector(store))
        app = web.make_app(registry, store)
    return web.WebServer("127.0.0.1", 0, app)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def count_samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    names = [f"t{i:04d}" for i in range(args.targets)]
    store = ResultStore(names, NOW)
    results = [synthetic(i) for i in range(args.targets)]
    started = time.perf_counter()
    for result in results:
        store.record(result)
    record_first = (time.perf_counter() - started) / args.targets
    again = [synthetic(i, cycle=1) for i in range(args.targets)]
    started = time.perf_counter()
    for result in again:
        store.record(result)
    record_next = (time.perf_counter() - started) / args.targets

    server = make_server(store)
    host, port = server.start()
    url = f"http://{host}:{port}/metrics"
    figures: dict[str, Any] = {
        "targets": args.targets,
        "scrapes": args.scrapes,
        "record_seconds_per_cycle": {"first": record_first, "next": record_next},
    }
    try:
        for label, headers in (
            ("text", {"Accept-Encoding": "identity"}),
            ("text+gzip", {"Accept-Encoding": "gzip"}),
            (
                "openmetrics+gzip",
                {
                    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
                    "Accept-Encoding": "gzip",
                },
            ),
        ):
            times = []
            body = b""
            raw_bytes = 0
            for _ in range(args.scrapes):
                with httpx.Client(trust_env=False, timeout=30) as client:
                    start = time.perf_counter()
                    with client.stream("GET", url, headers=headers) as response:
                        raw = b"".join(response.iter_raw())
                    times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.status_code
                raw_bytes = len(raw)
                body = gzip.decompress(raw) if response.headers.get("content-encoding") == "gzip" else raw
            samples = count_samples(body.decode())
            figures[label] = {
                "p50_seconds": statistics.median(times),
                "p99_seconds": percentile(times, 0.99),
                "bytes_on_wire": raw_bytes,
                "bytes": len(body),
                "samples": samples,
                "samples_per_target": round(samples / args.targets, 1),
            }
    finally:
        server.stop()

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.targets} targets, {args.scrapes} scrapes per encoding, endpoint on 127.0.0.1")
    print(
        f"record one cycle: {record_first * 1e6:.0f} µs (first), {record_next * 1e6:.0f} µs (next)"
    )
    print(f"{'encoding':<18}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>12}{'on wire':>12}{'samples':>9}{'/target':>9}")
    for label in ("text", "text+gzip", "openmetrics+gzip"):
        f = figures[label]
        print(
            f"{label:<18}{f['p50_seconds'] * 1e3:>9.1f}{f['p99_seconds'] * 1e3:>9.1f}"
            f"{f['bytes']:>12}{f['bytes_on_wire']:>12}{f['samples']:>9}{f['samples_per_target']:>9}"
        )


if __name__ == "__main__":
    main()
