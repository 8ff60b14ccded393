"""The daemon in process: CPU per cycle and memory per target, old and new code side by side.

Starts the benchmark's lab (:class:`bench.scene.Scene`: HAProxy on 127.0.90.1/.2 speaking
HTTP/2, dnsmasq, the backends) in a separate process, then runs ``probe run``'s
:class:`probe.daemon.main.Daemon` (scheduler, store with the per-cycle renderer, loop-lag
monitor, the web endpoint on 127.0.90.102, idle) in a child process per measurement with
N targets, as ``./dev bench`` configures them (no ``slow`` target). Each child waits until
every target has completed a cycle plus ``--settle`` seconds, then measures over
``--window`` seconds:

* CPU (``time.process_time``: user + system of every thread) per completed cycle and per
  address-probe (a cycle has 2);
* the cycles completed (from the store's tallies);
* ``VmHWM`` and ``VmRSS`` after the first cycles and at the end, so memory per target is
  (figure at N − figure at 1) / N;
* with ``--tracemalloc``: the Python allocations alive at the end, grouped by line (slows
  probing several times; for finding what holds memory, not for CPU figures).

``--tree DIR`` (repeatable) runs the same measurement with ``PYTHONPATH=DIR``, e.g. a
``git archive`` of main beside this worktree, and the runs are alternated ``--rounds`` times
so old and new see the same machine load. The ratio of the medians is the figure to
compare.

Usage::

    git archive main | tar -x -C /tmp/base
    .venv/bin/python bench/daemon.py --targets 1000 --interval 30 --window 60 --tree /tmp/base --tree .

Network: the lab and the daemon use 127.0.90.0/23 only; the daemon's only resolver is the
lab's dnsmasq.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LISTEN_ADDRESS = "127.0.90.102"


def _importable_bench() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _serve() -> None:
    """Child process: run the lab, print what the measuring children need, wait for EOF."""
    _importable_bench()
    from bench.scene import Scene

    with tempfile.TemporaryDirectory(prefix="probe-daemon-bench-") as tmp, Scene(Path(tmp)) as scene:
        lab = {"resolver": scene.resolver, "ca_file": str(scene.ca_file), "url": scene.url("fe_probe")}
        print(json.dumps(lab), flush=True)
        sys.stdin.read()


def config_text(lab: dict[str, Any], targets: int, interval: float) -> str:
    """The config of ``./dev bench``'s load phase, without the slow target."""
    lines = [
        "defaults:",
        f"  resolvers: ['{lab['resolver']}']",
        "  expect_networks: ['127.0.90.0/24']",
        f"  ca_file: {lab['ca_file']}",
        "  requests_per_address: 1",
        f"  interval: {interval:g}",
        f"  timeouts: {{deadline: {min(25, interval):g}}}",
        "targets:",
    ]
    lines += [f"  - {{name: t{i:04d}, url: '{lab['url']}'}}" for i in range(targets)]
    return "\n".join(lines) + "\n"


def _status(key: str) -> int:
    """A ``kB`` figure of ``/proc/self/status`` in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _scrape(address: tuple[str, int] | None, count: int) -> list[float]:
    """``count`` scrapes of ``/metrics`` in a row, as Prometheus asks (gzip); wall seconds each."""
    assert address is not None
    times = []
    for _ in range(count):
        start = time.perf_counter()
        connection = http.client.HTTPConnection(*address, timeout=60)
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status != 200:
            raise SystemExit(f"/metrics answered {response.status}")
        times.append(time.perf_counter() - start)
    return times


def _measure(args: argparse.Namespace) -> None:
    """Child process: the daemon in this process, figures as one JSON line on stdout."""
    lab = json.loads(args.lab)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.tracemalloc)
    from probe import log
    from probe.config.load import load_config
    from probe.daemon.main import Daemon
    from probe.daemon.sdnotify import Notifier
    from probe.engine.plan import plan

    log.setup("warning")
    figures: dict[str, Any] = {"tree": os.environ.get("PYTHONPATH", ""), "targets": args.targets}
    figures["rss_imported"] = _status("VmRSS")
    with tempfile.TemporaryDirectory(prefix="probe-daemon-cfg-") as tmp:
        path = Path(tmp) / "probe.yaml"
        path.write_text(config_text(lab, args.targets, args.interval))
        config = load_config(path)
        plans = plan(config)
    figures["rss_planned"] = _status("VmRSS")
    figures["hwm_planned"] = _status("VmHWM")
    with socket.socket() as probe_port:  # a free port (not bench.scene: that would import this tree's probe)
        probe_port.bind((LISTEN_ADDRESS, 0))
        listen = f"{LISTEN_ADDRESS}:{probe_port.getsockname()[1]}"
    daemon = Daemon(config, plans, Notifier({}), listen=listen)

    def cycles() -> int:
        return sum(state.cycles for state in daemon.store.snapshot().targets.values())

    async def drive(stop: asyncio.Event) -> None:
        started = time.monotonic()
        while not daemon.store.snapshot().ready:
            if time.monotonic() - started > args.interval * 3 + 30:
                raise SystemExit("the targets did not complete a first cycle in time")
            await asyncio.sleep(0.2)
        figures["ready_seconds"] = time.monotonic() - started
        figures["hwm_ready"] = _status("VmHWM")
        await asyncio.sleep(args.settle)
        cpu, wall, count = time.process_time(), time.monotonic(), cycles()
        await asyncio.sleep(args.window)
        cpu, wall, count = time.process_time() - cpu, time.monotonic() - wall, cycles() - count
        figures.update(cpu_seconds=cpu, wall_seconds=wall, cycles=count)
        figures["cpu_ms_per_cycle"] = cpu / count * 1000 if count else None
        figures["cpu_ms_per_address_probe"] = cpu / count / 2 * 1000 if count else None
        figures["core_percent"] = cpu / wall * 100
        if args.scrapes:
            figures["hwm_before_scrapes"] = _status("VmHWM")
            times = await asyncio.to_thread(_scrape, daemon.address, args.scrapes)
            figures["scrape_ms_median"] = statistics.median(times) * 1000
            figures["scrape_ms_p99"] = sorted(times)[round(0.99 * (len(times) - 1))] * 1000  # nearest rank
            figures["scrape_ms_max"] = max(times) * 1000
        states = daemon.store.snapshot().targets.values()
        figures["not_ok"] = sum(state.result.status.value != "ok" for state in states)
        figures["hwm_end"] = _status("VmHWM")
        figures["rss_end"] = _status("VmRSS")
        if args.tracemalloc:
            import tracemalloc

            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.statistics("traceback" if args.tracemalloc > 1 else "lineno")
            figures["traced_bytes"] = sum(s.size for s in stats)
            by_file = snapshot.statistics("filename")
            figures["by_file"] = [
                {"size": s.size, "count": s.count, "file": str(s.traceback[0])} for s in by_file[:40]
            ]
            figures["top"] = [
                {
                    "size": s.size,
                    "count": s.count,
                    "where": [str(f) for f in s.traceback][-args.tracemalloc :],
                }
                for s in stats[:40]
            ]
        stop.set()

    async def main() -> None:
        stop = asyncio.Event()
        driver = asyncio.create_task(drive(stop))
        await daemon.run(stop)
        await driver

    asyncio.run(main())
    print(json.dumps(figures), flush=True)


def main() -> None:
    """Start the lab, run the measurements (alternating trees), print the figures."""
    args = _parser().parse_args()
    if args.serve:
        _serve()
        return
    if args.measure:
        _measure(args)
        return
    trees = [str(Path(t).resolve()) for t in args.tree or [str(ROOT)]]
    runs = _run_trees(args, trees)
    _print_ratios(trees, runs)
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "load_average": os.getloadavg()}, indent=2))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lab", help=argparse.SUPPRESS)
    parser.add_argument("--targets", type=int, default=200, help="targets (default 200)")
    parser.add_argument("--interval", type=float, default=10, help="interval in seconds (default 10)")
    parser.add_argument("--window", type=float, default=30, help="measuring window in seconds (default 30)")
    parser.add_argument("--settle", type=float, default=3, help="seconds after ready before it (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the trees (default 1)")
    parser.add_argument(
        "--tree", action="append", help="PYTHONPATH of a run (repeatable; default: this tree)"
    )
    parser.add_argument(
        "--scrapes", type=int, default=0, help="/metrics scrapes after the window (default 0)"
    )
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="trace allocations")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return parser


def _run_trees(args: argparse.Namespace, trees: list[str]) -> list[dict[str, Any]]:
    """The lab in a child process, then a measuring child per tree and round; their figures."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    lab_process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    runs: list[dict[str, Any]] = []
    try:
        assert lab_process.stdout is not None
        lab = lab_process.stdout.readline()
        for _ in range(args.rounds):
            for tree in trees:
                out = subprocess.run(
                    _measure_argv(args, lab.strip()),
                    env={**env, "PYTHONPATH": tree},
                    stdout=subprocess.PIPE,
                    text=True,
                    check=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(figures)
                print(_line(figures), flush=True)
    finally:
        if lab_process.stdin is not None:
            lab_process.stdin.close()
        lab_process.wait(20)
    return runs


def _measure_argv(args: argparse.Namespace, lab: str) -> list[str]:
    """The command line of a measuring child (``--measure``) with this run's settings."""
    argv = [sys.executable, __file__, "--measure", "--lab", lab]
    argv += ["--targets", str(args.targets), "--interval", str(args.interval)]
    argv += ["--window", str(args.window), "--settle", str(args.settle)]
    argv += ["--tracemalloc", str(args.tracemalloc), "--scrapes", str(args.scrapes)]
    return argv


def _print_ratios(trees: list[str], runs: list[dict[str, Any]]) -> None:
    """With several trees: each one's median CPU per address-probe as a ratio to the first's."""
    if len(trees) < 2:
        return
    medians = {
        tree: statistics.median(r["cpu_ms_per_address_probe"] for r in runs if r["tree"] == tree)
        for tree in trees
    }
    for tree in trees[1:]:
        ratio = medians[tree] / medians[trees[0]]
        print(f"{tree}: {ratio:.3f}x of {trees[0]} (median CPU per address-probe)")


def _line(f: dict[str, Any]) -> str:
    mib = 1024 * 1024
    return (
        f"{f['tree']}: {f['targets']} targets, {f['cycles']} cycles in {f['wall_seconds']:.0f} s: "
        f"{f['cpu_ms_per_address_probe']:.3f} ms CPU per address-probe, {f['core_percent']:.1f} % of a core; "
        f"HWM ready {f['hwm_ready'] / mib:.1f} MiB, end {f['hwm_end'] / mib:.1f} MiB, RSS end "
        f"{f['rss_end'] / mib:.1f} MiB (imported {f['rss_imported'] / mib:.1f}, planned "
        f"{f['rss_planned'] / mib:.1f}, HWM {f['hwm_planned'] / mib:.1f}); not ok {f['not_ok']}"
        + (f"; traced {f['traced_bytes'] / mib:.1f} MiB" if "traced_bytes" in f else "")
        + (
            f"; scrapes: median {f['scrape_ms_median']:.1f} ms, p99 {f.get('scrape_ms_p99', 0):.1f} ms, "
            f"max {f['scrape_ms_max']:.1f} ms, "
            f"HWM before {f['hwm_before_scrapes'] / mib:.1f} MiB"
            if "scrape_ms_median" in f
            else ""
        )
    )


if __name__ == "__main__":
    main()
