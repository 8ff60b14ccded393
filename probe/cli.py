"""Command line: ``probe check``, ``probe run``, ``probe demo``.

The only place where exceptions become exit codes: bad input prints one line
``probe: <what is wrong>`` on stderr and exits 3 (UNKNOWN); a check exits with its
verdict (0 ok, 1 warning, 2 critical), as monitoring plugins do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from probe import __version__, daemon, log
from probe.config import (
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    build_config,
    load_config,
    parse_listen,
    positive_duration,
)
from probe.cycle import TargetPlan, plan, run_cycle
from probe.reasons import ExitCode
from probe.report import overall_status, render_json, render_text
from probe.results import TargetResult
from probe.sdnotify import Notifier


class UsageError(Exception):
    """Bad command-line arguments; ``str()`` is the message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def duration_argument(text: str) -> float:
    """The argparse ``type`` of a duration option: seconds or a Prometheus duration, > 0, ≤ 1h.

    ``"90"``, ``"1.5"``, ``"500ms"`` and ``"1m30s"`` are accepted (see
    :func:`probe.config.parse_duration`).

    Raises:
        argparse.ArgumentTypeError: with the one-line message, e.g. ``'5 sec' is not a
            duration (e.g. 5s, 500ms, 1m30s, or seconds)``.
    """
    try:
        return positive_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def build_parser() -> argparse.ArgumentParser:
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
    check.add_argument("url", nargs="?", help="ad hoc target, e.g. https://www.corp.example/health")
    check.add_argument("--config", metavar="FILE", help="YAML config file")
    check.add_argument(
        "--target", metavar="NAME", action="append", default=[], help="only this target (repeatable)"
    )
    _add_adhoc_options(check)
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
    return parser


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of text")
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour (default: on a terminal)"
    )
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def main(argv: Sequence[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Run the ``probe`` command; returns the exit code."""
    stdout = stdout or sys.stdout
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("give a command: check, run or demo (see 'probe --help')")
        log.setup(args.log_level)
        if args.command == "check":
            return _check(args, stdout)
        if args.command == "demo":
            return _demo(args, stdout)
        if args.command == "run":
            web_config = Path(args.web_config_file) if args.web_config_file else None
            return daemon.start(Path(args.config), listen=args.listen, web_config_path=web_config)
        raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover
    except (UsageError, ConfigError) as exc:
        if args is not None and getattr(args, "debug", False):
            raise
        print(f"probe: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN
    except daemon.StartupError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return ExitCode.UNKNOWN
    except BrokenPipeError:
        # The reader went away before a verdict existed: stop quietly.
        _stdout_to_devnull()
        return ExitCode.UNKNOWN


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # io.UnsupportedOperation: no real fd
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _check(args: argparse.Namespace, stdout: IO[str]) -> int:
    config = _config_from_args(args)
    try:
        plans = plan(config)
    except ConfigError as exc:
        if config.path is None:  # ad hoc: name the option, not a config field
            raise UsageError(_flag_message(exc)) from None
        raise
    return _run_and_report(plans, args, stdout)


def _run_and_report(plans: Sequence[TargetPlan], args: argparse.Namespace, stdout: IO[str]) -> int:
    return _report(asyncio.run(_run_all(plans)), args, stdout)


def _report(results: Sequence[TargetResult], args: argparse.Namespace, stdout: IO[str]) -> int:
    """Print the report; the exit code is the verdict's, also when the reader went away.

    ``probe check … | head -1`` closes the pipe early; the check still happened and its
    verdict stands, so the exit code stays 0, 1 or 2 (as ``grep -q`` users and
    ``set -o pipefail`` expect), and nothing is printed on stderr.
    """
    code = ExitCode.from_status(overall_status(results))
    now = time.time()
    try:
        if args.json:
            render_json(results, stdout, now)
        else:
            render_text(results, stdout, now, color=_use_color(args.color, stdout))
        stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
    return code


async def _run_all(plans: Sequence[TargetPlan]) -> list[TargetResult]:
    return list(await asyncio.gather(*(run_cycle(p) for p in plans)))


def _use_color(choice: str, stream: IO[str]) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _config_from_args(args: argparse.Namespace) -> Config:
    given = [option for option in _ADHOC if getattr(args, option.dest) is not None]
    if args.config:
        if args.url or given:
            extra = args.url or given[0].flag
            raise UsageError(f"{extra} cannot be combined with --config (put it in the config file)")
        config = load_config(args.config)
        return config.select(args.target) if args.target else config
    if args.target:
        raise UsageError("--target needs --config")
    if not args.url:
        raise UsageError("give a URL to check or --config FILE (see 'probe check --help')")
    target: dict[str, Any] = {"url": args.url}
    for option in given:
        value = getattr(args, option.dest)
        target[option.field] = option.convert(value) if option.convert else value
    try:
        # One check has no interval: the deadline is the default or --timeout alone.
        return build_config({"targets": [target]}, where="arguments", interval_bound=False)
    except ConfigError as exc:
        raise UsageError(_flag_message(exc)) from None


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


def _demo(args: argparse.Namespace, stdout: IO[str]) -> int:
    from probe.lab import DemoLab

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    if not args.once and not _can_listen(host, port):
        raise UsageError(f"--listen: {args.listen} is in use; give another HOST:PORT, or --once")
    with DemoLab() as lab:
        config = build_config({**lab.config_data(interval=10), "listen": args.listen}, where="demo")
        plans = plan(config)
        if not args.json:
            stdout.write(
                f"probe demo: lab on loopback — DNS {lab.dns_server.where}, nodes "
                f"{', '.join(lab.node_addresses)} port {lab.port}, backends "
                f"{', '.join(f'{n} {a}' for n, a in lab.backend_addresses)}\n\n"
            )
        results = asyncio.run(_run_all(plans))
        code = _report(results, args, stdout)
        if args.once:
            return code
        if not args.json:
            stdout.write(
                f"\nprobe demo: probing the lab every 10 s; metrics at http://{args.listen}/metrics, "
                "status page at /. Ctrl-C to stop.\n"
            )
            stdout.flush()
        running = daemon.Daemon(config, plans, Notifier(), initial_results=results)
        asyncio.run(running.run())
        return code
