"""The argparse ``type`` functions of option values: whole numbers and durations.

Each turns the text as typed into a value or raises :class:`argparse.ArgumentTypeError`
with a one-line message, which argparse reports against the option
(``argument --every: '5 sec' is not a duration …``).
"""

from __future__ import annotations

import argparse


def whole_number(text: str) -> int:
    """The argparse ``type`` of a count (``--requests``, ``--stable-rounds``).

    Raises:
        argparse.ArgumentTypeError: ``'x' is not a whole number``.
    """
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def duration_argument(text: str, maximum: float | None = None) -> float:
    """The argparse ``type`` of a duration option: seconds or a Prometheus duration, > 0.

    ``"90"``, ``"1.5"``, ``"500ms"`` and ``"1m30s"`` are accepted (see
    :func:`probe.config.values.parse_duration`); at most ``maximum`` seconds (default 1h, the
    limit of every timeout).

    Raises:
        argparse.ArgumentTypeError: with the one-line message, e.g. ``'5 sec' is not a
            duration (e.g. 5s, 500ms, 1m30s, or seconds)``.
    """
    from probe.config.values import MAX_DURATION_SECONDS, positive_duration

    try:
        return positive_duration(text, MAX_DURATION_SECONDS if maximum is None else maximum)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def watch_duration(text: str) -> float:
    """``--every`` and ``--max-time``: a duration up to a week (seconds)."""
    return duration_argument(text, maximum=7 * 86400)


def client_timeout(text: str) -> float:
    """``probe run --web.client-timeout``: a duration up to 5 minutes (seconds)."""
    return duration_argument(text, maximum=300)
