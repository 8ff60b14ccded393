"""Measure ``/metrics`` of ``probe run``: scrape latency, size and samples per target.

Builds N synthetic results (tests/support/builders.py: 2 addresses, verified chain, one request
per address, default settings: no backend rule), records them in a store made as the
daemon makes it, serves them through the real web endpoint on 127.0.0.1 and scrapes it S
times per encoding from a separate client process (so the client does not share the
server's GIL), a new connection per scrape. Prints p50/p99 wall time per scrape (request
sent to last byte read), bytes, samples in total and per target, and the CPU time to
record (and so render) one cycle.

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

import subprocess

from probe.daemon.store import ResultStore
from probe.model.results import PhaseTimes, TargetResult
from tests.support import builders
from tests.support.builders import DAY, NOW

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


def make_store(names: list[str]) -> ResultStore:
    """A store as the daemon makes it with default settings (rendering when a cycle is recorded)."""
    from probe.daemon.metrics import render_target

    return ResultStore(names, NOW, render=render_target)


def make_server(store: ResultStore) -> Any:
    """The daemon's endpoint over ``store``."""
    from probe.daemon import httpserver, web

    return httpserver.WebServer("127.0.0.1", 0, web.make_app(store))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def count_samples(text: str) -> int:
    """Sample lines in an exposition (neither comments nor blank)."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


ENCODINGS = {
    "text": {"Accept-Encoding": "identity"},
    "text+gzip": {"Accept-Encoding": "gzip"},
    "openmetrics+gzip": {
        "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        "Accept-Encoding": "gzip",
    },
}


def client(port: int, scrapes: int) -> None:
    """The scraping side (its own process): per encoding, times, sizes and samples as JSON."""
    import http.client

    out = {}
    for label, headers in ENCODINGS.items():
        times = []
        raw = b""
        encoding = None
        for _ in range(scrapes):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            start = time.perf_counter()
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            raw = response.read()
            times.append(time.perf_counter() - start)
            connection.close()
            assert response.status == 200, response.status
            encoding = response.getheader("Content-Encoding")
        body = gzip.decompress(raw) if encoding == "gzip" else raw
        out[label] = {"times": times, "bytes_on_wire": len(raw), "bytes": len(body), "body": body.decode()}
    json.dump(out, sys.stdout)


def main() -> None:
    """Measure and print (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client, args.scrapes)
        return

    names = [f"t{i:04d}" for i in range(args.targets)]
    store = make_store(names)
    results = [synthetic(i) for i in range(args.targets)]
    started = time.process_time()
    for result in results:
        store.record(result)
    record_first = (time.process_time() - started) / args.targets
    again = [synthetic(i, cycle=1) for i in range(args.targets)]
    started = time.process_time()
    for result in again:
        store.record(result)
    record_next = (time.process_time() - started) / args.targets

    server = make_server(store)
    _, port = server.start()
    figures: dict[str, Any] = {
        "targets": args.targets,
        "scrapes": args.scrapes,
        "record_cpu_seconds_per_cycle": {"first": record_first, "next": record_next},
    }
    try:
        command = [sys.executable, __file__, "--client", str(port), "--scrapes", str(args.scrapes)]
        measured = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    finally:
        server.stop()
    for label, m in measured.items():
        samples = count_samples(m["body"])
        figures[label] = {
            "p50_seconds": statistics.median(m["times"]),
            "p99_seconds": percentile(m["times"], 0.99),
            "bytes_on_wire": m["bytes_on_wire"],
            "bytes": m["bytes"],
            "samples": samples,
            "samples_per_target": round(samples / args.targets, 1),
        }

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.targets} targets, {args.scrapes} scrapes per encoding, endpoint on 127.0.0.1")
    print(f"record one cycle: {record_first * 1e6:.0f} µs CPU (first), {record_next * 1e6:.0f} µs (next)")
    print(
        f"{'encoding':<18}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>12}{'on wire':>12}{'samples':>9}{'/target':>9}"
    )
    for label in ENCODINGS:
        f = figures[label]
        print(
            f"{label:<18}{f['p50_seconds'] * 1e3:>9.1f}{f['p99_seconds'] * 1e3:>9.1f}"
            f"{f['bytes']:>12}{f['bytes_on_wire']:>12}{f['samples']:>9}{f['samples_per_target']:>9}"
        )


if __name__ == "__main__":
    main()
