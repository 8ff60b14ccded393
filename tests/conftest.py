"""Shared fixtures: the loopback guard, a session PKI, the lab and helpers to run a cycle.

Network rule: tests talk to 127.0.0.0/8 and ::1 only. The guard below makes any attempt
to connect or send elsewhere fail loudly before a packet leaves.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.lab import DemoLab, Lab, Pki
from tests.support.netguard.loopback_guard import install as install_loopback_guard

_GUARD_DIR = Path(__file__).resolve().parent / "support" / "netguard"


def pytest_configure(config: pytest.Config) -> None:
    install_loopback_guard()
    # Python subprocesses (python -m probe …) load the same guard through sitecustomize.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_GUARD_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    if "PROBE_NETGUARD_LOG" not in os.environ:
        handle, path = tempfile.mkstemp(prefix="probe-netguard-", suffix=".log")
        os.close(handle)
        os.environ["PROBE_NETGUARD_LOG"] = path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any process of it (a subprocess too) tried to leave loopback."""
    log = Path(os.environ.get("PROBE_NETGUARD_LOG", ""))
    if log.is_file():
        violations = log.read_text(encoding="utf-8")
        log.unlink()
        if violations:
            print(f"\nNETWORK RULE BROKEN — non-loopback traffic attempted:\n{violations}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
