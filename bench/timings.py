"""What the tools report: probe's /metrics scraped, the slow target's timings, verdicts.

Both tools' expositions are read here: probe's scrape and blackbox_exporter's ``/probe``
answer become :class:`Timing` values, their excess over the slow backend's 300 ms, and
probe's targets counted by verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench import measure
from bench.scene import (
    LB_ADDRESSES,
    PROBE_ADDRESS,
    SLOW_DELAY,
    BenchError,
    http_get,
)

#: Phases of a request as both tools name them; "resolve" (DNS) is left out of the sums.
REQUEST_PHASES = ("connect", "tls", "processing", "transfer")


@dataclass(frozen=True)
class Scrape:
    """One ``GET /metrics``: wall seconds from request to last byte, the body, its samples."""

    seconds: float
    body: bytes
    samples: list[measure.Sample]


def scrape(port: int, *, parse: bool = True) -> Scrape:
    """Scrape probe's /metrics over a new connection.

    Raises:
        BenchError: not 200.
    """
    start = time.perf_counter()
    status, body = http_get(PROBE_ADDRESS, port, "/metrics", timeout=60)
    seconds = time.perf_counter() - start
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    return Scrape(seconds, body, measure.parse_samples(body.decode()) if parse else [])


@dataclass(frozen=True)
class Timing:
    """One measured request to the slow backend: what the tool reported, in seconds.

    Attributes:
        total: one address-probe, like for like: blackbox_exporter's
            ``probe_duration_seconds`` (DNS, connect, TLS and the request to one address);
            for probe the same span of one address, its ``resolve`` phase (the target's DNS
            lookup) plus the request phases.
        request: the sum of the request phases connect, tls, processing and transfer
            (probe: per address, the mean over the cycle's requests; here one).
        success: the tool's verdict was success.
        cycle: probe only: ``probe_duration_seconds``, the whole cycle (DNS, then both
            addresses concurrently in one event loop, then the verdict), which has no
            counterpart in one ``/probe``.
    """

    total: float
    request: float
    success: bool
    cycle: float | None = None


def probe_slow_timings(samples: list[measure.Sample]) -> tuple[float | None, list[Timing]]:
    """The slow target's cycle in a probe scrape: ``(cycle end timestamp, one Timing per address)``."""
    ended = measure.values(samples, "probe_last_cycle_timestamp_seconds", target="slow")
    total = measure.values(samples, "probe_duration_seconds", target="slow")
    success = measure.values(samples, "probe_success", target="slow")
    if not ended or not total:
        return None, []
    timings = []
    for address in LB_ADDRESSES:
        phases = {
            s.labels.get("phase"): s.value
            for s in samples
            if s.name == "probe_http_duration_seconds"
            and s.labels.get("target") == "slow"
            and s.labels.get("address") == address
        }
        request = sum(v for p, v in phases.items() if p in REQUEST_PHASES)
        if any(p in REQUEST_PHASES for p in phases):
            one = request + phases.get("resolve", 0.0)
            timings.append(Timing(one, request, success == [1.0], cycle=total[0]))
    return ended[0], timings


def blackbox_timing(body: bytes) -> Timing:
    """A /probe response of blackbox_exporter as a :class:`Timing`."""
    samples = measure.parse_samples(body.decode())
    total = measure.values(samples, "probe_duration_seconds")
    phases = [
        s.value
        for s in samples
        if s.name == "probe_http_duration_seconds" and s.labels.get("phase") in REQUEST_PHASES
    ]
    success = measure.values(samples, "probe_success") == [1.0]
    return Timing(total[0] if total else float("nan"), sum(phases), success)


def excess(timings: list[Timing]) -> dict[str, Any]:
    """Median and max of (reported − 300 ms), total and request, in seconds, and how many samples."""
    if not timings:
        return {
            "samples": 0,
            "total_median": None,
            "total_max": None,
            "request_median": None,
            "request_max": None,
            "cycle_median": None,
            "cycle_max": None,
        }
    totals = [t.total - SLOW_DELAY for t in timings]
    requests = [t.request - SLOW_DELAY for t in timings]
    cycles = [t.cycle - SLOW_DELAY for t in timings if t.cycle is not None]
    return {
        "samples": len(timings),
        "total_median": measure.median(totals),
        "total_max": max(totals),
        "request_median": measure.median(requests),
        "request_max": max(requests),
        "cycle_median": measure.median(cycles) if cycles else None,
        "cycle_max": max(cycles) if cycles else None,
        "all_success": all(t.success for t in timings),
    }


def verdicts(samples: list[measure.Sample]) -> dict[str, Any]:
    """Targets by verdict (``probe_status``: 0 ok, 1 warning, 2 critical) and by reason found.

    Returns:
        ``{"ok": n, "warning": n, "critical": n, "slow_ok": bool, "reasons": {reason: targets}}``,
        the counts without the ``slow`` target.
    """
    names = {0.0: "ok", 1.0: "warning", 2.0: "critical"}
    result: dict[str, Any] = {"ok": 0, "warning": 0, "critical": 0, "slow_ok": False}
    for s in samples:
        if s.name == "probe_status" and "target" in s.labels:
            if s.labels["target"] == "slow":
                result["slow_ok"] = s.value == 0
            else:
                result[names.get(s.value, "critical")] += 1
    reasons: dict[str, set[str]] = {}
    for s in samples:
        if s.name == "probe_failure_info" and s.labels.get("reason"):
            reasons.setdefault(s.labels["reason"], set()).add(s.labels.get("target", ""))
    result["reasons"] = {reason: len(targets) for reason, targets in sorted(reasons.items())}
    return result
