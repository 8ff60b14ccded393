"""The ``probe`` command: parse the arguments, run the command, turn exceptions into exit codes.

The only place where exceptions become exit codes: bad input (:class:`probe.cli.errors.UsageError`,
a ``ConfigError``, a ``BaselineError``) prints one line ``probe: <what is wrong>`` on
stderr and exits 3 (UNKNOWN), as does a Ctrl-C; a check exits with its verdict (0 ok,
1 warning, 2 critical), as monitoring plugins do. The commands live in their own modules:
:mod:`probe.cli.check`, :mod:`probe.cli.demo`, :mod:`probe.cli.share`,
:mod:`probe.cli.completion`, and :mod:`probe.daemon.main` for ``probe run``.

Each command imports what it needs when it runs: ``probe --help`` loads neither the
configuration models nor the probe stages, and ``probe check`` never loads the daemon, the
web server and its config, bcrypt or prometheus_client (nor pyOpenSSL, which only
``ocsp: staple`` needs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from probe import log
from probe._version import __version__
from probe.cli.errors import UsageError
from probe.cli.output import stdout_to_devnull
from probe.cli.parser import build_parser
from probe.model.reasons import ExitCode


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
        return _command(args, stdout)
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
        stdout_to_devnull()
        return ExitCode.UNKNOWN


def _command(args: argparse.Namespace, stdout: IO[str]) -> int:
    """Run the command ``args`` name, its module imported now; returns its exit code."""
    if args.command is None:
        raise UsageError("give a command: check, run or demo (see 'probe --help')")
    if args.command == "share":
        from probe.cli import share

        return share.command(args, stdout)
    if args.command == "completion":
        return _completion(args, stdout)
    log.setup(args.log_level)
    if args.command == "check":
        from probe.cli import check

        return check.command(args, stdout)
    if args.command == "demo":
        from probe.cli import demo

        return demo.command(args, stdout)
    if args.command == "run":
        return _run(args)
    raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover


def _completion(args: argparse.Namespace, stdout: IO[str]) -> int:
    """``probe completion bash|zsh``: print the completion script generated from the parser."""
    from probe.cli.completion import script
    from probe.cli.share import share_names

    stdout.write(script(args.shell, build_parser(), __version__, share=share_names()))
    stdout.flush()
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    """``probe run``: the daemon; when it cannot start (e.g. its port is in use), one line and exit 4."""
    from probe.daemon import main as daemon

    web_config = Path(args.web_config_file) if args.web_config_file else None
    try:
        return daemon.start(
            Path(args.config),
            listen=args.listen,
            web_config_path=web_config,
            client_timeout=args.web_client_timeout,
        )
    except daemon.StartupError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return ExitCode.LISTEN_FAILED
