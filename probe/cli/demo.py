"""``probe demo``: start the loopback lab, check it, then keep probing it as the daemon does.

The lab (:class:`probe.lab.DemoLab`) listens on 127.0.0.0/8 only; the daemon, the lab and
the configuration models are imported when the demo starts.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from probe.cli.cycles import run_all
from probe.cli.errors import UsageError
from probe.cli.output import report
from probe.model.reasons import ExitCode

if TYPE_CHECKING:
    from probe.lab import DemoLab


def command(args: argparse.Namespace, stdout: IO[str]) -> int:
    """Run ``probe demo`` with the parsed ``args``, writing to ``stdout``.

    Returns:
        The exit code of the first check's verdict, or 4 (LISTEN_FAILED) when the metrics
        endpoint cannot listen on ``--listen``.

    Raises:
        UsageError: ``--listen`` is not ``HOST:PORT``.
    """
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
        results = asyncio.run(run_all(plans))
        code = report(results, args, stdout)
        if args.once:
            return code
        if not args.json:
            stdout.write(
                f"\nprobe demo: probing the lab every 10 s; metrics at http://{args.listen}/metrics, "
                "status page at /. Ctrl-C to stop.\n"
                "probe demo: to check the lab by hand while the demo runs, from another terminal:\n"
                f"  {check_command_line(lab)}\n"
            )
            stdout.flush()
        running = daemon.Daemon(config, plans, Notifier(), initial_results=results)
        try:
            asyncio.run(running.run())
        except daemon.StartupError as exc:
            print(f"probe: {exc}", file=sys.stderr)
            return ExitCode.LISTEN_FAILED
        return code


def _can_listen(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe_socket:
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind((host, port))
        except OSError:
            return False
    return True


def check_command_line(lab: DemoLab) -> str:
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
