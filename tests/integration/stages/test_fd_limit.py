"""Out of file descriptors: ``cycle_fd_limit`` from every stage that opens a socket, never DNS or TCP.

For real: a child process probes the demo lab, then fills its descriptor table up to a
lowered ``RLIMIT_NOFILE`` (the lab runs in the test process and keeps its own), and runs a
whole cycle (its DNS query fails), a cycle of a pinned target (its TCP connect fails), the
HTTP stage on a new connection and the stapling handshake. The log names the limit once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from probe.lab import DemoLab
from probe.model.reasons import Reason
from tests.support.helpers import REPO, environment_without_proxies

#: Descriptors the child may have beyond its highest one open when the table is filled.
_HEADROOM = 16

_CHILD = """
import asyncio, errno, ipaddress, json, os, resource, sys

from probe import log
from probe.config.load import load_config
from probe.engine.cycle import run_cycle
from probe.engine.plan import plan
from probe.model.deadline import Deadline
from probe.stages import http as http_stage, ocsp as ocsp_stage

log.setup("info")
by_dns, pinned = plan(load_config(sys.argv[1]))
headroom = int(sys.argv[2])


def fill_the_table():
    # Lower the soft limit a little above the highest descriptor, then take every free one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + headroom, hard))
    held = []
    while True:
        try:
            held.append(os.dup(0))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return held


def findings(failures):
    return [[f.reason.value, f.detail] for f in failures]


async def main():
    before = [await run_cycle(p) for p in (by_dns, pinned)]  # every lazy import done, clients built
    address = ipaddress.ip_address(pinned.target.addresses[0])
    held = fill_the_table()
    try:
        dns_cycle = await run_cycle(by_dns)
        tls_cycle = await run_cycle(pinned)
        attempts = await http_stage.request_rounds(pinned, address, Deadline.after(5))
        staple = await ocsp_stage.staple(pinned, address, Deadline.after(5))
    finally:
        for fd in held:
            os.close(fd)
    print(json.dumps({
        "before": [r.status.value for r in before],
        "dns": findings(dns_cycle.failures),
        "dns_status": dns_cycle.status.value,
        "tls": findings(tls_cycle.failures),
        "http": [findings(a.failures) for a in attempts],
        "ocsp": findings(staple.failures),
        "limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }))


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def starved(demo: DemoLab, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """The child's findings (JSON) and its log, once for the module."""
    folder = tmp_path_factory.mktemp("fd-limit")
    pinned = demo.target(name="pinned", addresses=[demo.node_addresses[0]], ocsp="staple")
    del pinned["expect_same_addresses_as"]  # the pinned target sends no DNS query at all
    config = folder / "probe.yaml"
    config.write_text(yaml.safe_dump({"targets": [demo.target(name="by-dns"), pinned]}))
    child = folder / "child.py"
    child.write_text(_CHILD)
    done = subprocess.run(
        [sys.executable, str(child), str(config), str(_HEADROOM)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=environment_without_proxies(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def _reasons(findings: list[list[str]]) -> set[str]:
    return {reason for reason, _ in findings}


def test_the_lab_is_healthy_before_the_table_is_full(starved: tuple[dict[str, Any], str]) -> None:
    result, _ = starved
    assert result["before"] == ["ok", "ok"]


def test_a_dns_query_without_a_socket_is_this_hosts_limit_not_the_resolvers(
    starved: tuple[dict[str, Any], str],
) -> None:
    result, _ = starved
    soft, hard = result["limit"]
    assert result["dns_status"] == "critical"
    assert _reasons(result["dns"]) == {Reason.CYCLE_FD_LIMIT.value}
    (detail,) = {d for r, d in result["dns"] if r == Reason.CYCLE_FD_LIMIT}
    assert f"this process is at its limit of open files (RLIMIT_NOFILE, soft {soft}, hard {hard})" in detail


def test_a_connect_without_a_socket_is_this_hosts_limit_not_tcp(starved: tuple[dict[str, Any], str]) -> None:
    result, _ = starved
    assert _reasons(result["tls"]) == {Reason.CYCLE_FD_LIMIT.value}
    assert all("no file descriptor left for a socket" in detail for _, detail in result["tls"])


def test_the_http_stage_and_the_stapling_handshake_say_the_same(starved: tuple[dict[str, Any], str]) -> None:
    result, _ = starved
    assert result["http"] and all(_reasons(one) == {Reason.CYCLE_FD_LIMIT.value} for one in result["http"])
    assert _reasons(result["ocsp"]) == {Reason.CYCLE_FD_LIMIT.value}
    assert result["ocsp"][0][1].startswith("no stapling handshake: no file descriptor left for a socket")


def test_one_log_line_names_the_limit(starved: tuple[dict[str, Any], str]) -> None:
    result, log = starved
    soft, hard = result["limit"]
    lines = [line for line in log.splitlines() if "logger=probe.sockets" in line]
    # Four stages met the limit within a second: one line (at most one a minute).
    assert len(lines) == 1, log
    assert lines[0].startswith("level=warning ")
    assert f"limit=RLIMIT_NOFILE soft={soft} hard={hard} errno=EMFILE" in lines[0]
    assert "Traceback" not in log
