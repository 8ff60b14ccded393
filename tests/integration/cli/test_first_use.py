"""Things a new user meets first: unknown flags, the demo's ready command, a busy port."""

from __future__ import annotations

import ipaddress
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probe.model.reasons import ExitCode
from tests.support.helpers import REPO, environment_without_proxies, probe_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["check", "https://www.corp.example/", "--resolvers", "127.0.0.1"],
            "probe: unrecognized arguments: --resolvers 127.0.0.1; did you mean --resolver? "
            "(see 'probe check --help')",
        ),
        (
            ["check", "https://www.corp.example/", "--backend-headr=X-Backend"],
            "probe: unrecognized arguments: --backend-headr=X-Backend; did you mean --backend-header? "
            "(see 'probe check --help')",
        ),
        (
            ["run", "--config", "probe.yaml", "--listn", "127.0.0.1:1"],
            "probe: unrecognized arguments: --listn 127.0.0.1:1; did you mean --listen? "
            "(see 'probe run --help')",
        ),
        (
            ["demo", "--jsn"],
            "probe: unrecognized arguments: --jsn; did you mean --json? (see 'probe demo --help')",
        ),
        (
            ["--verison"],
            "probe: unrecognized arguments: --verison; did you mean --version? (see 'probe --help')",
        ),
        (
            ["check", "https://www.corp.example/", "surplus"],
            "probe: unrecognized arguments: surplus (see 'probe check --help')",
        ),
    ],
)
def test_unknown_flag_names_the_closest_and_the_subcommand_help(args: list[str], message: str) -> None:
    start = time.monotonic()
    result = probe_cli(*args)
    assert result.returncode == ExitCode.UNKNOWN
    assert result.stderr == message + "\n"
    assert result.stdout == ""
    assert time.monotonic() - start < 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_prints_its_ca_header_and_a_command_that_checks_it_without_insecure() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "probe", "demo", "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=environment_without_proxies(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    timer = threading.Timer(60, process.kill)  # a stuck demo must not hang the suite
    timer.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if len(lines) > 1 and lines[-2].startswith("probe demo: to check the lab by hand"):
                break
        text = "".join(lines)
        header = next(line for line in lines if " root CA " in line)
        ca_file = Path(header.split(" root CA ", 1)[1].split(";", 1)[0])
        assert ca_file.is_file() and ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert "the backends name themselves in the X-Backend response header" in header
        command = shlex.split(lines[-1])
        assert command[:4] == [sys.executable, "-m", "probe", "check"]
        assert "--insecure" not in command
        assert command[command.index("--ca-file") + 1] == str(ca_file)
        resolver = command[command.index("--resolver") + 1]
        assert ipaddress.ip_address(resolver.rsplit(":", 1)[0]).is_loopback  # never the system resolver
        assert command[command.index("--backend-header") + 1] == "X-Backend"

        start = time.monotonic()
        check = subprocess.run(
            command, cwd=REPO, env=environment_without_proxies(), capture_output=True, text=True, timeout=30
        )
        assert check.returncode == ExitCode.OK, check.stdout + check.stderr
        assert check.stderr == ""
        assert "verified" in check.stdout and "NOT verified" not in check.stdout
        assert "backends web-1 4  web-2 4" in check.stdout
        assert check.stdout.rstrip().endswith("Status: OK (1 ok)")
        assert time.monotonic() - start < 15

        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, text
    assert not ca_file.exists()  # the CA file lives exactly as long as the demo


def test_demo_with_a_busy_port_exits_with_the_listen_code() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = probe_cli("demo", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert result.returncode == ExitCode.LISTEN_FAILED
    assert result.stderr == (
        f"probe: cannot listen on 127.0.0.1:{port}: in use; give another --listen, or --once\n"
    )
    assert result.stdout == ""
