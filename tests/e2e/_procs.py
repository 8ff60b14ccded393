"""Server processes for the end-to-end tests: start on a free port, wait until ready, stop."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

#: Default bound on waiting for a server to come up (seconds), and the pause between checks.
START_TIMEOUT = 10.0
START_POLL = 0.02
#: Attempts with a new port when another process took the port between choice and bind.
PORT_ATTEMPTS = 5
#: What a server logs when its port was taken (compared in lower case).
_PORT_TAKEN = ("address already in use", "cannot bind socket")


def require_programs(
    names: tuple[str, ...], message: str, find: Callable[[str], str | None] = shutil.which
) -> dict[str, str]:
    """The paths of the programs ``names``, as ``find`` finds them.

    Without one of them, skip with ``message`` (its ``{missing}`` names the missing ones), or
    fail when ``PROBE_REQUIRE_E2E=1`` (CI) forbids skipping.
    """
    found = {name: find(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        text = message.format(missing=" and ".join(missing))
        if os.environ.get("PROBE_REQUIRE_E2E") == "1":
            pytest.fail(f"{text} — PROBE_REQUIRE_E2E=1 forbids skipping them", pytrace=False)
        pytest.skip(text)
    return {name: path or "" for name, path in found.items()}


class Process:
    """A foreground server process whose stdout and stderr go to a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        config: str = "",
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = argv
        self.config = config
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self._log = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self, limit: int = 6000) -> str:
        """The end of the process's output, for failure messages."""
        text = self.log_path.read_text(errors="replace")
        return text if len(text) <= limit else "…" + text[-limit:]

    def describe(self) -> str:
        state = "running" if self.running else f"exited with {self.proc.returncode}"
        config = f"--- config ---\n{self.config}" if self.config else ""
        return f"{self.name} ({state}): {' '.join(self.argv)}\n{config}--- output ---\n{self.output()}"

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL; returns the status after SIGTERM.

        ``None`` means it had to be killed. Idempotent.
        """
        code = self.proc.poll()
        if code is None:
            self.proc.terminate()
            try:
                code = self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return code


def start_server(
    name: str,
    launch: Callable[[int, int], Process],
    ready: Callable[[int], bool],
    addresses: tuple[str, ...],
    kinds: tuple[socket.SocketKind, ...],
    *,
    timeout: float = START_TIMEOUT,
    poll: float = START_POLL,
) -> tuple[Process, int]:
    """Start a server on a free port and wait until ``ready(port)``; fail clearly if it does not.

    Args:
        name: for messages.
        launch: ``launch(port, attempt)`` starts the process.
        ready: polled every ``poll`` seconds for at most ``timeout`` seconds.
        addresses: the addresses the server binds; the port must be free on all of them.
        kinds: the socket types it binds (TCP and/or UDP).
        timeout: bound on the wait for ``ready``.
        poll: pause between two calls of ``ready``.

    Returns:
        ``(process, port)``. A port taken by someone else meanwhile means another attempt.
    """
    for attempt in range(PORT_ATTEMPTS):
        port = free_port(addresses, kinds)
        process = launch(port, attempt)
        limit = time.monotonic() + timeout
        while process.running and not ready(port):
            if time.monotonic() > limit:
                process.stop()
                pytest.fail(f"{name} not ready within {timeout:g}s\n{process.describe()}", pytrace=False)
            time.sleep(poll)
        if process.running:
            return process, port
        process.stop()
        output = process.output().lower()
        if not any(taken in output for taken in _PORT_TAKEN):
            pytest.fail(f"{name} did not start\n{process.describe()}", pytrace=False)
    pytest.fail(f"{name}: no free port in {PORT_ATTEMPTS} attempts\n{process.describe()}", pytrace=False)


def free_port(addresses: tuple[str, ...], kinds: tuple[socket.SocketKind, ...]) -> int:
    """A port that is free on every address for every socket kind (TCP and/or UDP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kinds[0]) as first:
            first.bind((addresses[0], 0))
            port: int = first.getsockname()[1]
            try:
                for address in addresses:
                    for kind in kinds:
                        if (address, kind) == (addresses[0], kinds[0]):
                            continue
                        with socket.socket(socket.AF_INET, kind) as other:
                            other.bind((address, port))
            except OSError:
                continue
        return port
    raise OSError(f"no port free on all of {', '.join(addresses)}")


def accepts(address: str, port: int) -> bool:
    """Whether ``address``:``port`` (a loopback IP literal) accepts a TCP connection now."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_haproxy(
    binary: str, render: Callable[[int], str], addresses: tuple[str, ...], workdir: Path
) -> tuple[Process, int]:
    """Start HAProxy in the foreground (``-db``) on a free port, configured by ``render(port)``.

    Each attempt writes ``haproxy-N.cfg`` and logs to ``haproxy-N.log`` in ``workdir``; HAProxy
    is ready once every one of ``addresses`` accepts a connection on the port.

    Returns:
        ``(process, port)`` (see :func:`start_server`).
    """

    def launch(port: int, attempt: int) -> Process:
        config = render(port)
        path = workdir / f"haproxy-{attempt}.cfg"
        path.write_text(config)
        return Process(
            "HAProxy", [binary, "-db", "-f", str(path)], workdir / f"haproxy-{attempt}.log", config
        )

    def ready(port: int) -> bool:
        return all(accepts(address, port) for address in addresses)

    return start_server("HAProxy", launch, ready, addresses, (socket.SOCK_STREAM,))


def haproxy_head(*, connect: str = "2s", extra: tuple[str, ...] = ()) -> str:
    """The ``global`` and ``defaults`` sections every test HAProxy shares.

    HTTP mode, requests logged to stderr, no retries (a refused connection is a 503 at
    once, not after a retry pause), ``timeout connect`` as given, plus ``extra`` lines in
    ``defaults``.
    """
    lines = "".join(f"    {line}\n" for line in extra)
    return f"""\
global
    log stderr format short local0 info

defaults
    mode http
    log global
    option httplog
{lines}    retries 0
    timeout connect {connect}
    timeout client 10s
    timeout server 10s
"""
