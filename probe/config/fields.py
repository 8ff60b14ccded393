"""The field parsers of the config models: plain functions, no pydantic.

Each takes a value as YAML (or the command line) gives it and returns the parsed value, or
raises ``ValueError`` with a one-line message; the models put the field path in front
(:mod:`probe.config.models` calls them as ``BeforeValidator`` s and field validators).

They are not in :mod:`probe.config.values`: ``probe check`` loads that module before its first
DNS query (see :func:`probe.cli.main.head_start`), and these parsers are only for the models.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from probe._text import printable, shorten, shown
from probe.config.values import IPAddress, normalize_hostname, url_ip_literal

_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_BACKEND_NAME = re.compile(r"[\x21-\x7e]{1,64}")


# --------------------------------------------------------------------------- lists


def string_list(value: Any) -> list[Any]:
    """A list as given, or a single string as a list of one.

    Raises:
        ValueError: ``must be a list``.
    """
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list")
    return list(value)


def optional_list(value: Any) -> list[Any] | None:
    """A list that may be left out (``None``, the default) but not given empty.

    Raises:
        ValueError: not a list, or an empty one.
    """
    if value is None:
        return value
    items = string_list(value)
    if not items:
        raise ValueError("must not be empty (leave it out for the default)")
    return items


def parse_addresses(value: Any) -> tuple[IPAddress, ...]:
    """Parse pinned addresses: a non-empty list of distinct IPv4 or IPv6 addresses.

    Raises:
        ValueError: empty, not an IP address, or an address twice.
    """
    items = string_list(value)
    if not items:
        raise ValueError("must list at least one IP address (leave it out to resolve the name)")
    addresses: list[IPAddress] = []
    for item in items:
        try:
            address = ipaddress.ip_address(str(item).strip()) if isinstance(item, str) else None
        except ValueError:
            address = None
        if address is None:
            raise ValueError(f"{shown(item)} is not an IP address")
        if address in addresses:
            raise ValueError(f"lists {address} twice")
        addresses.append(address)
    return tuple(addresses)


#: What ``expect_backends`` takes, said in each of its errors.
_EXPECT_BACKENDS = (
    "takes a count (at least 1) or a list of backend names, each once, e.g. 2 or [web-1, web-2]"
)


def expect_backends(value: Any) -> int | tuple[str, ...] | None:
    """``expect_backends``: a count (at least 1) or a list of distinct backend names.

    Raises:
        ValueError: yes/no, a count below 1, an empty list or name, or a name twice; the
            message names both forms.
    """
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, int) and value < 1):
        raise ValueError(f"{_EXPECT_BACKENDS} (got {shown(value)})")
    if isinstance(value, int):
        return value
    return _backend_names(value)


def _backend_names(value: Any) -> tuple[str, ...]:
    items = string_list(value)
    if not items or not all(isinstance(i, str | int) and str(i).strip() for i in items):
        raise ValueError(f"{_EXPECT_BACKENDS} (got {shown(value)})")
    names = [str(i).strip() for i in items]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise ValueError(f"lists the backend {twice} twice; it {_EXPECT_BACKENDS}")
    return tuple(names)


# --------------------------------------------------------------------------- numbers and patterns


def not_bool(value: Any) -> Any:
    """A number field's value, unchanged; yes/no is refused.

    pydantic takes true as the number 1 (a 1-byte limit, one request): nothing anyone meant.

    Raises:
        ValueError: a boolean.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not yes/no (got {shown(value)})")
    return value


class LinearRegex:
    """A user's regular expression, compiled by RE2: every search takes time linear in the text.

    RE2's syntax is that of Go's ``regexp``, which blackbox_exporter uses: no
    backreferences, lookarounds or possessive repetitions, the constructs that let a
    backtracking engine (Python's ``re``) take time exponential in what a server sends
    (``<h1>(.*)</h1>`` over 64 KB of ``<h1>`` took ``re`` seconds, RE2 microseconds).
    ``google-re2`` is imported here, where a regex is compiled, so a run without one does
    not load it. Equal and hashed by its pattern, as ``re.Pattern`` is.

    Args:
        pattern: the regular expression as written.

    Raises:
        ValueError: RE2 does not accept ``pattern``; the message says why in one line.
    """

    __slots__ = ("_compiled", "groups", "pattern")

    def __init__(self, pattern: str) -> None:
        import re2

        options = re2.Options()
        options.log_errors = False  # RE2 would print its complaint on stderr
        try:
            self._compiled = re2.compile(pattern, options)
        except re2.error as exc:
            raise ValueError(_re2_problem(exc)) from None
        self.pattern = pattern
        self.groups: int = self._compiled.groups

    def search(self, text: bytes) -> tuple[str | None, ...] | None:
        """The leftmost match in ``text`` (UTF-8): the match and each group, ``None`` for no match.

        A group that took part in no match is ``None``; the groups are decoded from UTF-8
        (``text`` is valid UTF-8, so they are too; a bad byte would become U+FFFD).
        """
        match = self._compiled.search(text)
        if match is None:
            return None
        return tuple(
            None if part is None else part.decode("utf-8", "replace")
            for part in (match.group(0), *match.groups())
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(("LinearRegex", self.pattern))

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"


#: What RE2 lacks, by the start of its complaint: the constructs that make ``re`` backtrack.
_RE2_LACKS = (
    ("invalid perl operator: (?=", "lookahead"),
    ("invalid perl operator: (?!", "lookahead"),
    ("invalid perl operator: (?<=", "lookbehind"),
    ("invalid perl operator: (?<!", "lookbehind"),
    ("invalid escape sequence: \\", "backreferences"),
    ("bad repetition operator: ++", "possessive repetition"),
    ("bad repetition operator: *+", "possessive repetition"),
    ("bad repetition operator: ?+", "possessive repetition"),
)


def _re2_problem(exc: Exception) -> str:
    """One line on why RE2 refused a pattern, naming the construct it lacks where it is known."""
    raw = exc.args[0] if exc.args else ""
    why = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    message = f"not a regular expression in RE2 syntax (as blackbox_exporter): {shorten(printable(why), 120)}"
    if why == "invalid escape sequence: \\Z":
        return f"{message}; the end of the text is \\z in RE2 (and $ without the m flag)"
    for start, lacks in _RE2_LACKS:
        if why.startswith(start) and (lacks != "backreferences" or why[len(start) :].isdigit()):
            return f"{message}; RE2 has no {lacks}, so that a search takes time linear in the body"
    return message


def compile_regex(value: Any) -> LinearRegex:
    """A regular expression compiled by RE2 (:class:`LinearRegex`; a compiled one is kept).

    Raises:
        ValueError: not a string, or not a regular expression that RE2 accepts.
    """
    if isinstance(value, LinearRegex):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a regular expression string")
    return LinearRegex(value)


# --------------------------------------------------------------------------- HTTP


def parse_status_codes(value: Any) -> tuple[tuple[int, int], ...]:
    """``valid_status_codes``: one or a list of ``200``, ``200-299`` or ``2xx``.

    Returns:
        ``(low, high)`` ranges, inclusive, in the order given.

    Raises:
        ValueError: an empty list, or an item that is none of these forms or outside 100-599.
    """
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("must list at least one status code")
    return tuple(_status_range(item) for item in items)


def _status_range(item: Any) -> tuple[int, int]:
    text = str(item).strip().lower()
    if isinstance(item, bool):
        raise ValueError(f"{item!r} is not a status code")
    if re.fullmatch(r"[1-5]xx", text):
        low = int(text[0]) * 100
        codes = (low, low + 99)
    elif re.fullmatch(r"\d{3}", text):
        codes = (int(text), int(text))
    elif m := re.fullmatch(r"(\d{3})\s*-\s*(\d{3})", text):
        low, high = int(m[1]), int(m[2])
        if low > high:
            raise ValueError(f"{item!r}: range start is above its end")
        codes = (low, high)
    else:
        raise ValueError(f"{item!r} is not a status code, a range like 200-299, or 2xx")
    if not all(100 <= code <= 599 for code in codes):
        raise ValueError(f"{item!r} is outside 100-599")
    return codes


def http_version(value: Any) -> str:
    """``http_version``: ``auto``, ``1.1`` or ``2`` (YAML reads 1.1 as a float and 2 as an int).

    Raises:
        ValueError: anything else.
    """
    text = str(value).strip().lower()
    if isinstance(value, bool) or text not in ("auto", "1.1", "2"):
        raise ValueError(f"{shown(value)} is not one of auto, 1.1, 2")
    return text


def header_names(value: Any) -> Any:
    """The ``headers`` mapping, unchanged (``{}`` for ``None``) once its names are checked.

    Raises:
        ValueError: not a mapping, an invalid name, ``Host``, or one name twice in
            different case.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of header name to value")
    seen: dict[str, str] = {}
    for name in value:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() == "host":
            raise ValueError("Host is always the URL's hostname and cannot be set")
        if name.lower() in seen:
            raise ValueError(f"{seen[name.lower()]!r} and {name!r} are the same header")
        seen[name.lower()] = name
    return value


def header_value(value: Any) -> Any:
    """A header given as a plain value becomes ``{"value": ...}``; a mapping is kept.

    Raises:
        ValueError: neither a string, a number nor a mapping.
    """
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"value": str(value)}
    if isinstance(value, Mapping):
        return value
    raise ValueError("must be a string, or {value: ..., secret: true}")


def field_value(value: str) -> str:
    """A header value, unchanged: printable ASCII without leading or trailing white space.

    Raises:
        ValueError: anything else; the message never repeats the value (it may be a secret).
    """
    if value and not _FIELD_VALUE.fullmatch(value):
        raise ValueError(
            "must be printable ASCII without line breaks or leading/trailing spaces "
            "(the value is not shown here)"
        )
    return value


# --------------------------------------------------------------------------- TLS


def tls_version(value: Any) -> str:
    """``min_tls_version``: ``1.0`` to ``1.3`` (YAML reads 1.3 as a float; ``str(1.3) == "1.3"``).

    Raises:
        ValueError: anything else.
    """
    text = str(value).strip()
    if text not in ("1.0", "1.1", "1.2", "1.3"):
        raise ValueError(f"{shown(value)} is not one of 1.0, 1.1, 1.2, 1.3")
    return text


def ocsp_mode(value: Any) -> Any:
    """``ocsp``: YAML 1.1 reads an unquoted off/no/false as False, the documented ``off``.

    Raises:
        ValueError: true (on, yes).
    """
    if value is False:
        return "off"
    if value is True:
        raise ValueError("must be one of 'off' or 'staple' (got true: YAML reads on/yes/true as true)")
    return value


def pem_path(value: Any) -> Any:
    """A ``ca_file`` value, unchanged; ``None`` when left out.

    Raises:
        ValueError: not a string, or only white space.
    """
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError("must be the path of a PEM file")
    return value


def fingerprint(value: Any) -> str:
    """A SHA-256 fingerprint as lowercase hex: case-insensitive, colons allowed (``AB:CD:…``).

    Raises:
        ValueError: not 64 hex digits.
    """
    text = value.strip().lower().replace(":", "") if isinstance(value, str) else ""
    text = text.removeprefix("sha256=").removeprefix("sha256")
    if not _FINGERPRINT.fullmatch(text):
        raise ValueError(
            f"{shown(value)} is not a SHA-256 fingerprint: 64 hex digits, colons allowed, as "
            "'openssl x509 -noout -fingerprint -sha256' prints it"
        )
    return text


# --------------------------------------------------------------------------- names and URLs


def server_name(value: Any) -> str:
    """A DNS name for SNI, Host and the certificate check; an IP address is refused.

    ``server_name`` is the name clients use, sent in SNI. An IP-address URL without it is
    verified against its own address (no SNI), so an IP address here would only verify
    another address than the one probed.

    Raises:
        ValueError: an IP address, or not a valid DNS name.
    """
    try:
        ipaddress.ip_address(str(value).strip().strip("[]"))
    except ValueError:
        return normalize_hostname(value)
    raise ValueError(
        f"{shown(value)} is an IP address; server_name is the DNS name clients use (sent in SNI); "
        "leave it out to verify the certificate against the URL's address"
    )


def backend_name(value: Any) -> str:
    """A direct backend's name as the backend rule reads it: 1-64 printable characters, no spaces.

    Raises:
        ValueError: anything else (a number is taken as its digits).
    """
    if not isinstance(value, str | int) or isinstance(value, bool) or not _BACKEND_NAME.fullmatch(str(value)):
        raise ValueError(
            f"{shown(value)} must be the backend's name as the backend rule reads it "
            "(1-64 printable characters, no spaces)"
        )
    return str(value)


#: The longest URL a target may have (characters). httpx refuses a request URL over 65,536
#: characters; probe's puts the address in place of the name (up to 47 characters more:
#: ``[IPv6]:65535``), so this leaves room for it.
MAX_URL_CHARS = 65_000

#: ASCII control characters (C0 and DEL), which httpx refuses in a URL and ``urlsplit`` drops
#: silently in part (tab, CR, LF: ``ok.example\n.evil`` would become ``ok.example.evil``).
_URL_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def web_url(value: Any, schemes: tuple[str, ...] = ("https",)) -> str:
    """A URL of one of ``schemes``, without user:password, with a valid port and a valid host.

    The host is a DNS name (checked as :func:`normalize_hostname` does) or an IP address;
    whether an IP address is allowed there is for the caller to say. Refused too, as what
    the HTTP layer cannot send as written (:func:`sendable`): a URL longer than
    :data:`MAX_URL_CHARS`, a control character (a line break inside a URL pasted on the
    command line), a space (curl refuses it too; write ``%20``), and text that is not
    Unicode (bytes that were not UTF-8 on the command line).

    Raises:
        ValueError: one line naming what is wrong.
    """
    if not isinstance(value, str):
        raise ValueError("must be a URL such as https://www.corp.example/health")
    text = sendable(value.strip())
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed IPv6 literal, a bracketed host that is not one
        raise ValueError(f"{shown(text)} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in schemes:
        wanted = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"{shown(value)} must be an {wanted} URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain user:password (use headers)")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{shown(value)} has an invalid port")
    host_part = parts.netloc.rpartition("@")[2]
    after = host_part.partition("]")[2]
    if host_part.startswith("[") and after[:1] not in ("", ":"):  # urlsplit ignores it
        raise ValueError(f"{shown(value)} has {shown(after)} after the IPv6 address's ']'")
    if url_ip_literal(text) is None:
        normalize_hostname(parts.hostname or "")
    return text


def sendable(url: str) -> str:
    """``url`` unchanged when the HTTP layer can send it as written.

    Raises:
        ValueError: longer than :data:`MAX_URL_CHARS`, a control character, a space, or a
            lone surrogate (not UTF-8).
    """
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"is {len(url):,} characters long; a URL may have at most {MAX_URL_CHARS:,}")
    control = _URL_CONTROL.search(url)
    if control is not None:
        raise ValueError(
            f"{shown(url)} holds the control character {control.group()!r} at position "
            f"{control.start()}; a URL cannot hold one"
        )
    if " " in url:
        raise ValueError(
            f"{shown(url)} holds a space at position {url.index(' ')}; write it as %20 (curl refuses it too)"
        )
    try:
        url.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{shown(url)} is not valid text at position {exc.start} (bytes that are not UTF-8?)"
        ) from None
    return url
