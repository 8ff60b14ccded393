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


def render_table(report: Report) -> str:
    """The printed summary: absolute figures side by side, then the goals."""
    f = report.figures
    cpu = f["load"]["cpu"]
    metrics = f["load"]["metrics"]
    memory = f["load"]["memory"]
    s = report.settings
    fmt = measure.format_value
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, probe: str, blackbox: str = "", ratio: str = "") -> None:
        rows.append((name, probe, blackbox, ratio))

    pp, bb = cpu["probe"], cpu["blackbox"]
    row(
        "CPU per address-probe",
        fmt(pp["cpu_seconds_per_address_probe"], "ms"),
        fmt(bb["cpu_seconds_per_address_probe"], "ms"),
        fmt(measure.ratio(pp["cpu_seconds_per_address_probe"], bb["cpu_seconds_per_address_probe"]), "x"),
    )
    row("address-probes in the window", f"{pp['address_probes']}", f"{bb['address_probes']}")
    row(
        "TCP+TLS connections per address-probe",
        fmt(pp["connections_per_address_probe"], ""),
        fmt(bb["connections_per_address_probe"], ""),
    )
    row(
        f"% of one core, {s['targets']} targets / {s['interval']:g} s",
        fmt(pp["core_percent"], "%"),
        fmt(bb["core_percent"], "%"),
    )
    row("/metrics p50 / p99", f"{fmt(metrics['p50_seconds'], 'ms')} / {fmt(metrics['p99_seconds'], 'ms')}")
    row("/metrics bytes, samples", f"{fmt(metrics['bytes'], 'MB')}, {metrics['samples']}")
    row(
        "samples per 2-address target (per /probe)",
        fmt(metrics["samples_per_target"], ""),
        fmt(metrics["blackbox_samples_per_probe"], ""),
    )
    row("CPU per scrape (estimate)", fmt(metrics["cpu_seconds_per_scrape"], "ms"))
    row(
        "peak RSS (VmHWM)",
        fmt(memory["probe_peak_rss_bytes"], "MiB"),
        fmt(memory["blackbox_peak_rss_bytes"], "MiB"),
    )
    row("peak RSS after the /metrics scrapes", fmt(memory["probe_peak_rss_after_scrapes_bytes"], "MiB"))
    row("peak RSS with only the slow target", fmt(f["fidelity_idle"]["probe_rss_one_target_bytes"], "MiB"))
    one = f["fidelity_idle"]["probe_rss_one_target_bytes"]
    per_target = (memory["probe_peak_rss_bytes"] - one) / s["targets"]
    row("memory per target (peak at N − peak at 1) / N", f"{per_target / 1024:.1f} KiB")
    row("probe --help (median)", fmt(f["startup"]["help_seconds_median"], "ms"))
    row(
        "check start → first DNS query (median)",
        fmt(f["startup"]["check_first_dns_query_seconds_median"], "ms"),
    )
    for label, section in (("idle", f["fidelity_idle"]), ("under load", f["load"]["fidelity_load"])):
        p, b = section["probe"], section["blackbox"]
        row(
            f"reported − 300 ms, {label}: total (median/max)",
            f"{fmt(p['total_median'], 'ms')} / {fmt(p['total_max'], 'ms')}",
            f"{fmt(b['total_median'], 'ms')} / {fmt(b['total_max'], 'ms')}",
        )
        row(
            f"reported − 300 ms, {label}: request phases",
            f"{fmt(p['request_median'], 'ms')} / {fmt(p['request_max'], 'ms')}",
            f"{fmt(b['request_median'], 'ms')} / {fmt(b['request_max'], 'ms')}",
        )
        if p.get("cycle_median") is not None:
            row(
                f"reported − 300 ms, {label}: probe's whole cycle",
                f"{fmt(p['cycle_median'], 'ms')} / {fmt(p['cycle_max'], 'ms')}",
                "",
            )
    lag = f["load"]["fidelity_load"]["probe_loop_lag_values"]
    row("event-loop lag exported", fmt(max(lag), "ms") if lag else "not exported")
    sockets = f["load"]["sockets"]
    row(
        f"remote addresses seen ({sockets['samples']} samples)",
        ", ".join(sockets["probe"]["remote_addresses"]) or "-",
        ", ".join(sockets["blackbox"]["remote_addresses"]) or "-",
    )
    v = f["load"]["verdicts"]
    for label, key in (
        ("after the window", "probe_after_window"),
        ("after the scrapes", "probe_after_scrapes"),
    ):
        found = v[key]
        reasons = ", ".join(f"{reason} {n}" for reason, n in found["reasons"].items())
        row(
            f"verdicts ok, {label}",
            f"{found['ok']}/{v['probe_targets']} (+slow {'ok' if found['slow_ok'] else 'NOT ok'})"
            + (f"; {reasons}" if reasons else ""),
            f"{v['blackbox_probes'] - v['blackbox_failed']}/{v['blackbox_probes']}"
            if key.endswith("window")
            else "",
        )

    header = ("figure", "probe", "blackbox_exporter", "probe/blackbox")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines += ["", "goals (issue 9):"]
    for goal in report.goals:
        met = {True: "met", False: "NOT met", None: "missing"}[goal["met"]]
        value, limit = fmt(goal["value"], goal["unit"]), fmt(goal["limit"], goal["unit"])
        lines.append(f"  {goal['name']}: {value} (goal ≤ {limit}) {met}")
    return "\n".join(lines)


def check(figures: dict[str, Any], goal_list: list[measure.Goal]) -> tuple[list[str], list[str]]:
    """What went wrong: ``(problems, findings)``.

    Problems make any run unusable: a missing figure, no address-probes counted, a verdict
    of blackbox_exporter that is not ok (the lab itself is broken), a socket outside
    loopback. Findings are probe's verdicts that are not ok (after the CPU window, or a
    slow-target cycle): a fault of the harness in a smoke run, a result in a full run.
    """
    problems = [f"missing figure: {goal.name}" for goal in goal_list if goal.value is None]
    cpu = figures["load"]["cpu"]
    for tool in ("probe", "blackbox"):
        if not cpu[tool]["address_probes"]:
            problems.append(f"{tool}: no address-probes counted by HAProxy in the window")
    v = figures["load"]["verdicts"]
    if v["blackbox_failed"] or not v["blackbox_probes"]:
        problems.append(f"blackbox_exporter: {v['blackbox_failed']} of {v['blackbox_probes']} probes failed")
    for tool in ("probe", "blackbox"):
        outside = figures["load"]["sockets"][tool]["not_loopback"]
        if outside:
            problems.append(f"{tool}: sockets to addresses outside loopback: {', '.join(outside)}")
    findings = []
    found = v["probe_after_window"]
    if found["ok"] != v["probe_targets"] or not found["slow_ok"]:
        findings.append(
            f"probe: {found['ok']} of {v['probe_targets']} targets ok after the window, "
            f"slow ok: {found['slow_ok']}, reasons: {found['reasons']}"
        )
    for label, section in (("idle", figures["fidelity_idle"]), ("load", figures["load"]["fidelity_load"])):
        for tool in ("probe", "blackbox"):
            if not section[tool].get("all_success"):
                (findings if tool == "probe" else problems).append(
                    f"{tool}: a slow-target probe ({label}) failed or none ran"
                )
    return problems, findings


def evaluate(report: Report, settings: Settings) -> None:
    """Fill the report's goals and problems from its figures."""
    goal_list = goals(report.figures, settings)
    report.goals = [{**asdict(g), "met": g.met} for g in goal_list]
    report.problems, report.findings = check(report.figures, goal_list)
