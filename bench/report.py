"""The report of a run: its figures, the goals of issue 9, problems and findings, the table."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import measure
from bench.scene import (
    BenchError,
)
from bench.settings import Settings
from probe._version import __version__


@dataclass
class Report:
    """Everything one run measured, as written to the JSON file."""

    meta: dict[str, Any]
    settings: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    goals: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def machine() -> dict[str, Any]:
    """Date, core count, CPU model, load, versions."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "probe_version": __version__,
        "blackbox_exporter": _version(["prometheus-blackbox-exporter", "--version"]),
        "haproxy": _version(["haproxy", "-v"]),
    }


def _version(argv: list[str]) -> str:
    from bench.scene import find_program

    try:
        done = subprocess.run(
            [find_program(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=10, check=False
        )
    except (BenchError, OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def goals(figures: dict[str, Any], settings: Settings) -> list[measure.Goal]:
    """The goals of issue 9 evaluated on this run's figures."""
    cpu = figures["load"]["cpu"]
    per_probe = cpu["probe"]["cpu_seconds_per_address_probe"]
    per_bb = cpu["blackbox"]["cpu_seconds_per_address_probe"]
    per_target_cycle = None if per_probe is None else 2 * per_probe
    core_1000 = None if per_target_cycle is None else 100 * per_target_cycle * 1000 / 30
    idle = figures["fidelity_idle"]
    load = figures["load"]["fidelity_load"]

    def difference(section: dict[str, Any]) -> float | None:
        probe, blackbox = section["probe"]["total_median"], section["blackbox"]["total_median"]
        return None if probe is None or blackbox is None else probe - blackbox

    metrics = figures["load"]["metrics"]
    startup = figures["startup"]
    return [
        measure.Goal(
            "CPU per address-probe, probe / blackbox_exporter", measure.ratio(per_probe, per_bb), 0.8, "x"
        ),
        measure.Goal("1,000 targets at 30 s, % of one core", core_1000, 12, "%"),
        measure.Goal(f"/metrics p99 at {settings.targets} targets", metrics["p99_seconds"], 0.050, "ms"),
        measure.Goal("samples per 2-address target", metrics["samples_per_target"], 40, ""),
        measure.Goal(
            f"peak RSS at {settings.targets} targets",
            figures["load"]["memory"]["probe_peak_rss_bytes"],
            64 * 2**20,
            "MiB",
        ),
        measure.Goal("probe --help", startup["help_seconds_median"], 0.100, "ms"),
        measure.Goal(
            "probe check start to first DNS query",
            startup["check_first_dns_query_seconds_median"],
            0.150,
            "ms",
        ),
        measure.Goal("fidelity idle: probe − blackbox excess (median)", difference(idle), 0.0, "ms"),
        measure.Goal("fidelity under load: probe − blackbox excess (median)", difference(load), 0.0, "ms"),
    ]


#: A row of the table: the figure, probe's value, blackbox_exporter's, their ratio.
Row = tuple[str, str, str, str]

_fmt = measure.format_value


def render_table(report: Report) -> str:
    """The printed summary: absolute figures side by side, then the goals."""
    f, s = report.figures, report.settings
    rows = [
        *_cpu_rows(f["load"]["cpu"], s),
        *_metrics_rows(f["load"]["metrics"]),
        *_memory_rows(f["load"]["memory"], f["fidelity_idle"], s),
        *_startup_rows(f["startup"]),
        *_fidelity_rows("idle", f["fidelity_idle"]),
        *_fidelity_rows("under load", f["load"]["fidelity_load"]),
        *_lag_and_socket_rows(f["load"]),
        *_verdict_rows(f["load"]["verdicts"]),
    ]
    return "\n".join([*_table(rows), "", "goals (issue 9):", *_goal_lines(report.goals)])


def _row(name: str, probe: str, blackbox: str = "", ratio: str = "") -> Row:
    return (name, probe, blackbox, ratio)


def _cpu_rows(cpu: dict[str, Any], s: dict[str, Any]) -> list[Row]:
    """CPU per address-probe and per target-cycle, what was counted, share of a core."""
    pp, bb = cpu["probe"], cpu["blackbox"]

    def side_by_side(label: str, key: str) -> Row:
        return _row(
            label, _fmt(pp[key], "ms"), _fmt(bb[key], "ms"), _fmt(measure.ratio(pp[key], bb[key]), "x")
        )

    return [
        side_by_side("CPU per address-probe", "cpu_seconds_per_address_probe"),
        side_by_side(
            f"CPU per target-cycle (2 addresses × {s['requests']} request{'s' * (s['requests'] > 1)})",
            "cpu_seconds_per_target_cycle",
        ),
        _row(
            "address-probes (requests) in the window",
            f"{pp['address_probes']:g} ({pp['requests']})",
            f"{bb['address_probes']:g} ({bb['requests']})",
        ),
        _row(
            "TCP+TLS connections per request",
            _fmt(pp["connections_per_request"], ""),
            _fmt(bb["connections_per_request"], ""),
        ),
        _row(
            f"% of one core, {s['targets']} targets / {s['interval']:g} s",
            _fmt(pp["core_percent"], "%"),
            _fmt(bb["core_percent"], "%"),
        ),
    ]


def _metrics_rows(metrics: dict[str, Any]) -> list[Row]:
    """``/metrics``: latency, size, samples per target, CPU per scrape."""
    return [
        _row(
            "/metrics p50 / p99",
            f"{_fmt(metrics['p50_seconds'], 'ms')} / {_fmt(metrics['p99_seconds'], 'ms')}",
        ),
        _row("/metrics bytes, samples", f"{_fmt(metrics['bytes'], 'MB')}, {metrics['samples']}"),
        _row(
            "samples per 2-address target (per /probe)",
            _fmt(metrics["samples_per_target"], ""),
            _fmt(metrics["blackbox_samples_per_probe"], ""),
        ),
        _row("CPU per scrape (estimate)", _fmt(metrics["cpu_seconds_per_scrape"], "ms")),
    ]


def _memory_rows(memory: dict[str, Any], idle: dict[str, Any], s: dict[str, Any]) -> list[Row]:
    """Peak RSS under load, after the scrapes and with one target, and so memory per target."""
    one = idle["probe_rss_one_target_bytes"]
    per_target = (memory["probe_peak_rss_bytes"] - one) / s["targets"]
    return [
        _row(
            "peak RSS (VmHWM)",
            _fmt(memory["probe_peak_rss_bytes"], "MiB"),
            _fmt(memory["blackbox_peak_rss_bytes"], "MiB"),
        ),
        _row(
            "peak RSS after the /metrics scrapes", _fmt(memory["probe_peak_rss_after_scrapes_bytes"], "MiB")
        ),
        _row("peak RSS with only the slow target", _fmt(one, "MiB")),
        _row("memory per target (peak at N − peak at 1) / N", f"{per_target / 1024:.1f} KiB"),
    ]


def _startup_rows(startup: dict[str, Any]) -> list[Row]:
    """``probe --help``, and ``probe check`` to its first DNS query."""
    return [
        _row("probe --help (median)", _fmt(startup["help_seconds_median"], "ms")),
        _row(
            "check start → first DNS query (median)",
            _fmt(startup["check_first_dns_query_seconds_median"], "ms"),
        ),
    ]


def _fidelity_rows(label: str, section: dict[str, Any]) -> list[Row]:
    """Reported − 300 ms of the slow target: the address-probe, its request phases, probe's cycle."""
    p, b = section["probe"], section["blackbox"]
    rows = [
        _row(
            f"reported − 300 ms, {label}: total (median/max)",
            f"{_fmt(p['total_median'], 'ms')} / {_fmt(p['total_max'], 'ms')}",
            f"{_fmt(b['total_median'], 'ms')} / {_fmt(b['total_max'], 'ms')}",
        ),
        _row(
            f"reported − 300 ms, {label}: request phases",
            f"{_fmt(p['request_median'], 'ms')} / {_fmt(p['request_max'], 'ms')}",
            f"{_fmt(b['request_median'], 'ms')} / {_fmt(b['request_max'], 'ms')}",
        ),
    ]
    if p.get("cycle_median") is not None:
        rows.append(
            _row(
                f"reported − 300 ms, {label}: probe's whole cycle",
                f"{_fmt(p['cycle_median'], 'ms')} / {_fmt(p['cycle_max'], 'ms')}",
                "",
            )
        )
    return rows


def _lag_and_socket_rows(load: dict[str, Any]) -> list[Row]:
    """The event-loop lag probe exported, and the remote addresses each tool's sockets had."""
    lag = load["fidelity_load"]["probe_loop_lag_values"]
    sockets = load["sockets"]
    return [
        _row("event-loop lag exported", _fmt(max(lag), "ms") if lag else "not exported"),
        _row(
            f"remote addresses seen ({sockets['samples']} samples)",
            ", ".join(sockets["probe"]["remote_addresses"]) or "-",
            ", ".join(sockets["blackbox"]["remote_addresses"]) or "-",
        ),
    ]


def _verdict_rows(v: dict[str, Any]) -> list[Row]:
    """Probe's targets ok after the CPU window and after the scrapes; blackbox's probes ok."""
    blackbox = f"{v['blackbox_probes'] - v['blackbox_failed']}/{v['blackbox_probes']}"
    return [
        _verdict_row("after the window", v["probe_after_window"], v["probe_targets"], blackbox),
        _verdict_row("after the scrapes", v["probe_after_scrapes"], v["probe_targets"], ""),
    ]


def _verdict_row(label: str, found: dict[str, Any], targets: int, blackbox: str) -> Row:
    reasons = ", ".join(f"{reason} {n}" for reason, n in found["reasons"].items())
    return _row(
        f"verdicts ok, {label}",
        f"{found['ok']}/{targets} (+slow {'ok' if found['slow_ok'] else 'NOT ok'})"
        + (f"; {reasons}" if reasons else ""),
        blackbox,
    )


def _table(rows: list[Row]) -> list[str]:
    """The rows under a header, columns padded to their widest cell and joined by `` | ``."""
    header = ("figure", "probe", "blackbox_exporter", "probe/blackbox")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


def _goal_lines(goals: list[dict[str, Any]]) -> list[str]:
    """A line per goal: the value, the limit, met or not (or missing)."""
    lines = []
    for goal in goals:
        met = {True: "met", False: "NOT met", None: "missing"}[goal["met"]]
        value, limit = _fmt(goal["value"], goal["unit"]), _fmt(goal["limit"], goal["unit"])
        lines.append(f"  {goal['name']}: {value} (goal ≤ {limit}) {met}")
    return lines


def check(figures: dict[str, Any], goal_list: list[measure.Goal]) -> tuple[list[str], list[str]]:
    """What went wrong: ``(problems, findings)``.

    Problems make any run unusable: a missing figure, no address-probes counted, a verdict
    of blackbox_exporter that is not ok (the lab itself is broken), a socket outside
    loopback. Findings are probe's verdicts that are not ok (after the CPU window, or a
    slow-target cycle): a fault of the harness in a smoke run, a result in a full run.
    """
    problems = [f"missing figure: {goal.name}" for goal in goal_list if goal.value is None]
    problems += _harness_problems(figures["load"])
    findings = _window_findings(figures["load"]["verdicts"])
    slow = _slow_target_failures(figures)
    problems += [message for tool, message in slow if tool != "probe"]
    findings += [message for tool, message in slow if tool == "probe"]
    return problems, findings


def _harness_problems(load: dict[str, Any]) -> list[str]:
    """No address-probes counted, blackbox_exporter's probes failed, a socket outside loopback."""
    problems = [
        f"{tool}: no address-probes counted by HAProxy in the window"
        for tool in ("probe", "blackbox")
        if not load["cpu"][tool]["address_probes"]
    ]
    v = load["verdicts"]
    if v["blackbox_failed"] or not v["blackbox_probes"]:
        problems.append(f"blackbox_exporter: {v['blackbox_failed']} of {v['blackbox_probes']} probes failed")
    for tool in ("probe", "blackbox"):
        outside = load["sockets"][tool]["not_loopback"]
        if outside:
            problems.append(f"{tool}: sockets to addresses outside loopback: {', '.join(outside)}")
    return problems


def _window_findings(v: dict[str, Any]) -> list[str]:
    """Probe's targets not all ok after the CPU window (the slow one included)."""
    found = v["probe_after_window"]
    if found["ok"] == v["probe_targets"] and found["slow_ok"]:
        return []
    return [
        f"probe: {found['ok']} of {v['probe_targets']} targets ok after the window, "
        f"slow ok: {found['slow_ok']}, reasons: {found['reasons']}"
    ]


def _slow_target_failures(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """``(tool, message)`` per tool whose slow-target probes failed or did not run, idle and loaded."""
    sections = (("idle", figures["fidelity_idle"]), ("load", figures["load"]["fidelity_load"]))
    return [
        (tool, f"{tool}: a slow-target probe ({label}) failed or none ran")
        for label, section in sections
        for tool in ("probe", "blackbox")
        if not section[tool].get("all_success")
    ]


def evaluate(report: Report, settings: Settings) -> None:
    """Fill the report's goals and problems from its figures."""
    goal_list = goals(report.figures, settings)
    report.goals = [{**asdict(g), "met": g.met} for g in goal_list]
    report.problems, report.findings = check(report.figures, goal_list)
