"""Small helpers for the plain sentences in findings and messages."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``"1 request"``, ``"2 requests"``; ``many`` for irregular plurals."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
