"""Ctrl-C while ``probe check`` starts: one line, ``probe: interrupted``, exit 3, no traceback.

Each test runs the command in a fresh interpreter and sends it a real SIGINT at a chosen
point of its start (from inside, so the moment is exact): while the cli's modules are being
imported (:mod:`probe.cli.main`, a module it loads, and the command's module it loads when
it runs), and while the early DNS query is out and the configuration loads. The resolver is
a lab DNS server on loopback that never answers, so nothing ends the check but the Ctrl-C.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

from probe.lab import Behaviour, Lab
from tests.support.helpers import REPO, environment_without_proxies

#: A Ctrl-C while a module of the cli (``sys.argv[1]``) is imported: a finder that sends SIGINT
#: when that import starts (the KeyboardInterrupt is raised inside it), then the command's
#: entry point.
_DURING_IMPORT = """
import os, signal, sys
module = sys.argv[1]
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["probe", *sys.argv[2:]]
from probe.__main__ import main
sys.exit(main())
"""

#: A Ctrl-C as the early DNS query leaves: an audit hook on the UDP socket's connect to the
#: resolver (``socket.connect``, raised before the system call) sends SIGINT.
_DURING_EARLY_QUERY = """
import os, signal, socket, sys
resolver = (sys.argv[1], int(sys.argv[2]))
def hook(event, args):
    if event == "socket.connect" and args[0].type == socket.SOCK_DGRAM and args[1][:2] == resolver:
        os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(hook)
sys.argv = ["probe", *sys.argv[3:]]
from probe.__main__ import main
sys.exit(main())
"""

#: A second Ctrl-C once the command is over (a watch's summary written), as the interpreter
#: exits: the exit code stands, nothing on stderr.
_AFTER_THE_COMMAND = """
import os, signal, sys, time
sys.argv = ["probe", *sys.argv[1:]]
from probe.__main__ import main
code = main()
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.2)
sys.exit(code)
"""


@pytest.fixture
def silent_resolver(lab: Lab) -> Iterator[tuple[str, int]]:
    """A lab DNS server that never answers: ``(ip, port)``."""
    silent = lab.start_dns("127.0.53.22")
    silent.default = Behaviour.DROP
    try:
        yield silent.address, silent.port
    finally:
        lab.stop(silent)


def _run(script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    complete = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=environment_without_proxies(),
    )
    return complete, time.monotonic() - start


def test_the_command_is_the_entry_point_that_handles_a_ctrl_c_while_loading() -> None:
    (probe,) = entry_points(group="console_scripts", name="probe")
    assert probe.value == "probe.__main__:main"


#: Loaded by the launcher (``probe.cli.main``), while it loads (the parser), and by ``main``
#: when the command runs (``probe.cli.check``).
CLI_MODULES = ("probe.cli.main", "probe.cli.parser", "probe.cli.check")


@pytest.mark.parametrize("module", CLI_MODULES)
def test_ctrl_c_while_the_cli_loads_says_interrupted(silent_resolver: tuple[str, int], module: str) -> None:
    host, port = silent_resolver
    complete, elapsed = _run(
        _DURING_IMPORT, module, "check", "https://www.corp.example/", "--resolver", f"{host}:{port}"
    )

    assert (complete.returncode, complete.stdout, complete.stderr) == (3, "", "probe: interrupted\n")
    assert elapsed < 30


def test_ctrl_c_during_the_early_query_says_interrupted(silent_resolver: tuple[str, int]) -> None:
    host, port = silent_resolver
    complete, elapsed = _run(
        _DURING_EARLY_QUERY,
        host,
        str(port),
        "check",
        "https://www.corp.example/",
        "--resolver",
        f"{host}:{port}",
    )

    assert (complete.returncode, complete.stdout, complete.stderr) == (3, "", "probe: interrupted\n")
    assert elapsed < 30  # not the resolver's 2 s timeout after the start-up: the Ctrl-C ended it


def test_ctrl_c_after_a_watch_ended_keeps_its_exit_code_and_prints_no_traceback(
    silent_resolver: tuple[str, int],
) -> None:
    host, port = silent_resolver
    complete, _ = _run(
        _AFTER_THE_COMMAND,
        "check",
        "https://www.corp.example/",
        "--resolver",
        f"{host}:{port}",
        "--watch",
        "--max-time",
        "300ms",
    )

    assert (complete.returncode, complete.stderr) == (3, "")
    assert "ended at --max-time" in complete.stdout
