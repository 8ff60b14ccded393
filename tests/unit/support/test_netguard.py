"""The loopback-only guard holds in the test process and in its Python subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netguard.loopback_guard import NonLoopbackConnect

# A name, not an IP literal: the guard refuses it before any lookup; were the guard
# missing, "localhost" would still only ever reach loopback.
ATTEMPT = "import socket; socket.socket().connect(('localhost', 9))"


def test_the_test_process_is_guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_NETGUARD_LOG", str(tmp_path / "guard.log"))
    with socket.socket() as sock, pytest.raises(NonLoopbackConnect, match="IP literals"):
        sock.connect(("localhost", 9))
    assert "not 'localhost'" in (tmp_path / "guard.log").read_text()


def test_a_python_subprocess_is_guarded_too(tmp_path: Path) -> None:
    log = tmp_path / "guard.log"
    env = {**os.environ, "PROBE_NETGUARD_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-c", ATTEMPT], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "NonLoopbackConnect" in done.stderr
    assert "tests must use IP literals, not 'localhost'" in log.read_text()
