"""Small helpers for the plain sentences in findings and messages."""

from __future__ import annotations

import re
import reprlib

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4
_REPR.maxlevel = 2


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``"1 request"``, ``"2 requests"``; ``many`` for irregular plurals."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def shown(value: object) -> str:
    """A bounded ``repr`` of a value for a message: long or deep input is cut with ``...``."""
    return _REPR.repr(value)


def shorten(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters with ``...``."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    r"""``text`` with control characters escaped (ESC as ``\x1b`` …): safe to print."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
