"""The ad hoc target of ``probe check URL``: its options and the configuration built from them.

One table, :data:`ADHOC`, defines every ad hoc option (as httpie's CLI definition does):
:mod:`probe.cli.parser` adds them to ``probe check``, :func:`config_from_args` turns the
given ones into the one target's fields and refuses them beside ``--config``, and
:func:`flag_message` names the flag, not the config field, in an error about a value.

The configuration models (pydantic) are imported only when a configuration is built.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from probe._text import host_port
from probe.cli.argtypes import whole_number
from probe.cli.errors import UsageError

if TYPE_CHECKING:
    from probe.config.errors import ConfigError
    from probe.config.models import Config


@dataclass(frozen=True, slots=True)
class _AdHoc:
    """One ad hoc option of ``probe check URL``: its flag, the target field it fills, and how.

    Attributes:
        flag: the option, e.g. ``--resolver``.
        field: the target config field it sets.
        help: the help text.
        metavar: the value's name in the help.
        repeat: the option may be given several times (a list).
        choices: the allowed values.
        parse: argparse ``type`` for the value as typed.
        convert: turns the parsed value into the config field's value.
        exclusive: options with the same name here exclude each other.
        switch: a flag without a value (``store_true``).
        convert_with_url: like ``convert``, but also given the URL (used instead of it).
        pins: the option pins the addresses; the target's ``pinned_by`` names the flag.
        key: the option fills this key of the field's mapping (``tls_client.cert_file``);
            options with the same field and different keys add up.
    """

    flag: str
    field: str
    help: str
    metavar: str | None = None
    repeat: bool = False
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    convert: Callable[[Any], Any] | None = None
    exclusive: str | None = None
    switch: bool = False
    convert_with_url: Callable[[Any, str], Any] | None = None
    pins: bool = False
    key: str | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments."""
        return self.flag.removeprefix("--").replace("-", "_")

    def field_value(self, parsed: Any, url: str) -> Any:
        """The target field's value from the option's parsed value (and the URL, if it needs it).

        Raises:
            UsageError: the converter refuses the value.
        """
        if self.convert_with_url is not None:
            return self.convert_with_url(parsed, url)
        if self.convert is not None:
            return self.convert(parsed)
        if self.key is not None:
            return {self.key: parsed}
        return parsed


#: What ``--expect-backends`` takes, said in each of its errors.
_EXPECT_BACKENDS = (
    "takes a count (at least 1) or comma-separated backend names, each once, e.g. 2 or web-1,web-2"
)


def _expect_backends(text: str) -> int | list[str]:
    """``--expect-backends N|A,B``: a count, or the names; one line saying both forms otherwise.

    Raises:
        UsageError: a count below 1, no name at all (``""``, ``","``), or a name twice.
    """
    value = text.strip()
    try:
        count = int(value)
    except ValueError:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise UsageError(f"--expect-backends: {_EXPECT_BACKENDS} (got {text!r})") from None
        twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
        if twice is not None:
            raise UsageError(f"--expect-backends: names {twice} twice; it {_EXPECT_BACKENDS}") from None
        return names
    if count < 1:
        raise UsageError(f"--expect-backends: {_EXPECT_BACKENDS} (got {text!r})")
    return count


def _headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header: {item!r} must be NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def _resolve_entries(items: list[str], url: str) -> list[str]:
    """Addresses from ``--resolve NAME:PORT:ADDR[,ADDR…]`` entries (curl's syntax and meaning).

    Each entry must name the URL's host and port: curl ignores an entry that does not match
    and resolves the name after all; probe refuses it, so a typo cannot turn a pinned check
    into a DNS one. IPv6 addresses may be bracketed (``[fd00::1]``); entries for the same
    name add up, each address once.

    Raises:
        UsageError: an entry is malformed, holds something that is not an IP address, or
            names another host or port than the URL.
    """
    wanted = _host_and_port(url)
    addresses: list[str] = []
    for item in items:
        name, port, listed = _split_entry(item)
        for address in _entry_addresses(item, listed):
            if address not in addresses:
                addresses.append(address)
        if wanted is not None:
            _refuse_another_host(item, name, port, wanted)
    return addresses


def _host_and_port(url: str) -> tuple[str, int] | None:
    """The URL's host (a normalised name, or an IP address as written) and port, as for ``--resolve``.

    ``None`` for a URL that cannot be read: the config check that follows reports it.
    """
    from probe.config.values import normalize_hostname, url_ip_literal

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return (host if url_ip_literal(url) is not None else normalize_hostname(host), parts.port or 443)
    except ValueError:
        return None  # a bad URL is reported as such by the config check that follows


def _split_entry(item: str) -> tuple[str, int, str]:
    """``NAME:PORT:ADDR[,ADDR…]`` as ``(name, port, addresses as typed)``.

    Raises:
        UsageError: a part is missing, or the port is not 1 to 65535.
    """
    name, sep1, rest = item.strip().partition(":")
    port, sep2, listed = rest.partition(":")
    if not (sep1 and sep2 and name and listed) or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--resolve: {item!r} must be NAME:PORT:ADDR[,ADDR...], as for curl")
    return name, int(port), listed


def _entry_addresses(item: str, listed: str) -> list[str]:
    """The IP addresses of one entry's comma-separated list (IPv6 bracketed or not), normalised.

    Raises:
        UsageError: one is not an IP address.
    """
    addresses = []
    for text in listed.split(","):
        bare = text.strip().removeprefix("[").removesuffix("]")
        try:
            addresses.append(str(ipaddress.ip_address(bare)))
        except ValueError:
            raise UsageError(f"--resolve: {text.strip()!r} in {item!r} is not an IP address") from None
    return addresses


def _refuse_another_host(item: str, name: str, port: int, wanted: tuple[str, int]) -> None:
    """Refuse an entry whose name and port are not the URL's (``wanted``), which curl would ignore.

    Raises:
        UsageError: naming both.
    """
    from probe.config.values import normalize_hostname

    try:
        entry = (normalize_hostname(name), port)
    except ValueError:
        entry = (name, port)
    if entry != wanted:
        raise UsageError(
            f"--resolve: {item!r} is for {host_port(*entry)}, but the URL is for "
            f"{host_port(*wanted)}; curl would ignore this entry silently, probe refuses it"
        )


#: Every ad hoc option, in help order: the parser, the "cannot be combined with --config"
#: check, the target built from the arguments and the flag named in error messages all
#: come from this one table (as httpie's CLI definition does).
ADHOC = (
    _AdHoc("--resolver", "resolvers", "resolver to ask (repeatable)", "IP[:PORT]", repeat=True),
    _AdHoc("--ca-file", "ca_file", "PEM bundle to trust instead of the system store", "FILE"),
    _AdHoc(
        "--cert",
        "tls_client",
        "client certificate (PEM; the intermediates may follow it) for a listener that asks "
        "for one (mutual TLS), as curl's --cert",
        "FILE",
        key="cert_file",
    ),
    _AdHoc(
        "--key",
        "tls_client",
        "private key of --cert (PEM; default: in the --cert file), as curl's --key",
        "FILE",
        key="key_file",
    ),
    _AdHoc(
        "--key-password-file",
        "tls_client",
        "file whose first line is the passphrase of an encrypted --key",
        "FILE",
        key="key_password_file",
    ),
    _AdHoc(
        "--expect-network", "expect_networks", "expected network of answers (repeatable)", "CIDR", repeat=True
    ),
    _AdHoc(
        "--resolve",
        "addresses",
        "probe the URL's name at these addresses, with no DNS query for it (as curl; repeatable)",
        "NAME:PORT:ADDR[,ADDR...]",
        repeat=True,
        convert_with_url=_resolve_entries,
        pins=True,
    ),
    _AdHoc(
        "--server-name",
        "server_name",
        "with an IP-address URL: the name for SNI, Host and the certificate (no DNS query)",
        "NAME",
        pins=True,
    ),
    _AdHoc(
        "--expect-same-addresses-as",
        "expect_same_addresses_as",
        "name that must resolve to the same addresses",
        "NAME",
    ),
    _AdHoc(
        "--expect-backends",
        "expect_backends",
        "count or comma-separated names of backends",
        "N|A,B",
        convert=_expect_backends,
    ),
    _AdHoc(
        "--backend-header",
        "backend",
        "response header naming the backend",
        "NAME",
        convert=lambda v: {"header": v},
        exclusive="backend",
    ),
    _AdHoc(
        "--backend-regex",
        "backend",
        "body regex (RE2 syntax, as blackbox_exporter's) whose first group names the backend",
        "RE",
        convert=lambda v: {"body_regex": v},
        exclusive="backend",
    ),
    _AdHoc("--requests", "requests_per_address", "requests per address (default 4)", "N", parse=whole_number),
    _AdHoc(
        "--balancing",
        "balancing",
        "the balancer's algorithm: when an unseen backend counts as missing (default round_robin)",
        choices=("round_robin", "least_outstanding_requests", "weighted_random", "any"),
    ),
    _AdHoc("--ip-family", "ip_family", "address family (default ipv4)", choices=("ipv4", "ipv6", "both")),
    _AdHoc("--min-tls-version", "min_tls_version", "default 1.2", choices=("1.0", "1.1", "1.2", "1.3")),
    _AdHoc(
        "--http-version",
        "http_version",
        "HTTP versions offered in ALPN by the handshake and the requests (default auto: h2, http/1.1)",
        choices=("auto", "1.1", "2"),
    ),
    _AdHoc("--header", "headers", "request header (repeatable)", "NAME:VALUE", repeat=True, convert=_headers),
    _AdHoc(
        "--timeout",
        "timeouts",
        "overall deadline: seconds or a duration such as 500ms or 1m30s (default 25s; "
        "stage timeouts shrink to fit)",
        "DURATION",
        convert=lambda v: {"deadline": v},
    ),
    _AdHoc(
        "--insecure",
        "insecure_skip_verify",
        "do not verify the certificate or the name (like curl -k); the facts are still shown",
        switch=True,
    ),
    _AdHoc(
        "--ocsp",
        "ocsp",
        "staple: ask each address for its stapled OCSP response (a second handshake; default off)",
        choices=("off", "staple"),
    ),
    _AdHoc(
        "--grpc-health",
        "grpc_health",
        "every request is a gRPC health check (grpc.health.v1.Health/Check, HTTP/2 only) instead of a GET",
        switch=True,
        convert=lambda v: {"service": ""},
    ),
    _AdHoc(
        "--grpc-service",
        "grpc_health",
        "the service the gRPC health check asks for (implies --grpc-health; default: the whole server)",
        "NAME",
        convert=lambda v: {"service": v},
    ),
    _AdHoc(
        "--expect-redirect",
        "expect_redirect",
        "with an http:// URL: every address must answer 301 or 302 to the https:// form of the URL "
        "(not followed)",
        choices=("https",),
    ),
)


def _flag_for_field(field: str, key: str = "") -> str | None:
    """The option(s) that fill a target field, for error messages: ``--backend-header/--backend-regex``.

    For a key of the field's mapping, the option that fills it (``tls_client.key_file``:
    ``--key``).
    """
    if field == "url":
        return "URL"
    options = [o for o in ADHOC if o.field == field]
    own = [o for o in options if key and o.key == key]
    return "/".join(o.flag for o in own or options) or None


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration ``probe check`` probes: ``--config FILE`` or the ad hoc target of a URL.

    A config file is narrowed to ``--target`` names and takes ``--platform``; a URL becomes
    one target whose fields come from the ad hoc options given (:data:`ADHOC`).

    Raises:
        UsageError: a URL and ``--config`` (or an ad hoc option with ``--config``), neither,
            ``--target`` without ``--config``, or an ad hoc value the config refuses (the
            message names the flag).
        ConfigError: the config file cannot be used.
    """
    given = [option for option in ADHOC if getattr(args, option.dest) is not None]
    if args.config:
        return _from_file(args, given)
    return _from_url(args, given)


def _from_file(args: argparse.Namespace, given: list[_AdHoc]) -> Config:
    """``--config FILE``, narrowed to the ``--target`` names, with ``--platform`` if given.

    Raises:
        UsageError: a URL or an ad hoc option (``given``) beside ``--config``.
        ConfigError: the file cannot be used.
    """
    from probe.config.load import load_config

    if args.url or given:
        extra = args.url or given[0].flag
        raise UsageError(f"{extra} cannot be combined with --config (put it in the config file)")
    config = load_config(args.config)
    config = config.select(args.target) if args.target else config
    if args.platform is not None:  # the command line overrides the file
        targets = tuple(t.model_copy(update={"platform": args.platform}) for t in config.targets)
        config = config.model_copy(update={"targets": targets})
    return config


def _from_url(args: argparse.Namespace, given: list[_AdHoc]) -> Config:
    """The one target of ``probe check URL``, its fields from the ad hoc options ``given``.

    Raises:
        UsageError: no URL, ``--target`` (which needs ``--config``), or a value the config
            refuses (the message names the flag).
    """
    from probe.config.errors import ConfigError
    from probe.config.load import build_config

    if args.target:
        raise UsageError("--target needs --config")
    if not args.url:
        raise UsageError("give a URL to check or --config FILE (see 'probe check --help')")
    target: dict[str, Any] = {"url": args.url}
    if args.platform is not None:
        target["platform"] = args.platform
    for option in given:
        value = option.field_value(getattr(args, option.dest), args.url)
        if option.key is not None and isinstance(target.get(option.field), dict):
            value = {**target[option.field], **value}  # --cert and --key fill one tls_client
        target[option.field] = value
    try:
        # One check has no interval: the deadline is the default or --timeout alone.
        config = build_config({"targets": [target]}, where="arguments", interval_bound=False)
    except ConfigError as exc:
        raise UsageError(flag_message(exc)) from None
    pinning = [option.flag for option in given if option.pins]
    if not pinning:
        return config
    # The report names the flag that pinned the addresses, not the config key it fills.
    pinned = config.targets[0].model_copy(update={"pinned_by": pinning[0]})
    return config.model_copy(update={"targets": (pinned,)})


def flag_message(exc: ConfigError) -> str:
    """The message of a config error in an ad hoc check, naming the flag rather than the field.

    E.g. ``--requests: must be at least 1 (got 0)`` for an error in
    ``targets[0].requests_per_address``.
    """
    field = exc.field or ""
    head = field.removeprefix("targets[0]").lstrip(".")
    name, _, rest = head.partition(".")
    flag = _flag_for_field(name.split("[")[0], rest.split(".")[0])
    if flag is None:
        return f"{head or 'arguments'}: {exc.message}"
    return f"{flag}: {exc.message}"
