"""Rotation judged for the balancing algorithm, against real loopback servers.

The lab's nodes balance round-robin; a backend left out of a node's pool is "really
missing". A single check that cannot decide warns (``backend_undecided``); the daemon's
scheduler and ``--watch`` count across cycles and report ``backend_missing`` at the
stated number of identified responses; ``cross_zone: false`` expects each address to
reach only its own zone's backends.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from probe.daemon.scheduler import Scheduler
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore, TargetState
from probe.judge.balancing import needed
from probe.lab import DnsServer, Lab, Pki
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from tests.support.helpers import make_plan, probe_cli, reasons, run

BOUND = 5.0  # seconds: a single check of one loopback node


def only_web_1(scene: Any, **fields: Any) -> dict[str, Any]:
    s = scene(backends=("web-1",))
    return {**s.target, "expect_backends": ["web-1", "web-2"], **fields}


def test_single_check_that_cannot_decide_warns_with_the_chance_and_the_requests_needed(scene: Any) -> None:
    result = run(only_web_1(scene, balancing="weighted_random"))

    assert result.status is Status.WARNING
    assert reasons(result) == {"backend_undecided"}
    [finding] = result.failures
    assert finding.reason is Reason.BACKEND_UNDECIDED and finding.address is None
    assert finding.detail == (
        "web-2 not seen in 4 identified responses; with weighted_random this is expected 12.5 % "
        "of the time; use --requests 21 (requests_per_address) to decide (seen: web-1 4)"
    )
    assert result.rotation is not None and result.rotation.missing == ()
    assert result.duration_seconds < BOUND


def test_least_outstanding_requests_single_check_is_undecided_too(scene: Any) -> None:
    result = run(only_web_1(scene, balancing="least_outstanding_requests"))

    assert reasons(result) == {"backend_undecided"}
    assert "expected up to 63.3 % of the time; use --requests 51" in result.failures[0].detail
    assert result.duration_seconds < BOUND


def test_any_reports_no_missing_backend(scene: Any) -> None:
    result = run(only_web_1(scene, balancing="any"))

    assert result.status is Status.OK and result.failures == ()
    assert result.backend_counts == {"web-1": 4}


def test_single_check_with_the_advised_requests_decides_missing_on_the_command_line(scene: Any) -> None:
    s = scene(backends=("web-1",))
    t = s.target
    started = time.monotonic()
    done = probe_cli(
        "check", t["url"], "--resolver", t["resolvers"][0], "--ca-file", t["ca_file"],
        "--expect-network", "127.0.0.0/8", "--backend-header", "X-Backend",
        "--expect-backends", "web-1,web-2", "--balancing", "weighted_random",
        "--requests", "21", "--json",
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == ""
    [target] = json.loads(done.stdout)["targets"]
    [missing] = target["failures"]
    assert (missing["reason"], missing["severity"]) == ("backend_missing", "critical")
    assert missing["detail"] == (
        "backend web-2 answered none of the last 21 identified responses; with weighted_random a "
        "healthy backend goes unseen that long less than one in a million times (seen: web-1 21)"
    )
    balancing = target["balancing"]
    assert (balancing["algorithm"], balancing["cross_zone"]) == ("weighted_random", True)
    assert balancing["counted"]["missing"] == ["web-2"]
    assert balancing["counted"]["scopes"] == [
        {"address": None, "identified": 21, "cycles": 1, "missing_after": 21, "requests_to_decide": 21}
    ]
    assert any("balancing: weighted_random" in note for note in target["notes"])
    assert elapsed < 30


# --------------------------------------------------------------------------- the daemon


class RecordingStore(ResultStore):
    """A store that also keeps every result it was given."""

    def __init__(self, names: Sequence[str], now: float) -> None:
        super().__init__(names, now)
        self.log: list[TargetResult] = []

    def record(self, result: TargetResult) -> TargetState | None:
        self.log.append(result)
        return super().record(result)


def run_scheduler(target: dict[str, Any], cycles: int, limit: float) -> list[TargetResult]:
    """Run the daemon's scheduler until ``cycles`` are recorded (at most ``limit`` seconds)."""
    interval = target["interval"]
    timeouts = dict.fromkeys(("dns", "connect", "tls", "http", "deadline"), interval)
    store = RecordingStore([target["name"]], time.time())
    sched = Scheduler([make_plan(**target, timeouts=timeouts)], store, Notifier({}), random.Random(1))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        ends = time.monotonic() + limit
        while len(store.log) < cycles and time.monotonic() < ends:
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(main())
    return store.log[:cycles]


def test_daemon_counts_across_cycles_and_finds_a_missing_backend_at_the_stated_count(scene: Any) -> None:
    target = only_web_1(scene, name="rot", balancing="weighted_random", requests_per_address=8, interval=0.5)
    threshold = needed("weighted_random", 2, 8)
    assert threshold == 24  # docs/how-a-check-works.md's table: the third cycle of 8
    started = time.monotonic()
    log = run_scheduler(target, 4, limit=20)

    assert [r.status for r in log] == [Status.WARNING, Status.WARNING, Status.CRITICAL, Status.CRITICAL]
    assert [sorted(reasons(r)) for r in log] == [
        ["backend_undecided"],
        ["backend_undecided"],
        ["backend_missing"],
        ["backend_missing"],
    ]
    assert "it is reported missing after 24 identified responses without it" in log[1].failures[0].detail
    assert (
        log[2]
        .failures[0]
        .detail.startswith("backend web-2 answered none of the last 24 identified responses (3 cycles);")
    )
    assert log[3].rotation is not None and log[3].rotation.missing == ("web-2",)
    assert time.monotonic() - started < 20


def test_daemon_with_every_backend_answering_stays_ok(scene: Any) -> None:
    s = scene(backends=("web-1", "web-2"))
    target = {
        **s.target,
        "name": "rot-ok",
        "expect_backends": ["web-1", "web-2"],
        "balancing": "least_outstanding_requests",
        "interval": 0.3,
    }
    log = run_scheduler(target, 10, limit=20)

    assert len(log) == 10
    assert all(r.status is Status.OK and r.failures == () for r in log), [r.failures for r in log]
    assert log[-1].rotation is not None and [s.responses for s in log[-1].rotation.scopes] == [40]


# --------------------------------------------------------------------------- cross_zone: false


def zones(lab: Lab, dns: DnsServer, new_ip: Any, pki: Pki, tmp_path: Path, name: str) -> tuple[Any, Any]:
    """Two nodes of one name, each balancing over its own zone's backend only (a CLB, cross-zone off)."""
    web_1 = lab.start_backend("web-1", new_ip())
    web_2 = lab.start_backend("web-2", new_ip())
    leaf = pki.leaf(name)
    node_a = lab.start_node(new_ip(), cert=leaf, backends=[web_1], workdir=tmp_path)
    node_b = lab.start_node(new_ip(), node_a.port, cert=leaf, backends=[web_2], workdir=tmp_path)
    dns.set(name, ("A", node_a.address), ("A", node_b.address))
    return node_a, node_b


def test_cross_zone_off_one_backend_per_address_is_ok_and_shown_per_address(
    lab: Lab, dns: DnsServer, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path
) -> None:
    name = "clb-zones.corp.example"
    node_a, node_b = zones(lab, dns, new_ip, pki, tmp_path, name)
    target = {
        "url": f"https://{name}:{node_a.port}/",
        "resolvers": [dns.where],
        "expect_networks": ["127.0.0.0/8"],
        "ca_file": str(ca_file),
        "backend": {"header": "X-Backend"},
        "expect_backends": ["web-1", "web-2"],
        "balancing": "least_outstanding_requests",
        "cross_zone": False,
    }
    config = tmp_path / "clb.yaml"
    config.write_text(yaml.safe_dump({"targets": [target]}))
    done = probe_cli("check", "--config", str(config), "--color", "never")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"    {node_a.address}: web-1 4\n" in done.stdout
    assert f"    {node_b.address}: web-2 4\n" in done.stdout
    assert "cross_zone: false: each address reaches only its own zone's backends" in done.stdout
    # The same with round robin: the per-address sets are disjoint, and that is expected.
    result = run({**target, "balancing": "round_robin"})
    assert result.status is Status.OK, result.failures


def test_cross_zone_off_a_backend_missing_at_every_address_is_reported(
    lab: Lab, dns: DnsServer, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path
) -> None:
    name = "clb-zone-down.corp.example"
    web_1 = lab.start_backend("web-1", new_ip())
    leaf = pki.leaf(name)
    # Zone B's instance is gone; its node sends to zone A's (as if cross-zone came on).
    node_a = lab.start_node(new_ip(), cert=leaf, backends=[web_1], workdir=tmp_path)
    node_b = lab.start_node(new_ip(), node_a.port, cert=leaf, backends=[web_1], workdir=tmp_path)
    dns.set(name, ("A", node_a.address), ("A", node_b.address))
    target = {
        "name": "clb-down",
        "url": f"https://{name}:{node_a.port}/",
        "resolvers": [dns.where],
        "expect_networks": ["127.0.0.0/8"],
        "ca_file": str(ca_file),
        "backend": {"header": "X-Backend"},
        "expect_backends": ["web-1", "web-2"],
        "cross_zone": False,
    }
    # Round robin: missing at once.
    result = run(target)
    assert reasons(result) == {"backend_missing"}
    # Weighted random, counted per address in the daemon: 23 responses per address with 4 a
    # cycle is the sixth cycle.
    assert needed("weighted_random", 2, 4) == 23
    log = run_scheduler({**target, "balancing": "weighted_random", "interval": 0.3}, 6, limit=20)
    assert [sorted(reasons(r)) for r in log] == [["backend_undecided"]] * 5 + [["backend_missing"]]
    assert "(cross_zone: false: at no address)" in log[-1].failures[0].detail


# --------------------------------------------------------------------------- --watch


def test_watch_counts_across_rounds(scene: Any, tmp_path: Path) -> None:
    s = scene(backends=("web-1",))
    t = s.target
    started = time.monotonic()
    done = probe_cli(
        "check", t["url"], "--resolver", t["resolvers"][0], "--ca-file", t["ca_file"],
        "--expect-network", "127.0.0.0/8", "--backend-header", "X-Backend",
        "--expect-backends", "web-1,web-2", "--balancing", "weighted_random", "--requests", "8",
        "--watch", "--every", "0.1", "--until", "stable", "--stable-rounds", "3", "--json",
        "--max-time", "25",
    )  # fmt: skip

    assert done.returncode == 2, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    changes = [line for line in lines if line["type"] == "change" and line["address"] is None]
    # Round 1: undecided (8 responses); round 3: 24 without web-2, missing; then stable.
    assert [(c["round"], c["new"], c["reasons"]) for c in changes] == [
        (1, "warning", ["backend_undecided"]),
        (3, "critical", ["backend_missing"]),
    ]
    summary = lines[-1]
    assert (summary["type"], summary["status"], summary["rounds"]) == ("summary", "critical", 5)
    assert time.monotonic() - started < 30


def test_a_cycle_without_addresses_keeps_counting_and_does_not_crash(scene: Any, dns: DnsServer) -> None:
    """weighted_random, cross-zone on: a cycle whose DNS gives no address to probe (NXDOMAIN)
    is the DNS finding, not a crash in the rotation count; the memory survives it, so the
    count goes on when the name resolves again."""
    s = scene(backends=("web-1",))
    target = {**s.target, "expect_backends": ["web-1", "web-2"], "balancing": "weighted_random"}
    plan = make_plan(**target, requests_per_address=8)

    async def cycles() -> list[TargetResult]:
        from probe.engine.cycle import run_cycle

        first = await run_cycle(plan)
        dns.remove(s.hostname)
        gone = await run_cycle(plan, memory=first.rotation)
        dns.set(s.hostname, *[("A", n.address) for n in s.nodes])
        back = await run_cycle(plan, memory=gone.rotation)
        return [first, gone, back]

    first, gone, back = asyncio.run(cycles())
    assert reasons(first) == {"backend_undecided"}
    assert reasons(gone) == {"dns_nxdomain"}, gone.failures
    assert gone.status is Status.CRITICAL
    assert gone.rotation is not None and gone.rotation.scopes[0].responses == 8
    # Counting went on: 16 responses without web-2 over the two cycles that had some.
    assert back.rotation is not None and back.rotation.runs("web-2")[0][1] == 16
    assert reasons(back) == {"backend_undecided"}
    assert all(r.duration_seconds < BOUND for r in (first, gone, back))
