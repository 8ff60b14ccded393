"""The daemon under stress: scrapes stay fast while probes hang; a long run does not grow.

Bounded in count and time, on loopback only.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from probe.config.load import build_config
from probe.daemon.httpserver import WebServer
from probe.daemon.metrics import render_target
from probe.daemon.scheduler import Scheduler
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore
from probe.daemon.web import make_app
from probe.engine.plan import plan
from probe.lab import Lab, Pki
from probe.model.reasons import Reason
from probe.model.results import TargetResult


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class CountingStore(ResultStore):
    """Stops the run once ``limit`` cycles are recorded."""

    def __init__(self, names: list[str], limit: int, stop: asyncio.Event) -> None:
        super().__init__(names, time.time())
        self.count = 0
        self.limit = limit
        self.stop = stop
        self.marks: dict[int, tuple[int, int, int]] = {}

    def record(self, result: TargetResult) -> Any:
        self.count += 1
        if self.count in (500, self.limit):
            gc.collect()
            self.marks[self.count] = (open_fds(), len(asyncio.all_tasks()), resident_bytes())
        if self.count >= self.limit:
            self.stop.set()
        return super().record(result)


@pytest.mark.slow
def test_two_thousand_cycles_over_three_hundred_targets_do_not_grow(
    lab: Lab, dns: Any, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A third of the targets complete TLS and HTTP, a third get NXDOMAIN, a third are refused.
    backend = lab.start_backend("web-1", new_ip())
    node = lab.start_node(new_ip(), cert=pki.leaf("soak.corp.example"), backends=[backend], workdir=tmp_path)
    refused = new_ip()
    dns.set("soak.corp.example", ("A", node.address))
    dns.set("soak-refused.corp.example", ("A", refused))
    hosts = ["soak.corp.example", "soak-nx.corp.example", "soak-refused.corp.example"]
    targets = [
        {
            "name": f"t{i:03d}",
            "url": f"https://{hosts[i % 3]}:{node.port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(ca_file),
            "interval": 3,
            "requests_per_address": 1,
            "timeouts": {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 3},
        }
        for i in range(300)
    ]
    plans = plan(build_config({"targets": targets}))
    caplog.set_level(logging.WARNING, logger="probe")

    async def soak() -> CountingStore:
        stop = asyncio.Event()
        store = CountingStore([p.target.name for p in plans], 2000, stop)
        scheduler = Scheduler(plans, store, Notifier({}), rng=random.Random(7))
        await asyncio.wait_for(scheduler.run(stop), timeout=240)
        return store

    gc.collect()
    fds_before = open_fds()
    try:
        store = asyncio.run(soak())
        gc.collect()
        fds_after = open_fds()  # every connection of the run closed, the lab still up
    finally:
        lab.stop(node)
        lab.stop(backend)

    (_, tasks_500, mem_500), (_, tasks_end, mem_end) = store.marks[500], store.marks[2000]
    verdicts = {name: state.result.reasons for name, state in store.snapshot().targets.items()}
    assert {verdicts[f"t{i:03d}"] for i in range(0, 300, 3) if f"t{i:03d}" in verdicts} == {()}
    assert {verdicts[f"t{i:03d}"] for i in range(1, 300, 3) if f"t{i:03d}" in verdicts} == {
        (Reason.DNS_NXDOMAIN,)
    }
    assert {verdicts[f"t{i:03d}"] for i in range(2, 300, 3) if f"t{i:03d}" in verdicts} == {
        (Reason.TCP_REFUSED,)
    }
    # Sockets in flight at a given moment vary with the machine's load; what stays open after
    # the run is what leaked.
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    assert tasks_end <= tasks_500 + 5, (tasks_500, tasks_end)
    assert mem_end - mem_500 < 16 * 1024 * 1024, (mem_500, mem_end)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


def test_scrapes_stay_fast_while_every_target_hangs_in_a_handshake(lab: Lab, new_ip: Any, dns: Any) -> None:
    async def silent(reader: Any, writer: Any) -> None:
        await asyncio.sleep(60)

    nodes = [lab.start_node(new_ip(), handler=silent, tls=False) for _ in range(20)]
    for index, node in enumerate(nodes):
        dns.set(f"hang{index}.corp.example", ("A", node.address))
    config = build_config(
        {
            "targets": [
                {
                    "name": f"hang{index}",
                    "url": f"https://hang{index}.corp.example:{node.port}/",
                    "resolvers": [dns.where],
                    "expect_networks": ["127.0.0.0/8"],
                    "interval": 20,
                    "timeouts": {"dns": 1, "connect": 1, "tls": 15, "http": 1, "deadline": 15},
                }
                for index, node in enumerate(nodes)
            ]
        }
    )
    plans = plan(config)
    store = ResultStore([p.target.name for p in plans], time.time(), render=render_target)
    web = WebServer("127.0.0.1", 0, make_app(store))
    host, port = web.start()

    async def scrape_while_hanging() -> list[float]:
        stop = asyncio.Event()
        scheduler = Scheduler(plans, store, Notifier({}), rng=random.Random(1))
        runner = asyncio.create_task(scheduler.run(stop))
        # Offsets spread the first cycles over the 20 s interval; start every target now.
        await asyncio.sleep(0)
        for task in list(scheduler._tasks.values()):
            task.cancel()
        scheduler._tasks.clear()
        for p in plans:
            scheduler._tasks[p.target.name] = asyncio.create_task(scheduler._loop(p, 0))
        await asyncio.sleep(0.5)  # every cycle is now inside its handshake
        assert len(scheduler._in_flight) == len(plans)
        timings = []
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            for _ in range(15):
                start = time.monotonic()
                response = await client.get(f"http://{host}:{port}/metrics")
                timings.append(time.monotonic() - start)
                assert response.status_code == 200
                await asyncio.sleep(0.05)
        stop.set()
        await runner
        return timings

    try:
        timings = asyncio.run(scrape_while_hanging())
    finally:
        web.stop()
        for node in nodes:
            lab.stop(node)
    assert statistics.median(timings) < 0.1, timings
    assert max(timings) < 1.0, timings


@pytest.mark.parametrize("path", ["/metrics", "/-/ready"])
def test_bad_requests_do_not_disturb_the_endpoint(path: str, tmp_path: Path) -> None:
    import socket

    store = ResultStore(["www"], time.time())
    web = WebServer("127.0.0.1", 0, make_app(store))
    host, port = web.start()
    try:
        # Slow clients, from other addresses (one address holds at most 8 connections).
        silent = [
            socket.create_connection((host, port), source_address=(f"127.0.7.{i}", 0)) for i in range(10)
        ]
        with socket.create_connection((host, port)) as raw:  # a huge URL
            raw.sendall(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 414 " in raw.recv(100)
        with httpx.Client(trust_env=False, timeout=2) as client:
            assert client.request("DELETE", f"http://{host}:{port}{path}").status_code == 405
            assert client.get(f"http://{host}:{port}{path}").status_code in (200, 503)
        for sock in silent:
            sock.close()
    finally:
        web.stop()
