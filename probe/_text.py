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


def shorten(text: str, limit: int = 120, *, length: int | None = None) -> str:
    """``text`` in at most ``limit`` characters; when cut, it says so and how long it was.

    A cut text ends with ``…`` and the full length: ``"https://idp.example/authorize?cl…
    (1843 characters)"``, so that a value never looks complete when it is not. Limits too
    small for the mark (under 40 characters) cut with ``…`` alone.

    Args:
        text: the text to show.
        limit: the most characters of the result.
        length: the full length of the value ``text`` was taken from, when ``text`` is
            itself a cut of it (the JSON keeps values up to a cap); ``len(text)`` otherwise.
    """
    full = len(text) if length is None else max(length, len(text))
    if full <= limit and len(text) <= limit:
        return text
    mark = f"… ({full} characters)"
    if limit < 40:
        return text[: max(limit - 1, 0)] + "…"
    return text[: limit - len(mark)] + mark


def printable(text: str) -> str:
    r"""``text`` with control characters escaped (ESC as ``\x1b`` …): safe to print."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"{url_host(host)}:{port}"


def url_host(host: str) -> str:
    """A host as a URL or a Host header spells it: an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]" if ":" in host else host


def openssl_words(exc: BaseException) -> str:
    """OpenSSL's reason for a TLS error, in words: ``"sslv3 alert handshake failure"``.

    Takes ``ssl.SSLError`` (its ``reason`` code, e.g. ``SSLV3_ALERT_HANDSHAKE_FAILURE``) and
    pyOpenSSL's ``SSL.Error`` (the reason of the last ``(lib, func, reason)`` entry of its
    error queue, or the text of a ``SysCallError``); for any other error the OS's text, else
    the exception's own text, cut to 120 characters. The one place where probe turns
    OpenSSL's reasons into words.
    """
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    args = exc.args
    queued = _last_queued_reason(args[0] if args else None)
    if queued is not None:
        return queued
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if len(args) == 2 and isinstance(args[1], str) and args[1]:  # pyOpenSSL's SysCallError(errno, text)
        return args[1]
    return shorten(str(exc)) or type(exc).__name__


def _last_queued_reason(queue: object) -> str | None:
    """The reason of the last ``(lib, func, reason)`` entry of pyOpenSSL's error queue, if any."""
    if not isinstance(queue, list) or not queue:
        return None
    last = queue[-1]
    if isinstance(last, tuple) and last and isinstance(last[-1], str) and last[-1]:
        return last[-1]
    return None
