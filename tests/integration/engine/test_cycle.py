"""Whole cycles against loopback scenes: the ok path and cross-address findings."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from probe.engine import cycle
from probe.engine.plan import plan
from probe.lab import DemoLab, Pki
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from probe.stages import http as http_stage
from tests.support.helpers import reasons, run


def test_demo_ok_with_two_addresses_and_two_backends(demo: DemoLab) -> None:
    result = run(demo.target())

    assert result.status is Status.OK, result.failures
    assert result.failures == ()
    assert [str(a) for a in result.dns.probe_addresses] == list(demo.node_addresses)
    assert result.dns.alias is not None and result.dns.alias.matches
    assert result.backend_counts == {"web-1": 4, "web-2": 4}
    for address in result.addresses:
        assert address.status is Status.OK
        assert address.tls.verified
        assert address.tls.leaf is not None and address.tls.leaf.dns_names == (demo.hostname,)
        assert [c.common_name for c in address.tls.chain] == [demo.hostname, "probe demo Intermediate CA"]
        assert address.tls.verified_chain[-1].common_name == "probe demo Root CA"
        assert address.backend_counts == {"web-1": 2, "web-2": 2}
        assert [a.status_code for a in address.attempts] == [200, 200, 200, 200]
        assert all(a.phases.connect is not None and a.phases.tls is not None for a in address.attempts)


def test_missing_backend_by_name(scene: Any) -> None:
    s = scene(backends=("web-1", "web-2"))
    result = run({**s.target, "expect_backends": ["web-1", "web-2", "web-3"]})

    assert result.status is Status.CRITICAL
    missing = [f for f in result.failures if f.reason is Reason.BACKEND_MISSING]
    assert len(missing) == 1 and "web-3" in missing[0].detail


def test_missing_backend_by_count(scene: Any) -> None:
    s = scene(backends=("web-1",))
    result = run({**s.target, "expect_backends": 2})

    assert reasons(result) == {"backend_missing"}
    assert "2 backends expected, 1 answered" in result.failures[0].detail


def test_unexpected_backend_is_a_warning(scene: Any) -> None:
    s = scene(backends=("web-1", "web-2"))
    result = run({**s.target, "expect_backends": ["web-1"]})

    assert result.status is Status.WARNING
    assert reasons(result) == {"backend_unexpected"}


def test_backend_imbalance(scene: Any) -> None:
    s = scene(backends=("web-1", "web-2"), weights=(4, 1))
    result = run({**s.target, "expect_backends": ["web-1", "web-2"], "requests_per_address": 5})

    assert result.backend_counts == {"web-1": 4, "web-2": 1}
    assert result.status is Status.WARNING
    assert reasons(result) == {"backend_imbalance"}
    assert "web-2 answered 1 of 5 requests" in result.failures[0].detail


def test_round_robin_with_reused_connection_sticks_to_one_backend(scene: Any) -> None:
    s = scene(backends=("web-1", "web-2"))
    result = run({**s.target, "expect_backends": 2, "reuse_connections": True})

    # The lab balances per connection, so one kept-alive connection shows one backend.
    assert len(result.backend_counts) == 1
    assert reasons(result) == {"backend_missing"}


def test_certificate_differs_between_addresses(scene: Any, pki: Pki, lab: Any, new_ip: Any, dns: Any) -> None:
    s = scene(nodes=1)
    other = lab.start_node(new_ip(), s.port, cert=pki.leaf(s.hostname), backends=s.backends)
    try:
        dns.set(s.hostname, ("A", s.nodes[0].address), ("A", other.address))
        result = run(s.target)
    finally:
        lab.stop(other)

    assert result.status is Status.WARNING
    assert reasons(result) == {"cert_differs_between_addresses"}
    assert "2 different leaf certificates" in result.failures[0].detail


def test_expiring_soon_is_a_warning_with_the_date(scene: Any, pki: Pki) -> None:
    name = "soon.corp.example"
    s = scene(hostname=name, cert=pki.leaf(name, days=10))
    result = run({**s.target, "cert_expiry_warning_days": 30})

    assert result.status is Status.WARNING
    assert reasons(result) == {"cert_expiring_soon"}
    assert result.failures[0].address is not None
    assert "in 10 days" in result.failures[0].detail


def test_deadline_bounds_the_cycle(scene: Any, new_ip: Any, lab: Any, dns: Any) -> None:
    async def stall(reader: Any, writer: Any) -> None:
        await reader.read(1)  # never answers the ClientHello
        await __import__("asyncio").sleep(30)

    s = scene(handler=stall, backends=())
    # tls is unset, so it fits the 1 s deadline (an explicit tls: 10 would be refused); the
    # connect uses part of the deadline, so the deadline fires before the handshake timeout.
    target = {**s.target, "timeouts": {"dns": 1, "connect": 1, "http": 1, "deadline": 1}}
    target["interval"] = 30
    start = time.monotonic()
    result = run(target)
    elapsed = time.monotonic() - start

    assert reasons(result) == {"cycle_deadline_exceeded"}
    assert result.status is Status.CRITICAL
    assert elapsed < 1 + cycle.BACKSTOP_GRACE + 0.5


def test_internal_error_is_recorded_and_logged(
    demo: DemoLab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("injected bug")

    monkeypatch.setattr(http_stage, "judge_body", broken)
    result = run(demo.target())

    assert result.status is Status.CRITICAL
    assert Reason.INTERNAL_ERROR in {f.reason for f in result.failures}
    assert "ZeroDivisionError: injected bug" in result.failures[-1].detail
    assert "Traceback" in caplog.text and "injected bug" in caplog.text


def test_a_bug_in_the_verdict_keeps_the_stage_facts_and_never_raises(
    demo: DemoLab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("injected verdict bug")

    monkeypatch.setattr(cycle, "judge_cycle", broken)
    result = run(demo.target())

    assert result.status is Status.CRITICAL
    assert [f.reason for f in result.failures] == [Reason.INTERNAL_ERROR]
    assert "ZeroDivisionError: injected verdict bug" in result.failures[0].detail
    assert len(result.addresses) == 2 and all(a.tls.verified for a in result.addresses)
    assert "Traceback" in caplog.text


def test_expired_leaf_keeps_its_dates_and_names(scene: Any, pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    name = "expired.corp.example"
    s = scene(
        hostname=name,
        cert=pki.leaf(name, not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=2)),
    )
    result = run(s.target)

    assert reasons(result) == {"cert_expired"}
    leaf = result.addresses[0].tls.leaf
    assert leaf is not None and leaf.dns_names == (name,)
    assert leaf.not_after_timestamp == pytest.approx((now - dt.timedelta(days=2)).timestamp(), abs=1)
    assert result.addresses[0].attempts == ()  # no HTTP to a server whose certificate failed


def test_a_cycle_after_an_early_lookup_leaves_the_pause_out_of_its_duration_and_deadline(
    demo: DemoLab,
) -> None:
    """``probe check`` resolves, then imports the TLS and HTTP stages, then probes.

    The pause (1.5 s here, longer than the 1 s deadline) stands for the imports: it is in
    neither the cycle's duration nor its deadline, and the start time is the lookup's.
    """
    import asyncio

    from probe.config.load import build_config
    from probe.stages import dns as dns_stage

    config = build_config(
        {"targets": [demo.target(timeouts={"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 1})]}
    )
    (target_plan,) = plan(config)
    pause = 1.5

    async def early_then_cycle() -> tuple[float, float, TargetResult]:
        before = time.time()
        lookup = dns_stage.resolve_early(dns_stage.DnsPlan.of(target_plan.target, target_plan.resolvers))
        assert lookup.task is not None
        await lookup.task
        await asyncio.sleep(pause)
        start = time.monotonic()
        result = await cycle.run_cycle(target_plan, early=lookup)
        return before, time.monotonic() - start, result

    before, elapsed, result = asyncio.run(early_then_cycle())

    assert result.status == Status.OK and result.failures == ()
    assert len(result.addresses) == 2 and all(a.attempts and a.status == Status.OK for a in result.addresses)
    assert before <= result.started_timestamp < before + 0.5  # the lookup's start
    assert 0 < result.dns.lookup_seconds < 1
    # DNS plus probing, not the pause: at most the lookup and the cycle itself.
    assert result.duration_seconds < elapsed + result.dns.lookup_seconds + 0.05
    assert result.duration_seconds < pause
    assert elapsed < 1 + cycle.BACKSTOP_GRACE
