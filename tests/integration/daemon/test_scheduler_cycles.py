"""The scheduler running real cycles on the real clock, each failing fast at a silent resolver.

When each cycle runs is asserted exactly in tests/unit/daemon/test_scheduler.py (virtual time,
stand-in cycles). Here the real ``run_cycle`` runs: the checks are what no load can change
(which failure ends a cycle, what reaches the store), and waits end on what happened, not on
the clock, with limits far above what the work takes.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator

import pytest

from probe.daemon.scheduler import STOP_GRACE, Scheduler
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore
from probe.engine.cycle import TargetPlan
from probe.model.reasons import Reason, Status
from tests.support.helpers import make_plan


@pytest.fixture(scope="module")
def resolver() -> Iterator[str]:
    """A loopback UDP port nobody answers on: every cycle ends in dns_timeout after 0.1 s.

    The port is bound (and never read) while the tests run: a closed port would be refused
    at once (ICMP port unreachable → dns_error), not silent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{silent.getsockname()[1]}"


def plan(name: str, resolver: str) -> TargetPlan:
    """Checked every 0.5 s; the DNS timeout (0.1 s) ends a cycle long before its 0.4 s deadline."""
    return make_plan(
        name=name,
        url=f"https://{name}.corp.example/",
        resolvers=[resolver],
        expect_networks=["127.0.0.0/8"],
        interval=0.5,
        timeouts={"dns": 0.1, "connect": 0.1, "tls": 0.1, "http": 0.1, "deadline": 0.4},
    )


def test_real_cycles_reach_the_store_and_stop_without_the_grace(resolver: str) -> None:
    store = ResultStore(["a", "b"], time.time())
    sched = Scheduler([plan("a", resolver), plan("b", resolver)], store, Notifier({}), random.Random(7))

    async def main() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        async with asyncio.timeout(60):  # two cycles each take about 1 s
            while min((s.cycles for s in store.snapshot().targets.values()), default=0) < 2:
                await asyncio.sleep(0.02)
        stop.set()
        stopped = time.monotonic()
        await task
        return time.monotonic() - stopped

    stop_took = asyncio.run(main())
    snapshot = store.snapshot()
    assert snapshot.ready and set(snapshot.targets) == {"a", "b"}
    for name in ("a", "b"):
        last = snapshot.targets[name].result
        assert last.target.name == name and snapshot.targets[name].cycles >= 2
        # The 0.1 s DNS timeout ended it, not the 0.4 s deadline (timers fire in order, load or not).
        assert last.status is Status.CRITICAL and last.reasons == (Reason.DNS_TIMEOUT,)
    # A cycle still running at the stop ends by itself (0.1 s): none waits out the grace.
    assert stop_took < STOP_GRACE
