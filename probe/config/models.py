"""Configuration: strict, frozen pydantic models and the YAML loader.

A loaded :class:`Config` is always usable: URLs are split, regexes compiled, networks and
resolvers parsed. Every problem becomes one :class:`ConfigError` whose text names the file,
the field path and what is wrong, e.g.
``probe.yaml: targets[1].timeouts.tls: must be greater than 0 (got -1)``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from probe._text import plural, shown
from probe.config import defaults as _defaults
from probe.config.values import (  # the models parse with these; probe.config.models re-exports them
    PRIVATE_NETWORKS,
    IPNetwork,
    normalize_hostname,
    parse_network,
    parse_resolver,
    positive_duration,
    split_host_port,
    url_ip_literal,
)

#: Header names whose values never appear in logs or reports, whatever the config says.
ALWAYS_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

DEFAULT_LISTEN = _defaults.DEFAULT_LISTEN

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ConfigError(Exception):
    """Bad configuration or arguments; ``str()`` is the one-line message for the user.

    Attributes:
        message: what is wrong.
        where: the file (or ``"arguments"``), ``None`` when unknown.
        field: the field path such as ``targets[1].timeouts.tls``, ``None`` for the whole.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.where = where
        self.field = field
        text = ": ".join(part for part in (where, field, message) if part)
        # One line, whatever the input held: control characters are shown escaped.
        super().__init__(_CONTROL.sub(lambda m: repr(m.group())[1:-1], text))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


# --------------------------------------------------------------------------- value parsers


def _parse_status_codes(value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("must list at least one status code")
    ranges: list[tuple[int, int]] = []
    for item in items:
        text = str(item).strip().lower()
        if isinstance(item, bool):
            raise ValueError(f"{item!r} is not a status code")
        if re.fullmatch(r"[1-5]xx", text):
            low = int(text[0]) * 100
            ranges.append((low, low + 99))
        elif re.fullmatch(r"\d{3}", text):
            ranges.append((int(text), int(text)))
        elif m := re.fullmatch(r"(\d{3})\s*-\s*(\d{3})", text):
            low, high = int(m[1]), int(m[2])
            if low > high:
                raise ValueError(f"{item!r}: range start is above its end")
            ranges.append((low, high))
        else:
            raise ValueError(f"{item!r} is not a status code, a range like 200-299, or 2xx")
        if not all(100 <= code <= 599 for code in ranges[-1]):
            raise ValueError(f"{item!r} is outside 100-599")
    return tuple(ranges)


def _compile_regex(value: Any) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a regular expression string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


def _tls_version(value: Any) -> str:
    text = str(value).strip()  # YAML reads 1.3 as a float; str(1.3) == "1.3"
    if text not in ("1.0", "1.1", "1.2", "1.3"):
        raise ValueError(f"{shown(value)} is not one of 1.0, 1.1, 1.2, 1.3")
    return text


def _http_version(value: Any) -> str:
    text = str(value).strip().lower()  # YAML reads 1.1 as a float and 2 as an int
    if isinstance(value, bool) or text not in ("auto", "1.1", "2"):
        raise ValueError(f"{shown(value)} is not one of auto, 1.1, 2")
    return text


def _not_bool(value: Any) -> Any:
    # pydantic takes true as the number 1 (a 1-byte limit, one request): nothing anyone meant.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not yes/no (got {shown(value)})")
    return value


def _ocsp_mode(value: Any) -> Any:
    # YAML 1.1 reads an unquoted off/no/false as False: that is the documented "off".
    if value is False:
        return "off"
    if value is True:
        raise ValueError("must be one of 'off' or 'staple' (got true: YAML reads on/yes/true as true)")
    return value


def _addresses(value: Any) -> tuple[IPAddress, ...]:
    """Parse pinned addresses: a non-empty list of distinct IPv4 or IPv6 addresses."""
    items = _string_list(value)
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


def _string_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list")
    return list(value)


Regex = Annotated[re.Pattern[str], BeforeValidator(_compile_regex)]
Resolver = Annotated[tuple[str, int], BeforeValidator(parse_resolver)]
Network = Annotated[IPNetwork, BeforeValidator(parse_network)]
Hostname = Annotated[str, BeforeValidator(normalize_hostname)]


def _server_name(value: Any) -> str:
    """A DNS name for SNI, Host and the certificate check; an IP address is refused.

    Python sends no SNI for an IP address and checks it against the certificate's IP
    SANs instead, so ``server_name: 10.0.1.17`` would quietly probe something else than
    the name clients use.
    """
    try:
        ipaddress.ip_address(str(value).strip().strip("[]"))
    except ValueError:
        return normalize_hostname(value)
    raise ValueError(
        f"{shown(value)} is an IP address; server_name is the DNS name clients use (sent in SNI)"
    )


ServerName = Annotated[str, BeforeValidator(_server_name)]
StatusCodes = Annotated[tuple[tuple[int, int], ...], BeforeValidator(_parse_status_codes)]
TlsVersion = Annotated[str, BeforeValidator(_tls_version)]
HttpVersion = Annotated[str, BeforeValidator(_http_version)]
#: A duration in seconds, given as seconds or a Prometheus duration; > 0 and at most 1h.
Seconds = Annotated[float, BeforeValidator(positive_duration)]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- models


class Timeouts(_Frozen):
    """Stage timeouts and the overall deadline of one cycle, in seconds.

    ``dns`` bounds one query to one resolver (the next resolver is tried after it);
    ``connect`` the TCP connect; ``tls`` the handshake; ``http`` one whole request, body
    included; ``deadline`` the whole cycle. Each is given as seconds or a Prometheus
    duration (``500ms``, ``1m30s``).

    The defaults below are upper bounds that fit themselves, as Prometheus fits an unset
    ``scrape_timeout`` to the ``scrape_interval``: see :meth:`fitted`. Which fields were
    set explicitly is ``model_fields_set``, kept through :meth:`fitted`.
    """

    dns: Seconds = _defaults.DNS_TIMEOUT
    connect: Seconds = 3.0
    tls: Seconds = 5.0
    http: Seconds = 5.0
    deadline: Seconds = _defaults.DEADLINE

    def fitted(self, interval: float | None, inherited: frozenset[str] = frozenset()) -> Timeouts:
        """These timeouts with the unset ones fitted to the interval and the deadline.

        An unset ``deadline`` is capped at ``interval`` (Prometheus caps an unset
        ``scrape_timeout`` at the scrape interval, with no margin: the scheduler never
        overlaps cycles); an unset stage timeout is capped at the (fitted) deadline. An
        explicitly set value that does not fit is an error naming both values.

        Args:
            interval: seconds between cycles, ``None`` when there is none (``probe check
                URL``): then only the stage timeouts are fitted to the deadline.
            inherited: the fields set in ``defaults`` rather than in the target, named so
                in messages.

        Returns:
            A ``Timeouts`` with the same ``model_fields_set``; fitting it again changes nothing.

        Raises:
            ValueError: ``timeouts.deadline: 20s is longer than the interval (10s)``, or
                ``timeouts.tls: 10s is longer than timeouts.deadline (5s, fitted to the
                interval)``.
        """
        explicit = self.model_fields_set

        def source(name: str) -> str:
            return " (set in defaults)" if name in inherited else ""

        deadline = self.deadline
        if "deadline" in explicit:
            if interval is not None and deadline > interval:
                raise ValueError(
                    f"timeouts.deadline: {deadline:g}s{source('deadline')} is longer than the "
                    f"interval ({interval:g}s)"
                )
            why = ""
        elif interval is not None and interval < deadline:
            deadline, why = interval, ", fitted to the interval"
        else:
            why = ", the default"
        values = {"deadline": deadline}
        for name in ("dns", "connect", "tls", "http"):
            value = getattr(self, name)
            if name not in explicit:
                value = min(value, deadline)
            elif value > deadline:
                raise ValueError(
                    f"timeouts.{name}: {value:g}s{source(name)} is longer than timeouts.deadline "
                    f"({deadline:g}s{why})"
                )
            values[name] = value
        return Timeouts.model_construct(_fields_set=set(explicit), **values)

    def as_seconds(self) -> tuple[tuple[str, float], ...]:
        """``(name, seconds)`` for every timeout, stages first and ``deadline`` last."""
        return tuple((name, float(getattr(self, name))) for name in type(self).model_fields)


class BackendConfig(_Frozen):
    """How to tell which backend answered: a response header, or a body regex's first group."""

    header: str | None = None
    body_regex: Regex | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BackendConfig:
        if (self.header is None) == (self.body_regex is None):
            raise ValueError("give exactly one of 'header' or 'body_regex'")
        if self.body_regex is not None and self.body_regex.groups < 1:
            raise ValueError("body_regex needs a capture group for the backend name")
        return self


class HeaderValue(_Frozen):
    """A request header value; ``secret`` ones are shown as ``(secret)`` in reports.

    The value must be printable ASCII without leading or trailing white space (an RFC 9110
    field value as every HTTP/1.1 client can send it); the message never repeats it.
    """

    value: str
    secret: bool = False

    @field_validator("value")
    @classmethod
    def _field_value(cls, value: str) -> str:
        if value and not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                "must be printable ASCII without line breaks or leading/trailing spaces "
                "(the value is not shown here)"
            )
        return value


def _header_value(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"value": str(value)}
    if isinstance(value, Mapping):
        return value
    raise ValueError("must be a string, or {value: ..., secret: true}")


_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_BACKEND_NAME = re.compile(r"[\x21-\x7e]{1,64}")


def _fingerprint(value: Any) -> str:
    """A SHA-256 fingerprint as lowercase hex: case-insensitive, colons allowed (``AB:CD:…``)."""
    text = value.strip().lower().replace(":", "") if isinstance(value, str) else ""
    text = text.removeprefix("sha256=").removeprefix("sha256")
    if not _FINGERPRINT.fullmatch(text):
        raise ValueError(
            f"{shown(value)} is not a SHA-256 fingerprint: 64 hex digits, colons allowed, as "
            "'openssl x509 -noout -fingerprint -sha256' prints it"
        )
    return text


def _web_url(value: Any, schemes: tuple[str, ...] = ("https",)) -> str:
    """A URL of one of ``schemes``, without user:password, with a valid port and a valid host.

    The host is a DNS name (checked as :func:`normalize_hostname` does) or an IP address;
    whether an IP address is allowed there is for the caller to say.

    Raises:
        ValueError: one line naming what is wrong.
    """
    if not isinstance(value, str):
        raise ValueError("must be a URL such as https://www.corp.example/health")
    parts = urlsplit(value.strip())
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
    if url_ip_literal(value.strip()) is None:
        normalize_hostname(parts.hostname or "")
    return value.strip()


#: The trust settings of a direct backend, of which exactly one must be given.
DIRECT_TRUST = ("ca_file", "fingerprint_sha256", "insecure_skip_verify")


class DirectBackendConfig(_Frozen):
    """One backend checked directly, bypassing the load balancer (``direct_backends``).

    There is no default trust: a load balancer such as an ALB does not verify its targets'
    certificates (usually self-signed), so neither the system store (every self-signed
    certificate would fail) nor no verification at all (a silent downgrade) is a safe
    guess; the user says which of ``ca_file``, ``fingerprint_sha256`` (the SHA-256 of the
    leaf's DER, pinned the way SSH pins host keys) or ``insecure_skip_verify: true``.

    Attributes:
        name: the backend's name as the target's backend rule identifies it.
        url: ``https://IP[:port]/path`` or ``https://name[:port]/path``.
        server_name: for an IP-literal URL, the name sent in SNI and Host (and verified
            with ``ca_file``); default: the target's hostname, the Host the load balancer
            forwards. Not with a DNS-name URL (the name is the server name).
        ca_file: PEM trust anchors for this hop.
        fingerprint_sha256: pin of the leaf certificate (lowercase hex once loaded).
        insecure_skip_verify: no verification for this hop (explicit).
    """

    name: str
    url: Annotated[str, BeforeValidator(_web_url)]
    server_name: ServerName | None = None
    ca_file: Path | None = None
    fingerprint_sha256: Annotated[str, BeforeValidator(_fingerprint)] | None = None
    insecure_skip_verify: bool = False

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if (
            not isinstance(value, str | int)
            or isinstance(value, bool)
            or not _BACKEND_NAME.fullmatch(str(value))
        ):
            raise ValueError(
                f"{shown(value)} must be the backend's name as the backend rule reads it "
                "(1-64 printable characters, no spaces)"
            )
        return str(value)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError("must be the path of a PEM file")
        return value

    @model_validator(mode="after")
    def _one_trust(self) -> DirectBackendConfig:
        given = [
            key
            for key, value in (
                ("ca_file", self.ca_file),
                ("fingerprint_sha256", self.fingerprint_sha256),
                ("insecure_skip_verify", self.insecure_skip_verify or None),
            )
            if value is not None
        ]
        if len(given) != 1:
            got = f" (got {' and '.join(given)})" if given else ""
            raise ValueError(
                "give exactly one of ca_file, fingerprint_sha256 or insecure_skip_verify: true "
                f"for this hop{got}; a load balancer does not verify its targets, so probe does "
                "not guess"
            )
        if self.server_name is not None and url_ip_literal(self.url) is None:
            raise ValueError(
                "server_name: only for a URL whose host is an IP address; a DNS name in the URL "
                "is the server name"
            )
        return self

    @property
    def trust(self) -> str:
        """``"ca_file"``, ``"fingerprint_sha256"`` or ``"insecure_skip_verify"``."""
        if self.ca_file is not None:
            return "ca_file"
        return "fingerprint_sha256" if self.fingerprint_sha256 is not None else "insecure_skip_verify"


class _TargetFields(_Frozen):
    """Everything a target may set; also the shape of the top-level ``defaults``."""

    interval: Seconds = 30.0
    resolvers: tuple[Resolver, ...] | None = None
    expect_networks: tuple[Network, ...] = PRIVATE_NETWORKS
    expect_same_addresses_as: Hostname | None = None
    ip_family: Literal["ipv4", "ipv6", "both"] = _defaults.IP_FAMILY
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    min_tls_version: TlsVersion = "1.2"
    cert_expiry_warning_days: Annotated[float, Field(ge=0, le=3650), BeforeValidator(_not_bool)] = 30.0
    requests_per_address: Annotated[int, Field(ge=1, le=100), BeforeValidator(_not_bool)] = 4
    reuse_connections: bool = False
    backend: BackendConfig | None = None
    expect_backends: int | tuple[str, ...] | None = None
    valid_status_codes: StatusCodes = ((200, 299),)
    body_regex: Regex | None = None
    headers: dict[str, Annotated[HeaderValue, BeforeValidator(_header_value)]] = Field(default_factory=dict)
    max_body_bytes: Annotated[int, Field(ge=0, le=64 * 1024 * 1024), BeforeValidator(_not_bool)] = 64 * 1024
    timeouts: Timeouts = Timeouts()
    #: ``staple``: ask for a stapled OCSP response on a second handshake per address.
    ocsp: Annotated[Literal["off", "staple"], BeforeValidator(_ocsp_mode)] = "off"
    # A body larger than this fails with http_body_too_large (blackbox_exporter's
    # body_size_limit); None: any size is fine and only max_body_bytes of it is read.
    body_size_limit: Annotated[int, Field(ge=1, le=1 << 40), BeforeValidator(_not_bool)] | None = None
    # ALPN of both the TLS stage and the HTTP requests: auto (h2, http/1.1), 1.1 or 2.
    http_version: HttpVersion = "auto"
    # Whose words the findings' hints use (probe.report.hints): generic, or aws (ELB, Route 53, ACM).
    platform: Literal["generic", "aws"] = "generic"
    # backend_cert_expiring_soon for a direct backend's certificate; 0 turns it off.
    direct_backend_cert_expiry_warning_days: Annotated[
        float, Field(ge=0, le=3650), BeforeValidator(_not_bool)
    ] = 30.0
    # How the balancer spreads requests (probe.judge.balancing): when an unseen backend is missing.
    balancing: Literal["round_robin", "least_outstanding_requests", "weighted_random", "any"] = "round_robin"
    # false: each address reaches only its own zone's backends (cross-zone load balancing off).
    cross_zone: bool = True

    @field_validator("resolvers", "expect_networks", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if value is None:
            return value
        items = _string_list(value)
        if not items:
            raise ValueError("must not be empty (leave it out for the default)")
        return items

    @field_validator("expect_backends", mode="before")
    @classmethod
    def _expect_backends(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("must be a count or a list of backend names")
        if isinstance(value, int):
            if value < 1:
                raise ValueError(f"must be at least 1 (got {value})")
            return value
        items = _string_list(value)
        if not items or not all(isinstance(i, str | int) and str(i).strip() for i in items):
            raise ValueError("must be a count or a non-empty list of backend names")
        names = [str(i).strip() for i in items]
        if len(set(names)) != len(names):
            raise ValueError("lists a backend name twice")
        return tuple(names)

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of header name to value")
        seen: dict[str, str] = {}
        for name in value:
            if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() == "host":
                raise ValueError("Host is always the URL's hostname and cannot be set")
            if name.lower() in seen:
                raise ValueError(f"{seen[name.lower()]!r} and {name!r} are the same header")
            seen[name.lower()] = name
        return value

    @field_validator("ca_file", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError("must be the path of a PEM file")
        return value


class TargetConfig(_TargetFields):
    """One probed URL and everything about how to judge it.

    Attributes beyond the settings: ``hostname`` (normalized), ``port``, ``path`` and
    ``scheme`` are derived from ``url``; ``hostname`` is ``server_name`` when the URL names
    an IP address. The port defaults to 443 for ``https://`` and 80 for ``http://``; an
    ``http://`` target has no TLS stage, so the TLS settings (``ca_file``,
    ``insecure_skip_verify``, ``min_tls_version``, ``cert_expiry_warning_days``) do not
    apply to it.

    Pinned addresses (no DNS query for the name, as curl's ``--resolve``): ``addresses``
    lists them for a URL with a DNS name; a URL whose host is an IP address is pinned to
    that address and needs ``server_name``, the name sent in SNI and Host and verified in
    the certificate (blackbox_exporter's ``tls_config.server_name``). ``pinned_by`` says
    which setting pinned them (``addresses`` or ``server_name``; the command line puts
    its flag there), ``None`` when the name is resolved by DNS; it cannot be set in a file.
    """

    name: str = ""
    url: str
    hostname: str = ""
    port: int = 443
    path: str = "/"
    #: ``https`` or ``http`` (lower case), from ``url``.
    scheme: str = "https"
    addresses: Annotated[tuple[IPAddress, ...], BeforeValidator(_addresses)] | None = None
    server_name: ServerName | None = None
    pinned_by: str | None = None
    #: Backends checked directly each cycle, besides through the load balancer.
    direct_backends: tuple[DirectBackendConfig, ...] = ()
    #: ``https``: every address must answer with a 301 or 302 to the ``https://`` form of
    #: the URL (an ``http://`` target only); see :func:`probe.stages.http.judge_redirect`.
    expect_redirect: Literal["https"] | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _url_is_http_or_https(cls, value: Any) -> Any:
        # An IP address needs server_name (checked in _derive).
        return _web_url(value, ("https", "http"))

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError("each target must be a mapping with at least 'url'")
        for key in ("hostname", "port", "path", "scheme"):
            if key in data:
                raise ValueError(f"'{key}' is taken from 'url' and cannot be set")
        if "pinned_by" in data:
            raise ValueError("'pinned_by' is set by probe from addresses or server_name and cannot be set")
        return data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> TargetConfig:
        parts = urlsplit(self.url)
        literal = url_ip_literal(self.url)
        if literal is not None:
            if self.server_name is None:
                raise ValueError(
                    f"url: {shown(self.url)} names an IP address: give the name to verify with "
                    "server_name (--server-name NAME), or put the DNS name in the URL and pin "
                    "the address with addresses (--resolve NAME:PORT:ADDR)"
                )
            # pinned_by is None on the first validation only (Config validates targets again).
            if self.addresses is not None and self.pinned_by is None:
                raise ValueError(
                    f"addresses: cannot be combined with an IP-address URL ({literal} is the "
                    "address probed); put the DNS name in the URL to pin other addresses"
                )
            object.__setattr__(self, "hostname", self.server_name)
            object.__setattr__(self, "addresses", (literal,))
            if self.pinned_by is None:
                object.__setattr__(self, "pinned_by", "server_name")
        else:
            if self.server_name is not None:
                raise ValueError(
                    "server_name: only for a URL whose host is an IP address; the URL's DNS "
                    "name is the server name (pin its addresses with addresses / --resolve)"
                )
            object.__setattr__(self, "hostname", normalize_hostname(parts.hostname or ""))
            if self.addresses is not None and self.pinned_by is None:
                object.__setattr__(self, "pinned_by", "addresses")
        scheme = parts.scheme.lower()
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "port", parts.port or (443 if scheme == "https" else 80))
        path = parts.path or "/"
        object.__setattr__(self, "path", f"{path}?{parts.query}" if parts.query else path)
        if not self.name:
            object.__setattr__(self, "name", self.hostname)
        if not _TARGET_NAME.match(self.name):
            raise ValueError(
                f"name: {self.name!r} must be 1-128 letters, digits or _.:- starting with a letter or digit"
            )
        if self.expect_backends is not None and self.backend is None:
            raise ValueError("expect_backends: needs 'backend' to tell the backends apart")
        self._check_plain(scheme)
        context = info.context if isinstance(info.context, Mapping) else {}
        interval = self.interval if context.get("interval_bound", True) else None
        fitted = self.timeouts.fitted(interval, frozenset(context.get("inherited_timeouts", ())))
        object.__setattr__(self, "timeouts", fitted)
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("insecure_skip_verify: cannot be combined with ca_file")
        names = [b.name for b in self.direct_backends]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"direct_backends: lists the backend {name!r} twice")
        return self

    def direct_target(self, backend: DirectBackendConfig) -> TargetConfig:
        """The settings a direct check of ``backend`` runs with: this target's, for the backend's URL.

        One request (``requests_per_address: 1``, a new connection), no backend
        expectations, no OCSP, no alias; the backend's trust instead of the target's
        (a fingerprint pin is a handshake without verification whose leaf is compared
        afterwards); ``direct_backend_cert_expiry_warning_days`` as the expiry warning.
        Timeouts, headers, status codes, body rules and the backend rule stay the target's.
        An IP-literal URL is pinned (no DNS query), its server name defaulting to this
        target's hostname.
        """
        parts = urlsplit(backend.url)
        literal = url_ip_literal(backend.url)
        if literal is not None:
            hostname = backend.server_name or self.hostname
            addresses: tuple[IPAddress, ...] | None = (literal,)
            pinned_by: str | None = "direct_backends"
        else:
            hostname, addresses, pinned_by = normalize_hostname(parts.hostname or ""), None, None
        path = parts.path or "/"
        return self.model_copy(
            update={
                "name": f"{self.name}/{backend.name}",
                "url": backend.url,
                "scheme": parts.scheme,
                "hostname": hostname,
                "port": parts.port or 443,
                "path": f"{path}?{parts.query}" if parts.query else path,
                "addresses": addresses,
                "server_name": backend.server_name,
                "pinned_by": pinned_by,
                "ca_file": backend.ca_file,
                "insecure_skip_verify": backend.ca_file is None,
                "requests_per_address": 1,
                "reuse_connections": False,
                "expect_backends": None,
                "expect_same_addresses_as": None,
                "ocsp": "off",
                "direct_backends": (),
                "expect_redirect": None,
                "cert_expiry_warning_days": self.direct_backend_cert_expiry_warning_days,
            }
        )

    def _check_plain(self, scheme: str) -> None:
        """The rules of ``http://`` targets and of ``expect_redirect``.

        Raises:
            ValueError: ``expect_redirect`` on an ``https://`` URL or with
                ``expect_backends``; ``ocsp: staple`` or ``http_version: 2`` on an
                ``http://`` URL (there is no handshake; probe does not speak h2c).
        """
        if self.expect_redirect is not None:
            if scheme != "http":
                raise ValueError(
                    "expect_redirect: only for an http:// URL (the plain HTTP listener that "
                    "redirects to HTTPS); this URL is already https://"
                )
            if self.expect_backends is not None:
                raise ValueError(
                    "expect_backends: cannot be combined with expect_redirect: the listener "
                    "answers with a redirect, no backend answers (set expect_backends: null "
                    "if it comes from defaults)"
                )
        if scheme == "http":
            if self.ocsp != "off":
                raise ValueError("ocsp: staple needs an https:// URL (an http:// target has no handshake)")
            if self.http_version == "2":
                raise ValueError(
                    "http_version: 2 needs an https:// URL: probe speaks HTTP/1.1 to an http:// "
                    "target (HTTP/2 over plain TCP, h2c, is not supported)"
                )

    @property
    def plain(self) -> bool:
        """The URL is ``http://``: TCP and HTTP/1.1 only, no TLS stage."""
        return self.scheme == "http"

    @property
    def expected_backend_count(self) -> int | None:
        """How many distinct backends should answer, ``None`` when not configured."""
        if isinstance(self.expect_backends, tuple):
            return len(self.expect_backends)
        return self.expect_backends

    @property
    def expected_backend_names(self) -> tuple[str, ...]:
        """The expected backend names, empty when given as a count or unset."""
        return self.expect_backends if isinstance(self.expect_backends, tuple) else ()

    def status_codes_text(self) -> str:
        """``valid_status_codes`` as text, e.g. ``"200-299"``."""
        return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.valid_status_codes)

    def status_accepted(self, code: int) -> bool:
        """Whether ``code`` is one of ``valid_status_codes``."""
        return any(lo <= code <= hi for lo, hi in self.valid_status_codes)

    def is_secret_header(self, name: str) -> bool:
        """Whether a request header's value must never be shown."""
        if name.lower() in ALWAYS_SECRET_HEADERS:
            return True
        wanted = name.lower()
        return any(key.lower() == wanted and value.secret for key, value in self.headers.items())


class MetricsConfig(_Frozen):
    """The top-level ``metrics`` section: what ``probe run`` exposes beyond the defaults.

    Attributes:
        histograms: expose ``probe_phase_duration_seconds``, a latency histogram per phase
            (13 buckets: 80 samples per target). Off by default, so a 2-address target
            exposes about 40 samples; the per-cycle phase gauges
            (``probe_http_duration_seconds``) are always there.
    """

    histograms: bool = False


class Config(_Frozen):
    """A whole configuration file.

    Attributes:
        path: where it was loaded from (``None`` for ad hoc checks).
        listen: ``host:port`` of the metrics endpoint of ``probe run``.
        targets: the targets, names unique.
        metrics: the ``metrics`` section.
    """

    path: Path | None = None
    listen: str = DEFAULT_LISTEN
    targets: tuple[TargetConfig, ...]
    metrics: MetricsConfig = MetricsConfig()

    def select(self, names: list[str]) -> Config:
        """The same config with only the named targets, in the order given.

        Raises:
            ConfigError: a name is not a target of this config.
        """
        by_name = {t.name: t for t in self.targets}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"no target named {unknown[0]!r}{_suggest(unknown[0], by_name)}; "
                f"targets: {', '.join(by_name)}",
                where=str(self.path or "config"),
            )
        return self.model_copy(update={"targets": tuple(by_name[n] for n in dict.fromkeys(names))})


# --------------------------------------------------------------------------- loading

_TOP_LEVEL_KEYS = ("listen", "defaults", "targets", "metrics")


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file.

    Returns:
        The validated config.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or any value is invalid; the
            message is one line naming the file, the field path and the problem.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read config: {reason}", where=str(path)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"larger than {MAX_CONFIG_BYTES // 1024} KiB; is it the right file?", where=str(path)
        )
    return parse_config(text, path)


def parse_config(text: str, path: Path | None = None) -> Config:
    """Validate configuration given as YAML text; see :func:`load_config`.

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    import yaml  # PyYAML: only a config file needs it, not ``probe check URL``

    from probe.config.yaml_loader import StrictLoader, yaml_problem

    where = str(path) if path else "config"
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(exc), where=where) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", where=where) from None
    if _too_big(data, MAX_VALUES):
        raise ConfigError(
            f"the document holds more than {MAX_VALUES} values once YAML aliases are expanded",
            where=where,
        )
    return build_config(data, path)


#: A config holds a few hundred values; more means an alias bomb or a mistake.
MAX_VALUES = 100_000

#: Config files larger than this are refused before parsing (bytes).
MAX_CONFIG_BYTES = 1024 * 1024


def _too_big(data: Any, budget: int) -> bool:
    """Whether ``data`` has more than ``budget`` values, counting shared ones each time."""
    stack = [data]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def build_config(
    data: Any, path: Path | None = None, where: str | None = None, *, interval_bound: bool = True
) -> Config:
    """Validate configuration given as plain data (as parsed from YAML).

    Args:
        data: the parsed document.
        path: the file it came from, if any.
        where: how to name the source in messages (default: the path, else ``config``).
        interval_bound: whether ``timeouts.deadline`` must fit in ``interval``; ``False``
            for ``probe check URL``, which runs once and has no interval (its deadline is
            then 25 s unless ``--timeout`` says otherwise, up to 1h).

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    where = where or (str(path) if path else "config")
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping with a 'targets' list", where=where)
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise ConfigError(f"unknown key{_suggest(key, _TOP_LEVEL_KEYS)}", where=where, field=str(key))
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError("must be a mapping of target settings", where=where, field="defaults")
    for key in ("name", "url", "addresses", "server_name", "direct_backends", "expect_redirect"):
        if key in defaults:
            raise ConfigError(
                f"set '{key}' per target, not in defaults", where=where, field=f"defaults.{key}"
            )
    try:
        _TargetFields.model_validate(defaults)
    except ValidationError as exc:
        raise _first_error(where, ("defaults",), exc, _TargetFields) from None
    except RecursionError:
        raise ConfigError("nested too deeply", where=where, field="defaults") from None
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ConfigError("must be a non-empty list of targets", where=where, field="targets")
    targets = []
    for index, raw in enumerate(raw_targets):
        loc: tuple[str | int, ...] = ("targets", index)
        if not isinstance(raw, Mapping):
            raise ConfigError("must be a mapping with at least 'url'", where=where, field=_path(loc))
        context = {
            "interval_bound": interval_bound,
            "inherited_timeouts": _inherited(defaults.get("timeouts"), raw.get("timeouts")),
        }
        try:
            merged = _relative_to(path, _merge(defaults, raw))
            targets.append(TargetConfig.model_validate(merged, context=context))
        except ValidationError as exc:
            raise _first_error(where, loc, exc, TargetConfig) from None
        except RecursionError:
            raise ConfigError("nested too deeply", where=where, field=_path(loc)) from None
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            raise ConfigError(
                f"{target.name!r} is also the name of targets[{seen[target.name]}]",
                where=where,
                field=f"targets[{index}].name",
            )
        seen[target.name] = index
    listen = data.get("listen", DEFAULT_LISTEN)
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, field="listen") from None
    try:
        raw_metrics = data.get("metrics")
        metrics = MetricsConfig.model_validate({} if raw_metrics is None else raw_metrics)
    except ValidationError as exc:
        raise _first_error(where, ("metrics",), exc, MetricsConfig) from None
    # Everything is validated; constructing without validation keeps pydantic from running
    # the targets' after-validators again without this call's context (interval_bound).
    return Config.model_construct(path=path, listen=listen, targets=tuple(targets), metrics=metrics)


def parse_listen(value: Any) -> tuple[str, int]:
    """Parse the endpoint address: ``IP:port`` or ``[IPv6]:port``.

    ``0.0.0.0`` or ``[::]`` listen on every interface; the address must be given, so
    exposing the endpoint is always a visible choice.

    Raises:
        ValueError: not an IP address with a port.
    """
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} must be IP:port, as in {DEFAULT_LISTEN}")
    try:
        return split_host_port(value, None)
    except ValueError as exc:
        raise ValueError(f"{exc} (0.0.0.0:9798 listens on all interfaces)") from None


def _relative_to(path: Path | None, target: dict[str, Any]) -> dict[str, Any]:
    """A relative ``ca_file`` names a file next to the config file, not in the working folder.

    The same holds for each ``direct_backends`` entry's ``ca_file``.
    """
    if path is None:
        return target
    ca_file = target.get("ca_file")
    if isinstance(ca_file, str) and ca_file.strip() and not Path(ca_file).is_absolute():
        target = {**target, "ca_file": str(path.parent / ca_file)}
    direct = target.get("direct_backends")
    if isinstance(direct, list) and any(isinstance(b, Mapping) and "ca_file" in b for b in direct):
        target = {
            **target,
            "direct_backends": [_relative_to(path, dict(b)) if isinstance(b, Mapping) else b for b in direct],
        }
    return target


def _inherited(defaults: Any, own: Any) -> frozenset[str]:
    """The ``timeouts`` keys a target takes from ``defaults`` (for messages)."""
    if not isinstance(defaults, Mapping):
        return frozenset()
    mine = set(own) if isinstance(own, Mapping) else set()
    return frozenset(str(key) for key in defaults if key not in mine)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Target settings over defaults; ``timeouts`` and ``headers`` merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if key == "timeouts" and isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = {**below, **value}
        elif key == "headers" and isinstance(value, Mapping) and isinstance(below, Mapping):
            # Header names are case-insensitive: the target's spelling replaces the default's.
            names = {str(name).lower() for name in value}
            merged[key] = {**{k: v for k, v in below.items() if str(k).lower() not in names}, **value}
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- error text


def _path(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_:-]+", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)!r}]"  # a key with dots, spaces or stranger characters
    return text


def _suggest(key: object, choices: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The valid keys of the mapping at ``loc`` inside ``model`` (for suggestions)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        current = next(
            (
                arg
                for arg in (getattr(annotation, "__args__", None) or (annotation,))
                if isinstance(arg, type) and issubclass(arg, BaseModel)
            ),
            None,
        )
    if current is None or not hasattr(current, "model_fields"):
        return []
    return [f for f in current.model_fields if f not in ("hostname", "port", "path", "pinned_by", "scheme")]


_MESSAGES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "missing": "required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number of seconds",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "literal_error": "must be one of {expected}",
}


_SCHEMA_TAG = re.compile(
    r"^(function-(after|before|wrap|plain)|lax-or-strict|json-or-python|is-instance|chain|nullable|"
    r"tagged-union|union|model|dataclass)(\[.*\])?$|^(int|str|float|bool|tuple\[str, \.\.\.\])$"
)


def _first_error(
    where: str, prefix: tuple[str | int, ...], exc: ValidationError, model: type[BaseModel]
) -> ConfigError:
    errors = exc.errors(include_url=False)
    error = errors[0]
    kind = error["type"]
    # Drop the tags pydantic puts in a path for its own schema steps (validators, unions);
    # an unknown key is always the last part, whatever it is called.
    inner, last = error["loc"][:-1], error["loc"][-1:]
    loc = tuple(p for p in inner if isinstance(p, int) or not _SCHEMA_TAG.match(p))
    loc += tuple(
        p for p in last if kind == "extra_forbidden" or isinstance(p, int) or not _SCHEMA_TAG.match(p)
    )
    full = prefix + loc
    if kind == "extra_forbidden" and loc:
        message = f"unknown key{_suggest(loc[-1], _fields_at(model, loc[:-1]))}"
    elif kind == "value_error":
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        # Cross-field checks name their field as "field.path: message".
        head, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head) and head.split(".")[0] in model.model_fields:
            full, message = full + tuple(head.split(".")), rest
    elif kind in _MESSAGES:
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (error.get("ctx") or {}).items()}
        message = _MESSAGES[kind].format(**ctx)
        if kind != "missing" and "headers" not in loc:  # header values may be secrets
            message += f" (got {_short(error.get('input'))})"
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    more = f" (and {plural(len(errors) - 1, 'more problem')})" if len(errors) > 1 else ""
    return ConfigError(f"{message}{more}", where=where, field=_path(full))


def _short(value: Any) -> str:
    return shown(value)
