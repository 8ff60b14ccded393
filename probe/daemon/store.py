"""The daemon's state: the latest result of each target plus tallies across cycles.

One writer (the scheduler, on the event loop) and many readers (scrape threads). Every
state is immutable; :meth:`ResultStore.record` puts a target's next state in place under
a lock held only for that, and a reader takes an immutable snapshot, so a scrape never
waits on a probe. When the store is
given a renderer (the daemon passes :func:`probe.daemon.metrics.render_target`), each target's
metrics are rendered once, when its cycle is recorded, and kept in its state, so a scrape
only concatenates stored text.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from probe._text import shorten
from probe.model.reasons import Status
from probe.model.results import TargetResult

#: Upper bounds (seconds) of the phase latency histograms.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: A backend series not seen for this many cycles of its target is dropped.
STALE_AFTER_CYCLES = 10

#: At most this many (address, backend) series per target; the least recently seen go first.
MAX_BACKEND_SERIES = 64

#: At most this many state changes are kept per target (the status page's history).
HISTORY_LENGTH = 20

#: Characters of a finding's text kept in a state change.
CHANGE_DETAIL_CHARS = 200


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
class StateChange:
    """A change of a target's state: its status or the set of its reason codes.

    Attributes:
        timestamp: when the cycle that showed the new state ended, Unix time.
        previous: the status before; ``None`` for the target's first cycle.
        status: the status after.
        reasons: the reason codes after, in order of first appearance.
        previous_reasons: the reason codes before (empty for the first cycle).
        detail: the first finding of the worst severity after the change,
            ``"reason address: detail"`` cut to ``CHANGE_DETAIL_CHARS`` characters; ``""``
            when the target is ok.
    """

    timestamp: float
    previous: Status | None
    status: Status
    reasons: tuple[str, ...]
    previous_reasons: tuple[str, ...] = ()
    detail: str = ""


def state_changed(before: TargetResult | None, after: TargetResult) -> bool:
    """Whether ``after`` is a new state: a first result, another status or other reason codes.

    The reason codes are compared as sets: the same findings in another order (addresses
    answered in another order) are the same state.
    """
    return before is None or before.status is not after.status or set(before.reasons) != set(after.reasons)


def change_of(before: TargetResult | None, after: TargetResult) -> StateChange:
    """The :class:`StateChange` from ``before`` (``None``: none yet) to ``after`` (pure)."""
    worst = [f for f in after.failures if f.severity is after.status and after.status is not Status.OK]
    detail = ""
    if worst:
        first = worst[0]
        where = f" {first.address}" if first.address is not None else ""
        detail = shorten(f"{first.reason.value}{where}: {first.detail}", CHANGE_DETAIL_CHARS)
    return StateChange(
        timestamp=after.started_timestamp + after.duration_seconds,
        previous=before.status if before is not None else None,
        status=after.status,
        reasons=tuple(r.value for r in after.reasons),
        previous_reasons=tuple(r.value for r in before.reasons) if before is not None else (),
        detail=detail,
    )


#: A target's metrics as exposition text: per metric family (in the order of
#: ``probe.daemon.metric_specs.SPECS``), the target's sample lines as UTF-8 bytes, ``b""`` for a family
#: without series. The store keeps it opaque; :mod:`probe.daemon.metrics` makes and reads it.
Exposition = tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TargetState:
    """Everything the metrics show about one target.

    Attributes:
        result: the last completed cycle.
        cycles: cycles completed since the target was (re)configured.
        failures_total: per reason code, the cycles in which it was found.
        backends: per ``(address, backend)``, responses counted across cycles.
        phases: per phase (``resolve``, ``connect``, ``tls``, ``processing``,
            ``transfer``), the latency histogram across cycles (only with
            ``metrics.histograms``).
        exposition: the metrics of this state, rendered when it was recorded (``None``
            when the store has no renderer).
        changes: the last state changes (:func:`state_changed`), oldest first, at most
            ``HISTORY_LENGTH``; the first result counts as one.
    """

    result: TargetResult
    cycles: int
    failures_total: Mapping[str, int]
    backends: Mapping[tuple[str, str], BackendTally]
    phases: Mapping[str, Histogram]
    exposition: Exposition | None = None
    changes: tuple[StateChange, ...] = ()

    @property
    def last_change_timestamp(self) -> float | None:
        """When the current state began (the end of the cycle that showed it), Unix time."""
        return self.changes[-1].timestamp if self.changes else None


#: Renders a target's state once per recorded cycle (see :func:`probe.daemon.metrics.render_target`).
Renderer = Callable[[TargetState], Exposition]


def accumulate(previous: TargetState | None, result: TargetResult, histograms: bool = False) -> TargetState:
    """The state after ``result``, given the state before it (pure).

    Backend series not seen for ``STALE_AFTER_CYCLES`` cycles are dropped, and at most
    ``MAX_BACKEND_SERIES`` are kept, so a server inventing backend names cannot grow the
    metrics without bound. A state change (:func:`state_changed`) is added to
    ``changes``, which keeps the last ``HISTORY_LENGTH``.

    Args:
        previous: the state before, ``None`` for the target's first cycle.
        result: the cycle just completed.
        histograms: accumulate the phase latency histograms (``metrics.histograms``);
            without, ``phases`` stays empty.
    """
    cycles = previous.cycles + 1 if previous else 1
    return TargetState(
        result=result,
        cycles=cycles,
        failures_total=MappingProxyType(_failures_total(previous, result)),
        backends=MappingProxyType(_backend_tallies(previous, result, cycles)),
        phases=MappingProxyType(_phase_histograms(previous, result) if histograms else {}),
        changes=_changes(previous, result),
    )


def _failures_total(previous: TargetState | None, result: TargetResult) -> dict[str, int]:
    """Per reason code, the cycles that found it, ``result``'s included."""
    failures = dict(previous.failures_total) if previous else {}
    for reason in result.reasons:
        failures[reason.value] = failures.get(reason.value, 0) + 1
    return failures


def _backend_tallies(
    previous: TargetState | None, result: TargetResult, cycles: int
) -> dict[tuple[str, str], BackendTally]:
    """Responses per ``(address, backend)`` with ``result``'s added, stale and surplus series dropped.

    Args:
        previous: the state before, ``None`` for the target's first cycle.
        result: the cycle just completed.
        cycles: the number of ``result``'s cycle (1 for the first).
    """
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
    return fresh


def _phase_histograms(previous: TargetState | None, result: TargetResult) -> dict[str, Histogram]:
    """The phase latency histograms with ``result``'s phase times observed."""
    phases = dict(previous.phases) if previous else {}
    for phase, values in _phase_values(result).items():
        phases[phase] = phases.get(phase, Histogram()).observe(values)
    return phases


def _changes(previous: TargetState | None, result: TargetResult) -> tuple[StateChange, ...]:
    """The state changes with ``result``'s added when it is one, the last ``HISTORY_LENGTH`` kept."""
    changes = previous.changes if previous else ()
    last = previous.result if previous else None
    if state_changed(last, result):
        changes = (*changes, change_of(last, result))[-HISTORY_LENGTH:]
    return changes


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
    """Holds the targets' states; safe for one writer and many reader threads.

    The writer (the scheduler, on the event loop) puts each new state in a dict under a
    lock held only for that assignment: recording a cycle costs the same at 1,000 targets
    as at one. A reader's :meth:`snapshot` is an immutable copy of that dict, made on the
    first read after a change and shared by every read until the next (a copy per scrape,
    not one per recorded cycle).

    Args:
        names: the configured target names.
        now: Unix time of the initial config load.
        render: renders each recorded state's metrics (outside the lock, before the swap),
            so scrapes only read stored text.
        histograms: accumulate phase latency histograms (``metrics.histograms``).
    """

    def __init__(
        self, names: Sequence[str], now: float, render: Renderer | None = None, histograms: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, TargetState] = {}
        self._configured = tuple(names)
        self._known = frozenset(self._configured)
        self._reload_successful = True
        self._reload_success_timestamp = now
        self._snapshot: Snapshot | None = None  # built by the first read after a change
        self._render = render
        self._histograms = histograms

    @property
    def histograms(self) -> bool:
        """Whether phase latency histograms are accumulated."""
        return self._histograms

    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable; never blocks on a probe)."""
        with self._lock:
            if self._snapshot is None:
                self._snapshot = Snapshot(
                    MappingProxyType(dict(self._targets)),
                    self._configured,
                    self._reload_successful,
                    self._reload_success_timestamp,
                )
            return self._snapshot

    def state(self, name: str) -> TargetState | None:
        """A target's current state, ``None`` before its first cycle (for the writer's thread)."""
        return self._targets.get(name)

    def states(self) -> Iterable[TargetState]:
        """Every target's current state (for the writer's thread only: a live view)."""
        return self._targets.values()

    def record(self, result: TargetResult) -> TargetState | None:
        """Add a completed cycle; returns the target's previous state (``None`` if first).

        Results of targets no longer configured are ignored.
        """
        if result.target.name not in self._known:
            return None
        previous = self._targets.get(result.target.name)
        state = self._rendered(accumulate(previous, result, self._histograms))
        with self._lock:
            self._targets[result.target.name] = state
            self._snapshot = None
        return previous

    def configure(self, names: Sequence[str], now: float, reset: Iterable[str] = ()) -> None:
        """After a successful reload: keep the states of unchanged targets still configured.

        Args:
            names: the configured target names, in config order.
            now: Unix time of the reload.
            reset: targets whose settings changed: their state starts afresh.
        """
        configured = tuple(names)
        known = frozenset(configured)
        dropped = set(reset)
        kept = {n: st for n, st in self._targets.items() if n in known and n not in dropped}
        with self._lock:
            self._targets = kept
            self._configured, self._known = configured, known
            self._reload_successful, self._reload_success_timestamp = True, now
            self._snapshot = None

    def set_histograms(self, enabled: bool) -> None:
        """Turn the phase latency histograms on or off (a reload changed ``metrics.histograms``).

        Turning them off drops every target's histograms at once; turning them on starts
        them empty at each target's next cycle. Other tallies are kept.
        """
        if enabled == self._histograms:
            return
        self._histograms = enabled
        if enabled:
            return
        # Built outside the lock: this thread is the only writer.
        cleared = {
            name: self._rendered(replace(state, phases=MappingProxyType({})))
            for name, state in self._targets.items()
        }
        with self._lock:
            self._targets = cleared
            self._snapshot = None

    def reload_failed(self) -> None:
        """Record a refused reload; the running config and results stay."""
        with self._lock:
            self._reload_successful = False
            self._snapshot = None

    def _rendered(self, state: TargetState) -> TargetState:
        return state if self._render is None else replace(state, exposition=self._render(state))
