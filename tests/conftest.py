"""Shared fixtures: the loopback guard, a session PKI, the lab and helpers to run a cycle.

Network rule: tests talk to 127.0.0.0/8 and ::1 only. The guard below makes any attempt
to connect or send elsewhere fail loudly before a packet leaves.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.lab import DemoLab, Lab, Pki


class NonLoopbackConnect(AssertionError):
    """A test tried to reach an address outside 127.0.0.0/8 and ::1."""


def _check_address(address: Any) -> None:
    if not isinstance(address, tuple):
        return  # AF_UNIX path or abstract socket
    host = str(address[0]).split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise NonLoopbackConnect(f"tests must use IP literals, not {host!r}") from None
    if not ip.is_loopback and not (
        isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback
    ):
        raise NonLoopbackConnect(f"test tried to reach {host}: only loopback is allowed")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


def _guarded_sendto(self: socket.socket, data: bytes, *args: Any) -> int:
    _check_address(args[-1])
    return _real_sendto(self, data, *args)  # type: ignore[call-overload,no-any-return]


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign,assignment]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """With ``PROBE_REQUIRE_E2E=1`` (CI) a skipped test fails: a missing tool (openssl, curl,
    haproxy …) must not quietly turn a real-server test into nothing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("PROBE_REQUIRE_E2E") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped ({report.longrepr}) — PROBE_REQUIRE_E2E=1 forbids skipping"


# --------------------------------------------------------------------------- fixtures

_ADDRESSES = itertools.count(1)


@pytest.fixture
def new_ip() -> Any:
    """A function returning a loopback address no other test uses (127.1.x.y)."""

    def allocate() -> str:
        n = next(_ADDRESSES)
        return f"127.1.{n // 250}.{n % 250 + 1}"

    return allocate


@pytest.fixture(scope="session")
def pki() -> Pki:
    """A root and intermediate made for this test session."""
    return Pki.create("probe test")


@pytest.fixture(scope="session")
def ca_file(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session root as a PEM trust bundle."""
    return pki.write_ca(tmp_path_factory.mktemp("pki") / "ca.pem")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A running lab loop; tests start their own servers on it."""
    with Lab() as running:
        yield running


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLab]:
    """The demo scene: DNS, two TLS nodes on 127.0.10.1-2, backends web-1 and web-2."""
    with DemoLab(tmp_path_factory.mktemp("demo")) as scene:
        yield scene


@pytest.fixture(scope="session")
def dns(lab: Lab) -> Any:
    """A DNS server on the session lab that tests add their own names to."""
    return lab.start_dns("127.0.53.2")


@pytest.fixture(autouse=True)
def _reset_probe_logging() -> Iterator[None]:
    """``probe.cli.main`` configures the ``probe`` logger; undo it so caplog sees records."""
    yield
    logger = logging.getLogger("probe")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
