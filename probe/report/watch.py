"""What a watch shows: change lines, JSON lines, the status line and the summary.

``probe.judge.watch`` turns the rounds of ``probe check --watch`` into changes of state and
a summary; this module renders them (pure: it never probes and never writes), with each
finding's hint in the words of the target's platform (``probe.report.hints``).
``probe.cli.watch`` runs the loop and prints what this module renders.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from probe.judge.watch import Change, EntityTally, Outage, Summary, Watch, longest
from probe.model.reasons import Status
from probe.model.results import IPAddress
from probe.report.hints import hint_for

#: Version of the JSON lines of ``probe check --watch --json``; fields are only added within it.
WATCH_SCHEMA_VERSION = 1

#: How the target as a whole reads where an address would.
TARGET_LEVEL = "(target)"

#: The summary lists at most this many outages per address or target (the JSON line has all).
LISTED_OUTAGES = 5

_COLOURS = {Status.OK: "32", Status.WARNING: "33", Status.CRITICAL: "31"}


def where(target: str, address: IPAddress | None) -> str:
    """``"www 10.0.2.31"``, or ``"www (target)"`` for the target as a whole."""
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


def _clock(timestamp: float, tz: tzinfo | None) -> str:
    """``"09:41:07"``: the local time (``tz``; ``None`` for this machine's) of a Unix time."""
    return datetime.fromtimestamp(timestamp, tz).strftime("%H:%M:%S")


def change_text(change: Change, tz: tzinfo | None = None, *, color: bool = False) -> str:
    """One line for a change: ``09:41:07 www 10.0.2.31 critical→ok (tcp_timeout cleared)``.

    The first state seen reads ``09:41:00 www 10.0.2.31 critical (tcp_refused)``. A change
    that ends an outage says how long it was and since when: ``critical→ok (tcp_timeout
    cleared; outage of 11.0 s since 09:40:56)``.

    Args:
        change: the change.
        tz: the time zone of the clock times; ``None`` for this machine's local time.
        color: colour the new state (ANSI, for a terminal).
    """
    new = _paint(change.new.status, change.new.word, color)
    states = new if change.old is None else f"{change.old.word}→{new}"
    reason = "; ".join(part for part in (why(change), _outage_ended(change, tz)) if part)
    line = f"{_clock(change.timestamp, tz)} {where(change.target, change.address)} {states}"
    return line + (f" ({reason})" if reason else "")


def _outage_ended(change: Change, tz: tzinfo | None) -> str:
    """``"outage of 11.0 s since 09:40:56"`` when ``change`` ends an outage, else ``""``."""
    outage = change.outage
    if outage is None or outage.ended_round != change.round:
        return ""
    if outage.started_round == 1:
        return f"outage of at least {_seconds(outage.seconds)}, from the first round"
    return f"outage of {_seconds(outage.seconds)} since {_clock(outage.started_timestamp, tz)}"


def change_json(change: Change) -> dict[str, Any]:
    """One JSON line of ``--watch --json`` for a change (see docs/json-document.md for the schema)."""
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
                "hint": _hint(change, i),
            }
            for i, f in enumerate(change.failures)
        ],
        "outage": None if change.outage is None else outage_json(change.outage),
    }


def outage_json(outage: Outage) -> dict[str, Any]:
    """An outage in the JSON lines (see docs/json-document.md for the schema)."""
    return {
        "started_timestamp": round(outage.started_timestamp, 3),
        "started_round": outage.started_round,
        "ended_timestamp": None if outage.ended_timestamp is None else round(outage.ended_timestamp, 3),
        "ended_round": outage.ended_round,
        "seconds": round(outage.seconds, 3),
        "worst": outage.worst.value,
        "reasons": list(outage.reasons),
    }


def _hint(change: Change, index: int) -> str | None:
    """The hint of ``change.failures[index]``, in the words of the target's platform."""
    codes = change.status_codes[index] if index < len(change.status_codes) else ()
    return hint_for(change.failures[index], change.platform, codes)


def _seconds(value: float) -> str:
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"


def status_line(watch: Watch, now: float, width: int, *, probing: bool = False) -> str:
    """The status line refreshed in place on a terminal, at most ``width - 1`` characters.

    Each target's overall state, then its addresses':
    ``round 7 · www critical (127.0.10.1 ok, 127.0.10.2 critical) · last change 12.0 s ago``

    Args:
        watch: the watch.
        now: Unix time, for the time since the last change.
        width: the terminal's width in characters.
        probing: a round is under way (its number is shown with ``…``).
    """
    head = f"round {watch.rounds + 1}…" if probing else f"round {watch.rounds}"
    parts = [head, *_target_states(watch)]
    since = (
        watch.last_change_timestamp if watch.last_change_timestamp is not None else watch.started_timestamp
    )
    label = "last change" if watch.last_change_timestamp is not None else "no change in"
    age = _seconds(max(0.0, now - since))
    parts.append(f"{label} {age} ago" if watch.last_change_timestamp is not None else f"{label} {age}")
    line = " · ".join(parts)
    limit = max(width - 1, 10)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _target_states(watch: Watch) -> list[str]:
    """Per target: ``"www critical (127.0.10.1 ok, 127.0.10.2 critical)"``."""
    overall: dict[str, str] = {}
    addresses: dict[str, list[str]] = {}
    for (target, address), state in watch.current():
        if address is None:
            overall[target] = state.word
        else:
            addresses.setdefault(target, []).append(f"{address} {state.word}")
    return [
        f"{target} {word}" + (f" ({', '.join(addresses[target])})" if target in addresses else "")
        for target, word in overall.items()
    ]


def summary_text(summary: Summary, tz: tzinfo | None = None, *, color: bool = False) -> str:
    """The summary printed when a watch ends, several lines ending in a newline.

    ::

        watch: 17 rounds in 33.6 s, ended after 3 identical rounds (--until stable)
          worst seen      critical
          final           ok (exit 0)
          longest outage  11.0 s, www (target) 11:23:30 → 11:23:41
          last change     11:23:41
          www (target)   2 flips  worst critical  now ok since 11:23:41
            outage 11:23:30 → 11:23:41  11.0 s  critical (tcp_refused)
          www 10.0.2.31  0 flips  worst ok        now ok since 11:23:08
          www 10.0.2.32  2 flips  worst critical  now ok since 11:23:41
            outage 11:23:30 → 11:23:41  11.0 s  critical (tcp_refused)

    A watch whose first round was not all ok also says when the first all-ok round ended
    (``first ok  after 16.3 s (round 9)``, or ``never``); one that started ok does not:
    its outages say what happened.

    Args:
        summary: the summary.
        tz: the time zone of the clock times; ``None`` for this machine's local time.
        color: colour the states (ANSI, for a terminal).
    """
    rounds = "1 round" if summary.rounds == 1 else f"{summary.rounds} rounds"
    lines = [f"watch: {rounds} in {_seconds(summary.duration_seconds)}, {_ended_words(summary)}"]
    if summary.round_cut:
        lines.append(f"  cut short       round {summary.rounds + 1} was under way; it does not count")
    if summary.first_round_status is not Status.OK:
        lines.append(f"  first ok        {_first_ok(summary)}")
    worst = summary.worst.value if summary.worst else "none (no round completed)"
    lines.append(f"  worst seen      {_paint(summary.worst, worst, color)}")
    final = summary.status.value if summary.status else "unknown"
    lines.append(f"  final           {_paint(summary.status, final, color)} (exit {int(summary.exit_code)})")
    lines.append(f"  longest outage  {_longest_text(summary, tz)}")
    last = summary.last_change_timestamp
    lines.append(f"  last change     {'none' if last is None else _clock(last, tz)}")
    names = [where(e.target, e.address) for e in summary.entities]
    column = max((len(n) for n in names), default=0)
    for name, entity in zip(names, summary.entities, strict=True):
        lines.append(f"  {name:<{column}}  {_entity_text(entity, tz, color)}")
        lines.extend(f"    {line}" for line in _outage_lines(entity.outages, tz))
    return "\n".join(lines) + "\n"


def _ended_words(summary: Summary) -> str:
    """How the watch ended, e.g. ``"ended at the first all-ok round (--until ok)"``."""
    if summary.ended_by == "ok":
        return "ended at the first all-ok round (--until ok)"
    if summary.ended_by == "stable":
        return f"ended after {summary.stable_rounds} identical rounds (--until stable)"
    if summary.ended_by == "interrupted":
        return "interrupted"
    limit = (
        "--max-time"
        if summary.max_time_seconds is None
        else f"--max-time ({_seconds(summary.max_time_seconds)})"
    )
    if summary.round_cut:
        return f"ended at {limit}"
    return f"ended: the next round would have passed {limit}"


def _first_ok(summary: Summary) -> str:
    """``"after 16.3 s (round 9)"``: from the start of the watch to the end of its first all-ok round."""
    if summary.first_ok_seconds is None:
        return "never"
    return f"after {_seconds(summary.first_ok_seconds)} (round {summary.first_ok_round})"


def _longest_text(summary: Summary, tz: tzinfo | None) -> str:
    """``"11.0 s, www (target) 11:23:30 → 11:23:41"``, or ``"none"``."""
    found = summary.longest_outage
    if found is None:
        return "none"
    entity, outage = found
    return f"{_length(outage)}, {where(entity.target, entity.address)} {_span(outage, tz)}"


def _entity_text(entity: EntityTally, tz: tzinfo | None, color: bool) -> str:
    """``"2 flips  worst critical  now ok since 11:23:41"``: one address or target at the end."""
    flips = f"{entity.flips} flip" + ("" if entity.flips == 1 else "s")
    worst = entity.worst.value if entity.worst else "-"
    now = _paint(entity.state.status, entity.state.word, color)
    reasons = f" ({', '.join(entity.state.reasons)})" if entity.state.reasons else ""
    return f"{flips:<8} worst {worst:<8}  now {now} since {_clock(entity.since_timestamp, tz)}{reasons}"


def _outage_lines(outages: tuple[Outage, ...], tz: tzinfo | None) -> list[str]:
    """One line per outage, at most :data:`LISTED_OUTAGES` (the last ones, and the longest)."""
    shown = list(outages[-LISTED_OUTAGES:])
    top = longest(outages)
    if top is not None and top not in shown:
        shown = [top, *shown[1:]]
    lines = [f"outage {_span(o, tz)}  {_length(o)}  {o.worst.value} ({', '.join(o.reasons)})" for o in shown]
    if len(outages) > len(shown):
        lines.append(f"… and {len(outages) - len(shown)} more (the JSON summary lists them all)")
    return lines


def _span(outage: Outage, tz: tzinfo | None) -> str:
    """``"11:23:30 → 11:23:41"``; ``"11:23:30 → not over"`` for one that lasts at the end."""
    end = "not over" if outage.ended_timestamp is None else _clock(outage.ended_timestamp, tz)
    return f"{_clock(outage.started_timestamp, tz)} → {end}"


def _length(outage: Outage) -> str:
    """``"11.0 s"``; ``"at least 11.0 s"`` when it began before the watch or lasts at its end."""
    bound = outage.started_round == 1 or not outage.over
    return ("at least " if bound else "") + _seconds(outage.seconds)


def summary_json(summary: Summary) -> dict[str, Any]:
    """The last JSON line of ``--watch --json`` (see docs/json-document.md for the schema)."""
    longest_found = summary.longest_outage
    return {
        "type": "summary",
        "schema_version": WATCH_SCHEMA_VERSION,
        "started_timestamp": round(summary.started_timestamp, 3),
        "ended_timestamp": round(summary.ended_timestamp, 3),
        "duration_seconds": round(summary.duration_seconds, 3),
        "rounds": summary.rounds,
        "ended_by": summary.ended_by,
        "max_time_seconds": summary.max_time_seconds,
        "round_cut": summary.round_cut,
        "first_round_status": _word(summary.first_round_status),
        "first_ok_seconds": _rounded(summary.first_ok_seconds),
        "first_ok_round": summary.first_ok_round,
        "worst": _word(summary.worst),
        "status": _word(summary.status),
        "exit_code": int(summary.exit_code),
        "last_change_timestamp": _rounded(summary.last_change_timestamp),
        "longest_outage": None
        if longest_found is None
        else {**_key_json(longest_found[0]), **outage_json(longest_found[1])},
        "addresses": [_entity_json(e) for e in summary.entities],
    }


def _entity_json(entity: EntityTally) -> dict[str, Any]:
    """One address or target in the summary line."""
    top = entity.longest_outage
    return {
        **_key_json(entity),
        "flips": entity.flips,
        "worst": _word(entity.worst),
        "state": entity.state.word,
        "reasons": list(entity.state.reasons),
        "last_change_timestamp": _rounded(entity.last_change_timestamp),
        "ok_since_timestamp": _rounded(entity.ok_since_timestamp),
        "outages": [outage_json(o) for o in entity.outages],
        "longest_outage": None if top is None else outage_json(top),
    }


def _key_json(entity: EntityTally) -> dict[str, Any]:
    return {"target": entity.target, "address": str(entity.address) if entity.address is not None else None}


def _word(status: Status | None) -> str | None:
    return None if status is None else status.value


def _rounded(timestamp: float | None) -> float | None:
    return None if timestamp is None else round(timestamp, 3)
