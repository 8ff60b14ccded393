"""Configuration: strict, frozen pydantic models.

A validated :class:`Config` is always usable: URLs are split, regexes compiled, networks and
resolvers parsed. :mod:`probe.config.load` reads a file into one; the fields are parsed by
:mod:`probe.config.fields` and :mod:`probe.config.values`, and every problem becomes one
:class:`~probe.config.errors.ConfigError` (:func:`probe.config.errors.first_error`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from probe._text import shown
from probe.config import defaults as _defaults
from probe.config import fields
from probe.config.errors import ConfigError, suggest
from probe.config.values import (
    PRIVATE_NETWORKS,
    IPAddress,
    IPNetwork,
    normalize_hostname,
    parse_network,
    parse_resolver,
    positive_duration,
    url_ip_literal,
)

#: Header names whose values never appear in logs or reports, whatever the config says.
ALWAYS_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
#: The method a ``grpc_health`` check calls.
GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


#: A user's regex, compiled by RE2 (linear time; blackbox_exporter's syntax).
Regex = Annotated[fields.LinearRegex, BeforeValidator(fields.compile_regex)]
Resolver = Annotated[tuple[str, int], BeforeValidator(parse_resolver)]
Network = Annotated[IPNetwork, BeforeValidator(parse_network)]
Hostname = Annotated[str, BeforeValidator(normalize_hostname)]
ServerName = Annotated[str, BeforeValidator(fields.server_name)]
StatusCodes = Annotated[tuple[tuple[int, int], ...], BeforeValidator(fields.parse_status_codes)]
TlsVersion = Annotated[str, BeforeValidator(fields.tls_version)]
HttpVersion = Annotated[str, BeforeValidator(fields.http_version)]
#: A duration in seconds, given as seconds or a Prometheus duration; > 0 and at most 1h.
Seconds = Annotated[float, BeforeValidator(positive_duration)]


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


class GrpcHealthConfig(_Frozen):
    """gRPC health checking: every request is ``grpc.health.v1.Health/Check`` for ``service``.

    ``service`` is the name asked for; ``""`` (the default) asks for the server as a whole,
    as blackbox_exporter's and grpc_health_probe's default.
    """

    service: Annotated[str, Field(max_length=256)] = ""

    @field_validator("service")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("must not hold control characters")
        return value


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
        return fields.field_value(value)


#: A header as configured: a plain value, or ``{value: ..., secret: true}``.
Header = Annotated[HeaderValue, BeforeValidator(fields.header_value)]


class TlsClientConfig(_Frozen):
    """A client certificate for listeners that ask for one (mutual TLS): ``tls_client``.

    The files are read when the configuration is loaded (:mod:`probe.stages.client_auth`):
    a key readable by others, an encrypted key without ``key_password_file`` and a key that
    does not match the certificate are refused there.

    Attributes:
        cert_file: PEM: the certificate, then the intermediates to send with it (curl's
            ``--cert``); it may hold the key too.
        key_file: PEM private key (curl's ``--key``); default: the key in ``cert_file``.
        key_password_file: a file whose first line is the passphrase of an encrypted key.
    """

    cert_file: Path
    key_file: Path | None = None
    key_password_file: Path | None = None

    @field_validator("cert_file", "key_file", "key_password_file", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return fields.pem_path(value)


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
        tls_client: the client certificate for this hop; default: the target's.
    """

    name: str
    url: Annotated[str, BeforeValidator(fields.web_url)]
    server_name: ServerName | None = None
    ca_file: Path | None = None
    fingerprint_sha256: Annotated[str, BeforeValidator(fields.fingerprint)] | None = None
    insecure_skip_verify: bool = False
    tls_client: TlsClientConfig | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return fields.backend_name(value)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return fields.pem_path(value)

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


class TargetFields(_Frozen):
    """Everything a target may set; also the shape of the top-level ``defaults``."""

    interval: Seconds = 30.0
    resolvers: tuple[Resolver, ...] | None = None
    expect_networks: tuple[Network, ...] = PRIVATE_NETWORKS
    expect_same_addresses_as: Hostname | None = None
    ip_family: Literal["ipv4", "ipv6", "both"] = _defaults.IP_FAMILY
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    min_tls_version: TlsVersion = "1.2"
    cert_expiry_warning_days: Annotated[float, Field(ge=0, le=3650), BeforeValidator(fields.not_bool)] = 30.0
    requests_per_address: Annotated[int, Field(ge=1, le=100), BeforeValidator(fields.not_bool)] = 4
    reuse_connections: bool = False
    backend: BackendConfig | None = None
    expect_backends: int | tuple[str, ...] | None = None
    valid_status_codes: StatusCodes = ((200, 299),)
    body_regex: Regex | None = None
    headers: dict[str, Header] = Field(default_factory=dict)
    max_body_bytes: Annotated[int, Field(ge=0, le=64 * 1024 * 1024), BeforeValidator(fields.not_bool)] = (
        64 * 1024
    )
    timeouts: Timeouts = Timeouts()
    #: ``staple``: ask for a stapled OCSP response on a second handshake per address.
    ocsp: Annotated[Literal["off", "staple"], BeforeValidator(fields.ocsp_mode)] = "off"
    # A body larger than this fails with http_body_too_large (blackbox_exporter's
    # body_size_limit); None: any size is fine and only max_body_bytes of it is read.
    body_size_limit: Annotated[int, Field(ge=1, le=1 << 40), BeforeValidator(fields.not_bool)] | None = None
    # ALPN of both the TLS stage and the HTTP requests: auto (h2, http/1.1), 1.1 or 2.
    http_version: HttpVersion = "auto"
    # Whose words the findings' hints use (probe.report.hints): generic, or aws (ELB, Route 53, ACM).
    platform: Literal["generic", "aws"] = "generic"
    # backend_cert_expiring_soon for a direct backend's certificate; 0 turns it off.
    direct_backend_cert_expiry_warning_days: Annotated[
        float, Field(ge=0, le=3650), BeforeValidator(fields.not_bool)
    ] = 30.0
    # The client certificate presented when a listener asks for one (mutual TLS).
    tls_client: TlsClientConfig | None = None
    # How the balancer spreads requests (probe.judge.balancing): when an unseen backend is missing.
    balancing: Literal["round_robin", "least_outstanding_requests", "weighted_random", "any"] = "round_robin"
    # false: each address reaches only its own zone's backends (cross-zone load balancing off).
    cross_zone: bool = True
    # Every request is a gRPC Health/Check instead of a GET (HTTP/2 only); None: GET requests.
    grpc_health: GrpcHealthConfig | None = None

    @field_validator("resolvers", "expect_networks", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return fields.optional_list(value)

    @field_validator("expect_backends", mode="before")
    @classmethod
    def _expect_backends(cls, value: Any) -> Any:
        return fields.expect_backends(value)

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        return fields.header_names(value)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return fields.pem_path(value)


class TargetConfig(TargetFields):
    """One probed URL and everything about how to judge it.

    Attributes beyond the settings: ``hostname`` (normalized), ``port``, ``path`` and
    ``scheme`` are derived from ``url``; ``hostname`` is ``server_name`` when the URL names
    an IP address. The port defaults to 443 for ``https://`` and 80 for ``http://``; an
    ``http://`` target has no TLS stage, so the TLS settings (``ca_file``,
    ``insecure_skip_verify``, ``min_tls_version``, ``cert_expiry_warning_days``,
    ``tls_client``) do not apply to it.

    Pinned addresses (no DNS query for the name, as curl's ``--resolve``): ``addresses``
    lists them for a URL with a DNS name; a URL whose host is an IP address is pinned to
    that address. With ``server_name`` that name is sent in SNI and Host and verified in
    the certificate (blackbox_exporter's ``tls_config.server_name``); without it the
    hostname is the address itself: no SNI (RFC 6066 §3 allows no IP address there), Host
    is the address, and the certificate must name it as an iPAddress, as curl verifies
    it. ``pinned_by`` says which setting pinned them (``addresses``, ``server_name``, or
    ``url`` for an IP-address URL alone; the command line puts its flag there), ``None``
    when the name is resolved by DNS; it cannot be set in a file.
    """

    name: str = ""
    url: str
    hostname: str = ""
    port: int = 443
    path: str = "/"
    #: ``https`` or ``http`` (lower case), from ``url``.
    scheme: str = "https"
    addresses: Annotated[tuple[IPAddress, ...], BeforeValidator(fields.parse_addresses)] | None = None
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
        # An IP address is pinned (see _pin).
        return fields.web_url(value, ("https", "http"))

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
        # The first problem is the one reported: the order of these steps is part of the messages.
        parts = urlsplit(self.url)
        self._pin(parts)
        scheme = parts.scheme.lower()
        self._set(scheme=scheme, port=parts.port or (443 if scheme == "https" else 80))
        self._set(path=_path_and_query(parts))
        self._check_name()
        if self.expect_backends is not None and self.backend is None:
            raise ValueError("expect_backends: needs 'backend' to tell the backends apart")
        self._check_plain()
        self._check_grpc_health()
        self._fit_timeouts(info)
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("insecure_skip_verify: cannot be combined with ca_file")
        self._check_direct_backends()
        return self

    def _set(self, **values: Any) -> None:
        """Set derived fields of this frozen model while it is being validated."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _pin(self, parts: SplitResult) -> None:
        """``hostname``, ``addresses`` and ``pinned_by`` from the URL, ``server_name`` and ``addresses``.

        Raises:
            ValueError: an IP-address URL with ``addresses``, or a DNS-name URL with
                ``server_name``.
        """
        literal = url_ip_literal(self.url)
        if literal is None:
            self._pin_name(parts)
            return
        # pinned_by is None on the first validation only (Config validates targets again).
        if self.addresses is not None and self.pinned_by is None:
            raise ValueError(
                f"addresses: cannot be combined with an IP-address URL ({literal} is the "
                "address probed); put the DNS name in the URL to pin other addresses"
            )
        # Without server_name the address itself is verified (an iPAddress in the
        # certificate, no SNI: RFC 6066 §3), as curl and openssl s_client -verify_ip do.
        self._set(hostname=self.server_name or str(literal), addresses=(literal,))
        if self.pinned_by is None:
            self._set(pinned_by="server_name" if self.server_name is not None else "url")

    def _pin_name(self, parts: SplitResult) -> None:
        """``hostname`` from a DNS-name URL; pinned when ``addresses`` are given."""
        if self.server_name is not None:
            raise ValueError(
                "server_name: only for a URL whose host is an IP address; the URL's DNS "
                "name is the server name (pin its addresses with addresses / --resolve)"
            )
        self._set(hostname=normalize_hostname(parts.hostname or ""))
        if self.addresses is not None and self.pinned_by is None:
            self._set(pinned_by="addresses")

    def _check_name(self) -> None:
        """``name`` defaults to the hostname; either must be a valid target name.

        An IPv6 hostname that starts with ``:`` (``::1``) becomes ``0::1``, the same address
        spelt so that a name may start with it.
        """
        if not self.name:
            self._set(name=f"0{self.hostname}" if self.hostname.startswith(":") else self.hostname)
        if not _TARGET_NAME.match(self.name):
            raise ValueError(
                f"name: {self.name!r} must be 1-128 letters, digits or _.:- starting with a letter or digit"
            )

    def _fit_timeouts(self, info: ValidationInfo) -> None:
        """Fit the unset timeouts to the interval (unless the context says there is none).

        Raises:
            ValueError: a timeout set longer than the deadline or the interval (see
                :meth:`Timeouts.fitted`).
        """
        context = info.context if isinstance(info.context, Mapping) else {}
        interval = self.interval if context.get("interval_bound", True) else None
        fitted = self.timeouts.fitted(interval, frozenset(context.get("inherited_timeouts", ())))
        self._set(timeouts=fitted)

    def _check_direct_backends(self) -> None:
        """Each direct backend is listed once (by name)."""
        names = [b.name for b in self.direct_backends]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"direct_backends: lists the backend {name!r} twice")

    def direct_target(self, backend: DirectBackendConfig) -> TargetConfig:
        """The settings a direct check of ``backend`` runs with: this target's, for the backend's URL.

        One request (``requests_per_address: 1``, a new connection), no backend
        expectations, no OCSP, no alias; the backend's trust instead of the target's
        (a fingerprint pin is a handshake without verification whose leaf is compared
        afterwards); the backend's ``tls_client``, else the target's (presented only when
        the backend asks for one); ``direct_backend_cert_expiry_warning_days`` as the
        expiry warning.
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
        return self.model_copy(
            update={
                "name": f"{self.name}/{backend.name}",
                "url": backend.url,
                "scheme": parts.scheme,
                "hostname": hostname,
                "port": parts.port or 443,
                "path": _path_and_query(parts),
                "addresses": addresses,
                "server_name": backend.server_name,
                "pinned_by": pinned_by,
                "ca_file": backend.ca_file,
                "insecure_skip_verify": backend.ca_file is None,
                "tls_client": backend.tls_client or self.tls_client,
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

    def _check_plain(self) -> None:
        """The rules of ``http://`` targets and of ``expect_redirect``.

        Raises:
            ValueError: ``expect_redirect`` on an ``https://`` URL or with
                ``expect_backends``; ``ocsp: staple`` or ``http_version: 2`` on an
                ``http://`` URL (there is no handshake; probe does not speak h2c).
        """
        if self.expect_redirect is not None:
            if not self.plain:
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
        if self.plain:
            if self.ocsp != "off":
                raise ValueError("ocsp: staple needs an https:// URL (an http:// target has no handshake)")
            if self.http_version == "2":
                raise ValueError(
                    "http_version: 2 needs an https:// URL: probe speaks HTTP/1.1 to an http:// "
                    "target (HTTP/2 over plain TCP, h2c, is not supported)"
                )

    def _check_grpc_health(self) -> None:
        """The rules of ``grpc_health``: gRPC speaks HTTP/2 over TLS and answers in protobuf.

        ``http_version`` becomes ``2``: both stages offer ``h2`` alone in ALPN, as gRPC
        clients do.

        Raises:
            ValueError: with an ``http://`` URL, ``http_version: 1.1``, a URL path other
                than ``/``, ``body_regex`` or a ``backend`` body regex.
        """
        if self.grpc_health is None:
            return
        if self.plain:
            raise ValueError(
                "grpc_health: needs an https:// URL (gRPC over plain TCP, h2c, is not supported)"
            )
        if self.http_version == "1.1":
            raise ValueError("grpc_health: gRPC needs HTTP/2, not http_version: 1.1")
        if self.path != "/":
            raise ValueError(
                f"grpc_health: calls {GRPC_HEALTH_PATH}; the URL's path must be / (it is {shown(self.path)})"
            )
        if self.body_regex is not None or (self.backend is not None and self.backend.body_regex is not None):
            raise ValueError(
                "grpc_health: the answers are protobuf, not text: use no body_regex, and a backend header"
            )
        self._set(http_version="2")

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


def _path_and_query(parts: SplitResult) -> str:
    """The request target of a split URL: its path (``/`` when empty) and its query, if any."""
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


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
    listen: str = _defaults.DEFAULT_LISTEN
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
                f"no target named {unknown[0]!r}{suggest(unknown[0], by_name)}; "
                f"targets: {', '.join(by_name)}",
                where=str(self.path or "config"),
            )
        return self.model_copy(update={"targets": tuple(by_name[n] for n in dict.fromkeys(names))})
