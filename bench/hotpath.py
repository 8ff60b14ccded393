"""In-process CPU cost of probe's hot path, measured beside a stdlib reference loop.

Starts the demo lab (two TLS nodes, two backends, a DNS server, all on 127.0.0.0/8) in a
*separate* process, so the lab's CPU is not counted, then in this process measures, one
after another in the same run:

* ``stdlib``: the reference of issue 9 — one reused ``ssl.SSLContext``, TCP connect,
  verified handshake, one ``GET`` with ``Connection: close``, read to the end.
* ``address``: ``probe.engine.cycle.probe_address`` on one lab address (one verified handshake,
  ``requests_per_address`` GETs, the chain facts), the unit issue 9 calls an address-probe.
* ``cycle``: ``probe.engine.cycle.run_cycle`` of the demo target (DNS + both addresses + verdict).

With ``--startup`` it measures start-up instead (wall time, best of ``--rounds``):
``probe --help``, and from the start of ``probe check`` to the first DNS query reaching a
UDP socket on 127.0.53.99 that stands in for the resolver (the process is then killed).

With ``--haproxy`` the lab is the benchmark's instead (:class:`bench.scene.Scene`: HAProxy
on 127.0.90.1/.2 with ALPN ``h2,http/1.1``, dnsmasq, the backends), so the address-probes
speak HTTP/2 as in ``./dev bench``; the demo lab speaks HTTP/1.1 only. The figures then
also give HAProxy's TCP+TLS connections per request of the measured probes.

CPU is this process's user+system time (``time.process_time``, i.e. ``/proc/self/stat``
for every thread), never wall time. Each figure is the median of ``--rounds`` rounds of
``--n`` sequential probes; the ratios are what to compare across machines, because the
absolute figures move with the machine's load.

Usage::

    .venv/bin/python bench/hotpath.py [--n 300] [--rounds 5] [--requests 1] [--haproxy] [--json FILE]
    .venv/bin/py-spy record -o profile.svg -- .venv/bin/python bench/hotpath.py --only address --n 3000

Network: everything stays on loopback (the lab's own DNS server is the only resolver).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def _serve() -> None:
    """Child process: run the demo lab, print its config as one JSON line, wait for EOF."""
    from probe.lab import DemoLab

    with DemoLab() as lab:
        data = lab.config_data(requests_per_address=1)
        data["targets"][0]["timeouts"] = {"dns": 2, "connect": 2, "tls": 4, "http": 4, "deadline": 20}
        lab_data = {"config": data, "ca_file": str(lab.ca_file), "port": lab.port, "address": "127.0.10.1"}
        print(json.dumps(lab_data), flush=True)
        sys.stdin.read()


def _importable_bench() -> None:
    """Make ``bench`` importable when this file runs as a script (``python bench/hotpath.py``)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)


def _serve_haproxy() -> None:
    """Child process: as :func:`_serve`, with the benchmark's HAProxy lab (HTTP/2)."""
    import tempfile

    import yaml

    _importable_bench()

    from bench.scene import LB_ADDRESSES, Scene

    with tempfile.TemporaryDirectory(prefix="probe-hotpath-") as tmp, Scene(Path(tmp)) as scene:
        data = yaml.safe_load(scene.probe_config(1, 30, slow_interval=5))
        data["targets"] = [t for t in data["targets"] if t["name"] != "slow"]
        data["targets"][0]["timeouts"] = {"dns": 2, "connect": 2, "tls": 4, "http": 4, "deadline": 20}
        target = {**data.pop("defaults"), **data["targets"][0]}
        port = scene.ports["fe_probe"]
        lab_data = {
            "config": {"targets": [target]},
            "ca_file": str(scene.ca_file),
            "port": port,
            "address": LB_ADDRESSES[0],
            "stats_socket": str(scene.stats_socket),
        }
        print(json.dumps(lab_data), flush=True)
        sys.stdin.read()


def _haproxy_counts(stats_socket: str) -> tuple[int, int]:
    """HAProxy's ``req_tot`` and ``conn_tot`` of the frontend probe's targets use."""
    _importable_bench()
    from bench import measure

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(stats_socket)
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    stats = measure.haproxy_stats(b"".join(chunks).decode())
    return measure.counter(stats, "fe_probe", "req_tot"), measure.counter(stats, "fe_probe", "conn_tot")


async def _stdlib_once(address: str, port: int, hostname: str, context: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=hostname)
    writer.write(f"GET /health HTTP/1.1\r\nHost: {hostname}:{port}\r\nConnection: close\r\n\r\n".encode())
    await reader.read()
    writer.transport.abort()


async def _measure(probe: Callable[[], Awaitable[Any]], n: int, rounds: int) -> list[float]:
    for _ in range(min(20, n)):  # warm up: imports, caches, the allocator
        await probe()
    per_round = []
    for _ in range(rounds):
        cpu = time.process_time()
        for _ in range(n):
            await probe()
        per_round.append((time.process_time() - cpu) / n * 1000)
    return per_round


async def _main(args: argparse.Namespace, lab: dict[str, Any]) -> dict[str, Any]:
    from probe.config.load import build_config
    from probe.engine import cycle
    from probe.engine.plan import plan
    from probe.model.deadline import Deadline

    config_data = lab["config"]["targets"][0]
    config_data["requests_per_address"] = args.requests
    # With one request per address, which backends answer depends on the lab's per-connection
    # rotation, not on probe: leave the backend expectation out of a CPU measurement.
    config_data.pop("expect_backends", None)
    config = build_config({"targets": [config_data]}, where="bench")
    plans = plan(config)
    target_plan = plans[0]
    address = ipaddress.ip_address(lab["address"])
    context = ssl.create_default_context(cafile=lab["ca_file"])
    hostname = target_plan.target.hostname
    port = lab["port"]

    async def stdlib() -> None:
        await _stdlib_once(str(address), port, hostname, context)

    async def address_probe() -> None:
        result = await cycle.probe_address(target_plan, address, Deadline.after(20))
        if result.failures:
            raise SystemExit(f"address-probe failed: {result.failures}")

    async def whole_cycle() -> None:
        result = await cycle.run_cycle(target_plan)
        if result.status.value != "ok":
            raise SystemExit(f"cycle not ok: {result.failures}")

    figures: dict[str, Any] = {}
    cases = {"stdlib": stdlib, "address": address_probe, "cycle": whole_cycle}
    for name, probe in cases.items():
        if args.only and name not in args.only:
            continue
        counts = _haproxy_counts(lab["stats_socket"]) if "stats_socket" in lab else None
        rounds = await _measure(probe, args.n, args.rounds)
        figures[name] = {"cpu_ms_median": statistics.median(rounds), "cpu_ms_rounds": rounds}
        if counts is not None:  # the warm-up's requests are counted too: a ratio, not a total
            requests, connections = (
                b - a for a, b in zip(counts, _haproxy_counts(lab["stats_socket"]), strict=True)
            )
            figures[name]["connections_per_request"] = connections / requests if requests else None
    if "stdlib" in figures and "address" in figures:
        figures["address_over_stdlib"] = (
            figures["address"]["cpu_ms_median"] / figures["stdlib"]["cpu_ms_median"]
        )
    return figures


def _startup(rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` wall times (ms) of ``probe --help`` and of ``check`` to its first query."""
    probe = [sys.executable, "-m", "probe"]
    helps, firsts = [], []
    for _ in range(rounds):
        start = time.monotonic()
        subprocess.run([*probe, "--help"], check=True, stdout=subprocess.DEVNULL)
        helps.append((time.monotonic() - start) * 1000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver:
        resolver.bind(("127.0.53.99", 0))
        where = f"127.0.53.99:{resolver.getsockname()[1]}"
        resolver.settimeout(10)
        for _ in range(rounds):
            start = time.monotonic()
            child = subprocess.Popen(
                [*probe, "check", "https://startup.corp.example/", "--resolver", where, "--timeout", "3"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                resolver.recvfrom(4096)
                firsts.append((time.monotonic() - start) * 1000)
            finally:
                child.kill()
                child.wait()
    return {"help_ms_best": min(helps), "check_to_first_dns_query_ms_best": min(firsts)}


def main() -> None:
    """Parse the arguments, start the lab process, measure, print (and write) the figures."""
    args = _parser().parse_args()
    if args.serve:
        _serve()
        return
    if args.serve_haproxy:
        _serve_haproxy()
        return
    if args.startup:
        figures: dict[str, Any] = _print_startup(args.rounds)
    else:
        figures = _in_process(args)
        _print_figures(figures)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-haproxy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--haproxy", action="store_true", help="the benchmark's HAProxy lab (HTTP/2) instead of the demo lab"
    )
    parser.add_argument("--n", type=int, default=300, help="probes per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--requests", type=int, default=1, help="requests_per_address (default 1)")
    parser.add_argument("--only", action="append", choices=("stdlib", "address", "cycle"))
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--startup", action="store_true", help="measure start-up times instead")
    return parser


def _print_startup(rounds: int) -> dict[str, float]:
    """Measure the start-up times and print them; returns them."""
    startup = _startup(rounds)
    print(f"probe --help                      {startup['help_ms_best']:6.0f} ms (best of {rounds})")
    print(f"probe check to its first DNS query {startup['check_to_first_dns_query_ms_best']:6.0f} ms")
    return startup


def _in_process(args: argparse.Namespace) -> dict[str, Any]:
    """The lab in a child process, the probes measured in this one; the figures with the settings."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-haproxy" if args.haproxy else "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lab = json.loads(child.stdout.readline())
        if args.uvloop:
            import uvloop  # type: ignore[import-not-found,unused-ignore]

            figures: dict[str, Any] = uvloop.run(_main(args, lab))
        else:
            figures = asyncio.run(_main(args, lab))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)
    figures["n"], figures["rounds"], figures["requests_per_address"] = args.n, args.rounds, args.requests
    figures["event_loop"] = "uvloop" if args.uvloop else "asyncio"
    figures["lab"] = "haproxy" if args.haproxy else "demo"
    return figures


def _print_figures(figures: dict[str, Any]) -> None:
    """A line per measurement (median and rounds), then the ratio to the stdlib loop."""
    for name in ("stdlib", "address", "cycle"):
        if name in figures:
            rounds = ", ".join(f"{x:.2f}" for x in figures[name]["cpu_ms_rounds"])
            line = f"{name:8} {figures[name]['cpu_ms_median']:6.2f} ms CPU per probe (rounds: {rounds})"
            if figures[name].get("connections_per_request") is not None:
                line += f"; {figures[name]['connections_per_request']:.2f} connections per request"
            print(line)
    if "address_over_stdlib" in figures:
        print(f"address-probe / stdlib loop: {figures['address_over_stdlib']:.2f}x")


if __name__ == "__main__":
    main()
