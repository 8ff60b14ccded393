"""The shipped systemd unit: ``systemd-analyze verify`` and ``security`` accept it, and it says what
the daemon needs (Type=notify with a watchdog, reload by SIGHUP, no restart on a bad config) and the
hardening docs/daemon.md promises.

``systemd-analyze`` works on unit files without a running systemd; without it the tests skip.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config.values import PRIVATE_NETWORKS
from probe.daemon.scheduler import STOP_GRACE
from probe.model.reasons import ExitCode

REPO_ROOT = Path(__file__).resolve().parents[3]
UNIT = REPO_ROOT / "systemd" / "probe.service"
DOCUMENTED_EXEC_START = "/usr/local/bin/probe run --config /etc/probe/probe.yaml"
MAX_EXPOSURE = 2.0
_TRUE = {"yes", "true", "on", "1"}


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)")
    return path


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}`` in file order; repeated keys stay repeated as systemd reads them.

    Comments and continuation lines are handled as in systemd.syntax(7).
    """
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):  # continuation
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.append((key.strip(), value.strip()))
    return sections


def values(key: str, section: str = "Service") -> list[str]:
    """Every value assigned to ``key`` in ``section`` of the shipped unit, in order."""
    return [v for k, v in parse_unit(UNIT.read_text())[section] if k == key]


def value(key: str, section: str = "Service") -> str:
    """The one value of a key that must be set exactly once."""
    found = values(key, section)
    assert len(found) == 1, f"{section}.{key}: expected exactly one assignment, got {found}"
    return found[0]


def microseconds(systemd_analyze: str, span: str) -> int:
    """A time span as systemd parses it (``60s``, ``1min 30s`` …)."""
    done = subprocess.run(
        [systemd_analyze, "timespan", span], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"{span!r} is not a time span: {done.stderr}"
    match = re.search(r"μs:\s*(\d+)", done.stdout)
    assert match, done.stdout
    return int(match[1])


def size_bytes(size: str) -> int:
    """A size as in MemoryMax= (``256M``, ``1G``, plain bytes); base 1024 as systemd uses."""
    match = re.fullmatch(r"(\d+)([KMGTPE]?)", size)
    assert match, f"not an absolute size: {size!r}"
    power: int = "_KMGTPE".index(match[2] or "_")
    return int(match[1]) << (10 * power)


def probe_executable(directory: Path) -> Path:
    """The ``probe`` console script of this interpreter, else on PATH, else a stub that runs it."""
    beside = Path(sys.executable).parent / "probe"
    if beside.is_file():
        return beside
    found = shutil.which("probe")
    if found:
        return Path(found)
    stub = directory / "probe"
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m probe "$@"\n')
    stub.chmod(0o755)
    return stub


def unit_with_exec_start(directory: Path, executable: Path) -> Path:
    """A copy of the shipped unit, named probe.service, whose ExecStart runs ``executable``."""
    text = UNIT.read_text()
    quoted = f'"{executable}"' if re.search(r"\s", str(executable)) else str(executable)
    copy, count = re.subn(
        r"^ExecStart=\S+", lambda _: f"ExecStart={quoted}", text, count=1, flags=re.MULTILINE
    )
    assert count == 1
    path = directory / "probe.service"
    path.write_text(copy)
    return path


def lines_about(output: str, *needles: str) -> list[str]:
    return [line for line in output.splitlines() if any(n in line for n in needles)]


def _run(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def verified_copy(tmp_path: Path) -> Path:
    return unit_with_exec_start(tmp_path, probe_executable(tmp_path))


# --------------------------------------------------------------------------- systemd-analyze


def test_shipped_exec_start_is_the_documented_one() -> None:
    assert values("ExecStart") == [DOCUMENTED_EXEC_START]


def test_systemd_analyze_verify(systemd_analyze: str, verified_copy: Path) -> None:
    # The shipped ExecStart (/usr/local/bin/probe) does not exist on a test machine, and verify
    # checks that it is executable: verify a copy that runs this interpreter's probe instead.
    code, output = _run([systemd_analyze, "verify", str(verified_copy)])

    assert code == 0, output
    assert lines_about(output, "probe.service", str(verified_copy.parent)) == [], output


def test_systemd_analyze_security_exposure(systemd_analyze: str) -> None:
    code, output = _run([systemd_analyze, "security", "--offline=true", str(UNIT)])

    assert code == 0, output
    # Parse warnings name the file and line: there must be none.
    assert lines_about(output, str(UNIT)) == [], output
    match = re.search(r"Overall exposure level for probe\.service:\s*(\d+(?:\.\d+)?)", output)
    assert match, output
    assert float(match[1]) <= MAX_EXPOSURE, output


# --------------------------------------------------------------------------- the settings


def test_runs_as_a_notify_service_with_a_watchdog(systemd_analyze: str) -> None:
    assert value("Type") == "notify"  # probe run sends READY=1 once it serves
    assert value("NotifyAccess") == "main"
    assert microseconds(systemd_analyze, value("WatchdogSec")) > 0  # probe pings every WatchdogSec/2


def test_reload_sends_sighup_to_the_daemon() -> None:
    # probe run re-reads its configuration on SIGHUP.
    assert re.fullmatch(r"\S*kill -(HUP|SIGHUP|s HUP) \$MAINPID", value("ExecReload")), value("ExecReload")


def test_restarts_on_failure_but_not_on_a_bad_configuration() -> None:
    assert value("Restart") == "on-failure"
    prevented = " ".join(values("RestartPreventExitStatus")).split()
    assert str(int(ExitCode.UNKNOWN)) in prevented  # exit 3: bad configuration


def test_stop_timeout_leaves_room_for_in_flight_cycles(systemd_analyze: str) -> None:
    assert microseconds(systemd_analyze, value("TimeoutStopSec")) > STOP_GRACE * 1_000_000


@pytest.mark.parametrize(
    "key",
    ["DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"],
)
def test_hardening_switch_is_on(key: str) -> None:
    assert value(key).lower() in _TRUE


def test_file_system_is_read_only() -> None:
    assert value("ProtectSystem") == "strict"


def test_no_capabilities() -> None:
    # An empty assignment: the bounding set is empty, no capability at all.
    assert values("CapabilityBoundingSet") == [""]
    assert values("AmbientCapabilities") in ([], [""])


def test_socket_families_are_an_allow_list_of_what_probe_uses() -> None:
    families = " ".join(values("RestrictAddressFamilies")).split()
    assert families and not families[0].startswith("~"), families  # an allow list
    # AF_INET/AF_INET6: DNS, TLS, HTTP and the metrics endpoint; AF_UNIX: $NOTIFY_SOCKET.
    assert set(families) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_system_calls_are_filtered() -> None:
    filters = values("SystemCallFilter")
    assert filters[0] == "@system-service", filters
    assert all(f.startswith("~") for f in filters[1:]), filters  # later lines only take away


def test_memory_is_capped() -> None:
    assert 0 < size_bytes(value("MemoryMax")) <= 1024**3


def test_ip_traffic_is_limited_to_what_probe_reaches_by_default() -> None:
    assert value("IPAddressDeny") == "any"
    allowed = " ".join(values("IPAddressAllow")).split()
    assert "localhost" in allowed  # the metrics endpoint on 127.0.0.1:9798
    assert "link-local" in allowed  # the VPC's resolver at 169.254.169.253
    # Every network a target may resolve to by default (expect_networks) is reachable.
    reachable = [ipaddress.ip_network(a) for a in allowed if a not in ("localhost", "link-local")]
    for network in PRIVATE_NETWORKS:
        assert any(
            network.version == r.version and network.subnet_of(r)  # type: ignore[arg-type]
            for r in reachable
        ), network
