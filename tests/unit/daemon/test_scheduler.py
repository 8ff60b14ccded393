"""The scheduler: status lines, and real loops whose cycles fail fast at a silent resolver."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.daemon import scheduler as scheduler_module
from probe.daemon.scheduler import Scheduler, status_line
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore, Snapshot, TargetState, accumulate
from probe.engine.plan import TargetPlan
from probe.model.reasons import Reason, Status
from probe.model.results import Failure, TargetResult
from tests.support.builders import NOW, dns_result, target_result
from tests.support.helpers import make_plan

INTERVAL = 0.5


def result(name: str, *reasons: Reason, started: float = NOW, duration: float = 0.1) -> TargetResult:
    dns = dns_result(name=f"{name}.corp.example", resolver=None, rcode=None)
    failures = [Failure(r, r.summary) for r in reasons]
    return target_result(name, dns=dns, failures=failures, started=started, duration=duration)


def states(*results: TargetResult) -> list[TargetState]:
    return [accumulate(None, r) for r in results]


# --------------------------------------------------------------------------- status_line


def test_status_line_before_any_cycle() -> None:
    assert status_line([], 3) == "3 targets: 3 waiting for a first cycle"


def test_status_line_without_targets() -> None:
    assert status_line([], 0) == "0 targets: none probed yet"


def test_status_line_all_ok() -> None:
    assert status_line(states(result("www"), result("api")), 2) == "2 targets: 2 ok"


def test_status_line_names_the_worst_target_and_its_reasons() -> None:
    line = status_line(
        states(
            result("www"),
            result("api", Reason.CERT_EXPIRING_SOON),
            result("db", Reason.BACKEND_MISSING, Reason.BACKEND_IMBALANCE, Reason.BACKEND_MISSING),
            result("old"),
        ),
        4,
    )
    assert line == "4 targets: 2 ok, 1 warning, 1 critical (db: backend_missing,backend_imbalance)"


def test_status_line_with_warnings_only() -> None:
    line = status_line(states(result("www", Reason.BACKEND_UNEXPECTED), result("api")), 2)
    assert line == "2 targets: 1 ok, 1 warning (www: backend_unexpected)"


def test_status_line_first_of_equally_bad_targets() -> None:
    line = status_line(states(result("a", Reason.TCP_REFUSED), result("b", Reason.DNS_TIMEOUT)), 2)
    assert line == "2 targets: 2 critical (a: tcp_refused)"


def test_status_line_with_some_waiting() -> None:
    line = status_line(states(result("www", Reason.DNS_TIMEOUT)), 3)
    assert line == "3 targets: 1 critical, 2 waiting for a first cycle (www: dns_timeout)"


def test_status_line_is_at_most_200_characters() -> None:
    name = "t" * 128
    line = status_line(states(result(name, *Reason)), 1000)
    assert len(line) == 200
    assert line.startswith("1000 targets: 1 critical, 999 waiting for a first cycle (" + name)


def test_status_line_singular() -> None:
    assert status_line(states(result("www")), 1) == "1 target: 1 ok"


class StatusInbox(Notifier):
    """A notifier that keeps the status lines instead of sending them."""

    def __init__(self) -> None:
        super().__init__({})
        self.lines: list[str] = []

    def status(self, status: str) -> None:
        self.lines.append(status)


def test_status_line_follows_every_change_while_ok_cycles_skip_the_recount() -> None:
    # With every target ok, an ok cycle cannot change the line: the scheduler skips the
    # pass over every target (one per cycle, so O(targets^2) per interval otherwise).
    names = ["a", "b", "c"]
    store = ResultStore(names, NOW)
    inbox = StatusInbox()
    scheduler = Scheduler([plan(n, "127.0.0.1:53") for n in names], store, inbox)
    for cycle in (
        result("a"),
        result("b"),
        result("c"),
        result("a"),
        result("b", Reason.TCP_REFUSED),
        result("c"),
        result("b"),
        result("a"),
        result("c", Reason.BACKEND_UNEXPECTED),
        result("c"),
    ):
        scheduler._record(cycle)
        assert scheduler._status_line == status_line(store.snapshot().targets.values(), 3)

    assert inbox.lines == [
        "3 targets: 1 ok, 2 waiting for a first cycle",
        "3 targets: 2 ok, 1 waiting for a first cycle",
        "3 targets: 3 ok",
        "3 targets: 2 ok, 1 critical (b: tcp_refused)",
        "3 targets: 3 ok",
        "3 targets: 2 ok, 1 warning (c: backend_unexpected)",
        "3 targets: 3 ok",
    ]


# --------------------------------------------------------------------------- running


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def resolver() -> Iterator[str]:
    """A loopback UDP port nobody answers on: every cycle ends in dns_timeout after 0.1 s.

    The port is bound (and never read) while the tests run: a closed port would be refused
    at once (ICMP port unreachable → dns_error), not silent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{silent.getsockname()[1]}"


def plan(name: str, resolver: str, interval: float = INTERVAL) -> TargetPlan:
    return make_plan(
        name=name,
        url=f"https://{name}.corp.example/",
        resolvers=[resolver],
        expect_networks=["127.0.0.0/8"],
        interval=interval,
        timeouts={"dns": 0.1, "connect": 0.1, "tls": 0.1, "http": 0.1, "deadline": min(0.4, interval)},
    )


@dataclass
class Recorded:
    at: float  # time.monotonic() when recorded
    result: TargetResult


class RecordingStore(ResultStore):
    """A store that also keeps every result it was given, with when it got it."""

    def __init__(self, names: Sequence[str], now: float) -> None:
        super().__init__(names, now)
        self.log: list[Recorded] = []

    def record(self, result: TargetResult) -> TargetState | None:
        self.log.append(Recorded(time.monotonic(), result))
        return super().record(result)

    def of(self, name: str) -> list[Recorded]:
        return [r for r in self.log if r.result.target.name == name]


class Fixed(random.Random):
    """Phase offsets at the start of the interval, so restarts show as early cycles."""

    def uniform(self, a: float, b: float) -> float:
        return a


class Inbox:
    """A bound AF_UNIX datagram socket standing in for systemd, read while the loop runs.

    Reading as we go matters: the notifier's socket is non-blocking and Linux queues only
    ``net.unix.max_dgram_qlen`` (often 10) datagrams for a receiver.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Inbox]:
    box = Inbox(str(tmp_path / "notify"))
    try:
        yield box
    finally:
        box.sock.close()


def run(
    sched: Scheduler,
    seconds: float,
    during: Callable[[Scheduler], Awaitable[None]] | None = None,
    inbox: Inbox | None = None,
) -> float:
    """Run the scheduler for ``seconds`` (calling ``during`` meanwhile); returns the stop time."""

    async def read(box: Inbox) -> None:
        while True:
            box.drain()
            await asyncio.sleep(0.02)

    async def main() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        reader = asyncio.create_task(read(inbox)) if inbox is not None else None
        start = time.monotonic()
        if during is not None:
            await during(sched)
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - start)))
        stop.set()
        stopped = time.monotonic()
        await task
        took = time.monotonic() - stopped
        if reader is not None:
            reader.cancel()
            inbox.drain()  # type: ignore[union-attr]
        return took

    return asyncio.run(main())


def assert_spaced(records: list[Recorded], interval: float) -> None:
    """Cycles of one target never overlap and start an interval apart."""
    for before, after in itertools.pairwise(records):
        b, a = before.result, after.result
        assert a.started_timestamp >= b.started_timestamp + b.duration_seconds - 0.01
        assert a.started_timestamp - b.started_timestamp >= interval - 0.05, (b, a)


def test_cycles_are_recorded_an_interval_apart_and_never_overlap(resolver: str) -> None:
    store = RecordingStore(["a", "b"], NOW)
    sched = Scheduler([plan("a", resolver), plan("b", resolver)], store, Notifier({}), random.Random(7))
    assert sched.targets == ("a", "b")
    stop_took = run(sched, 1.5)
    snapshot = store.snapshot()
    assert snapshot.ready
    for name in ("a", "b"):
        records = store.of(name)
        # First cycle within the first interval, then one per interval: 2 or 3 in 1.5 s.
        assert 2 <= len(records) <= 3, records
        assert snapshot.targets[name].cycles == len(records)
        assert_spaced(records, INTERVAL)
        last = snapshot.targets[name].result
        assert last.status is Status.CRITICAL
        assert last.reasons == (Reason.DNS_TIMEOUT,)
        assert last.duration_seconds < 0.4
    assert stop_took < 0.5


def test_a_slow_cycle_delays_the_next_one_instead_of_overlapping(
    resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    active: dict[str, int] = {}
    most: dict[str, int] = {}

    async def slow_cycle(p: TargetPlan, memory: object = None, interval: float | None = None) -> TargetResult:
        name = p.target.name
        active[name] = active.get(name, 0) + 1
        most[name] = max(most.get(name, 0), active[name])
        started, start = time.time(), time.monotonic()
        try:
            await asyncio.sleep(0.25)  # longer than the 0.1 s interval
        finally:
            active[name] -= 1
        return result(name, started=started, duration=time.monotonic() - start)

    monkeypatch.setattr(scheduler_module, "run_cycle", slow_cycle)
    store = RecordingStore(["a"], NOW)
    sched = Scheduler([plan("a", resolver, interval=0.1)], store, Notifier({}), Fixed())
    run(sched, 1.0)
    records = store.of("a")
    assert most == {"a": 1}
    assert 3 <= len(records) <= 4, records
    assert_spaced(records, 0.25)


def test_apply_removes_adds_and_leaves_unchanged_targets_running(resolver: str) -> None:
    store = RecordingStore(["a", "b"], NOW)
    sched = Scheduler([plan("a", resolver, 0.3), plan("b", resolver, 0.3)], store, Notifier({}), Fixed())
    applied: dict[str, float] = {}
    seen: dict[str, Snapshot] = {}
    # Plans prepared afresh, as a reload does: equal configuration, new objects.
    new_plans = [plan("a", resolver, 0.3), plan("c", resolver, 0.3)]

    async def reload(s: Scheduler) -> None:
        await asyncio.sleep(0.45)  # between the cycles at 0.3 and 0.6
        await s.apply(new_plans)
        applied["at"] = time.monotonic()
        seen["after"] = store.snapshot()

    run(sched, 1.12, reload)
    after = seen["after"]
    assert after.configured == ("a", "c")
    assert "b" not in after.targets
    assert sched.targets == ("a", "c")
    # Nothing of b is recorded after the reload; c starts at once (offset 0).
    assert all(r.at <= applied["at"] for r in store.of("b"))
    assert store.of("c") and store.of("c")[0].at - applied["at"] < 0.3
    final = store.snapshot()
    assert final.configured == ("a", "c") and set(final.targets) == {"a", "c"}
    # a was not restarted: its cycles keep their spacing (a restart would start one at
    # the reload, 0.15 s after the last) and its count keeps growing from before.
    records = store.of("a")
    assert_spaced(records, 0.3)
    assert len(records) == 4  # at 0, 0.3, 0.6 and 0.9 s
    assert final.targets["a"].cycles == 4


def test_apply_restarts_a_changed_target(resolver: str) -> None:
    store = RecordingStore(["a"], NOW)
    sched = Scheduler([plan("a", resolver, 0.3)], store, Notifier({}), Fixed())
    applied: list[float] = []
    changed = [plan("a", resolver, interval=0.4)]

    async def reload(s: Scheduler) -> None:
        await asyncio.sleep(0.45)
        applied.append(time.monotonic())
        await s.apply(changed)

    run(sched, 1.1, reload)
    records = store.of("a")
    restarted = [r for r in records if r.at > applied[0]]
    # The new loop starts at once with offset 0 and then waits 0.4 s.
    assert len(restarted) == 2
    assert restarted[0].at - applied[0] < 0.2
    assert_spaced(restarted, 0.4)


def test_watchdog_pings_and_status_reach_the_notifier(resolver: str, inbox: Inbox) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": inbox.path, "WATCHDOG_USEC": "200000"})
    store = ResultStore(["a", "b"], NOW)
    sched = Scheduler([plan("a", resolver), plan("b", resolver)], store, notifier, random.Random(3))
    run(sched, 0.8, inbox=inbox)
    notifier.close()
    messages = inbox.messages
    pings = messages.count("WATCHDOG=1")
    assert 5 <= pings <= 10, messages  # every 0.1 s (half the watchdog period)
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert statuses, messages
    # Sent only on change; the last says both are critical.
    assert len(statuses) == len(set(statuses))
    assert statuses[-1] == "STATUS=" + status_line(store.snapshot().targets.values(), 2)
    assert statuses[-1].startswith("STATUS=2 targets: 2 critical (")
    assert set(messages) <= {"WATCHDOG=1", *statuses}


def test_no_watchdog_pings_without_watchdog_usec(resolver: str, inbox: Inbox) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": inbox.path})
    store = ResultStore(["a"], NOW)
    sched = Scheduler([plan("a", resolver)], store, notifier, Fixed())
    run(sched, 0.3, inbox=inbox)
    notifier.close()
    assert inbox.messages == ["STATUS=" + status_line(store.snapshot().targets.values(), 1)]
    assert inbox.messages[0].endswith(" 1 critical (a: dns_timeout)")


def test_no_watchdog_ping_while_a_cycle_is_stuck(
    resolver: str, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck_cycle(
        p: TargetPlan, memory: object = None, interval: float | None = None
    ) -> TargetResult:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    monkeypatch.setattr(scheduler_module, "run_cycle", stuck_cycle)
    monkeypatch.setattr(scheduler_module, "BACKSTOP_GRACE", 0.0)
    monkeypatch.setattr(scheduler_module, "STUCK_AFTER", 0.1)
    monkeypatch.setattr(scheduler_module, "STOP_GRACE", 0.2)
    notifier = Notifier({"NOTIFY_SOCKET": inbox.path, "WATCHDOG_USEC": "100000"})
    sched = Scheduler([plan("a", resolver, interval=0.1)], ResultStore(["a"], NOW), notifier, Fixed())
    # Stuck after deadline 0.1 + grace 0 + 0.1 = 0.2 s; pings every 0.05 s until then,
    # none in the 0.4 s after (12 if it went on pinging).
    stop_took = run(sched, 0.6, inbox=inbox)
    notifier.close()
    assert 2 <= inbox.messages.count("WATCHDOG=1") <= 7
    assert stop_took < 0.2 + 0.5  # the stuck cycle gets STOP_GRACE to finish, then is cancelled


def test_between_cycles_only_the_current_state_of_each_target_is_alive(resolver: str) -> None:
    # The loop keeps the rotation memory across its sleep, never the previous state: that
    # would keep the previous result and its metrics text alive beside the current ones.
    store = ResultStore(["a", "b"], NOW)
    sched = Scheduler([plan("a", resolver), plan("b", resolver)], store, Notifier({}), Fixed())
    alive: list[int] = []

    async def count_states(s: Scheduler) -> None:
        while min((st.cycles for st in store.snapshot().targets.values()), default=0) < 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # both loops asleep (cycles fail within 0.2 s of 0.5)
        del s
        gc.collect()
        alive.append(sum(type(o) is TargetState for o in gc.get_objects()))

    run(sched, 1.4, count_states)
    assert alive == [2]
