"""The argument parser of the ``probe`` command: its commands, options and one-line errors.

:func:`build_parser` defines every command and option; the ad hoc target options come from
:data:`probe.cli.adhoc.ADHOC`. Errors are :class:`probe.cli.errors.UsageError` with one
line that points at the help of the (sub)command in use, and an unknown option is
answered with the closest known one (:func:`unrecognized`).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from probe._version import __version__
from probe.cli.adhoc import ADHOC
from probe.cli.argtypes import client_timeout, watch_duration, whole_number
from probe.cli.errors import UsageError
from probe.config.defaults import DEFAULT_EVERY, DEFAULT_LISTEN, DEFAULT_STABLE_ROUNDS, UNTIL_CHOICES
from probe.model.reasons import ExitCode, Platform


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


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, except that a text written on several lines keeps its lines.

    The epilog of ``probe check --help`` (a table of exit codes, commands to copy) is
    printed as written; the one-line descriptions are wrapped to the terminal as usual.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "\n".join(indent + line for line in text.splitlines())


#: What each exit code of ``probe check`` means (``LISTEN_FAILED`` is the daemon's alone).
CHECK_EXIT_CODES = {
    ExitCode.OK: "ok",
    ExitCode.WARNING: "warning: a warning and no critical finding, or a regression since --baseline",
    ExitCode.CRITICAL: "critical: at least one critical finding",
    ExitCode.UNKNOWN: "unknown: bad arguments, configuration or baseline file (one line on stderr)",
    ExitCode.PUSH_FAILED: "ok, but the --push failed (a warning or critical keeps its 1 or 2)",
}

#: Commands shown under ``examples:`` in ``probe check --help``, as a person would type them.
CHECK_EXAMPLES = (
    "probe check https://www.corp.example/health --resolver 10.0.0.2",
    "probe check https://www.corp.example/health --resolver 10.0.0.2 \\\n"
    "    --backend-header X-Backend --expect-backends web-1,web-2 --platform aws",
    "probe check https://www.corp.example/ --resolve www.corp.example:443:10.0.1.17 \\\n"
    "    --watch --until ok",
    "probe check --config /etc/probe/probe.yaml --json",
)


def _check_epilog() -> str:
    """The exit codes and examples under ``probe check --help``, as curl's and httpie's manuals end."""
    codes = [f"  {int(code)}  {meaning}" for code, meaning in CHECK_EXIT_CODES.items()]
    examples = [f"  {line}" for example in CHECK_EXAMPLES for line in example.splitlines()]
    return "\n".join(["exit status:", *codes, "", "examples:", *examples])


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


def build_parser() -> _Parser:
    """The argument parser of the ``probe`` command."""
    parser = _Parser(
        prog="probe",
        description="End-to-end checks of an HTTPS service behind an internal load balancer: "
        "DNS, TLS at every address, and the backend round-robin.",
    )
    parser.add_argument("--version", action="version", version=f"probe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # In help order.
    parser.commands = {
        "check": _check_command(commands),
        "run": _run_command(commands),
        "demo": _demo_command(commands),
        "share": _share_command(commands),
        "completion": _completion_command(commands),
    }
    return parser


def _check_command(commands: argparse._SubParsersAction[_Parser]) -> _Parser:
    check = commands.add_parser(
        "check",
        help="probe targets once and print a verdict (exit 0 ok, 1 warning, 2 critical, 3 unknown)",
        description="Probe once: DNS, TLS at every address, HTTP round-robin; print a verdict.",
        epilog=_check_epilog(),
        formatter_class=_HelpFormatter,
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
    return check


def _run_command(commands: argparse._SubParsersAction[_Parser]) -> _Parser:
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
    run.add_argument(
        "--web.client-timeout",
        dest="web_client_timeout",
        metavar="DURATION",
        type=client_timeout,
        default=5.0,
        help="time a client of the endpoint has for its request, and again to read the answer; "
        "slower clients are dropped (default 5s)",
    )
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return run


def _demo_command(commands: argparse._SubParsersAction[_Parser]) -> _Parser:
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
    return demo


def _share_command(commands: argparse._SubParsersAction[_Parser]) -> _Parser:
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
    return share


def _completion_command(commands: argparse._SubParsersAction[_Parser]) -> _Parser:
    completion = commands.add_parser(
        "completion",
        help="print the shell completion script for bash or zsh",
        description="Print a completion script generated from probe's options. bash: "
        "probe completion bash | sudo tee /etc/bash_completion.d/probe; zsh: "
        'probe completion zsh > "${fpath[1]}/_probe".',
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    completion.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return completion


def _add_adhoc_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ad hoc target options (with URL)")
    exclusive: dict[str, Any] = {}
    for option in ADHOC:
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
        type=watch_duration,
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
        type=whole_number,
        help=f"identical rounds in a row that end --until stable (default {DEFAULT_STABLE_ROUNDS})",
    )
    group.add_argument(
        "--max-time", metavar="DURATION", type=watch_duration, help="bound on the whole watch (e.g. 10m)"
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
