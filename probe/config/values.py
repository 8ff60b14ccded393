"""Plain parsers of addresses, networks, DNS names and durations, with no pydantic.

The config models validate with them (:mod:`probe.config.models`), and ``probe check`` uses
them to start its DNS query before the config machinery is loaded (see
:func:`probe.cli.head_start.head_start`): one parser for each, whichever path reads the text.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import idna

from probe._text import shown

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: RFC 1918 private ranges, RFC 6598 shared address space (carrier-grade NAT, used by some
#: VPCs) and RFC 4193 unique local IPv6 addresses.
PRIVATE_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """Split ``host``, ``host:port`` or ``[IPv6]:port``; the host must be an IP address.

    Args:
        text: the text.
        default_port: the port when none is given; ``None`` makes the port required.

    Raises:
        ValueError: not an IP address with an optional (or required) valid port.
    """
    original = text
    if not isinstance(text, str):
        raise ValueError(f"{shown(original)} is not an address")
    host, port_text = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{shown(original)} is not IP, IP:port or [IPv6]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{shown(original)} has no valid port (1-65535) after ':'")
        port = int(port_text)
    elif default_port is None:
        raise ValueError(f"{shown(original)} needs a port, as in 127.0.0.1:9798")
    else:
        port = default_port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        with_port = "" if port_text is None else " with a port"
        raise ValueError(f"{shown(original)} is not an IP address{with_port}") from None
    return str(address), port


def parse_resolver(text: str) -> tuple[str, int]:
    """Parse ``IP``, ``IP:port`` or ``[IPv6]:port`` into ``(ip, port)``; port defaults to 53.

    An unbracketed IPv6 address that reads as well as an address and a port is refused
    (:func:`ambiguous_port`): ``::1:53`` is the address ``::1:53`` (as dig reads it, and not
    loopback), but a person almost always means port 53 on ``::1``; ``[::1]:53`` or
    ``[::1:53]`` says which.

    Raises:
        ValueError: not an IP address with an optional port, or ambiguous.
    """
    text = str(text).strip()
    try:
        host, port = split_host_port(text, 53)
    except ValueError as exc:
        raise ValueError(f"{exc} (resolvers are given by address)") from None
    split = ambiguous_port(text)
    if split is not None:
        address, port_text = split
        raise ValueError(
            f"{shown(text)} is ambiguous: the IPv6 address {host}, or port {port_text} on {address}? "
            f"Write [{address}]:{port_text} for the port, or [{host}] for the address"
        )
    return host, port


def ambiguous_port(text: str) -> tuple[str, str] | None:
    """``(address, port)`` when an unbracketed IPv6 address also reads as an address and a port.

    The rule: ``text`` ends in ``:`` and 1 to 5 decimal digits of a port (1-65535), and what
    comes before that ``:`` is an IPv6 address too. Only an address with ``::`` followed by at
    least two groups can be read both ways: ``::1:53`` (``::1`` and 53), ``fd00::1:53``;
    not ``2001:4860:4860::8888`` (``2001:4860:4860:`` is no address), ``fd00::53`` or a
    full eight-group address. ``None`` otherwise (a bracketed address, IPv4, not IPv6).
    """
    head, sep, tail = text.rpartition(":")
    if not sep or not (tail.isascii() and tail.isdigit()) or len(tail) > 5 or not 0 < int(tail) < 65536:
        return None
    try:
        ipaddress.IPv6Address(text)
        ipaddress.IPv6Address(head)
    except ValueError:
        return None
    return str(ipaddress.IPv6Address(head)), str(int(tail))


def parse_network(text: str) -> IPNetwork:
    """Parse a CIDR such as ``10.0.0.0/8``; a bare address means a single host.

    Raises:
        ValueError: not a network, or host bits are set (``10.0.0.1/8``).
    """
    text = str(text).strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{shown(text)} is not a CIDR network such as 10.0.0.0/8") from None
        raise ValueError(f"{shown(text)} has host bits set; did you mean {loose}?") from None


def normalize_hostname(text: str) -> str:
    """Lower-case a DNS name and drop one trailing dot; IDNs become A-labels.

    Internationalized names are converted with IDNA 2008 and UTS #46 mapping, as browsers
    do (``straße.example`` → ``xn--strae-oqa.example``). A label that starts with ``xn--``
    must be a valid A-label (RFC 5891 §5.4): ``xn--zz.x.test`` is refused.

    Raises:
        ValueError: not a syntactically valid DNS name, or a malformed A-label.
    """
    name = str(text).strip()
    if name.endswith("."):
        name = name[:-1]
    try:
        name = name.lower() if name.isascii() else idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise ValueError(f"{shown(text)} is not a valid DNS name") from None
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise ValueError(f"{shown(text)} is not a valid DNS name")
    for label in labels:
        if label.startswith("xn--") and not _valid_a_label(label):
            raise ValueError(
                f"{shown(text)} is not a valid DNS name: {label!r} is not a valid A-label "
                "(IDNA 2008, RFC 5891 §5.4)"
            )
    return name


def _valid_a_label(label: str) -> bool:
    """Whether an ``xn--`` label decodes to a valid IDNA 2008 U-label that encodes back to it.

    Browsers and IDNA 2008 libraries refuse such a name (RFC 5891 §5.4); a resolver would
    look it up as plain ASCII, so a typo would probe a name no client can use.
    """
    try:
        return idna.alabel(idna.ulabel(label)).decode("ascii") == label
    except (idna.IDNAError, UnicodeError):
        return False


def url_ip_literal(url: str) -> IPAddress | None:
    """The IP address a URL's host names (``https://10.0.0.1/``, ``https://[fd00::1]/``), else ``None``."""
    try:
        return ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return None


#: Prometheus' duration grammar (``model.ParseDuration`` of prometheus/common): whole
#: numbers, each unit at most once and in this order, e.g. ``1h30m``, ``1m30s``, ``500ms``.
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
#: Milliseconds per unit of :data:`_DURATION`'s groups (a year is 365 days, as in Prometheus).
_UNIT_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_PLAIN_SECONDS = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION_IN_UNIT = re.compile(r"[\d.]*\.\d*(?:ms|[smhdwy])")

#: The accepted forms, as error messages name them.
DURATION_FORMS = "e.g. 5s, 500ms, 1m30s, or seconds"

#: The longest timeout or interval a config may set (seconds).
MAX_DURATION_SECONDS = 3600.0


def parse_duration(value: Any) -> float:
    """Seconds from a Prometheus duration string or plain seconds.

    Accepts an int or float (seconds), a string holding plain seconds (``"2.5"``, as
    typed on a command line), or a Prometheus duration: whole numbers with the units
    ``y w d h m s ms`` in that order, each at most once (``500ms``, ``5s``, ``1m30s``,
    ``1h``; prometheus/common ``model.ParseDuration``; a year is 365 days). Fractions
    inside a unit (``1.5s``) are not Prometheus durations and are refused. The sign and
    size are not checked here (see :func:`positive_duration`).

    Returns:
        The duration in seconds.

    Raises:
        ValueError: anything else, e.g. ``'5 sec' is not a duration (e.g. 5s, 500ms,
            1m30s, or seconds)``; booleans too.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _PLAIN_SECONDS.fullmatch(text):
            return float(text)
        match = _DURATION.fullmatch(text)
        if text and match:
            try:
                millis = sum(int(g) * unit for g, unit in zip(match.groups(), _UNIT_MS, strict=True) if g)
            except ValueError:  # more digits than int() converts: far too long anyway
                return float("inf")
            return millis / 1000
        if _FRACTION_IN_UNIT.fullmatch(text):
            raise ValueError(
                f"{shown(value)} is not a duration ({DURATION_FORMS}): whole numbers per unit, "
                "as in 1s500ms, or plain seconds such as 1.5"
            )
    raise ValueError(f"{shown(value)} is not a duration ({DURATION_FORMS})")


def positive_duration(value: Any, maximum: float = MAX_DURATION_SECONDS) -> float:
    """:func:`parse_duration`, then greater than 0 and at most ``maximum`` seconds.

    Raises:
        ValueError: not a duration, or out of range, e.g. ``must be greater than 0 (got
            -1)`` or ``must be at most 1h (got '2h')``.
    """
    seconds = parse_duration(value)
    if not seconds > 0:  # also NaN
        raise ValueError(f"must be greater than 0 (got {shown(value)})")
    if seconds > maximum:
        raise ValueError(f"must be at most {format_duration(maximum)} (got {shown(value)})")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration where exact (``90`` → ``1m30s``), else ``2.5s``."""
    millis = round(seconds * 1000)
    if seconds <= 0 or abs(millis - seconds * 1000) > 1e-6:
        return f"{seconds:g}s"
    parts = []
    for unit, size in zip(("y", "w", "d", "h", "m", "s", "ms"), _UNIT_MS, strict=True):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
