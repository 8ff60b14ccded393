"""``./dev`` installs what each command needs: the demo probe alone, tests and lint the test tools too.

Run against a stand-in virtualenv (``PROBE_VENV``) whose ``python``, ``probe``, ``ruff`` and
``mypy`` are shell scripts that log their arguments: no package is installed, no index asked.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docs import REPO

_LOGGER = '#!/bin/sh\necho "{name} $*" >> "{log}"\n'


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    for name in ("python", "probe", "ruff", "mypy"):
        script = folder / "bin" / name
        script.write_text(_LOGGER.format(name=name, log=tmp_path / "calls.log"))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def dev(venv: Path, *args: str) -> list[str]:
    """Run ``./dev ARGS`` with the stand-in virtualenv; the commands it ran, one a line."""
    log = venv.parent / "calls.log"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        [str(REPO / "dev"), *args],
        env={**os.environ, "PROBE_VENV": str(venv), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_demo_installs_probe_alone_and_lint_adds_the_test_tools_to_the_same_venv(venv: Path) -> None:
    assert dev(venv, "demo", "--once") == [
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q -e .",
        "probe demo --once",
    ]
    assert dev(venv, "demo", "--once") == ["probe demo --once"]  # stamped: nothing to install

    # A .venv made by the demo gets the test tools from the first command that needs them.
    assert dev(venv, "lint") == [
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q -e .[test]",
        "ruff check probe tests bench tools",
        "ruff format --check probe tests bench tools",
        "mypy ",
    ]
    assert dev(venv, "lint")[0] == "ruff check probe tests bench tools"
    assert dev(venv, "demo") == ["probe demo"]


def test_setup_installs_the_test_tools_at_once_and_the_demo_needs_nothing_more(venv: Path) -> None:
    assert dev(venv, "setup") == [
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q -e .[test]",
    ]
    assert dev(venv, "setup") == []
    assert dev(venv, "demo") == ["probe demo"]
