"""Watching a change land: successive check rounds become changes of state and a summary.

``probe check --watch`` runs the check again and again; this module turns the results of
those rounds into what a person watching wants to know: one :class:`Change` each time the
state of an address (or of the target) changes, the latest state of each (for the
status line), and a :class:`Summary` at the end. It is pure: it never probes, never reads
a clock (every time comes from the results or is passed in) and never writes;
``probe.report.watch`` renders the changes and the summary, and ``probe.cli.watch`` runs
the loop and prints them.

The *state* of an address is its verdict (``ok``, ``warning``, ``critical``) together
with the distinct reason codes of its findings, so that ``critical`` for ``tcp_refused``
turning into ``critical`` for ``cert_hostname_mismatch`` is a change too. The *target*
(rendered ``(target)``) is the target as a whole: its verdict and reason codes over every
finding of the cycle, its own (DNS, backends, the cycle, answers outside
``expect_networks``) and its addresses', so a node that goes critical turns its target
critical in the same round. An address that is not in a round's results (it left the DNS
answer, or DNS failed) is ``absent``.

An *outage* of an address or target is a run of rounds in which it was not ok (``warning``
or ``critical``): from the first round that saw it to the first round that no longer did
(ok again, or absent), with its worst verdict and every reason code seen during it. The
summary lists them, with the longest, the last change and since when each is ok.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from probe.config.defaults import UNTIL_CHOICES
from probe.model.reasons import ExitCode, Platform, Reason, Status
from probe.model.results import Failure, IPAddress, TargetResult

#: Why a watch ended, as the summary's ``ended_by`` says it.
ENDED_BY = ("ok", "stable", "max_time", "interrupted")

#: ``(target name, address)``; the address is ``None`` for the target.
Key = tuple[str, IPAddress | None]


@dataclass(frozen=True, slots=True)
class State:
    """The state of one address, or of the target, in one round.

    Attributes:
        status: the verdict; ``None`` when the address was not probed in the round (absent).
        reasons: the distinct reason codes of its findings, in order of first appearance.
    """

    status: Status | None
    reasons: tuple[Reason, ...] = ()

    @property
    def word(self) -> str:
        """``"ok"``, ``"warning"``, ``"critical"`` or ``"absent"``."""
        return self.status.value if self.status is not None else "absent"


ABSENT = State(None)


@dataclass(frozen=True, slots=True)
class Outage:
    """A run of rounds in which an address or target was not ok (``warning`` or ``critical``).

    Times are those of the rounds' cycles of its target (when each cycle ended), Unix time.

    Attributes:
        started_timestamp: the first round that saw it.
        started_round: that round's number (1: it was under way when the watch started,
            so it began earlier).
        last_seen_timestamp: the last round that saw it.
        worst: its worst verdict.
        reasons: every reason code seen during it, in order of first appearance.
        ended_timestamp: the first round that no longer saw it (ok again, or absent);
            ``None`` while it lasts.
        ended_round: that round's number, ``None`` while it lasts.
    """

    started_timestamp: float
    started_round: int
    last_seen_timestamp: float
    worst: Status
    reasons: tuple[Reason, ...]
    ended_timestamp: float | None = None
    ended_round: int | None = None

    @property
    def over(self) -> bool:
        """A round saw it end."""
        return self.ended_timestamp is not None

    @property
    def seconds(self) -> float:
        """Its length: to its end, or, while it lasts, to the last round that saw it (at least that long)."""
        end = self.ended_timestamp if self.ended_timestamp is not None else self.last_seen_timestamp
        return max(0.0, end - self.started_timestamp)

    def went_on(self, state: State, timestamp: float) -> Outage:
        """The outage after one more round that saw ``state`` (not ok) at ``timestamp``."""
        worst = self.worst if state.status is None else Status.worst((self.worst, state.status))
        reasons = tuple(dict.fromkeys((*self.reasons, *state.reasons)))
        return replace(self, last_seen_timestamp=timestamp, worst=worst, reasons=reasons)

    def ended(self, timestamp: float, number: int) -> Outage:
        """The outage ended by round ``number``, whose cycle ended at ``timestamp``."""
        return replace(self, ended_timestamp=timestamp, ended_round=number)


def longest(outages: Iterable[Outage]) -> Outage | None:
    """The longest of ``outages`` (the first of equals), ``None`` for none."""
    return max(outages, key=lambda outage: outage.seconds, default=None)


@dataclass(frozen=True, slots=True)
class Change:
    """One change of state, or the first state seen of an address or target.

    Attributes:
        timestamp: when the round's cycle of this target ended, Unix time.
        round: the round that saw it, from 1.
        target: the target's name.
        address: the address, ``None`` for the target.
        old: the state before; ``None`` when this is the first round (nothing was known).
        new: the state now.
        failures: the findings behind ``new`` (empty when ok or absent).
        platform: the target's ``platform``, whose words the findings' hints use when
            rendered (``probe.report.hints``).
        status_codes: for each of ``failures`` (same order), the responses it is about,
            for its hint: for ``http_status`` and ``backend_not_reached`` ``(status code,
            HttpAttempt.answered_by)`` of the requests to its
            address that got it, in order; empty for other reasons.
        outage: the outage this change began, continued (a new reason, or warning to
            critical) or ended; ``None`` when it is ok (or absent) before and after.
    """

    timestamp: float
    round: int
    target: str
    address: IPAddress | None
    old: State | None
    new: State
    failures: tuple[Failure, ...] = ()
    platform: Platform = Platform.GENERIC
    status_codes: tuple[tuple[tuple[int, str | None], ...], ...] = ()
    outage: Outage | None = None

    @property
    def added(self) -> tuple[Reason, ...]:
        """Reason codes in the new state that the old one did not have."""
        before = set(self.old.reasons) if self.old else set()
        return tuple(r for r in self.new.reasons if r not in before)

    @property
    def cleared(self) -> tuple[Reason, ...]:
        """Reason codes of the old state that are gone (none when the address became absent)."""
        if self.old is None or self.new.status is None:
            return ()
        return tuple(r for r in self.old.reasons if r not in self.new.reasons)


@dataclass(frozen=True, slots=True)
class EntityTally:
    """What the watch saw of one address or target.

    Attributes:
        target: the target's name.
        address: the address, ``None`` for the target.
        flips: changes of state after the first round that saw it.
        worst: the worst verdict it had, ``None`` if it was never probed.
        state: its state in the last round.
        since_timestamp: when it entered that state: the round of its last change, or
            the first round that saw it, Unix time.
        last_change_timestamp: its last change after the first round, Unix time;
            ``None`` when it never changed.
        outages: its outages, in order; the last one may still last.
    """

    target: str
    address: IPAddress | None
    flips: int
    worst: Status | None
    state: State
    since_timestamp: float
    last_change_timestamp: float | None
    outages: tuple[Outage, ...]

    @property
    def ok_since_timestamp(self) -> float | None:
        """Since when it is ok, when it is ok at the end; else ``None``."""
        return self.since_timestamp if self.state.status is Status.OK else None

    @property
    def longest_outage(self) -> Outage | None:
        """Its longest outage, ``None`` when it had none."""
        return longest(self.outages)


@dataclass(frozen=True, slots=True)
class Summary:
    """The end of a watch.

    Attributes:
        started_timestamp: when the watch started, Unix time.
        ended_timestamp: when it ended, Unix time.
        rounds: rounds completed (a round cut by ``--max-time`` or Ctrl-C does not count).
        ended_by: ``"ok"`` (``--until ok``), ``"stable"`` (``--until stable``),
            ``"max_time"`` or ``"interrupted"`` (Ctrl-C, SIGTERM).
        stable_rounds: the N of ``--until stable``.
        first_ok_seconds: from the start to the end of the first all-ok round; ``None``
            when no round was all ok.
        first_ok_round: that round's number, ``None`` when none.
        worst: the worst verdict of any round, ``None`` when no round completed.
        status: the verdict of the last round, ``None`` when no round completed.
        last_change_timestamp: the last change after the first round, Unix time; ``None``
            when nothing changed.
        entities: per address and target, in order of first appearance.
        first_round_status: the verdict of the first round, ``None`` when no round
            completed: a watch that started ok measures outages, not a time to the first ok.
        max_time_seconds: the ``--max-time`` limit, ``None`` without one.
        round_cut: the watch ended (``max_time`` or ``interrupted``) while a round was
            under way; that round does not count.
    """

    started_timestamp: float
    ended_timestamp: float
    rounds: int
    ended_by: str
    stable_rounds: int
    first_ok_seconds: float | None
    first_ok_round: int | None
    worst: Status | None
    status: Status | None
    last_change_timestamp: float | None
    entities: tuple[EntityTally, ...]
    first_round_status: Status | None = None
    max_time_seconds: float | None = None
    round_cut: bool = False

    @property
    def longest_outage(self) -> tuple[EntityTally, Outage] | None:
        """The longest outage of any target or address, with whose it is; ``None`` when none."""
        every = [(entity, outage) for entity in self.entities for outage in entity.outages]
        return max(every, key=lambda found: found[1].seconds, default=None)

    @property
    def exit_code(self) -> ExitCode:
        """The last round's exit code (0 ok, 1 warning, 2 critical); 3 when no round completed."""
        return ExitCode.UNKNOWN if self.status is None else ExitCode.from_status(self.status)

    @property
    def duration_seconds(self) -> float:
        """How long the watch ran."""
        return max(0.0, self.ended_timestamp - self.started_timestamp)


@dataclass
class _Entity:
    """What the watch knows of one address or target (see :class:`EntityTally`)."""

    state: State
    since: float
    flips: int = 0
    worst: Status | None = None
    last_change: float | None = None
    outages: list[Outage] = field(default_factory=list)

    def flip(self, state: State, timestamp: float) -> None:
        """Its state changed after the round that first saw it, in a cycle that ended at ``timestamp``."""
        self.state = state
        self.flips += 1
        self.since = self.last_change = timestamp

    def saw(self, status: Status | None) -> None:
        """Count ``status`` into the worst seen (``None``: not probed, nothing to count)."""
        if status is not None:
            self.worst = _worse(self.worst, status)

    def track(self, state: State, timestamp: float, number: int) -> Outage | None:
        """Fold round ``number``'s ``state`` into the outages; the one it began, continued or ended."""
        lasting = self.outages[-1] if self.outages and not self.outages[-1].over else None
        if state.status in (Status.WARNING, Status.CRITICAL):
            if lasting is None:
                self.outages.append(Outage(timestamp, number, timestamp, state.status, state.reasons))
            else:
                self.outages[-1] = lasting.went_on(state, timestamp)
            return self.outages[-1]
        if lasting is None:
            return None
        self.outages[-1] = lasting.ended(timestamp, number)
        return self.outages[-1]

    def tally(self, key: Key) -> EntityTally:
        """What the watch saw of it, for the summary."""
        return EntityTally(
            key[0],
            key[1],
            self.flips,
            self.worst,
            self.state,
            self.since,
            self.last_change,
            tuple(self.outages),
        )


@dataclass(frozen=True, slots=True)
class _Seen:
    """An address or the target as one round saw it (see :class:`Change`).

    Attributes:
        state: its state.
        failures: the findings behind ``state``.
        ended: when the cycle of its target ended, Unix time.
        platform: the target's platform.
        status_codes: per finding, the responses its hint needs (see :class:`Change`).
    """

    state: State
    failures: tuple[Failure, ...]
    ended: float
    platform: Platform
    status_codes: tuple[tuple[tuple[int, str | None], ...], ...]

    def change(self, number: int, key: Key, old: State | None, outage: Outage | None) -> Change:
        """The change from ``old`` to this state, seen in round ``number``."""
        return Change(
            self.ended,
            number,
            key[0],
            key[1],
            old,
            self.state,
            self.failures,
            self.platform,
            self.status_codes,
            outage,
        )


@dataclass
class Watch:
    """Successive rounds of a check, folded into changes of state.

    Call :meth:`observe` with each round's results; it returns that round's changes.
    :attr:`until_met` says when ``until`` is reached; :meth:`summary` ends the watch.

    Attributes:
        started_timestamp: when the watch started, Unix time.
        until: ``"ok"``, ``"stable"`` or ``None`` (run until stopped).
        stable_rounds: identical rounds in a row that make ``--until stable`` end (at least 2).
        max_time_seconds: the ``--max-time`` limit, for the summary; ``None`` without one.
    """

    started_timestamp: float
    until: str | None = None
    stable_rounds: int = 3
    max_time_seconds: float | None = None
    rounds: int = 0
    worst: Status | None = None
    status: Status | None = None
    first_round_status: Status | None = None
    first_ok_seconds: float | None = None
    first_ok_round: int | None = None
    last_change_timestamp: float | None = None
    identical_rounds: int = 0
    _entities: dict[Key, _Entity] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.until not in (None, *UNTIL_CHOICES):
            raise ValueError(f"until must be one of {', '.join(UNTIL_CHOICES)} or None, not {self.until!r}")
        if self.stable_rounds < 2:
            raise ValueError(f"stable_rounds must be at least 2, not {self.stable_rounds}")

    def observe(self, results: Sequence[TargetResult]) -> tuple[Change, ...]:
        """Fold in one round (one result per target) and return its changes.

        In the first round every address and target gets a change with ``old``
        ``None`` (the starting state). Later, an address that no longer appears becomes
        ``absent``; one that appears for the first time comes from ``absent``.
        """
        self.rounds += 1
        seen = {key: now for result in results for key, now in _seen(result).items()}
        ends = {r.target.name: _ended(r) for r in results}
        round_end = max(ends.values(), default=self.started_timestamp)
        changes = self._present(seen)
        changes.extend(self._absent(seen, ends, round_end))
        self._count_round(Status.worst(r.status for r in results), round_end, changes)
        return tuple(changes)

    def _present(self, seen: dict[Key, _Seen]) -> list[Change]:
        """The changes of the addresses and targets in this round's results."""
        changes = []
        for key, now in seen.items():
            change = self._update(key, now)
            if change is not None:
                changes.append(change)
        return changes

    def _update(self, key: Key, now: _Seen) -> Change | None:
        """Fold in one address or target as this round saw it; its change, if any."""
        entity = self._entities.get(key)
        old: State | None
        if entity is None:
            old = None if self.rounds == 1 else ABSENT  # after the first round, it comes from absent
            last_change = None if old is None else now.ended
            entity = self._entities[key] = _Entity(now.state, now.ended, last_change=last_change)
        else:
            old = entity.state
            if old != now.state:
                entity.flip(now.state, now.ended)
        entity.saw(now.state.status)
        outage = entity.track(now.state, now.ended, self.rounds)
        return None if old == now.state else now.change(self.rounds, key, old, outage)

    def _absent(self, seen: dict[Key, _Seen], ends: dict[str, float], round_end: float) -> list[Change]:
        """The changes of those known before and not in this round's results: they become absent.

        A change's time is the end of its target's cycle, or of the round when the target
        has no result in it.
        """
        changes = []
        for key, entity in self._entities.items():
            if key not in seen and entity.state != ABSENT:
                ended = ends.get(key[0], round_end)
                old = entity.state
                entity.flip(ABSENT, ended)
                outage = entity.track(ABSENT, ended, self.rounds)
                changes.append(Change(ended, self.rounds, key[0], key[1], old, ABSENT, outage=outage))
        return changes

    def _count_round(self, status: Status, round_end: float, changes: Sequence[Change]) -> None:
        """Count the round's verdict, its first all-ok, its last change and identical rounds in a row."""
        self.status = status
        self.worst = _worse(self.worst, status)
        if self.rounds == 1:
            self.first_round_status = status
        if status is Status.OK and self.first_ok_seconds is None:
            self.first_ok_seconds = max(0.0, round_end - self.started_timestamp)
            self.first_ok_round = self.rounds
        later = [c for c in changes if c.old is not None]
        if later:
            self.last_change_timestamp = max(c.timestamp for c in later)
        self.identical_rounds = 1 if later or self.rounds == 1 else self.identical_rounds + 1

    @property
    def until_met(self) -> bool:
        """The last round meets ``until``: all ok, or ``stable_rounds`` identical rounds in a row."""
        if self.until == "ok":
            return self.status is Status.OK
        if self.until == "stable":
            return self.identical_rounds >= self.stable_rounds
        return False

    @property
    def exit_code(self) -> ExitCode:
        """The exit code the watch has now: the last round's, 3 before any round completed."""
        return ExitCode.UNKNOWN if self.status is None else ExitCode.from_status(self.status)

    def current(self) -> tuple[tuple[Key, State], ...]:
        """Every address and target with its latest state, in order of first appearance."""
        return tuple((key, entity.state) for key, entity in self._entities.items())

    def summary(self, ended_timestamp: float, ended_by: str, *, round_cut: bool = False) -> Summary:
        """The summary of the watch so far.

        Args:
            ended_timestamp: when the watch ended, Unix time.
            ended_by: one of :data:`ENDED_BY`.
            round_cut: a round under way was cut (by ``--max-time`` or a signal).

        Raises:
            ValueError: ``ended_by`` is not one of :data:`ENDED_BY`.
        """
        if ended_by not in ENDED_BY:
            raise ValueError(f"ended_by must be one of {', '.join(ENDED_BY)}, not {ended_by!r}")
        return Summary(
            started_timestamp=self.started_timestamp,
            ended_timestamp=ended_timestamp,
            rounds=self.rounds,
            ended_by=ended_by,
            stable_rounds=self.stable_rounds,
            first_ok_seconds=self.first_ok_seconds,
            first_ok_round=self.first_ok_round,
            worst=self.worst,
            status=self.status,
            last_change_timestamp=self.last_change_timestamp,
            entities=tuple(entity.tally(key) for key, entity in self._entities.items()),
            first_round_status=self.first_round_status,
            max_time_seconds=self.max_time_seconds,
            round_cut=round_cut,
        )


def _worse(worst: Status | None, status: Status) -> Status:
    """The worse of the two; ``status`` when nothing was seen before."""
    return status if worst is None else Status.worst((worst, status))


def _ended(result: TargetResult) -> float:
    """When the result's cycle ended, Unix time."""
    return result.started_timestamp + result.duration_seconds


def _seen(result: TargetResult) -> dict[Key, _Seen]:
    """The target and every probed address of one result, as the round saw them."""
    ended = _ended(result)
    return {
        key: _Seen(
            state, failures, ended, result.target.platform, tuple(_status_codes(result, f) for f in failures)
        )
        for key, (state, failures) in _states(result).items()
    }


def _states(result: TargetResult) -> dict[Key, tuple[State, tuple[Failure, ...]]]:
    """The target as a whole and every probed address of one result, with their findings.

    The target's state is the result's: the worst of every finding of the cycle, its
    addresses' included.
    """
    states: dict[Key, tuple[State, tuple[Failure, ...]]] = {
        (result.target.name, None): (State(result.status, result.reasons), result.failures)
    }
    for address in result.addresses:
        state = State(address.status, _reasons(address.failures))
        states[(result.target.name, address.address)] = (state, address.failures)
    return states


def _reasons(failures: Iterable[Failure]) -> tuple[Reason, ...]:
    return tuple(dict.fromkeys(f.reason for f in failures))


def _status_codes(result: TargetResult, failure: Failure) -> tuple[tuple[int, str | None], ...]:
    """For ``http_status`` and ``backend_not_reached``, the responses behind it, as its hint needs them.

    Each is ``(status code, HttpAttempt.answered_by)``, for the
    requests to the finding's address that got the same finding.
    """
    if failure.reason not in (Reason.HTTP_STATUS, Reason.BACKEND_NOT_REACHED):
        return ()
    return tuple(
        (attempt.status_code, attempt.answered_by)
        for address in result.addresses
        if address.address == failure.address
        for attempt in address.attempts
        if attempt.status_code is not None and any(f.reason is failure.reason for f in attempt.failures)
    )
