"""The benchmark harness: probe and blackbox_exporter against one loopback lab, in one run.

Phases, in order (see bench/README.md for what each figure means):

1. Start-up: ``probe --help`` wall time; ``probe check`` from spawn to its first DNS query.
2. Idle timing fidelity: a ``probe run`` with only the slow target, and blackbox_exporter's
   ``/probe`` on the slow backend, one after the other on a quiet lab.
3. Load: ``probe run`` with N targets (plus the slow one; ``--requests`` per address) and,
   at the same rate of requests, a local client calling blackbox_exporter's ``/probe``. Once probe is
   ready, a CPU window: ``/proc/PID/stat`` of both processes and HAProxy's request
   counters per frontend at its start and end, no scrape inside.
4. Fidelity under load: both loads go on; probe is scraped once per slow interval for the
   slow target's figures, blackbox's slow probes run beside them.
5. ``/metrics``: blackbox's load stops; probe (still probing N targets) is scraped S times.

This module runs them in that order and writes the report. The pieces, one job each:
:mod:`bench.settings` (what a run does), :mod:`bench.phases` (the phases),
:mod:`bench.blackbox` (blackbox_exporter's load), :mod:`bench.timings` (what the tools
report), :mod:`bench.procfs` (CPU, memory and sockets from /proc) and :mod:`bench.report`
(the goals, problems and findings, the printed table).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench.phases import idle_fidelity, load_phase, startup_figures
from bench.report import Report, evaluate, machine, render_table
from bench.scene import (
    BenchError,
    Scene,
)
from bench.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> tuple[Settings, Path | None]:
    """Settings from the command line (``--smoke`` first, then any explicit number)."""
    parser = argparse.ArgumentParser(prog="./dev bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: check the harness, not the speed"
    )
    parser.add_argument("--targets", type=int, help="probe targets (2 addresses each; default 1000)")
    parser.add_argument("--interval", type=float, help="probe interval in seconds (default 30)")
    parser.add_argument("--window", type=float, help="CPU measuring window in seconds (default 60)")
    parser.add_argument("--scrapes", type=int, help="/metrics scrapes (default 50)")
    parser.add_argument(
        "--requests",
        type=int,
        help="requests_per_address of the targets (default 1; probe's own default is 4)",
    )
    parser.add_argument(
        "--tree", type=Path, help="run probe from this tree (PYTHONPATH), e.g. a git archive of main"
    )
    parser.add_argument("--out", type=Path, help="JSON result file (default bench/results/bench-DATE.json)")
    args = parser.parse_args(argv)
    settings = Settings.smoke_run() if args.smoke else Settings()
    overrides = {
        k: getattr(args, k)
        for k in ("targets", "interval", "window", "scrapes", "requests")
        if getattr(args, k) is not None
    }
    if args.tree is not None:
        if not (args.tree / "probe" / "__init__.py").is_file():
            parser.error(f"--tree {args.tree}: no probe package there")
        overrides["tree"] = str(args.tree.resolve())
    if overrides:
        settings = Settings(**{**asdict(settings), **overrides})
    if (
        min(settings.targets, settings.scrapes, settings.requests) < 1
        or settings.window <= 0
        or settings.interval < 1
    ):
        parser.error(
            "targets, scrapes and requests must be at least 1, window above 0, interval at least 1 s"
        )
    return settings, args.out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark: 0 unless a problem (or, with ``--smoke``, a finding) of :func:`check`."""
    settings, out = parse_args(argv)
    started = time.monotonic()
    report = Report(meta=machine(), settings=asdict(settings))
    say = _sayer(started)
    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
        try:
            with Scene(Path(tmp), probe_tree=settings.tree) as scene:
                say("lab up: dnsmasq, backends, HAProxy, blackbox_exporter")
                report.figures["startup"] = startup_figures(scene, settings)
                say("start-up figures done")
                report.figures["fidelity_idle"] = idle_fidelity(scene, settings)
                say("idle timing fidelity done")
                say(f"load: {settings.targets} targets every {settings.interval:g} s")
                report.figures["load"] = load_phase(scene, settings)
                say("load phase done")
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    report.meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    report.meta["duration_seconds"] = round(time.monotonic() - started, 1)
    path = out or REPO / "bench" / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")  # the figures first, whatever follows
    evaluate(report, settings)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(render_table(report))
    load = " ".join(report.meta["loadavg_end"])
    print(f"\nwritten to {path} ({report.meta['duration_seconds']} s, load average at the end {load})")
    for finding in report.findings:
        print(f"bench: finding: {finding}", file=sys.stderr)
    for problem in report.problems:
        print(f"bench: {problem}", file=sys.stderr)
    return 1 if report.problems or (settings.smoke and report.findings) else 0


def _sayer(started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"bench [{time.monotonic() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    return say
