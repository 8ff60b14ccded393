"""End to end: rotation judged for HAProxy's ``balance random`` and ``balance leastconn``.

Real dnsmasq answers www.corp.example (and the load balancer's own name) with
127.0.30.1 and 127.0.30.2; a real HAProxy terminates TLS there and balances over lab
backends on 127.0.32.x. The daemon's evaluation path is driven as the scheduler drives
it: one cycle after another in one event loop, each handed the previous result's
rotation memory. A healthy pool must not flap over 30 cycles; a really missing backend
(``disabled`` in HAProxy, as a deregistered target) must be reported within the stated
number of identified responses.

The Classic Load Balancer scene: cross-zone load balancing off, so each address (one
HAProxy frontend per "zone") has its own backend section, ``balance leastconn``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probe.engine.cycle import run_cycle
from probe.engine.plan import close_plans
from probe.judge.balancing import needed
from probe.lab import Backend, Lab
from probe.model.reasons import Status
from probe.model.results import TargetResult
from probe.stages.plan import TargetPlan
from tests.e2e._procs import Process, haproxy_head, start_haproxy
from tests.e2e.conftest import ALB_NAME, HOSTNAME, LB_ADDRESSES, LB_NETWORK, Binaries, Dnsmasq, E2ePki
from tests.support.helpers import make_plan, reasons

pytestmark = pytest.mark.e2e

BACKEND_ADDRESSES = {"web-1": "127.0.32.1", "web-2": "127.0.32.2", "web-3": "127.0.32.3"}
CYCLES = 30
TIMEOUTS = {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 5}


@dataclass
class Haproxy:
    port: int
    backends: dict[str, Backend]
    process: Process


def _servers(backends: dict[str, Backend], names: tuple[str, ...], disabled: tuple[str, ...]) -> str:
    return "\n".join(
        f"    server {n} {backends[n].address}:{backends[n].port}" + (" disabled" if n in disabled else "")
        for n in names
    )


def one_pool(
    port: int, pem: Path, backends: dict[str, Backend], balance: str, disabled: tuple[str, ...]
) -> str:
    """Both addresses in one frontend, one backend section (an ALB with cross-zone on)."""
    binds = "\n".join(f"    bind {a}:{port} ssl crt {pem} alpn h2,http/1.1" for a in LB_ADDRESSES)
    return f"""{haproxy_head()}
frontend www
{binds}
    default_backend web

backend web
    balance {balance}
{_servers(backends, tuple(backends), disabled)}
"""


def zones(
    port: int, pem: Path, backends: dict[str, Backend], zone_b: tuple[str, ...], disabled: tuple[str, ...]
) -> str:
    """A Classic Load Balancer with cross-zone off: one frontend and one pool per zone."""
    zone_a, address_b = LB_ADDRESSES
    return f"""{haproxy_head()}
frontend zone-a
    bind {zone_a}:{port} ssl crt {pem} alpn h2,http/1.1
    default_backend pool-a

frontend zone-b
    bind {address_b}:{port} ssl crt {pem} alpn h2,http/1.1
    default_backend pool-b

backend pool-a
    balance leastconn
{_servers(backends, ("web-1",), disabled)}

backend pool-b
    balance leastconn
{_servers(backends, zone_b, disabled)}
"""


@pytest.fixture
def haproxy(binaries: Binaries, e2e_pki: E2ePki, tmp_path: Path) -> Iterator[Any]:
    """``haproxy(names, render)``: lab backends ``names`` behind HAProxy, configured by ``render``."""
    with Lab() as lab:
        started: list[Process] = []

        def make(names: tuple[str, ...], render: Any) -> Haproxy:
            backends = {n: lab.start_backend(n, BACKEND_ADDRESSES[n]) for n in names}

            process, port = start_haproxy(
                binaries.haproxy,
                lambda port: render(port, e2e_pki.haproxy_pem, backends),
                LB_ADDRESSES,
                tmp_path,
            )
            started.append(process)
            return Haproxy(port, backends, process)

        try:
            yield make
        finally:
            for process in started:
                process.stop()


def target_plan(lb: Haproxy, dns: Dnsmasq, pki: E2ePki, **fields: Any) -> TargetPlan:
    return make_plan(
        name="www",
        url=f"https://{HOSTNAME}:{lb.port}/",
        resolvers=[dns.where],
        ca_file=str(pki.ca_file),
        expect_networks=[LB_NETWORK],
        expect_same_addresses_as=ALB_NAME,
        backend={"header": "X-Backend"},
        timeouts=TIMEOUTS,
        **fields,
    )


def daemon_cycles(plan: TargetPlan, count: int) -> list[TargetResult]:
    """``count`` cycles as the scheduler runs them: one loop, the memory handed on."""

    async def main() -> list[TargetResult]:
        results: list[TargetResult] = []
        try:
            for _ in range(count):
                memory = results[-1].rotation if results else None
                results.append(await run_cycle(plan, memory=memory))
        finally:
            await close_plans([plan])
        return results

    return asyncio.run(main())


def flips(results: list[TargetResult]) -> int:
    return sum(a.status is not b.status or reasons(a) != reasons(b) for a, b in itertools.pairwise(results))


def explain(results: list[TargetResult], lb: Haproxy) -> str:
    lines = [f"{r.status.value} {sorted(reasons(r))} {r.backend_counts}" for r in results]
    return "\n".join(lines) + "\n" + lb.process.describe()


@pytest.mark.parametrize("balance", ["random", "leastconn"])
def test_a_healthy_pool_does_not_flap_over_30_cycles(
    haproxy: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki, balance: str
) -> None:
    algorithm = {"random": "weighted_random", "leastconn": "least_outstanding_requests"}[balance]
    lb = haproxy(("web-1", "web-2"), lambda port, pem, b: one_pool(port, pem, b, balance, ()))
    plan = target_plan(lb, dnsmasq, e2e_pki, expect_backends=["web-1", "web-2"], balancing=algorithm)
    started = time.monotonic()
    results = daemon_cycles(plan, CYCLES)
    elapsed = time.monotonic() - started

    assert all("backend_missing" not in reasons(r) for r in results), explain(results, lb)
    # The first cycle may leave one backend unseen by chance (2 × 0.5^8 with random):
    # undecided, a warning; once both were seen nothing changes but for a real loss.
    assert all(r.status is Status.OK and r.failures == () for r in results[1:]), explain(results, lb)
    assert reasons(results[0]) <= {"backend_undecided"}
    assert flips(results) <= 1, explain(results, lb)
    memory = results[-1].rotation
    assert memory is not None and memory.missing == ()
    assert sum(s.responses for s in memory.scopes) == CYCLES * 8
    assert {name for r in results for name in r.backend_counts} == {"web-1", "web-2"}
    assert lb.backends["web-1"].requests + lb.backends["web-2"].requests == CYCLES * 8
    assert elapsed < 60


def test_random_a_really_missing_backend_is_found_at_the_stated_count(
    haproxy: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    lb = haproxy(("web-1", "web-2"), lambda port, pem, b: one_pool(port, pem, b, "random", ("web-2",)))
    plan = target_plan(lb, dnsmasq, e2e_pki, expect_backends=["web-1", "web-2"], balancing="weighted_random")
    threshold = needed("weighted_random", 2, 8)  # 2 addresses × 4 requests a cycle
    stated = -(-threshold // 8)
    started = time.monotonic()
    results = daemon_cycles(plan, stated + 1)

    assert (threshold, stated) == (24, 3)  # the table in docs/how-a-check-works.md
    assert [r.status for r in results] == [Status.WARNING] * (stated - 1) + [Status.CRITICAL] * 2, explain(
        results, lb
    )
    assert [sorted(reasons(r)) for r in results[: stated - 1]] == [["backend_undecided"]] * (stated - 1)
    missing = results[stated - 1].failures
    assert [f.reason.value for f in missing] == ["backend_missing"]
    assert missing[0].detail.startswith(
        "backend web-2 answered none of the last 24 identified responses (3 cycles);"
    )
    assert lb.backends["web-2"].requests == 0
    assert time.monotonic() - started < 30


def test_classic_load_balancer_cross_zone_off_leastconn(
    haproxy: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    # Zone A's node reaches web-1 only; zone B's reaches web-2 and web-3. With
    # cross_zone: false each address's own set is expected: ok over 30 cycles.
    lb = haproxy(
        ("web-1", "web-2", "web-3"), lambda port, pem, b: zones(port, pem, b, ("web-2", "web-3"), ())
    )
    fields = {
        "expect_backends": ["web-1", "web-2", "web-3"],
        "balancing": "least_outstanding_requests",
        "cross_zone": False,
    }
    results = daemon_cycles(target_plan(lb, dnsmasq, e2e_pki, **fields), CYCLES)

    assert all(r.status is Status.OK and r.failures == () for r in results[1:]), explain(results, lb)
    assert reasons(results[0]) <= {"backend_undecided"}
    a, b = (str(x) for x in (results[-1].addresses[0].address, results[-1].addresses[1].address))
    seen = {str(x.address): set() for x in results[-1].addresses}
    for r in results:
        for address in r.addresses:
            seen[str(address.address)].update(address.backend_counts)
    assert seen == {LB_ADDRESSES[0]: {"web-1"}, LB_ADDRESSES[1]: {"web-2", "web-3"}}
    memory = results[-1].rotation
    assert memory is not None and sorted(s.name for s in memory.scopes) == sorted([a, b])


def test_classic_load_balancer_a_backend_gone_from_every_zone_is_missing(
    haproxy: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    # web-3 is deregistered ("disabled"): zone B's node sends everything to web-2. It is
    # missing at both addresses, which the stated count of responses per address decides.
    lb = haproxy(
        ("web-1", "web-2", "web-3"), lambda port, pem, b: zones(port, pem, b, ("web-2", "web-3"), ("web-3",))
    )
    fields = {
        "expect_backends": ["web-1", "web-2", "web-3"],
        "balancing": "least_outstanding_requests",
        "cross_zone": False,
        "requests_per_address": 20,
    }
    threshold = needed("least_outstanding_requests", 3, 20)
    stated = -(-threshold // 20)
    started = time.monotonic()
    results = daemon_cycles(target_plan(lb, dnsmasq, e2e_pki, **fields), stated)

    assert (threshold, stated) == (90, 5)
    assert [sorted(reasons(r)) for r in results] == [["backend_undecided"]] * (stated - 1) + [
        ["backend_missing"]
    ], explain(results, lb)
    [missing] = results[-1].failures
    assert missing.detail.startswith("backend web-3 answered none of the last ")
    assert "(cross_zone: false: at no address)" in missing.detail
    assert results[-1].rotation is not None and results[-1].rotation.missing == ("web-3",)
    assert lb.backends["web-3"].requests == 0
    assert time.monotonic() - started < 60
