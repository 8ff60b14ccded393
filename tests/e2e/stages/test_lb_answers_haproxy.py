"""End to end: a real HAProxy answering itself, read by ``probe check`` as a user runs it.

One HAProxy terminates TLS on 127.0.30.1 and 127.0.30.2 (the e2e certificate for
www.corp.example, dnsmasq's answer) and balances over two lab backends with health checks
(``check inter 100ms fall 1``). Two of its own answers:

* every server down (both backends stopped, marked DOWN by the checks): its built-in 503,
  "No server is available to handle this request.";
* ``http-request deny`` on ``/denied``: its built-in 403, "Request forbidden by
  administrative rules.".

Neither names a backend (no X-Backend), and HAProxy sends no Server header: the page is
what gives it away. Everything listens on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Backend
from probe.model.reasons import Platform
from probe.report.hints import LOAD_BALANCER_HINTS
from tests.e2e._procs import haproxy_head
from tests.e2e.conftest import (
    HOSTNAME,
    LB_ADDRESSES,
    LB_NETWORK,
    Binaries,
    Dnsmasq,
    E2ePki,
    LoadBalancer,
    haproxy_over_lab,
)
from tests.support.helpers import REPO, probe_cli

pytestmark = pytest.mark.e2e

GENERIC = Platform.GENERIC

#: Bound on one whole ``probe check`` (a subprocess: interpreter start-up included).
BOUND = 10.0
SAID_503 = (
    "status 503 (expected 200-299) from the load balancer itself, not a backend: no server was available "
    "for the request (HAProxy's own 503 page: 'No server is available to handle this request.')"
)


def haproxy_config(port: int, pem: Path, backends: dict[str, Backend]) -> str:
    binds = "\n".join(f"    bind {address}:{port} ssl crt {pem} alpn h2,http/1.1" for address in LB_ADDRESSES)
    servers = "\n".join(f"    server {name} {b.address}:{b.port} check" for name, b in backends.items())
    return f"""{haproxy_head()}
frontend www
{binds}
    http-request deny if {{ path_beg /denied }}
    default_backend web

backend web
    balance roundrobin
    default-server inter 100ms fall 1 rise 1
{servers}
"""


def all_down(balancer: LoadBalancer) -> None:
    """Stop both backends and wait until HAProxy's checks have marked them DOWN."""
    for backend in balancer.backends.values():
        balancer.lab.stop(backend)
    limit = time.monotonic() + 5
    while balancer.process.output(limit=10**6).count(" is DOWN") < len(balancer.backends):
        assert time.monotonic() < limit, balancer.process.output()
        time.sleep(0.05)


@pytest.fixture
def balancer(binaries: Binaries, e2e_pki: E2ePki, tmp_path: Path) -> Iterator[LoadBalancer]:
    with haproxy_over_lab(
        binaries, tmp_path, lambda port, backends: haproxy_config(port, e2e_pki.haproxy_pem, backends)
    ) as started:
        yield started


def run_probe(
    balancer: LoadBalancer, dnsmasq: Dnsmasq, pki: E2ePki, path: str = "/"
) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    start = time.monotonic()
    done = probe_cli(
        "check", f"https://{HOSTNAME}:{balancer.port}{path}",
        "--resolver", dnsmasq.where,
        "--ca-file", str(pki.ca_file),
        "--expect-network", LB_NETWORK,
        "--backend-header", "X-Backend",
        "--expect-backends", "web-1,web-2",
        "--json",
        env=env,
    )  # fmt: skip
    assert time.monotonic() - start < BOUND
    assert done.stderr == "", done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    return done.returncode, target


def test_every_server_down_is_haproxys_own_503_once(
    balancer: LoadBalancer, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    all_down(balancer)
    code, target = run_probe(balancer, dnsmasq, e2e_pki)

    assert code == 2 and target["status"] == "critical"
    # Once per address, by its status; no backend_unidentified, and no backend_missing
    # drawn from answers that no backend gave.
    assert [f["reason"] for f in target["failures"]] == ["http_status", "http_status"]
    for failure in target["failures"]:
        assert failure["detail"] == f"4 of 4 requests: {SAID_503}"
        assert failure["hint"] == (
            f"503 from the load balancer itself: {LOAD_BALANCER_HINTS['no_healthy_target'][GENERIC]}"
        )
    attempts = [a for address in target["addresses"] for a in address["http"]]
    assert len(attempts) == 8
    for attempt in attempts:
        assert (attempt["status_code"], attempt["backend"], attempt["origin"]) == (503, None, "load_balancer")
        assert attempt["load_balancer"]["kind"] == "no_healthy_target"
        assert attempt["load_balancer"]["balancer"] == "HAProxy"
    assert target["backends"]["identified"] == 0 and target["backends"]["from_load_balancer"] == 8


def test_http_request_deny_is_haproxys_own_403(
    balancer: LoadBalancer, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    code, target = run_probe(balancer, dnsmasq, e2e_pki, "/denied")

    assert code == 2
    assert {f["reason"] for f in target["failures"]} == {"http_status"}
    for failure in target["failures"]:
        assert failure["detail"] == (
            "4 of 4 requests: status 403 (expected 200-299) from the load balancer itself, not a backend: an "
            "http-request deny rule refused the request (HAProxy's own 403 page: 'Request forbidden by "
            "administrative rules.')"
        )
        assert (
            failure["hint"] == f"403 from the load balancer itself: {LOAD_BALANCER_HINTS['blocked'][GENERIC]}"
        )
    assert {a["load_balancer"]["kind"] for address in target["addresses"] for a in address["http"]} == {
        "blocked"
    }
    # The backends were never asked.
    assert {name: b.requests for name, b in balancer.backends.items()} == {"web-1": 0, "web-2": 0}
