"""Watching a change land: successive check rounds become changes of state and a summary.

``probe check --watch`` runs the check again and again; this module turns the results of
those rounds into what a person watching wants to read: one :class:`Change` each time the
state of an address (or of the target level) changes, a one-line status for a terminal,
and a :class:`Summary` at the end. It is pure: it never probes, never reads a clock (every
time comes from the results or is passed in) and never writes; ``probe.cli.watch`` runs
the loop and prints what this module renders.

The *state* of an address is its verdict (``ok``, ``warning``, ``critical``) together
with the distinct reason codes of its findings, so that ``critical`` for ``tcp_refused``
turning into ``critical`` for ``cert_hostname_mismatch`` is a change too. The *target
level* (rendered ``(target)``) holds the findings about no single probed address: DNS,
backends, the cycle, and answers outside ``expect_networks``. An address that is not in a
round's results (it left the DNS answer, or DNS failed) is ``absent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from probe.config.defaults import UNTIL_CHOICES
from probe.model.reasons import ExitCode, Reason, Status
from probe.model.results import Failure, IPAddress, TargetResult
from probe.report.hints import failure_hint

#: Version of the JSON lines of ``probe check --watch --json``; fields are only added within it.
WATCH_SCHEMA_VERSION = 1

#: Why a watch ended, as the summary's ``ended_by`` says it.
ENDED_BY = ("ok", "stable", "max_time", "interrupted")

TARGET_LEVEL = "(target)"

_COLOURS = {Status.OK: "32", Status.WARNING: "33", Status.CRITICAL: "31"}

#: ``(target name, address)``; the address is ``None`` for the target level.
Key = tuple[str, IPAddress | None]


@dataclass(frozen=True, slots=True)
class State:
    """The state of one address, or of the target level, in one round.

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
class Change:
    """One change of state, or the first state seen of an address or target level.

    Attributes:
        timestamp: when the round's cycle of this target ended, Unix time.
        round: the round that saw it, from 1.
        target: the target's name.
        address: the address, ``None`` for the target level.
        old: the state before; ``None`` when this is the first round (nothing was known).
        new: the state now.
        failures: the findings behind ``new`` (empty when ok or absent).
        hints: the hint of each of ``failures`` (same order; ``None`` where a reason has
            none), in the words of the target's ``platform`` (see ``probe.report.hints``).
    """

    timestamp: float
    round: int
    target: str
    address: IPAddress | None
    old: State | None
    new: State
    failures: tuple[Failure, ...] = ()
    hints: tuple[str | None, ...] = ()

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
    """What the watch saw of one address or target level.

    Attributes:
        target: the target's name.
        address: the address, ``None`` for the target level.
        flips: changes of state after the first round that saw it.
        worst: the worst verdict it had, ``None`` if it was never probed.
        state: its state in the last round.
    """

    target: str
    address: IPAddress | None
    flips: int
    worst: Status | None
    state: State


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
        entities: per address and target level, in order of first appearance.
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
    state: State
    flips: int = 0
    worst: Status | None = None


@dataclass
class Watch:
    """Successive rounds of a check, folded into changes of state.

    Call :meth:`observe` with each round's results; it returns that round's changes.
    :attr:`until_met` says when ``until`` is reached; :meth:`summary` ends the watch.

    Attributes:
        started_timestamp: when the watch started, Unix time.
        until: ``"ok"``, ``"stable"`` or ``None`` (run until stopped).
        stable_rounds: identical rounds in a row that make ``--until stable`` end (at least 2).
    """

    started_timestamp: float
    until: str | None = None
    stable_rounds: int = 3
    rounds: int = 0
    worst: Status | None = None
    status: Status | None = None
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

        In the first round every address and target level gets a change with ``old``
        ``None`` (the starting state). Later, an address that no longer appears becomes
        ``absent``; one that appears for the first time comes from ``absent``.
        """
        self.rounds += 1
        number = self.rounds
        seen: dict[Key, tuple[State, tuple[Failure, ...], float, tuple[str | None, ...]]] = {}
        for result in results:
            ended = result.started_timestamp + result.duration_seconds
            for key, (state, failures) in _states(result).items():
                seen[key] = (state, failures, ended, tuple(failure_hint(result, f) for f in failures))
        ends = {r.target.name: r.started_timestamp + r.duration_seconds for r in results}
        round_end = max(ends.values(), default=self.started_timestamp)
        changes: list[Change] = []
        for key, (state, failures, ended, hints) in seen.items():
            entity = self._entities.get(key)
            if entity is None:
                old = None if number == 1 else ABSENT
                self._entities[key] = entity = _Entity(state)
                changes.append(Change(ended, number, key[0], key[1], old, state, failures, hints))
            elif entity.state != state:
                changes.append(Change(ended, number, key[0], key[1], entity.state, state, failures, hints))
                entity.state = state
                entity.flips += 1
            if state.status is not None:
                entity.worst = (
                    state.status if entity.worst is None else Status.worst((entity.worst, state.status))
                )
        for key, entity in self._entities.items():
            if key not in seen and entity.state != ABSENT:
                ended = ends.get(key[0], round_end)
                changes.append(Change(ended, number, key[0], key[1], entity.state, ABSENT))
                entity.state = ABSENT
                entity.flips += 1
        status = Status.worst(r.status for r in results)
        self.status = status
        self.worst = status if self.worst is None else Status.worst((self.worst, status))
        if status is Status.OK and self.first_ok_seconds is None:
            self.first_ok_seconds = max(0.0, round_end - self.started_timestamp)
            self.first_ok_round = number
        later = [c for c in changes if c.old is not None]
        if later:
            self.last_change_timestamp = max(c.timestamp for c in later)
        self.identical_rounds = 1 if later or number == 1 else self.identical_rounds + 1
        return tuple(changes)

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
        """Every address and target level with its latest state, in order of first appearance."""
        return tuple((key, entity.state) for key, entity in self._entities.items())

    def summary(self, ended_timestamp: float, ended_by: str) -> Summary:
        """The summary of the watch so far.

        Args:
            ended_timestamp: when the watch ended, Unix time.
            ended_by: one of :data:`ENDED_BY`.

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
            entities=tuple(
                EntityTally(key[0], key[1], entity.flips, entity.worst, entity.state)
                for key, entity in self._entities.items()
            ),
        )


def _states(result: TargetResult) -> dict[Key, tuple[State, tuple[Failure, ...]]]:
    """The target level and every probed address of one result, with their findings."""
    probed = {a.address for a in result.addresses}
    level = tuple(f for f in result.failures if f.address is None or f.address not in probed)
    states: dict[Key, tuple[State, tuple[Failure, ...]]] = {
        (result.target.name, None): (_state(level), level)
    }
    for address in result.addresses:
        state = State(address.status, _reasons(address.failures))
        states[(result.target.name, address.address)] = (state, address.failures)
    return states


def _state(failures: Sequence[Failure]) -> State:
    return State(Status.worst(f.severity for f in failures), _reasons(failures))


def _reasons(failures: Iterable[Failure]) -> tuple[Reason, ...]:
    return tuple(dict.fromkeys(f.reason for f in failures))


# --------------------------------------------------------------------------- rendering


def where(target: str, address: IPAddress | None) -> str:
    """``"www 10.0.2.31"``, or ``"www (target)"`` for the target level."""
    return f"{target} {address if address is not None else TARGET_LEVEL}"


def _paint(status: Status | None, text: str, color: bool) -> str:
    if not color or status is None:
        return text
    return f"\033[{_COLOURS[status]}m{text}\033[0m"


def why(change: Change) -> str:
    """The reason part of a change line, without parentheses; empty when there is nothing to say.

    New reason codes first, then ``X cleared`` for those gone: ``"tcp_timeout cleared"``,
    ``"cert_hostname_mismatch; tcp_refused cleared"``; ``"not probed this round"`` for an
    address that became absent, ``"in the DNS answer"`` for an ok one that was absent.
    """
    if change.new.status is None:
        return "not probed this round"
    parts = [", ".join(change.added)] if change.added else []
    if change.cleared:
        parts.append(", ".join(change.cleared) + " cleared")
    if change.old is not None and change.old.status is None and not parts:
        parts.append("in the DNS answer")
    return "; ".join(parts)


def change_text(change: Change, tz: tzinfo | None = None, *, color: bool = False) -> str:
    """One line for a change: ``09:41:07 www 10.0.2.31 critical→ok (tcp_timeout cleared)``.

    The first state seen reads ``09:41:00 www 10.0.2.31 critical (tcp_refused)``.

    Args:
        change: the change.
        tz: the time zone of the clock time; ``None`` for this machine's local time.
        color: colour the new state (ANSI, for a terminal).
    """
    clock = datetime.fromtimestamp(change.timestamp, tz).strftime("%H:%M:%S")
    new = _paint(change.new.status, change.new.word, color)
    states = new if change.old is None else f"{change.old.word}→{new}"
    reason = why(change)
    return f"{clock} {where(change.target, change.address)} {states}" + (f" ({reason})" if reason else "")


def change_json(change: Change) -> dict[str, Any]:
    """One JSON line of ``--watch --json`` for a change (see the README for the schema)."""
    return {
        "type": "change",
        "schema_version": WATCH_SCHEMA_VERSION,
        "timestamp": round(change.timestamp, 3),
        "round": change.round,
        "target": change.target,
        "address": str(change.address) if change.address is not None else None,
        "old": change.old.word if change.old is not None else None,
        "new": change.new.word,
        "reasons": list(change.new.reasons),
        "added": list(change.added),
        "cleared": list(change.cleared),
        "failures": [
            {
                "reason": f.reason.value,
                "severity": f.severity.value,
                "detail": f.detail,
                "hint": change.hints[i] if i < len(change.hints) else None,
            }
            for i, f in enumerate(change.failures)
        ],
    }


def _seconds(value: float) -> str:
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"


def status_line(watch: Watch, now: float, width: int, *, probing: bool = False) -> str:
    """The status line refreshed in place on a terminal, at most ``width - 1`` characters.

    ``round 7 · www 127.0.10.1 ok, 127.0.10.2 critical, (target) ok · last change 12 s ago``

    Args:
        watch: the watch.
        now: Unix time, for the time since the last change.
        width: the terminal's width in characters.
        probing: a round is under way (its number is shown with ``…``).
    """
    head = f"round {watch.rounds + 1}…" if probing else f"round {watch.rounds}"
    parts = [head]
    per_target: dict[str, list[str]] = {}
    for (target, address), state in watch.current():
        label = str(address) if address is not None else TARGET_LEVEL
        per_target.setdefault(target, []).append(f"{label} {state.word}")
    parts.extend(f"{target} {', '.join(items)}" for target, items in per_target.items())
    since = (
        watch.last_change_timestamp if watch.last_change_timestamp is not None else watch.started_timestamp
    )
    label = "last change" if watch.last_change_timestamp is not None else "no change in"
    age = _seconds(max(0.0, now - since))
    parts.append(f"{label} {age} ago" if watch.last_change_timestamp is not None else f"{label} {age}")
    line = " · ".join(parts)
    limit = max(width - 1, 10)
    return line if len(line) <= limit else line[: limit - 1] + "…"


_ENDED_WORDS = {
    "ok": "ended at the first all-ok round (--until ok)",
    "max_time": "ended at --max-time",
    "interrupted": "interrupted",
}


def summary_text(summary: Summary, *, color: bool = False) -> str:
    """The summary printed when a watch ends, several lines ending in a newline.

    ::

        watch: 7 rounds in 14.2 s, ended at the first all-ok round (--until ok)
          first ok     after 9.8 s (round 5)
          worst seen   critical
          final        ok (exit 0)
          www 127.0.10.1   0 flips  worst ok        now ok
          www 127.0.10.2   1 flip   worst critical  now ok
    """
    ended = _ENDED_WORDS.get(summary.ended_by) or (
        f"ended after {summary.stable_rounds} identical rounds (--until stable)"
    )
    rounds = "1 round" if summary.rounds == 1 else f"{summary.rounds} rounds"
    lines = [f"watch: {rounds} in {_seconds(summary.duration_seconds)}, {ended}"]
    if summary.first_ok_seconds is not None:
        lines.append(
            f"  first ok     after {_seconds(summary.first_ok_seconds)} (round {summary.first_ok_round})"
        )
    else:
        lines.append("  first ok     never")
    worst = summary.worst.value if summary.worst else "none (no round completed)"
    lines.append(f"  worst seen   {_paint(summary.worst, worst, color)}")
    final = summary.status.value if summary.status else "unknown"
    lines.append(f"  final        {_paint(summary.status, final, color)} (exit {int(summary.exit_code)})")
    names = [where(e.target, e.address) for e in summary.entities]
    column = max((len(n) for n in names), default=0)
    for name, entity in zip(names, summary.entities, strict=True):
        flips = f"{entity.flips} flip" + ("" if entity.flips == 1 else "s")
        worst_word = entity.worst.value if entity.worst else "-"
        lines.append(f"  {name:<{column}}  {flips:<8} worst {worst_word:<8}  now {entity.state.word}")
    return "\n".join(lines) + "\n"


def summary_json(summary: Summary) -> dict[str, Any]:
    """The last JSON line of ``--watch --json`` (see the README for the schema)."""
    return {
        "type": "summary",
        "schema_version": WATCH_SCHEMA_VERSION,
        "started_timestamp": round(summary.started_timestamp, 3),
        "ended_timestamp": round(summary.ended_timestamp, 3),
        "duration_seconds": round(summary.duration_seconds, 3),
        "rounds": summary.rounds,
        "ended_by": summary.ended_by,
        "first_ok_seconds": None if summary.first_ok_seconds is None else round(summary.first_ok_seconds, 3),
        "first_ok_round": summary.first_ok_round,
        "worst": summary.worst.value if summary.worst else None,
        "status": summary.status.value if summary.status else None,
        "exit_code": int(summary.exit_code),
        "last_change_timestamp": (
            None if summary.last_change_timestamp is None else round(summary.last_change_timestamp, 3)
        ),
        "addresses": [
            {
                "target": e.target,
                "address": str(e.address) if e.address is not None else None,
                "flips": e.flips,
                "worst": e.worst.value if e.worst else None,
                "state": e.state.word,
                "reasons": list(e.state.reasons),
            }
            for e in summary.entities
        ],
    }
