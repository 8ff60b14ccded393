"""What a watch shows: change lines, JSON lines, the status line and the summary.

``probe.judge.watch`` turns the rounds of ``probe check --watch`` into changes of state and
a summary; this module renders them (pure: it never probes and never writes), with each
finding's hint in the words of the target's platform (``probe.report.hints``).
``probe.cli.watch`` runs the loop and prints what this module renders.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from probe.judge.watch import Change, Summary, Watch
from probe.model.reasons import Status
from probe.model.results import IPAddress
from probe.report.hints import hint_for

#: Version of the JSON lines of ``probe check --watch --json``; fields are only added within it.
WATCH_SCHEMA_VERSION = 1

#: How the target as a whole reads where an address would.
TARGET_LEVEL = "(target)"

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
    """The last JSON line of ``--watch --json`` (see docs/json-document.md for the schema)."""
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
