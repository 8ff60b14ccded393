"""Command line: ``probe check``, ``probe run``, ``probe demo``.

The only place where exceptions become exit codes: bad input prints one line
``probe: <what is wrong>`` on stderr and exits 3 (UNKNOWN); a check exits with its
verdict (0 ok, 1 warning, 2 critical), as monitoring plugins do.

Each command imports what it needs when it runs: ``probe --help`` loads neither the
configuration models nor the probe stages, and ``probe check`` never loads the daemon, the
web server and its config, bcrypt or prometheus_client (nor pyOpenSSL, which only
``ocsp: staple`` needs).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import ipaddress
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from probe import log
from probe._text import host_port, unreadable
from probe._version import __version__
from probe.config.defaults import DEFAULT_EVERY, DEFAULT_LISTEN, DEFAULT_STABLE_ROUNDS, UNTIL_CHOICES
from probe.model.reasons import ExitCode, Platform

if TYPE_CHECKING:
    from probe.cli.push import Gateway
    from probe.config.errors import ConfigError
    from probe.config.models import Config
    from probe.engine.plan import TargetPlan
    from probe.judge.baseline import Baseline, Comparison
    from probe.lab import DemoLab
    from probe.model.results import TargetResult
    from probe.stages import dns as dns_stage
    from probe.stages.dns import DnsPlan


class UsageError(Exception):
    """Bad command-line arguments; ``str()`` is the message."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at the help of the (sub)command in use.

    ``commands`` holds the subcommands' parsers (set on the top-level parser only), so an
    unknown option is reported against the subcommand it was given to, with the closest
    option it knows: ``unrecognized arguments: --resolvers; did you mean --resolver?
    (see 'probe check --help')``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated options (curl takes none): '--watc' is a typo, not --watch.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.commands:
            where = self.commands.get(getattr(parsed, "command", None) or "", self)
            raise UsageError(f"{unrecognized(where, extras)} (see '{where.prog} --help')")
        return parsed, extras


def unrecognized(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``unrecognized arguments: …`` with the known option closest to the first unknown one.

    Args:
        parser: the (sub)command's parser the arguments were given to.
        extras: the arguments it did not recognise, as typed.

    Returns:
        E.g. ``"unrecognized arguments: --resolvers; did you mean --resolver?"``.
    """
    text = f"unrecognized arguments: {' '.join(extras)}"
    flags = [e.split("=", 1)[0] for e in extras if e.startswith("-")]
    # Compared without the dashes, which every option shares and which would make
    # --bogus look like --ocsp.
    known = {flag.lstrip("-"): flag for action in parser._actions for flag in action.option_strings}
    for flag in flags:
        close = difflib.get_close_matches(flag.lstrip("-"), list(known), n=1, cutoff=0.7)
        if close:
            return f"{text}; did you mean {known[close[0]]}?"
    return text


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

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments."""
        return self.flag.removeprefix("--").replace("-", "_")


def _expect_backends(text: str) -> int | list[str]:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return [name.strip() for name in text.split(",") if name.strip()]


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
    from probe.config.values import normalize_hostname, url_ip_literal

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        wanted: tuple[str, int] | None = (
            host if url_ip_literal(url) is not None else normalize_hostname(host),
            parts.port or 443,
        )
    except ValueError:
        wanted = None  # a bad URL is reported as such by the config check that follows
    addresses: list[str] = []
    for item in items:
        name, sep1, rest = item.strip().partition(":")
        port, sep2, listed = rest.partition(":")
        if not (sep1 and sep2 and name and listed) or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--resolve: {item!r} must be NAME:PORT:ADDR[,ADDR...], as for curl")
        for text in listed.split(","):
            bare = text.strip().removeprefix("[").removesuffix("]")
            try:
                address = str(ipaddress.ip_address(bare))
            except ValueError:
                raise UsageError(f"--resolve: {text.strip()!r} in {item!r} is not an IP address") from None
            if address not in addresses:
                addresses.append(address)
        if wanted is None:
            continue
        try:
            entry = (normalize_hostname(name), int(port))
        except ValueError:
            entry = (name, int(port))
        if entry != wanted:
            raise UsageError(
                f"--resolve: {item!r} is for {host_port(*entry)}, but the URL is for "
                f"{host_port(*wanted)}; curl would ignore this entry silently, probe refuses it"
            )
    return addresses


def _int(text: str) -> int:
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


def _watch_duration(text: str) -> float:
    """``--every`` and ``--max-time``: a duration up to a week."""
    return duration_argument(text, maximum=7 * 86400)


#: Every ad hoc option, in help order: the parser, the "cannot be combined with --config"
#: check, the target built from the arguments and the flag named in error messages all
#: come from this one table (as httpie's CLI definition does).
_ADHOC = (
    _AdHoc("--resolver", "resolvers", "resolver to ask (repeatable)", "IP[:PORT]", repeat=True),
    _AdHoc("--ca-file", "ca_file", "PEM bundle to trust instead of the system store", "FILE"),
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
        "body regex whose first group names the backend",
        "RE",
        convert=lambda v: {"body_regex": v},
        exclusive="backend",
    ),
    _AdHoc("--requests", "requests_per_address", "requests per address (default 4)", "N", parse=_int),
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
        "--expect-redirect",
        "expect_redirect",
        "with an http:// URL: every address must answer 301 or 302 to the https:// form of the URL "
        "(not followed)",
        choices=("https",),
    ),
)


def _add_adhoc_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ad hoc target options (with URL)")
    exclusive: dict[str, Any] = {}
    for option in _ADHOC:
        into = group
        if option.exclusive is not None:
            if option.exclusive not in exclusive:
                exclusive[option.exclusive] = group.add_mutually_exclusive_group()
            into = exclusive[option.exclusive]
        if option.switch:
            into.add_argument(option.flag, action="store_true", default=None, help=option.help)
            continue
        extra: dict[str, Any] = {"type": option.parse} if option.parse else {}
        into.add_argument(
            option.flag,
            metavar=option.metavar,
            action="append" if option.repeat else "store",
            choices=option.choices,
            help=option.help,
            **extra,
        )


def _flag_for_field(field: str) -> str | None:
    """The option(s) that fill a target field, for error messages: ``--backend-header/--backend-regex``."""
    if field == "url":
        return "URL"
    return "/".join(o.flag for o in _ADHOC if o.field == field) or None


def build_parser() -> _Parser:
    """The argument parser of the ``probe`` command."""
    parser = _Parser(
        prog="probe",
        description="End-to-end checks of an HTTPS service behind an internal load balancer: "
        "DNS, TLS at every address, and the backend round-robin.",
    )
    parser.add_argument("--version", action="version", version=f"probe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = commands.add_parser(
        "check",
        help="probe targets once and print a verdict (exit 0 ok, 1 warning, 2 critical, 3 unknown)",
        description="Probe once: DNS, TLS at every address, HTTP round-robin; print a verdict.",
    )
    check.add_argument(
        "url", nargs="?", help="ad hoc target, e.g. https://www.corp.example/health (or http://…)"
    )
    check.add_argument("--config", metavar="FILE", help="YAML config file")
    check.add_argument(
        "--target", metavar="NAME", action="append", default=[], help="only this target (repeatable)"
    )
    check.add_argument(
        "--baseline",
        metavar="FILE",
        help="compare with a baseline saved earlier and print what changed; a regression "
        "makes the exit code at least 1",
    )
    check.add_argument(
        "--save-baseline",
        metavar="FILE",
        help="save the addresses, certificates, TLS facts, backends and statuses as a baseline "
        "(after comparing, when --baseline is given too)",
    )
    check.add_argument(
        "--platform",
        choices=tuple(p.value for p in Platform),
        help="words of the hints under each finding: generic (default) or aws (ELB, Route 53, "
        "ACM); also with --config, where it overrides the targets' platform",
    )
    _add_adhoc_options(check)
    _watch_options(check)
    _push_options(check)
    _output_options(check)

    run = commands.add_parser(
        "run",
        help="run as a daemon: probe every interval, serve Prometheus metrics",
        description="Probe every target every interval and serve /metrics, /-/healthy, /-/ready "
        "and a status page. SIGHUP reloads the config; SIGTERM stops.",
    )
    run.add_argument("--config", metavar="FILE", required=True, help="YAML config file")
    run.add_argument("--listen", metavar="HOST:PORT", help="endpoint address (default: the config's listen)")
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config: TLS and basic auth for the endpoint",
    )
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    demo = commands.add_parser(
        "demo",
        help="start the embedded loopback lab, check it, then keep probing it with metrics",
        description="Start a DNS server, two TLS load-balancer nodes and two backends on "
        "127.0.0.0/8, run the check against them and print the report; then keep probing "
        "the lab as `probe run` does, with the metrics endpoint up, until interrupted.",
    )
    demo.add_argument("--once", action="store_true", help="exit after the first report")
    demo.add_argument(
        "--listen", metavar="HOST:PORT", default=DEFAULT_LISTEN, help=f"default {DEFAULT_LISTEN}"
    )
    _output_options(demo)

    share = commands.add_parser(
        "share",
        help="list, print or locate the files shipped with probe (systemd unit, example "
        "configs, alert rules, dashboard, JSON Schemas)",
        description="Without NAME: list the shipped files and where they are. With NAME "
        "(e.g. systemd/probe.service): print the file, or its path with --path.",
    )
    share.add_argument("name", nargs="?", metavar="NAME", help="a shipped file, as listed")
    share.add_argument(
        "--path", action="store_true", help="print the path (of NAME, or of the directory) instead"
    )
    share.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    completion = commands.add_parser(
        "completion",
        help="print the shell completion script for bash or zsh",
        description="Print a completion script generated from probe's options. bash: "
        "probe completion bash | sudo tee /etc/bash_completion.d/probe; zsh: "
        'probe completion zsh > "${fpath[1]}/_probe".',
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    completion.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.commands = {"check": check, "run": run, "demo": demo, "share": share, "completion": completion}
    return parser


def _watch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "watching a change (with a URL or --config)",
        "Repeat the check and print one line per change of state of an address, then a summary.",
    )
    group.add_argument(
        "--watch", action="store_true", help="repeat the check until --until, --max-time or Ctrl-C"
    )
    group.add_argument(
        "--every",
        metavar="DURATION",
        type=_watch_duration,
        help=f"from the start of one round to the next (default {DEFAULT_EVERY:g}); "
        "a round never overlaps the next",
    )
    group.add_argument(
        "--until",
        choices=UNTIL_CHOICES,
        help="ok: end at the first all-ok round; stable: after --stable-rounds identical rounds",
    )
    group.add_argument(
        "--stable-rounds",
        metavar="N",
        type=_int,
        help=f"identical rounds in a row that end --until stable (default {DEFAULT_STABLE_ROUNDS})",
    )
    group.add_argument(
        "--max-time", metavar="DURATION", type=_watch_duration, help="bound on the whole watch (e.g. 10m)"
    )


def _push_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "pushing the result to a Pushgateway",
        "After the report, PUT each target's metrics (the daemon's names) to the group "
        "job/JOB/target/NAME[/LABEL/VALUE...]; a failed push is one line on stderr and turns "
        "exit 0 into 5 (a warning or critical verdict keeps its code).",
    )
    group.add_argument("--push", metavar="URL", help="Pushgateway base URL, e.g. http://pushgateway:9091")
    group.add_argument("--push-job", metavar="NAME", help="the grouping key's job (default probe)")
    group.add_argument(
        "--push-label",
        metavar="NAME=VALUE",
        action="append",
        help="extra grouping label, e.g. bastion=vpc-a-1 (repeatable); added to every pushed series",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of text")
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour (default: on a terminal)"
    )
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _input_errors() -> tuple[type[Exception], ...]:
    """The bad-input errors: ``UsageError``, and ``ConfigError`` once its module is loaded.

    Looked up when an exception is being handled; no ``ConfigError`` can occur before
    ``probe.config.errors`` is loaded, and ``--help`` (argparse's ``SystemExit``) must not load it.
    """
    errors: list[type[Exception]] = [UsageError]
    config = sys.modules.get("probe.config.errors")
    if config is not None:
        errors.append(config.ConfigError)
    baseline = sys.modules.get("probe.judge.baseline")
    if baseline is not None:
        errors.append(baseline.BaselineError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Run the ``probe`` command; returns the exit code."""
    stdout = stdout or sys.stdout
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("give a command: check, run or demo (see 'probe --help')")
        if args.command == "share":
            return _share(args, stdout)
        if args.command == "completion":
            return _completion(args, stdout)
        log.setup(args.log_level)
        if args.command == "check":
            return _check(args, stdout)
        if args.command == "demo":
            return _demo(args, stdout)
        if args.command == "run":
            return _run(args)
        raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover
    except _input_errors() as exc:
        if args is not None and getattr(args, "debug", False):
            raise
        print(f"probe: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return ExitCode.UNKNOWN
    except BrokenPipeError:
        # The reader went away before a verdict existed: stop quietly.
        _stdout_to_devnull()
        return ExitCode.UNKNOWN


def _share(args: argparse.Namespace, stdout: IO[str]) -> int:
    """``probe share [NAME] [--path]``: list the shipped files, print one, or say where they are."""
    from probe.cli.share import SECTIONS, ShareError, share_file, share_names, share_path

    try:
        if args.path:
            stdout.write(f"{share_path(args.name)}\n")
        elif args.name is not None:
            stdout.write(share_file(args.name).read_text(encoding="utf-8"))
        else:
            root = share_path()
            stdout.write(f"probe {__version__}: shipped files in {root}\n")
            for section, what in SECTIONS.items():
                names = [n for n in share_names() if n.startswith(f"{section}/")]
                stdout.write(f"\n{section}/  ({what})\n")
                stdout.writelines(f"  {name}\n" for name in names)
            stdout.write("\n'probe share NAME' prints one; 'probe share --path NAME' gives its path\n")
        stdout.flush()
    except ShareError as exc:
        raise UsageError(str(exc)) from None
    except BrokenPipeError:
        _stdout_to_devnull()
    return ExitCode.OK


def _completion(args: argparse.Namespace, stdout: IO[str]) -> int:
    """``probe completion bash|zsh``: print the completion script generated from the parser."""
    from probe.cli.completion import script
    from probe.cli.share import share_names

    stdout.write(script(args.shell, build_parser(), __version__, share=share_names()))
    stdout.flush()
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    from probe.daemon import main as daemon

    web_config = Path(args.web_config_file) if args.web_config_file else None
    try:
        return daemon.start(Path(args.config), listen=args.listen, web_config_path=web_config)
    except daemon.StartupError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return ExitCode.LISTEN_FAILED


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # io.UnsupportedOperation: no real fd
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _check(args: argparse.Namespace, stdout: IO[str]) -> int:
    _check_watch_options(args)
    gateway = _gateway(args)
    if args.watch:
        return _watch(_plans(_config_from_args(args)), args, stdout)
    ahead = head_start(args)
    if ahead is not None:
        import asyncio

        return _finish(asyncio.run(_check_ahead(args, ahead)), args, stdout, gateway)
    return _run_and_report(_config_from_args(args), args, stdout, gateway)


#: The event loop's turn while the configuration loads beside an early DNS query (seconds,
#: ``sys.setswitchinterval``): how late its answer may be read at most, about.
_AHEAD_SWITCH_INTERVAL = 0.0005


def head_start(args: argparse.Namespace) -> DnsPlan | None:
    """The DNS stage of ``probe check URL``, read from the arguments alone.

    Loading pydantic and the config models takes most of the start-up (about 100 ms of
    about 170 ms on the bench machine), so an ad hoc check sends its first query from this
    plan and loads the configuration meanwhile (:func:`_check_ahead`). The query counts
    only when the validated target's plan (:meth:`probe.stages.dns.DnsPlan.of`) is equal;
    otherwise it is dropped and the stage starts again, so the verdict is the same either
    way. The addresses, networks and name are read by the config's own parsers
    (:mod:`probe.config.values`).

    Returns:
        The plan; ``None`` without ``--resolver`` (the system's resolvers are not asked
        before the arguments are valid) and for anything this reading does not cover (a
        config file, ``--watch``, a baseline, pinned addresses, an alias name, an
        IP-address URL, text a parser refuses): such a check queries after loading its
        configuration.
    """
    if args.config or not args.url or args.watch or args.baseline or args.save_baseline:
        return None
    if not args.resolver:
        # The query leaves before the arguments are validated: only to a resolver the user
        # named. Arguments refused afterwards then cost that one query, nothing else.
        return None
    if any(getattr(args, dest) is not None for dest in _AHEAD_NOT_COVERED):
        return None
    from probe.config import defaults as _defaults
    from probe.config.values import (
        PRIVATE_NETWORKS,
        normalize_hostname,
        parse_network,
        parse_resolver,
        positive_duration,
    )

    try:
        parts = urlsplit(args.url.strip())
        host = parts.hostname
        if parts.scheme.lower() not in ("http", "https") or not host:
            return None
        ipaddress.ip_address(host)
    except ValueError:
        pass  # not an IP address: a name to resolve
    else:
        return None
    try:
        hostname = normalize_hostname(host)
        resolvers = tuple(parse_resolver(text) for text in args.resolver or ())
        networks = tuple(parse_network(text) for text in args.expect_network or ()) or PRIVATE_NETWORKS
        # One check has no interval: the deadline is --timeout or the default, and the
        # unset DNS timeout shrinks to fit it (probe.config.models.Timeouts.fitted).
        deadline = _defaults.DEADLINE if args.timeout is None else positive_duration(args.timeout)
    except ValueError:
        return None
    from probe.stages import dns as dns_stage

    return dns_stage.DnsPlan(
        hostname=hostname,
        resolvers=resolvers,
        ip_family=args.ip_family or _defaults.IP_FAMILY,
        expect_networks=networks,
        timeout=min(_defaults.DNS_TIMEOUT, deadline),
        deadline=deadline,
    )


#: Event-loop turns the early query gets before the configuration starts loading: dnspython
#: sends a UDP query within a few (gather, endpoint, send).
_AHEAD_TURNS = 8

#: Ad hoc options that change the DNS stage in ways :func:`head_start` does not read.
_AHEAD_NOT_COVERED = ("resolve", "server_name", "expect_same_addresses_as")


async def _check_ahead(args: argparse.Namespace, ahead: DnsPlan) -> list[TargetResult]:
    """:func:`_check_once` with the first DNS query sent before the configuration loads.

    The configuration loads in a worker thread while the event loop runs the query; the
    loop gets the interpreter every :data:`_AHEAD_SWITCH_INTERVAL` seconds meanwhile, so the
    answer is read (and the lookup timed) as it arrives.

    Raises:
        UsageError, ConfigError: as :func:`_config_from_args` (the early query is dropped).
    """
    import asyncio

    from probe.stages import dns as dns_stage

    lookup = dns_stage.resolve_early(ahead)
    for _ in range(_AHEAD_TURNS):  # let the query leave before the loading starts
        await asyncio.sleep(0)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(_AHEAD_SWITCH_INTERVAL)
    try:
        config = await asyncio.to_thread(_config_from_args, args)
    finally:
        sys.setswitchinterval(previous)
    return await _check_once(config, ahead=(ahead, lookup))


def _plans(config: Config) -> tuple[TargetPlan, ...]:
    """:func:`probe.engine.plan.plan`; in an ad hoc check its errors name the option."""
    from probe.config.errors import ConfigError
    from probe.engine.plan import plan

    try:
        return plan(config)
    except ConfigError as exc:
        if config.path is None:  # ad hoc: name the option, not a config field
            raise UsageError(_flag_message(exc)) from None
        raise


def _gateway(args: argparse.Namespace) -> Gateway | None:
    """The ``--push`` target, checked before anything is probed; ``None`` without ``--push``.

    probe.cli.push (httpx, the metrics renderer) is loaded only when ``--push`` is given.
    """
    if args.push is None:
        for flag in ("--push-job", "--push-label"):
            if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
                raise UsageError(f"{flag} needs --push")
        return None
    if args.watch:
        raise UsageError(
            "--push cannot be combined with --watch (push the outcome with one check after the watch)"
        )
    from probe.cli import push

    try:
        return push.parse_gateway(args.push, args.push_job, args.push_label or ())
    except push.PushUsageError as exc:
        raise UsageError(str(exc)) from None


def _push(results: Sequence[TargetResult], gateway: Gateway, code: int) -> int:
    """Push the results; a failure is one line on stderr, and exit 0 becomes 5 (never hides 1 or 2)."""
    from probe.cli import push

    line = push.failure_line(gateway, push.push(results, gateway))
    if line is None:
        return code
    print(f"probe: {line}", file=sys.stderr)
    return ExitCode.PUSH_FAILED if code == ExitCode.OK else code


def _check_watch_options(args: argparse.Namespace) -> None:
    """Refuse watch options that cannot apply: without ``--watch``, or ``--stable-rounds`` alone."""
    if not args.watch:
        for flag in ("--every", "--until", "--stable-rounds", "--max-time"):
            if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
                raise UsageError(f"{flag} needs --watch")
        return
    for flag in ("--baseline", "--save-baseline"):
        if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
            raise UsageError(
                f"{flag} cannot be combined with --watch (save a baseline with one check before "
                "the change, watch it land, then compare with one check after)"
            )
    if args.stable_rounds is not None:
        if args.until != "stable":
            raise UsageError("--stable-rounds needs --until stable")
        if args.stable_rounds < 2:
            raise UsageError(f"--stable-rounds: must be at least 2 (got {args.stable_rounds})")


def _watch(plans: Sequence[TargetPlan], args: argparse.Namespace, stdout: IO[str]) -> int:
    """``probe check --watch``: rounds until ``--until``, ``--max-time`` or Ctrl-C, then a summary.

    The exit code is the last round's verdict (0, 1, 2), 3 when no round completed. Ctrl-C
    (SIGINT) and SIGTERM end the watch with the summary, never a traceback; a reader that
    went away (``| head -1``) ends it quietly with the verdict so far.
    """
    from probe.cli.watch import WatchOutput, run_watch
    from probe.judge.watch import Watch

    stable = args.stable_rounds if args.stable_rounds is not None else DEFAULT_STABLE_ROUNDS
    watch = Watch(time.time(), until=args.until, stable_rounds=stable)
    output = WatchOutput(
        stdout,
        json_lines=args.json,
        color=not args.json and _use_color(args.color, stdout),
        live=not args.json and stdout.isatty(),
    )
    try:
        previous: list[TargetResult] = []  # the rotation memory goes from round to round

        async def one_round() -> list[TargetResult]:
            nonlocal previous
            previous = await _run_all(plans, previous)
            return previous

        run_watch(
            one_round,
            watch,
            output,
            every=args.every if args.every is not None else DEFAULT_EVERY,
            max_time=args.max_time,
        )
    except BrokenPipeError:
        # The reader went away: stop watching; the verdict so far stands.
        _stdout_to_devnull()
    return watch.exit_code


def _run_and_report(
    config: Config, args: argparse.Namespace, stdout: IO[str], gateway: Gateway | None = None
) -> int:
    import asyncio

    before = _read_baseline([(t.name, t.url) for t in config.targets], args.baseline)
    if args.save_baseline:
        from probe.judge import baseline

        baseline.check_writable(args.save_baseline)
    results = asyncio.run(_check_once(config))
    return _finish(results, args, stdout, gateway, before)


def _finish(
    results: Sequence[TargetResult],
    args: argparse.Namespace,
    stdout: IO[str],
    gateway: Gateway | None,
    before: Baseline | None = None,
) -> int:
    """Compare with the baseline, print the report, save the baseline, push: the exit code."""
    comparison = None
    if before is not None:
        from probe.judge import baseline

        comparison = baseline.compare(before, results, args.baseline)
    code = _report(results, args, stdout, comparison)
    if args.save_baseline:
        from probe.judge import baseline

        baseline.save(args.save_baseline, baseline.snapshot(results, time.time()))
    if gateway is not None:  # after the report: a slow gateway never delays the verdict
        code = _push(results, gateway, code)
    return code


def _read_baseline(targets: Sequence[tuple[str, str]], path: str | None) -> Baseline | None:
    """The ``--baseline`` file, refused before anything is probed when it cannot be used.

    ``targets`` are the checked targets' ``(name, url)``. probe.judge.baseline (cryptography,
    pydantic models) is imported only with ``--baseline``.
    """
    if path is None:
        return None
    from probe.judge import baseline

    before = baseline.load(path)
    baseline.match(before, targets, path)
    return before


def _report(
    results: Sequence[TargetResult],
    args: argparse.Namespace,
    stdout: IO[str],
    comparison: Comparison | None = None,
) -> int:
    """Print the report; the exit code is the verdict's, also when the reader went away.

    ``probe check … | head -1`` closes the pipe early; the check still happened and its
    verdict stands, so the exit code stays 0, 1 or 2 (as ``grep -q`` users and
    ``set -o pipefail`` expect), and nothing is printed on stderr. A regression since the
    baseline (``comparison``) makes the exit code at least 1.
    """
    from probe.report.text import overall_status, render_json, render_text

    code = ExitCode.from_status(overall_status(results))
    if comparison is not None and comparison.regressed:
        code = max(code, ExitCode.WARNING)
    now = time.time()
    try:
        if args.json:
            render_json(results, stdout, now, baseline=comparison)
        else:
            color = _use_color(args.color, stdout)
            render_text(results, stdout, now, color=color)
            if comparison is not None:
                stdout.write("\n")
                from probe.report.text import render_baseline

                render_baseline(comparison, stdout, color=color)
        stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
    return code


async def _check_once(
    config: Config, ahead: tuple[DnsPlan, dns_stage.EarlyLookup] | None = None
) -> list[TargetResult]:
    """One cycle of every target of ``config``, the DNS queries sent first.

    Each target's DNS stage starts (:func:`probe.stages.dns.resolve_early`; dnspython only)
    before the TLS and HTTP stages are imported and the SSL contexts built, so the first
    query leaves about as soon as the config is read. The imports wait until every early
    lookup has ended, so that they never delay reading an answer (the lookup times stay
    honest); the cycles then take the answers, and their durations and deadlines leave
    the time in between out (see :func:`probe.engine.cycle.run_cycle`). A target that sends no
    query (pinned addresses) or has no resolver to ask resolves in its cycle as before.

    Args:
        config: the checked targets.
        ahead: a lookup :func:`_check_ahead` started before the config loaded, with its
            plan: it is the first target's lookup when the plans are equal, and is
            cancelled otherwise.
    """
    import asyncio

    from probe.stages import dns as dns_stage

    early: dict[int, dns_stage.EarlyLookup] = {}
    system: tuple[tuple[str, int], ...] | None = None
    for index, target in enumerate(config.targets):
        if target.pinned_by is not None and target.expect_same_addresses_as is None:
            continue  # nothing to resolve
        resolvers = target.resolvers
        if resolvers is None:
            if system is None:
                try:
                    system = dns_stage.system_resolvers()
                except LookupError:
                    break  # probe.engine.plan.plan reports it
            resolvers = system
        plan = dns_stage.DnsPlan.of(target, resolvers)
        if ahead is not None and index == 0 and ahead[0] == plan:
            early[index] = ahead[1]  # the query sent before the config loaded is this one
        else:
            early[index] = dns_stage.resolve_early(plan)
    if ahead is not None and early.get(0) is not ahead[1] and ahead[1].task is not None:
        ahead[1].task.cancel()  # it asked something else: dropped
    # Refused at once, not after the lookups (up to the deadline with a silent resolver).
    _refuse_unreadable_ca_files(config)
    if early:
        longest = max(lookup.deadline.remaining() for lookup in early.values())
        tasks = [lookup.task for lookup in early.values() if lookup.task is not None]
        await asyncio.wait(tasks, timeout=longest)
    plans = _plans(config)  # on an error, asyncio.run cancels what is left
    from probe.engine.cycle import run_cycle

    return list(
        await asyncio.gather(*(run_cycle(p, early=early.get(index)) for index, p in enumerate(plans)))
    )


def _refuse_unreadable_ca_files(config: Config) -> None:
    """Refuse a ``ca_file`` that cannot be opened, with the error :func:`probe.engine.plan.plan` gives.

    ``probe check`` builds its plans (and so loads the trust anchors) only after its DNS
    lookups have ended, so that loading them never delays reading an answer; a missing or
    unreadable file, the usual typo, is found here first, in microseconds, so the user
    does not wait out a silent resolver to be told. The messages and fields are those of
    :func:`probe.stages.tls.build_contexts` in :func:`probe.engine.plan.plan` (both from
    :func:`probe._text.unreadable`); a file that opens
    but holds no certificates is still refused there.

    Raises:
        ConfigError: a verifying target's (or direct backend's) ``ca_file`` does not
            exist, is a directory, or cannot be read; ``UsageError`` naming the option in an
            ad hoc check.
    """
    from probe.config.errors import ConfigError

    where = str(config.path) if config.path else "config"
    seen: set[Path] = set()
    for index, target in enumerate(config.targets):
        checked = [(target, f"targets[{index}].ca_file")]
        for number, backend in enumerate(target.direct_backends):
            field = f"targets[{index}].direct_backends[{number}].ca_file"
            checked.append((target.direct_target(backend), field))
        for one, field in checked:
            path = one.ca_file
            # As plan: no trust store is loaded for a plain target or without verification.
            if path is None or path in seen or one.plain or one.insecure_skip_verify:
                continue
            seen.add(path)
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                error = ConfigError(unreadable(path, exc), where=where, field=field)
                if config.path is None:  # ad hoc: name the option, as _plans does
                    raise UsageError(_flag_message(error)) from None
                raise error from None


async def _run_all(plans: Sequence[TargetPlan], previous: Sequence[TargetResult] = ()) -> list[TargetResult]:
    """One cycle of every target; ``previous`` results hand on their rotation memory."""
    import asyncio

    from probe.engine.cycle import run_cycle

    memory = {r.target.name: r.rotation for r in previous}
    return list(await asyncio.gather(*(run_cycle(p, memory=memory.get(p.target.name)) for p in plans)))


def _use_color(choice: str, stream: IO[str]) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _config_from_args(args: argparse.Namespace) -> Config:
    from probe.config.errors import ConfigError
    from probe.config.load import build_config, load_config

    given = [option for option in _ADHOC if getattr(args, option.dest) is not None]
    if args.config:
        if args.url or given:
            extra = args.url or given[0].flag
            raise UsageError(f"{extra} cannot be combined with --config (put it in the config file)")
        config = load_config(args.config)
        config = config.select(args.target) if args.target else config
        if args.platform is not None:  # the command line overrides the file
            targets = tuple(t.model_copy(update={"platform": args.platform}) for t in config.targets)
            config = config.model_copy(update={"targets": targets})
        return config
    if args.target:
        raise UsageError("--target needs --config")
    if not args.url:
        raise UsageError("give a URL to check or --config FILE (see 'probe check --help')")
    target: dict[str, Any] = {"url": args.url}
    if args.platform is not None:
        target["platform"] = args.platform
    for option in given:
        value = getattr(args, option.dest)
        if option.convert_with_url is not None:
            value = option.convert_with_url(value, args.url)
        elif option.convert is not None:
            value = option.convert(value)
        target[option.field] = value
    try:
        # One check has no interval: the deadline is the default or --timeout alone.
        config = build_config({"targets": [target]}, where="arguments", interval_bound=False)
    except ConfigError as exc:
        raise UsageError(_flag_message(exc)) from None
    pinning = [option.flag for option in given if option.pins]
    if not pinning:
        return config
    # The report names the flag that pinned the addresses, not the config key it fills.
    pinned = config.targets[0].model_copy(update={"pinned_by": pinning[0]})
    return config.model_copy(update={"targets": (pinned,)})


def _flag_message(exc: ConfigError) -> str:
    field = exc.field or ""
    head = field.removeprefix("targets[0]").lstrip(".")
    name = head.split(".")[0].split("[")[0]
    flag = _flag_for_field(name)
    if flag is None:
        return f"{head or 'arguments'}: {exc.message}"
    return f"{flag}: {exc.message}"


def _can_listen(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe_socket:
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind((host, port))
        except OSError:
            return False
    return True


def demo_command(lab: DemoLab) -> str:
    """The ``probe check`` command line, ready to paste, that checks the running demo lab.

    It names the lab's resolver (on loopback, so the system resolver is never asked),
    root CA file, expected network, alias and backend rule, so the check verifies the
    certificates (no ``--insecure``) and comes out ok while the lab runs. The program is
    the one this process was started as (``.venv/bin/probe``), else ``python -m probe``.
    """
    target = lab.target()
    program = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "probe" else None
    words = [program] if program else [sys.executable, "-m", "probe"]
    words += ["check", lab.url, "--resolver", lab.dns_server.where, "--ca-file", str(lab.ca_file)]
    for network in target["expect_networks"]:
        words += ["--expect-network", network]
    words += ["--expect-same-addresses-as", lab.alias, "--backend-header", target["backend"]["header"]]
    words += ["--expect-backends", ",".join(target["expect_backends"])]
    return shlex.join(words)


def _demo(args: argparse.Namespace, stdout: IO[str]) -> int:
    import asyncio

    from probe.config.load import build_config, parse_listen
    from probe.daemon import main as daemon
    from probe.daemon.sdnotify import Notifier
    from probe.engine.plan import plan
    from probe.lab import DemoLab

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    if not args.once and not _can_listen(host, port):
        print(
            f"probe: cannot listen on {args.listen}: in use; give another --listen, or --once",
            file=sys.stderr,
        )
        return ExitCode.LISTEN_FAILED
    with DemoLab() as lab:
        config = build_config({**lab.config_data(interval=10), "listen": args.listen}, where="demo")
        plans = plan(config)
        header = lab.target()["backend"]["header"]
        if not args.json:
            stdout.write(
                f"probe demo: lab on loopback — DNS {lab.dns_server.where}, nodes "
                f"{', '.join(lab.node_addresses)} port {lab.port}, backends "
                f"{', '.join(f'{n} {a}' for n, a in lab.backend_addresses)}\n"
                f"probe demo: root CA {lab.ca_file}; the backends name themselves in the "
                f"{header} response header\n\n"
            )
        results = asyncio.run(_run_all(plans))
        code = _report(results, args, stdout)
        if args.once:
            return code
        if not args.json:
            stdout.write(
                f"\nprobe demo: probing the lab every 10 s; metrics at http://{args.listen}/metrics, "
                "status page at /. Ctrl-C to stop.\n"
                "probe demo: to check the lab by hand while the demo runs, from another terminal:\n"
                f"  {demo_command(lab)}\n"
            )
            stdout.flush()
        running = daemon.Daemon(config, plans, Notifier(), initial_results=results)
        try:
            asyncio.run(running.run())
        except daemon.StartupError as exc:
            print(f"probe: {exc}", file=sys.stderr)
            return ExitCode.LISTEN_FAILED
        return code
