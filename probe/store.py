"""The daemon's state: the latest result of each target plus tallies across cycles.

One writer (the scheduler, on the event loop) and many readers (scrape threads). Every
state is immutable; :meth:`ResultStore.record` builds the next snapshot and swaps it in
under a lock held only for the swap, so a scrape never waits on a probe.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from probe.results import TargetResult

#: Upper bounds (seconds) of the phase latency histograms.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: A backend series not seen for this many cycles of its target is dropped.
STALE_AFTER_CYCLES = 10

#: At most this many (address, backend) series per target; the least recently seen go first.
MAX_BACKEND_SERIES = 64


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative histogram: counts per upper bound in ``BUCKETS``, plus sum and count.

    ``counts[i]`` is the number of observations ``<= BUCKETS[i]`` (cumulative, as in the
    Prometheus exposition); observations above the last bound appear only in ``count``.
    """

    counts: tuple[int, ...] = (0,) * len(BUCKETS)
    total: float = 0.0
    count: int = 0

    def observe(self, values: Iterable[float]) -> Histogram:
        """A new histogram with ``values`` (seconds) added."""
        counts = list(self.counts)
        total, count = self.total, self.count
        for value in values:
            for index in range(bisect.bisect_left(BUCKETS, value), len(BUCKETS)):
                counts[index] += 1
            total += value
            count += 1
        return Histogram(tuple(counts), total, count)


@dataclass(frozen=True, slots=True)
class BackendTally:
    """Responses of one backend at one address since the series appeared."""

    requests: int
    last_cycle: int


@dataclass(frozen=True, slots=True)
class TargetState:
    """Everything the metrics show about one target.

    Attributes:
        result: the last completed cycle.
        cycles: cycles completed since the target was (re)configured.
        failures_total: per reason code, the cycles in which it was found.
        backends: per ``(address, backend)``, responses counted across cycles.
        phases: per phase (``resolve``, ``connect``, ``tls``, ``processing``,
            ``transfer``), the latency histogram across cycles.
    """

    result: TargetResult
    cycles: int
    failures_total: Mapping[str, int]
    backends: Mapping[tuple[str, str], BackendTally]
    phases: Mapping[str, Histogram]


def accumulate(previous: TargetState | None, result: TargetResult) -> TargetState:
    """The state after ``result``, given the state before it (pure).

    Backend series not seen for ``STALE_AFTER_CYCLES`` cycles are dropped, and at most
    ``MAX_BACKEND_SERIES`` are kept, so a server inventing backend names cannot grow the
    metrics without bound.
    """
    cycles = previous.cycles + 1 if previous else 1
    failures = dict(previous.failures_total) if previous else {}
    for reason in result.reasons:
        failures[reason.value] = failures.get(reason.value, 0) + 1
    backends = dict(previous.backends) if previous else {}
    for address in result.addresses:
        for backend, count in address.backend_counts.items():
            key = (str(address.address), backend)
            before = backends.get(key)
            backends[key] = BackendTally((before.requests if before else 0) + count, cycles)
    fresh = {k: v for k, v in backends.items() if cycles - v.last_cycle < STALE_AFTER_CYCLES}
    if len(fresh) > MAX_BACKEND_SERIES:
        newest = sorted(fresh.items(), key=lambda item: item[1].last_cycle, reverse=True)
        fresh = dict(newest[:MAX_BACKEND_SERIES])
    phases = dict(previous.phases) if previous else {}
    for phase, values in _phase_values(result).items():
        phases[phase] = phases.get(phase, Histogram()).observe(values)
    return TargetState(
        result=result,
        cycles=cycles,
        failures_total=MappingProxyType(failures),
        backends=MappingProxyType(fresh),
        phases=MappingProxyType(phases),
    )


def _phase_values(result: TargetResult) -> dict[str, list[float]]:
    # A pinned name is not looked up: no resolve phase to observe.
    values: dict[str, list[float]] = {} if result.dns.pinned else {"resolve": [result.dns.lookup_seconds]}
    for address in result.addresses:
        for attempt in address.attempts:
            for phase, seconds in attempt.phases.items():
                values.setdefault(phase, []).append(seconds)
    return values


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads: per-target states and the config reload status.

    Attributes:
        targets: state per target name, for targets that completed a cycle.
        configured: the configured target names, in config order.
        reload_successful: the last config (re)load succeeded.
        reload_success_timestamp: Unix time of the last successful (re)load.
    """

    targets: Mapping[str, TargetState]
    configured: tuple[str, ...]
    reload_successful: bool
    reload_success_timestamp: float

    @property
    def ready(self) -> bool:
        """Every configured target has completed at least one cycle."""
        return all(name in self.targets for name in self.configured)


class ResultStore:
    """Holds the current :class:`Snapshot`; safe for one writer and many reader threads.

    Args:
        names: the configured target names.
        now: Unix time of the initial config load.
    """

    def __init__(self, names: Sequence[str], now: float) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(MappingProxyType({}), tuple(names), True, now)

    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable; never blocks on a probe)."""
        with self._lock:
            return self._snapshot

    def record(self, result: TargetResult) -> TargetState | None:
        """Add a completed cycle; returns the target's previous state (``None`` if first).

        Results of targets no longer configured are ignored.
        """
        current = self.snapshot()
        if result.name not in current.configured:
            return None
        previous = current.targets.get(result.name)
        state = accumulate(previous, result)
        self._swap(lambda s: replace(s, targets=MappingProxyType({**s.targets, result.name: state})))
        return previous

    def configure(self, names: Sequence[str], now: float, reset: Iterable[str] = ()) -> None:
        """After a successful reload: keep the states of unchanged targets still configured.

        Args:
            names: the configured target names, in config order.
            now: Unix time of the reload.
            reset: targets whose settings changed: their state starts afresh.
        """
        names = tuple(names)
        dropped = set(reset)

        def change(s: Snapshot) -> Snapshot:
            kept = {n: st for n, st in s.targets.items() if n in names and n not in dropped}
            return Snapshot(MappingProxyType(kept), names, True, now)

        self._swap(change)

    def reload_failed(self) -> None:
        """Record a refused reload; the running config and results stay."""
        self._swap(lambda s: replace(s, reload_successful=False))

    def _swap(self, change: Callable[[Snapshot], Snapshot]) -> None:
        with self._lock:
            self._snapshot = change(self._snapshot)
