"""Reading a response's header fields: repeated fields, content codings, cookie names, ``Date``.

Pure, no I/O. Values are made printable and bounded before they reach a detail or a label,
and a value cut for that ends with ``…`` (never cut without saying so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

#: Names taken from a response (backends, cookies) are cut to this many characters.
MAX_NAME = 64
_MAX_COOKIES = 16
_PRINTABLE = re.compile(r"[^\x21-\x7e]+")


def printable_token(text: str) -> str:
    """A header token in at most 32 printable characters (a cut one ends with ``…``), for details."""
    return cut_label(_PRINTABLE.sub("_", text), 32)


def cut_label(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, a cut one ending with ``…`` (for names and labels)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def distinct(values: list[str]) -> list[str]:
    """Values stripped, empty ones dropped, repeats dropped (first seen first)."""
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def field_values(
    headers: httpx.Headers | Mapping[str, str], name: str, split_commas: bool = True
) -> list[str] | None:
    """Every value of a header field, ``None`` when absent (repeated fields are lists, RFC 9110 §5.3)."""
    if isinstance(headers, httpx.Headers):
        if name not in headers:
            return None
        return headers.get_list(name, split_commas=split_commas)
    value = headers.get(name)
    if value is None:
        return None
    return value.split(",") if split_commas else [value]


def content_codings(headers: httpx.Headers | Mapping[str, str]) -> tuple[str, ...]:
    """The response's content codings in the order applied, lower case, identity left out."""
    return tuple(c.lower() for c in _distinct_keep_order(field_values(headers, "content-encoding") or []))


def _distinct_keep_order(values: list[str]) -> list[str]:
    # Codings may legitimately repeat (gzip applied twice); only blanks and identity go.
    return [v.strip() for v in values if v.strip() and v.strip().lower() != "identity"]


def cookie_names(headers: httpx.Headers | Mapping[str, str]) -> tuple[str, ...]:
    """Names of the cookies set by ``Set-Cookie`` fields (never their values), at most 16.

    Past 16 distinct names the 16th entry says how many more there were
    (``"… and 2984 more"``): the list is bounded, and never cut without saying so.
    """
    names = []
    for field in field_values(headers, "set-cookie", split_commas=False) or []:
        name = field.split(";", 1)[0].split("=", 1)[0].strip()
        cleaned = cut_label(_PRINTABLE.sub("_", name), MAX_NAME)
        if cleaned:
            names.append(cleaned)
    distinct = tuple(dict.fromkeys(names))
    if len(distinct) <= _MAX_COOKIES:
        return distinct
    return (*distinct[: _MAX_COOKIES - 1], f"… and {len(distinct) - _MAX_COOKIES + 1} more")


def response_date(headers: httpx.Headers | Mapping[str, str]) -> float | None:
    """The ``Date`` header as Unix time; ``None`` when absent, unreadable or given twice differently."""
    values = distinct(field_values(headers, "date", split_commas=False) or [])
    if len(values) != 1:
        return None
    try:
        when = parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or an obsolete zone: RFC 9110 says GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
