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
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from probe import __version__, daemon, log
from probe.config import (
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    Timeouts,
    build_config,
    load_config,
    parse_listen,
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


# Ad hoc options and the config fields they fill, for error messages.
_FLAG_FOR_FIELD = {
    "url": "URL",
    "resolvers": "--resolver",
    "expect_networks": "--expect-network",
    "expect_same_addresses_as": "--expect-same-addresses-as",
    "ca_file": "--ca-file",
    "expect_backends": "--expect-backends",
    "backend": "--backend-header/--backend-regex",
    "requests_per_address": "--requests",
    "ip_family": "--ip-family",
    "min_tls_version": "--min-tls-version",
    "timeouts": "--timeout",
    "headers": "--header",
    "insecure_skip_verify": "--insecure",
    "ocsp": "--ocsp",
    "http_version": "--http-version",
}


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
    adhoc = check.add_argument_group("ad hoc target options (with URL)")
    adhoc.add_argument(
        "--resolver", metavar="IP[:PORT]", action="append", help="resolver to ask (repeatable)"
    )
    adhoc.add_argument("--ca-file", metavar="FILE", help="PEM bundle to trust instead of the system store")
    adhoc.add_argument(
        "--expect-network", metavar="CIDR", action="append", help="expected network of answers (repeatable)"
    )
    adhoc.add_argument(
        "--expect-same-addresses-as", metavar="NAME", help="name that must resolve to the same addresses"
    )
    adhoc.add_argument(
        "--expect-backends", metavar="N|A,B", help="count or comma-separated names of backends"
    )
    who = adhoc.add_mutually_exclusive_group()
    who.add_argument("--backend-header", metavar="NAME", help="response header naming the backend")
    who.add_argument("--backend-regex", metavar="RE", help="body regex whose first group names the backend")
    adhoc.add_argument("--requests", metavar="N", type=_int, help="requests per address (default 4)")
    adhoc.add_argument("--ip-family", choices=("ipv4", "ipv6", "both"), help="address family (default ipv4)")
    adhoc.add_argument("--min-tls-version", choices=("1.0", "1.1", "1.2", "1.3"), help="default 1.2")
    adhoc.add_argument(
        "--http-version",
        choices=("auto", "1.1", "2"),
        help="HTTP versions offered in ALPN by the handshake and the requests (default auto: h2, http/1.1)",
    )
    adhoc.add_argument("--header", metavar="NAME:VALUE", action="append", help="request header (repeatable)")
    adhoc.add_argument("--timeout", metavar="SECONDS", type=float, help="overall deadline (default 25)")
    adhoc.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="do not verify the certificate or the name (like curl -k); the facts are still shown",
    )
    adhoc.add_argument(
        "--ocsp",
        choices=("off", "staple"),
        help="staple: ask each address for its stapled OCSP response (a second handshake; default off)",
    )
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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


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
    adhoc_given = [
        flag
        for flag, value in (
            ("--resolver", args.resolver),
            ("--ca-file", args.ca_file),
            ("--expect-network", args.expect_network),
            ("--expect-same-addresses-as", args.expect_same_addresses_as),
            ("--expect-backends", args.expect_backends),
            ("--backend-header", args.backend_header),
            ("--backend-regex", args.backend_regex),
            ("--requests", args.requests),
            ("--ip-family", args.ip_family),
            ("--min-tls-version", args.min_tls_version),
            ("--header", args.header),
            ("--timeout", args.timeout),
            ("--insecure", args.insecure),
            ("--ocsp", args.ocsp),
            ("--http-version", args.http_version),
        )
        if value is not None
    ]
    if args.config:
        if args.url or adhoc_given:
            extra = args.url or adhoc_given[0]
            raise UsageError(f"{extra} cannot be combined with --config (put it in the config file)")
        config = load_config(args.config)
        return config.select(args.target) if args.target else config
    if args.target:
        raise UsageError("--target needs --config")
    if not args.url:
        raise UsageError("give a URL to check or --config FILE (see 'probe check --help')")
    target: dict[str, Any] = {"url": args.url}
    if args.resolver:
        target["resolvers"] = args.resolver
    if args.ca_file:
        target["ca_file"] = args.ca_file
    if args.expect_network:
        target["expect_networks"] = args.expect_network
    if args.expect_same_addresses_as:
        target["expect_same_addresses_as"] = args.expect_same_addresses_as
    if args.expect_backends is not None:
        text = args.expect_backends.strip()
        try:
            target["expect_backends"] = int(text)
        except ValueError:
            target["expect_backends"] = [n.strip() for n in text.split(",") if n.strip()]
    if args.backend_header:
        target["backend"] = {"header": args.backend_header}
    if args.backend_regex:
        target["backend"] = {"body_regex": args.backend_regex}
    if args.requests is not None:
        target["requests_per_address"] = args.requests
    if args.ip_family:
        target["ip_family"] = args.ip_family
    if args.min_tls_version:
        target["min_tls_version"] = args.min_tls_version
    if args.header:
        headers = {}
        for item in args.header:
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                raise UsageError(f"--header: {item!r} must be NAME:VALUE")
            headers[name.strip()] = value.strip()
        target["headers"] = headers
    if args.timeout is not None:
        target["timeouts"] = _timeouts_within(args.timeout)
    if args.insecure:
        target["insecure_skip_verify"] = True
    if args.ocsp:
        target["ocsp"] = args.ocsp
    if args.http_version:
        target["http_version"] = args.http_version
    try:
        return build_config({"targets": [target]}, where="arguments")
    except ConfigError as exc:
        raise UsageError(_flag_message(exc)) from None


def _timeouts_within(deadline: float) -> dict[str, float]:
    """Stage timeouts that fit an ad hoc ``--timeout`` deadline (the defaults, shortened)."""
    if deadline <= 0:
        raise UsageError(f"--timeout: must be greater than 0 (got {deadline:g})")
    stages = Timeouts().model_dump(exclude={"deadline"})
    return {"deadline": deadline, **{name: min(value, deadline) for name, value in stages.items()}}


def _flag_message(exc: ConfigError) -> str:
    field = exc.field or ""
    head = field.removeprefix("targets[0]").lstrip(".")
    name = head.split(".")[0].split("[")[0]
    flag = _FLAG_FOR_FIELD.get(name)
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
