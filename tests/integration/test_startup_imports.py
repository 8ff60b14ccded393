"""What each command loads: ``--help`` nothing heavy, ``check`` no daemon, web, bcrypt, metrics.

A behaviour test, not a timing test: it runs the command in a fresh interpreter against the
demo lab and reads ``sys.modules`` at its end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.lab import DemoLab
from tests.helpers import REPO, environment_without_proxies

_SCRIPT = """
import json, sys
from probe.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""

#: Never loaded by ``probe check`` (pyOpenSSL only with ``--ocsp staple``).
NOT_FOR_CHECK = (
    "probe.daemon",
    "probe.web",
    "probe.webconfig",
    "probe.metrics",
    "probe.scheduler",
    "probe.store",
    "bcrypt",
    "prometheus_client",
    "OpenSSL",
    "yaml",  # no config file
)
#: Not loaded for ``--help`` either.
NOT_FOR_HELP = (
    *NOT_FOR_CHECK,
    "probe.config",
    "probe.cycle",
    "probe.watch",
    "probe.results",
    "pydantic",
    "httpx",
    "cryptography",
    "dns",
    "asyncio",
)


def loaded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    complete = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=environment_without_proxies(),
    )
    return complete, set(json.loads(out.read_text()))


def present(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names)}


@pytest.mark.parametrize(
    "args",
    [["--help"], ["check", "--help"], ["run", "--help"], ["--version"], ["share"], ["completion", "bash"]],
)
def test_help_loads_no_config_machinery_nor_stages(tmp_path: Path, args: list[str]) -> None:
    complete, modules = loaded(tmp_path, *args)
    assert complete.returncode == 0, complete.stderr
    assert "probe" in complete.stdout
    assert present(modules, NOT_FOR_HELP) == set()


def check_args(demo: DemoLab, *extra: str) -> list[str]:
    return [
        "check",
        demo.url,
        "--resolver",
        demo.dns_server.where,
        "--ca-file",
        str(demo.ca_file),
        "--expect-network",
        "127.0.10.0/24",
        "--timeout",
        "10",
        *extra,
    ]


def test_check_loads_neither_the_daemon_nor_the_web_nor_pyopenssl(demo: DemoLab, tmp_path: Path) -> None:
    start = time.monotonic()
    complete, modules = loaded(tmp_path, *check_args(demo))

    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "Status: OK" in complete.stdout and complete.stderr == ""
    assert present(modules, NOT_FOR_CHECK) == set()
    assert {"probe.cycle", "probe.report", "httpx"} <= modules  # it did probe and report
    assert time.monotonic() - start < 30


def test_check_with_ocsp_staple_loads_pyopenssl(demo: DemoLab, tmp_path: Path) -> None:
    complete, modules = loaded(tmp_path, *check_args(demo, "--ocsp", "staple", "--json"))

    assert complete.returncode == 0, complete.stdout + complete.stderr
    document = json.loads(complete.stdout)
    assert document["targets"][0]["status"] == "ok"
    assert "OpenSSL" in modules
    assert present(modules, tuple(n for n in NOT_FOR_CHECK if n != "OpenSSL")) == set()


def test_check_with_push_loads_the_renderer_but_not_prometheus_client(demo: DemoLab, tmp_path: Path) -> None:
    # Nothing listens on the port: the push is refused, which is enough to load its code.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    complete, modules = loaded(tmp_path, *check_args(demo, "--push", f"http://127.0.0.1:{port}"))

    assert complete.returncode == 5, complete.stdout + complete.stderr
    assert "connection refused" in complete.stderr
    assert {"probe.push", "probe.metrics", "probe.store"} <= modules
    lazy = ("probe.daemon", "probe.web", "probe.webconfig", "probe.scheduler", "bcrypt", "prometheus_client")
    assert present(modules, lazy) == set()
