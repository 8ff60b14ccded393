"""The benchmark harness: probe and blackbox_exporter against one loopback lab, in one run.

Phases, in order (see bench/README.md for what each figure means):

1. Start-up: ``probe --help`` wall time; ``probe check`` from spawn to its first DNS query.
2. Idle timing fidelity: a ``probe run`` with only the slow target, and blackbox_exporter's
   ``/probe`` on the slow backend, one after the other on a quiet lab.
3. Load: ``probe run`` with N targets (plus the slow one) and, at the same rate of
   address-probes, a local client calling blackbox_exporter's ``/probe``. Once probe is
   ready, a CPU window: ``/proc/PID/stat`` of both processes and HAProxy's request
   counters per frontend at its start and end, no scrape inside.
4. Fidelity under load: both loads go on; probe is scraped once per slow interval for the
   slow target's figures, blackbox's slow probes run beside them.
5. ``/metrics``: blackbox's load stops; probe (still probing N targets) is scraped S times.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import measure
from bench.scene import (
    BLACKBOX_ADDRESS,
    LB_ADDRESSES,
    LB_NETWORK,
    LISTENER_ADDRESS,
    PROBE_ADDRESS,
    SLOW_DELAY,
    BenchError,
    Process,
    Scene,
    first_query_listener,
    http_get,
    probe_executable,
)
from probe._version import __version__

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
#: Phases of a request as both tools name them; "resolve" (DNS) is left out of the sums.
REQUEST_PHASES = ("connect", "tls", "processing", "transfer")


@dataclass(frozen=True)
class Settings:
    """What one run does; ``--smoke`` shrinks every number."""

    targets: int = 1000
    interval: float = 30.0
    window: float = 60.0
    scrapes: int = 50
    slow_interval: float = 5.0
    fidelity_samples: int = 6
    fidelity_scrape_every: float = 15.0
    startup_repeats: int = 5
    smoke: bool = False

    @classmethod
    def smoke_run(cls) -> Settings:
        """A few seconds of everything: checks the harness, not the speed."""
        return cls(
            targets=10,
            interval=2.0,
            window=4.0,
            scrapes=5,
            slow_interval=1.0,
            fidelity_samples=2,
            fidelity_scrape_every=1.0,
            startup_repeats=1,
            smoke=True,
        )


# --------------------------------------------------------------------------- /proc


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, children waited for included) of a running process."""
    return measure.cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), TICKS, children=True)


def proc_memory(pid: int, key: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` of a running process, in bytes."""
    return measure.status_bytes(Path(f"/proc/{pid}/status").read_text(), key)


class SocketWatch:
    """Samples, every ``pause`` seconds, the remote ends of the sockets of some processes.

    The evidence behind "everything stayed on loopback": every TCP and UDP socket the
    processes hold is looked up in /proc/PID/net/{tcp,udp,tcp6,udp6}. Sampling can miss
    a socket that lives shorter than ``pause``; bench/README.md says why none is expected.
    """

    def __init__(self, pids: dict[str, int], pause: float = 0.2) -> None:
        self.pids = pids
        self.pause = pause
        self.peers: dict[str, set[tuple[str, int]]] = {name: set() for name in pids}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="socket-watch", daemon=True)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.pause):
            for name, pid in self.pids.items():
                self.peers[name] |= process_peers(pid)
            self.samples += 1

    def report(self) -> dict[str, Any]:
        """Per process: distinct remote addresses seen, and those that are not loopback."""
        result: dict[str, Any] = {"samples": self.samples}
        for name, peers in self.peers.items():
            result[name] = {
                "remote_addresses": sorted({address for address, _ in peers}),
                "not_loopback": sorted(measure.non_loopback(peers)),
            }
        return result


def process_peers(pid: int) -> set[tuple[str, int]]:
    """The remote ends of the TCP and UDP sockets process ``pid`` holds now."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
        tables = {}
        for kind in ("tcp", "udp", "tcp6", "udp6"):
            with contextlib.suppress(OSError):
                tables.update(measure.socket_peers(Path(f"/proc/{pid}/net/{kind}").read_text()))
    except OSError:  # the process exited
        return set()
    return {tables[inode] for inode in inodes if inode in tables}


# --------------------------------------------------------------------------- scraping


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


# --------------------------------------------------------------------------- blackbox driver


class BlackboxDriver:
    """Calls blackbox_exporter's /probe as Prometheus would: ``rate`` probes per second, spread.

    Address-probes alternate between HAProxy's two addresses on ``fe_bb``; ``threads``
    clients with keep-alive connections share the schedule. A second, slower loop probes
    the slow backend every ``slow_interval`` seconds at both addresses and keeps the timings.
    """

    def __init__(self, scene: Scene, rate: float, slow_interval: float, threads: int = 4) -> None:
        self.scene = scene
        self.rate = rate
        self.slow_interval = slow_interval
        self.stop_event = threading.Event()
        self.done = 0
        self.failed = 0
        self.slow: list[Timing] = []
        self.samples_per_probe: int | None = None
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=(k, threads), name=f"bb-{k}", daemon=True)
            for k in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._slow, name="bb-slow", daemon=True))
        self._paths = [scene.blackbox_probe_path("fe_bb", a) for a in LB_ADDRESSES]
        self._start = 0.0

    def start(self) -> None:
        """Start probing."""
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop and wait for the clients."""
        self.stop_event.set()
        for thread in self._threads:
            thread.join(10)

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(BLACKBOX_ADDRESS, self.scene.blackbox_port, timeout=30)

    def _work(self, k: int, threads: int) -> None:
        connection = self._connection()
        index = k
        while not self.stop_event.is_set():
            delay = self._start + index / self.rate - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            try:
                connection.request("GET", self._paths[index % 2])
                body = connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = self._connection()
                body = b""
            ok = b"\nprobe_success 1\n" in body
            with self._lock:
                self.done += 1
                self.failed += not ok
                if ok and self.samples_per_probe is None:
                    self.samples_per_probe = len(measure.parse_samples(body.decode()))
            index += threads
        connection.close()

    def _slow(self) -> None:
        while not self.stop_event.wait(self.slow_interval):
            for address in LB_ADDRESSES:
                self.slow.append(blackbox_slow_probe(self.scene, address))


def blackbox_slow_probe(scene: Scene, address: str) -> Timing:
    """One /probe of the slow backend at one address."""
    status, body = http_get(
        BLACKBOX_ADDRESS, scene.blackbox_port, scene.blackbox_probe_path("fe_slow", address, "/")
    )
    if status != 200:
        return Timing(float("nan"), float("nan"), False)
    return blackbox_timing(body)


# --------------------------------------------------------------------------- phases


def startup_figures(scene: Scene, settings: Settings) -> dict[str, Any]:
    """``probe --help`` wall time, and spawn of ``probe check`` to its first DNS query (seconds)."""
    probe = probe_executable()
    helps = []
    for _ in range(settings.startup_repeats):
        start = time.perf_counter()
        subprocess.run([probe, "--help"], env=scene.env, stdout=subprocess.DEVNULL, check=True)
        helps.append(time.perf_counter() - start)
    firsts = []
    with first_query_listener() as (sock, port):
        for _ in range(settings.startup_repeats):
            sock.setblocking(False)
            while True:  # drop what a previous run may have sent
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    break
            sock.settimeout(10)
            argv = [
                probe,
                "check",
                scene.url("fe_probe"),
                "--resolver",
                f"{LISTENER_ADDRESS}:{port}",  # never answers: probe only ever sends this query
                "--ca-file",
                str(scene.ca_file),
                "--expect-network",
                LB_NETWORK,
            ]
            start = time.perf_counter()
            process = subprocess.Popen(
                argv, env=scene.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                sock.recv(4096)
                firsts.append(time.perf_counter() - start)
            except TimeoutError as exc:
                raise BenchError("probe check sent no DNS query within 10 s") from exc
            finally:
                process.kill()
                process.wait(5)
    return {
        "help_seconds_median": measure.median(helps),
        "help_seconds_min": min(helps),
        "check_first_dns_query_seconds_median": measure.median(firsts),
        "check_first_dns_query_seconds_min": min(firsts),
        "repeats": settings.startup_repeats,
    }


def poll_slow(port: int, wanted: int, pause: float, timeout: float) -> tuple[list[Timing], list[Scrape]]:
    """Scrape probe every ``pause`` seconds until ``wanted`` new cycles of the slow target are seen."""
    seen: set[float] = set()
    timings: list[Timing] = []
    scrapes: list[Scrape] = []
    limit = time.monotonic() + timeout
    while len(seen) < wanted and time.monotonic() < limit:
        time.sleep(pause)
        result = scrape(port)
        scrapes.append(result)
        ended, found = probe_slow_timings(result.samples)
        if ended is not None and ended not in seen:
            seen.add(ended)
            timings += found
    return timings, scrapes


def wait_ready(process: Process, port: int, timeout: float) -> float:
    """Wait until probe's /-/ready says 200; returns the seconds waited.

    Raises:
        BenchError: the process died or did not get ready in time.
    """
    start = time.monotonic()
    while True:
        try:
            if http_get(PROBE_ADDRESS, port, "/-/ready", timeout=10)[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass
        if not process.running:
            raise BenchError(f"probe run exited\n{process.describe()}")
        if time.monotonic() - start > timeout:
            raise BenchError(f"probe run not ready within {timeout:g} s\n{process.describe()}")
        time.sleep(0.25)


def idle_fidelity(scene: Scene, settings: Settings) -> dict[str, Any]:
    """The slow target on a quiet lab: a probe daemon with only it, then blackbox's /probe."""
    process, port = scene.start_probe(
        "probe-idle", scene.probe_config(0, settings.interval, slow_interval=settings.slow_interval)
    )
    wait_ready(process, port, settings.slow_interval * 3 + 10)
    wanted = settings.fidelity_samples
    timings, _ = poll_slow(
        port, wanted, settings.slow_interval / 2, settings.slow_interval * (wanted + 3) + 10
    )
    rss_one_target = proc_memory(process.pid, "VmHWM")
    process.stop()
    blackbox = [blackbox_slow_probe(scene, a) for _ in range(wanted) for a in LB_ADDRESSES]
    return {
        "probe": excess(timings),
        "blackbox": excess(blackbox),
        "probe_rss_one_target_bytes": rss_one_target,
    }


def load_phase(scene: Scene, settings: Settings) -> dict[str, Any]:
    """N targets in probe, the same rate through blackbox: CPU, fidelity, /metrics, memory."""
    rate = 2 * settings.targets / settings.interval  # address-probes per second, each tool
    config = scene.probe_config(settings.targets, settings.interval, slow_interval=settings.slow_interval)
    process, port = scene.start_probe("probe-load", config)
    assert scene.blackbox is not None
    driver = BlackboxDriver(scene, rate, settings.slow_interval)
    watch = SocketWatch({"probe": process.pid, "blackbox": scene.blackbox.pid})
    driver.start()
    watch.__enter__()
    try:
        ready_seconds = wait_ready(process, port, settings.interval * 2 + 30)

        # -- CPU window: no scrape of probe inside it.
        stats_0 = measure.haproxy_stats(scene.haproxy_stats())
        cpu_0 = proc_cpu(process.pid), proc_cpu(scene.blackbox.pid)
        wall_0 = time.monotonic()
        time.sleep(settings.window)
        stats_1 = measure.haproxy_stats(scene.haproxy_stats())
        cpu_1 = proc_cpu(process.pid), proc_cpu(scene.blackbox.pid)
        wall = time.monotonic() - wall_0
        cpu: dict[str, Any] = {"probe": _window(cpu_1[0] - cpu_0[0], "fe_probe", stats_0, stats_1, wall)}
        cpu["blackbox"] = _window(cpu_1[1] - cpu_0[1], "fe_bb", stats_0, stats_1, wall)
        cpu["wall_seconds"] = wall
        cpu["ready_seconds"] = ready_seconds
        cpu["rate_per_second_each"] = rate

        # -- Timing fidelity under load: both loads go on.
        memory_window = proc_memory(process.pid, "VmHWM")
        bb_slow_before = len(driver.slow)
        probe_slow, fidelity_scrapes = poll_slow(
            port,
            settings.fidelity_samples // 2 or 1,
            settings.fidelity_scrape_every,
            settings.fidelity_scrape_every * (settings.fidelity_samples // 2 + 3) + 30,
        )
        lag = [
            s.value
            for result in fidelity_scrapes
            for s in result.samples
            if "loop_lag" in s.name and not s.name.endswith(("_bucket", "_count", "_created"))
        ]
    finally:
        driver.stop()
        watch.__exit__()
    blackbox_slow = driver.slow[bb_slow_before:] or driver.slow
    fidelity = {"probe": excess(probe_slow), "blackbox": excess(blackbox_slow), "probe_loop_lag_values": lag}
    # The first scrape after the window shows the verdicts of the cycles in it.
    window_verdicts = verdicts(fidelity_scrapes[0].samples) if fidelity_scrapes else verdicts([])

    # -- /metrics while probe keeps probing N targets (blackbox's load has stopped).
    cpu_before = proc_cpu(process.pid)
    wall_before = time.monotonic()
    scrapes = [scrape(port, parse=False) for _ in range(settings.scrapes - 1)]
    last = scrape(port)
    scrapes.append(last)
    scrape_wall = time.monotonic() - wall_before
    scrape_cpu = proc_cpu(process.pid) - cpu_before
    background = cpu["probe"]["cpu_seconds"] / wall  # CPU per second of probing alone
    latencies = [s.seconds for s in scrapes]
    # Size and samples as after the window, while every target is healthy (a failing target
    # has fewer series, and the scrapes in a row below can make every target fail).
    healthy = fidelity_scrapes[0] if fidelity_scrapes else last
    per_target = [
        sum(1 for s in healthy.samples if s.labels.get("target") == f"t{i:04d}")
        for i in range(settings.targets)
    ]
    metrics = {
        "scrapes": len(scrapes),
        "p50_seconds": measure.percentile(latencies, 50),
        "p99_seconds": measure.percentile(latencies, 99),
        "max_seconds": max(latencies),
        "bytes": len(healthy.body),
        "samples": len(healthy.samples),
        "samples_per_target": measure.median(per_target) if per_target else None,
        "cpu_seconds_per_scrape": max(0.0, scrape_cpu - background * scrape_wall) / len(scrapes),
        "blackbox_samples_per_probe": driver.samples_per_probe,
    }

    # -- Verdicts and memory.
    verdict = {
        "probe_targets": settings.targets,
        "probe_after_window": window_verdicts,
        "probe_after_scrapes": verdicts(last.samples),
        "blackbox_probes": driver.done,
        "blackbox_failed": driver.failed,
    }
    memory = {
        "probe_peak_rss_bytes": memory_window,
        "probe_peak_rss_after_scrapes_bytes": proc_memory(process.pid, "VmHWM"),
        "probe_rss_after_scrapes_bytes": proc_memory(process.pid, "VmRSS"),
        "blackbox_peak_rss_bytes": proc_memory(scene.blackbox.pid, "VmHWM"),
    }
    process.stop()
    return {
        "cpu": cpu,
        "fidelity_load": fidelity,
        "metrics": metrics,
        "verdicts": verdict,
        "memory": memory,
        "sockets": watch.report(),
    }


def _window(
    cpu_seconds: float,
    frontend: str,
    before: dict[tuple[str, str], dict[str, str]],
    after: dict[tuple[str, str], dict[str, str]],
    wall: float,
) -> dict[str, Any]:
    requests = measure.counter(after, frontend, "req_tot") - measure.counter(before, frontend, "req_tot")
    connections = measure.counter(after, frontend, "conn_tot") - measure.counter(before, frontend, "conn_tot")
    return {
        "cpu_seconds": cpu_seconds,
        "address_probes": requests,
        "connections": connections,
        "connections_per_address_probe": measure.ratio(connections, requests),
        "cpu_seconds_per_address_probe": measure.ratio(cpu_seconds, requests),
        "core_percent": 100 * cpu_seconds / wall,
    }


# --------------------------------------------------------------------------- report


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


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> tuple[Settings, Path | None]:
    """Settings from the command line (``--smoke`` first, then any explicit number)."""
    parser = argparse.ArgumentParser(prog="./dev bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: check the harness, not the speed"
    )
    parser.add_argument(
        "--targets", type=int, help="probe targets (2 addresses, 1 request each; default 1000)"
    )
    parser.add_argument("--interval", type=float, help="probe interval in seconds (default 30)")
    parser.add_argument("--window", type=float, help="CPU measuring window in seconds (default 60)")
    parser.add_argument("--scrapes", type=int, help="/metrics scrapes (default 50)")
    parser.add_argument("--out", type=Path, help="JSON result file (default bench/results/bench-DATE.json)")
    args = parser.parse_args(argv)
    settings = Settings.smoke_run() if args.smoke else Settings()
    overrides = {
        k: getattr(args, k) for k in ("targets", "interval", "window", "scrapes") if getattr(args, k)
    }
    if overrides:
        settings = Settings(**{**asdict(settings), **overrides})
    if settings.targets < 1 or settings.scrapes < 1 or settings.window <= 0 or settings.interval < 1:
        parser.error("targets and scrapes must be at least 1, window above 0, interval at least 1 s")
    return settings, args.out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark: 0 unless a problem (or, with ``--smoke``, a finding) of :func:`check`."""
    settings, out = parse_args(argv)
    started = time.monotonic()
    report = Report(meta=machine(), settings=asdict(settings))
    say = _sayer(started)
    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
        try:
            with Scene(Path(tmp)) as scene:
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


def evaluate(report: Report, settings: Settings) -> None:
    """Fill the report's goals and problems from its figures."""
    goal_list = goals(report.figures, settings)
    report.goals = [{**asdict(g), "met": g.met} for g in goal_list]
    report.problems, report.findings = check(report.figures, goal_list)


def _sayer(started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"bench [{time.monotonic() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    return say
