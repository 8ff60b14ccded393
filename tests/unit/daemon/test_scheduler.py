"""The scheduler: status lines, and its loops on virtual time with stand-in cycles."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.daemon import scheduler as scheduler_module
from probe.daemon.scheduler import Scheduler, status_line
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore, Snapshot, TargetState, accumulate
from probe.model.reasons import Reason
from probe.model.results import Failure, TargetResult
from probe.stages.plan import TargetPlan
from tests.support import virtual_time
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
    scheduler = Scheduler([plan(n) for n in names], store, inbox)
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
#
# The loops run on virtual time (tests.support.virtual_time): every sleep ends exactly when it
# should, so the tests below assert when each cycle ran, not a range that load could break.
# run_cycle is replaced by Cycles, which takes a set time and ends in dns_timeout; the real
# cycles are driven through the scheduler in tests/integration/daemon/test_scheduler_cycles.py.


class Cycles:
    """Stands in for ``run_cycle``: a cycle takes ``seconds`` of loop time and ends in dns_timeout.

    Keeps, per target, how many cycles ran at once at most and the interval each was given.
    """

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds
        self.active: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.intervals: list[float | None] = []

    async def __call__(
        self, plan: TargetPlan, memory: object = None, interval: float | None = None
    ) -> TargetResult:
        name = plan.target.name
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.intervals.append(interval)
        self.active[name] += 1
        self.most[name] = max(self.most[name], self.active[name])
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.active[name] -= 1
        return result(name, Reason.DNS_TIMEOUT, started=NOW + started, duration=loop.time() - started)


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> Cycles:
    fake = Cycles()
    monkeypatch.setattr(scheduler_module, "run_cycle", fake)
    return fake


def plan(name: str, interval: float = INTERVAL) -> TargetPlan:
    """A target checked every ``interval`` s, its deadline the interval or 0.4 s (the watchdog's measure)."""
    return make_plan(
        name=name,
        url=f"https://{name}.corp.example/",
        resolvers=["127.0.0.1:53"],  # never asked: the cycles are Cycles
        interval=interval,
        timeouts={"dns": 0.1, "connect": 0.1, "tls": 0.1, "http": 0.1, "deadline": min(0.4, interval)},
    )


@dataclass
class Recorded:
    at: float  # loop time when recorded
    result: TargetResult


class RecordingStore(ResultStore):
    """A store that also keeps every result it was given, with when it got it."""

    def __init__(self, names: Sequence[str], now: float) -> None:
        super().__init__(names, now)
        self.log: list[Recorded] = []

    def record(self, result: TargetResult) -> TargetState | None:
        self.log.append(Recorded(asyncio.get_running_loop().time(), result))
        return super().record(result)

    def of(self, name: str) -> list[Recorded]:
        return [r for r in self.log if r.result.target.name == name]

    def times(self, name: str) -> list[float]:
        """When each cycle of ``name`` was recorded (loop time, seconds from the start)."""
        return [r.at for r in self.of(name)]


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
    """Run the scheduler until ``seconds`` of loop time (calling ``during`` meanwhile).

    Returns:
        How long stopping took (loop seconds).
    """

    async def read(box: Inbox) -> None:
        while True:
            box.drain()
            await asyncio.sleep(0.02)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        reader = asyncio.create_task(read(inbox)) if inbox is not None else None
        if during is not None:
            await during(sched)
        await asyncio.sleep(seconds - loop.time())
        stop.set()
        stopped = loop.time()
        await task
        took = loop.time() - stopped
        if reader is not None:
            reader.cancel()
            inbox.drain()  # type: ignore[union-attr]
        return took

    return virtual_time.run(main())


def offsets(seed: int, count: int, interval: float = INTERVAL) -> list[float]:
    """The phase offsets ``random.Random(seed)`` gives ``count`` targets."""
    rng = random.Random(seed)
    return [rng.uniform(0, interval) for _ in range(count)]


def test_cycles_are_recorded_an_interval_apart_and_never_overlap(cycles: Cycles) -> None:
    store = RecordingStore(["a", "b"], NOW)
    sched = Scheduler([plan("a"), plan("b")], store, Notifier({}), random.Random(7))
    assert sched.targets == ("a", "b")
    stop_took = run(sched, 1.5)
    snapshot = store.snapshot()
    assert snapshot.ready
    # Each target starts at its random phase offset, then once per interval; a cycle takes 0.1 s.
    for name, offset in zip(("a", "b"), offsets(7, 2), strict=True):
        assert 0 < offset < INTERVAL
        assert store.times(name) == pytest.approx([offset + 0.1, offset + 0.6, offset + 1.1])
        assert snapshot.targets[name].cycles == 3
        assert snapshot.targets[name].result is store.of(name)[-1].result
    assert cycles.most == {"a": 1, "b": 1}
    assert cycles.intervals == [INTERVAL] * 6  # for probe_interval_seconds
    assert stop_took == 0  # stopped between cycles: nothing to wait for


def test_a_slow_cycle_delays_the_next_one_instead_of_overlapping(cycles: Cycles) -> None:
    cycles.seconds = 0.25  # longer than the 0.1 s interval
    store = RecordingStore(["a"], NOW)
    sched = Scheduler([plan("a", interval=0.1)], store, Notifier({}), Fixed())
    stop_took = run(sched, 0.9)
    assert cycles.most == {"a": 1}
    # Back to back: each starts when the one before ends, not 0.1 s after the one before started.
    assert store.times("a") == pytest.approx([0.25, 0.5, 0.75])
    assert stop_took == pytest.approx(0.1)  # the cycle started at 0.75 was let finish


def test_apply_removes_adds_and_leaves_unchanged_targets_running(cycles: Cycles) -> None:
    store = RecordingStore(["a", "b"], NOW)
    sched = Scheduler([plan("a", 0.3), plan("b", 0.3)], store, Notifier({}), Fixed())
    seen: dict[str, Snapshot] = {}
    # Plans prepared afresh, as a reload does: equal configuration, new objects.
    new_plans = [plan("a", 0.3), plan("c", 0.3)]

    async def reload(s: Scheduler) -> None:
        await asyncio.sleep(0.45)  # between the cycles at 0.3 and 0.6
        await s.apply(new_plans)
        seen["after"] = store.snapshot()

    run(sched, 1.12, reload)
    after = seen["after"]
    assert after.configured == ("a", "c")
    assert "b" not in after.targets
    assert sched.targets == ("a", "c")
    # Nothing of b is recorded after the reload; c starts at once (offset 0): cycles at 0.45, 0.75
    # (the one at 1.05 is still running at the stop).
    assert store.times("b") == pytest.approx([0.1, 0.4])
    assert store.times("c") == pytest.approx([0.55, 0.85])
    final = store.snapshot()
    assert final.configured == ("a", "c") and set(final.targets) == {"a", "c"}
    # a was not restarted (a restart would start a cycle at the reload, 0.15 s after the last):
    # cycles at 0, 0.3, 0.6 and 0.9 s, and its count kept growing from before.
    assert store.times("a") == pytest.approx([0.1, 0.4, 0.7, 1.0])
    assert final.targets["a"].cycles == 4


def test_apply_restarts_a_changed_target(cycles: Cycles) -> None:
    store = RecordingStore(["a"], NOW)
    sched = Scheduler([plan("a", 0.3)], store, Notifier({}), Fixed())
    changed = [plan("a", interval=0.4)]

    async def reload(s: Scheduler) -> None:
        await asyncio.sleep(0.45)
        await s.apply(changed)

    run(sched, 1.1, reload)
    # Every 0.3 s from 0; from the reload at 0.45 a new loop starts at once (offset 0), then
    # waits 0.4 s: cycles at 0.45 and 0.85.
    assert store.times("a") == pytest.approx([0.1, 0.4, 0.55, 0.95])
    assert cycles.intervals == [0.3, 0.3, 0.4, 0.4]


def test_watchdog_pings_and_status_reach_the_notifier(cycles: Cycles, inbox: Inbox) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": inbox.path, "WATCHDOG_USEC": "200000"})
    store = ResultStore(["a", "b"], NOW)
    sched = Scheduler([plan("a"), plan("b")], store, notifier, random.Random(3))
    first_a, first_b = offsets(3, 2)
    assert first_a + 0.1 < first_b  # a's first result comes first
    run(sched, 0.75, inbox=inbox)
    notifier.close()
    messages = inbox.messages
    assert messages.count("WATCHDOG=1") == 8, messages  # at 0, 0.1 … 0.7 s (half the watchdog period)
    # Sent only on change: a's second result (critical again) sends nothing.
    assert [m for m in messages if m != "WATCHDOG=1"] == [
        "STATUS=2 targets: 1 critical, 1 waiting for a first cycle (a: dns_timeout)",
        "STATUS=2 targets: 2 critical (a: dns_timeout)",
    ]


def test_no_watchdog_pings_without_watchdog_usec(cycles: Cycles, inbox: Inbox) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": inbox.path})
    store = ResultStore(["a"], NOW)
    sched = Scheduler([plan("a")], store, notifier, Fixed())
    run(sched, 0.3, inbox=inbox)
    notifier.close()
    assert inbox.messages == ["STATUS=1 target: 1 critical (a: dns_timeout)"]


def test_no_watchdog_ping_while_a_cycle_is_stuck(
    cycles: Cycles, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    cycles.seconds = 60
    monkeypatch.setattr(scheduler_module, "BACKSTOP_GRACE", 0.0)
    monkeypatch.setattr(scheduler_module, "STUCK_AFTER", 0.12)
    monkeypatch.setattr(scheduler_module, "STOP_GRACE", 0.2)
    notifier = Notifier({"NOTIFY_SOCKET": inbox.path, "WATCHDOG_USEC": "100000"})
    sched = Scheduler([plan("a", interval=0.1)], ResultStore(["a"], NOW), notifier, Fixed())
    # Stuck after deadline 0.1 + grace 0 + 0.12 = 0.22 s: pings every 0.05 s until then (at 0,
    # 0.05 … 0.2), none after (12 by 0.6 s if it went on pinging).
    stop_took = run(sched, 0.6, inbox=inbox)
    notifier.close()
    assert inbox.messages == ["WATCHDOG=1"] * 5
    assert stop_took == pytest.approx(0.2)  # the stuck cycle gets STOP_GRACE to finish, then is cancelled


def test_between_cycles_only_the_current_state_of_each_target_is_alive(cycles: Cycles) -> None:
    # The loop keeps the rotation memory across its sleep, never the previous state: that
    # would keep the previous result and its metrics text alive beside the current ones.
    store = ResultStore(["a", "b"], NOW)
    sched = Scheduler([plan("a"), plan("b")], store, Notifier({}), Fixed())
    alive: list[int] = []

    async def count_states(s: Scheduler) -> None:
        await asyncio.sleep(0.65)  # both loops asleep after their second cycle (0.5 to 0.6 s)
        assert [st.cycles for st in store.snapshot().targets.values()] == [2, 2]
        del s
        gc.collect()
        alive.append(sum(type(o) is TargetState for o in gc.get_objects()))

    run(sched, 1.4, count_states)
    assert alive == [2]
