"""The phases of a run, each against the lab and returning its figures as a dict.

Start-up (:func:`startup_figures`), idle timing fidelity (:func:`idle_fidelity`) and the load
phase (:func:`load_phase`: CPU window, fidelity under load, ``/metrics``, memory); see
:mod:`bench.run` for their order and bench/README.md for what each figure means.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench import measure
from bench.blackbox import BlackboxDriver, blackbox_slow_probe
from bench.procfs import SocketWatch, proc_cpu, proc_memory
from bench.scene import (
    LB_ADDRESSES,
    LB_NETWORK,
    LISTENER_ADDRESS,
    PROBE_ADDRESS,
    BenchError,
    Process,
    Scene,
    first_query_listener,
    http_get,
    probe_executable,
)
from bench.settings import Settings
from bench.timings import Scrape, Timing, excess, probe_slow_timings, scrape, verdicts


def startup_figures(scene: Scene, settings: Settings) -> dict[str, Any]:
    """``probe --help`` wall time, and spawn of ``probe check`` to its first DNS query (seconds)."""
    probe = probe_executable()
    helps = []
    for _ in range(settings.startup_repeats):
        start = time.perf_counter()
        subprocess.run([probe, "--help"], env=scene.probe_env, stdout=subprocess.DEVNULL, check=True)
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
                argv, env=scene.probe_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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
    """N targets in probe, the same rate through blackbox: CPU, fidelity, /metrics, memory.

    With ``requests`` per address, blackbox_exporter is called ``requests`` times per
    address-probe of probe: the same requests per second, each on a connection of its own.
    """
    requests = settings.requests
    rate = 2 * requests * settings.targets / settings.interval  # requests per second, each tool
    config = scene.probe_config(
        settings.targets, settings.interval, slow_interval=settings.slow_interval, requests=requests
    )
    process, port = scene.start_probe("probe-load", config)
    assert scene.blackbox is not None
    driver = BlackboxDriver(scene, rate, settings.slow_interval)
    watch = SocketWatch({"probe": process.pid, "blackbox": scene.blackbox.pid})
    driver.start()
    watch.__enter__()
    try:
        ready_seconds = wait_ready(process, port, settings.interval * 2 + 30)
        cpu = _cpu_window(scene, process.pid, settings.window, requests)
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
    finally:
        driver.stop()
        watch.__exit__()
    blackbox_slow = driver.slow[bb_slow_before:] or driver.slow
    fidelity = {
        "probe": excess(probe_slow),
        "blackbox": excess(blackbox_slow),
        "probe_loop_lag_values": _loop_lag(fidelity_scrapes),
    }
    # The first scrape after the window shows the verdicts of the cycles in it.
    window_verdicts = verdicts(fidelity_scrapes[0].samples) if fidelity_scrapes else verdicts([])

    # -- /metrics while probe keeps probing N targets (blackbox's load has stopped).
    background = cpu["probe"]["cpu_seconds"] / cpu["wall_seconds"]  # CPU per second of probing alone
    metrics, last = _scrape_figures(
        process.pid, port, settings, background, fidelity_scrapes, driver.samples_per_probe
    )

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


def _cpu_window(scene: Scene, pid: int, window: float, requests: int) -> dict[str, Any]:
    """Both tools' CPU and HAProxy's counters over ``window`` seconds; no scrape of probe inside.

    ``requests``: requests per address-probe (probe's ``requests_per_address``, and the
    ``/probe`` calls of blackbox_exporter that stand for one address-probe).
    """
    assert scene.blackbox is not None
    stats_0 = measure.haproxy_stats(scene.haproxy_stats())
    cpu_0 = proc_cpu(pid), proc_cpu(scene.blackbox.pid)
    wall_0 = time.monotonic()
    time.sleep(window)
    stats_1 = measure.haproxy_stats(scene.haproxy_stats())
    cpu_1 = proc_cpu(pid), proc_cpu(scene.blackbox.pid)
    wall = time.monotonic() - wall_0
    cpu: dict[str, Any] = {
        "probe": _window(cpu_1[0] - cpu_0[0], "fe_probe", stats_0, stats_1, wall, requests)
    }
    cpu["blackbox"] = _window(cpu_1[1] - cpu_0[1], "fe_bb", stats_0, stats_1, wall, requests)
    cpu["wall_seconds"] = wall
    return cpu


def _loop_lag(scrapes: list[Scrape]) -> list[float]:
    """The values of probe's event-loop lag gauge in these scrapes."""
    return [
        s.value
        for result in scrapes
        for s in result.samples
        if "loop_lag" in s.name and not s.name.endswith(("_bucket", "_count", "_created"))
    ]


def _scrape_figures(
    pid: int,
    port: int,
    settings: Settings,
    background: float,
    fidelity_scrapes: list[Scrape],
    blackbox_samples_per_probe: int | None,
) -> tuple[dict[str, Any], Scrape]:
    """``settings.scrapes`` scrapes of ``/metrics`` in a row: their latency, CPU and size.

    Args:
        pid: probe's process.
        port: probe's port.
        settings: the run's settings.
        background: probe's CPU seconds per second while it only probes (from the CPU window).
        fidelity_scrapes: the scrapes taken while every target was healthy (size and samples
            come from the first, or from the last of these scrapes when there is none).
        blackbox_samples_per_probe: samples in one ``/probe`` answer of blackbox_exporter.

    Returns:
        The ``metrics`` figures, and the last scrape (its verdicts are read after).
    """
    cpu_before = proc_cpu(pid)
    wall_before = time.monotonic()
    scrapes = [scrape(port, parse=False) for _ in range(settings.scrapes - 1)]
    last = scrape(port)
    scrapes.append(last)
    scrape_wall = time.monotonic() - wall_before
    scrape_cpu = proc_cpu(pid) - cpu_before
    latencies = [s.seconds for s in scrapes]
    # Size and samples as after the window, while every target is healthy (a failing target
    # has fewer series, and the scrapes in a row above can make every target fail).
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
        "blackbox_samples_per_probe": blackbox_samples_per_probe,
    }
    return metrics, last


def _window(
    cpu_seconds: float,
    frontend: str,
    before: dict[tuple[str, str], dict[str, str]],
    after: dict[tuple[str, str], dict[str, str]],
    wall: float,
    per_address_probe: int,
) -> dict[str, Any]:
    """One tool's figures of the window, from its CPU and its frontend's counters.

    An address-probe is ``per_address_probe`` requests (HAProxy counts requests), a
    target-cycle two address-probes (the lab's two addresses).
    """
    requests = measure.counter(after, frontend, "req_tot") - measure.counter(before, frontend, "req_tot")
    connections = measure.counter(after, frontend, "conn_tot") - measure.counter(before, frontend, "conn_tot")
    per_request = measure.ratio(cpu_seconds, requests)
    return {
        "cpu_seconds": cpu_seconds,
        "requests": requests,
        "address_probes": requests / per_address_probe,
        "connections": connections,
        "connections_per_request": measure.ratio(connections, requests),
        "connections_per_address_probe": measure.ratio(connections * per_address_probe, requests),
        "cpu_seconds_per_request": per_request,
        "cpu_seconds_per_address_probe": None if per_request is None else per_request * per_address_probe,
        "cpu_seconds_per_target_cycle": None if per_request is None else 2 * per_request * per_address_probe,
        "core_percent": 100 * cpu_seconds / wall,
    }
