"""systemd notifications, received on our own AF_UNIX datagram sockets."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.daemon.sdnotify import Notifier


class Listener:
    """A bound datagram socket standing in for the service manager."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def receive(self) -> list[str]:
        """The fields of the next datagram."""
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> list[list[str]]:
        """Every datagram already queued."""
        self.sock.setblocking(False)
        try:
            out = []
            while True:
                try:
                    out.append(self.sock.recv(4096).decode().split("\n"))
                except BlockingIOError:
                    return out
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    path = str(tmp_path / "notify")
    server = Listener(path)
    try:
        yield server, path
    finally:
        server.sock.close()


@pytest.fixture
def notifier(listener: tuple[Listener, str]) -> Iterator[Notifier]:
    n = Notifier({"NOTIFY_SOCKET": listener[1], "WATCHDOG_USEC": "2000000"})
    try:
        yield n
    finally:
        n.close()


def test_ready(listener: tuple[Listener, str], notifier: Notifier) -> None:
    assert notifier.enabled
    notifier.ready("2 targets: 2 waiting for a first cycle")
    assert listener[0].receive() == ["READY=1", "STATUS=2 targets: 2 waiting for a first cycle"]


def test_status(listener: tuple[Listener, str], notifier: Notifier) -> None:
    notifier.status("1 target: 1 ok")
    assert listener[0].receive() == ["STATUS=1 target: 1 ok"]


def test_watchdog(listener: tuple[Listener, str], notifier: Notifier) -> None:
    notifier.watchdog()
    notifier.watchdog()
    assert listener[0].pending() == [["WATCHDOG=1"], ["WATCHDOG=1"]]


def test_reloading_carries_the_monotonic_clock(listener: tuple[Listener, str], notifier: Notifier) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = listener[0].receive()
    assert reloading == "RELOADING=1"
    key, _, value = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_reloaded(listener: tuple[Listener, str], notifier: Notifier) -> None:
    notifier.reloaded("reload refused: bad")
    assert listener[0].receive() == ["READY=1", "STATUS=reload refused: bad"]


def test_stopping(listener: tuple[Listener, str], notifier: Notifier) -> None:
    notifier.stopping()
    assert listener[0].receive() == ["STOPPING=1"]


def test_order_is_kept_and_nothing_extra_is_sent(listener: tuple[Listener, str], notifier: Notifier) -> None:
    notifier.ready("a")
    notifier.status("b")
    notifier.watchdog()
    notifier.stopping()
    assert [fields[0] for fields in listener[0].pending()] == [
        "READY=1",
        "STATUS=b",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_close_and_send_again(listener: tuple[Listener, str], notifier: Notifier) -> None:
    notifier.status("one")
    notifier.close()
    notifier.close()
    notifier.status("two")
    assert listener[0].pending() == [["STATUS=one"], ["STATUS=two"]]


def test_abstract_namespace_socket() -> None:
    name = f"probe-test-{os.getpid()}-{uuid.uuid4().hex}"
    server = Listener(b"\0" + name.encode())
    notifier = Notifier({"NOTIFY_SOCKET": f"@{name}"})
    try:
        assert notifier.enabled
        notifier.ready("up")
        assert server.receive() == ["READY=1", "STATUS=up"]
    finally:
        notifier.close()
        server.sock.close()


# --------------------------------------------------------------------------- watchdog period


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 2.0),
        ({"WATCHDOG_USEC": "250000"}, 0.25),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),
    ],
)
def test_watchdog_seconds(environ: dict[str, str], seconds: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/none", **environ}).watchdog_seconds == seconds


def test_watchdog_seconds_without_a_notify_socket() -> None:
    # Read as given; without a socket the pings go nowhere anyway.
    notifier = Notifier({"WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_seconds == 2.0
    assert not notifier.enabled


def test_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier()
    assert notifier.enabled and notifier.watchdog_seconds == 3.0


# --------------------------------------------------------------------------- outside systemd


@pytest.mark.parametrize("value", [None, "", "relative/path", "notify"])
def test_without_a_usable_notify_socket_every_call_is_a_silent_no_op(
    value: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_socket(*args: object) -> socket.socket:
        raise AssertionError("no socket may be opened")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = Notifier({} if value is None else {"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="probe.sdnotify"):
        notifier.ready("x")
        notifier.status("x")
        notifier.watchdog()
        notifier.reloading()
        notifier.reloaded("x")
        notifier.stopping()
        notifier.send("A=1")
        notifier.close()
    assert caplog.records == []


def test_missing_socket_logs_a_warning_and_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING, logger="probe.sdnotify"):
        notifier.ready("x")
        notifier.watchdog()
    notifier.close()
    warnings = [r for r in caplog.records if r.name == "probe.sdnotify" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "No such file" in getattr(warnings[0], "error", "")


def test_a_socket_that_goes_away_and_comes_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "notify")
    first = Listener(path)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    try:
        notifier.status("one")
        assert first.receive() == ["STATUS=one"]
        first.sock.close()
        os.unlink(path)
        with caplog.at_level(logging.WARNING, logger="probe.sdnotify"):
            notifier.status("lost")  # logged, not raised
        assert caplog.records
        second = Listener(path)
        try:
            notifier.status("two")
            assert second.receive() == ["STATUS=two"]
        finally:
            second.sock.close()
    finally:
        notifier.close()


def test_a_receiver_that_does_not_read_costs_dropped_notifications_not_a_stall(
    listener: tuple[Listener, str], notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="probe.sdnotify"):
        for _ in range(300):  # far more than any net.unix.max_dgram_qlen queues
            notifier.watchdog()
    assert time.monotonic() - start < 1.0
    assert any("queue is full" in r.getMessage() for r in caplog.records)
    queued = listener[0].pending()
    assert 0 < len(queued) < 300
    notifier.status("after")  # room again once the receiver has read
    assert listener[0].receive() == ["STATUS=after"]
