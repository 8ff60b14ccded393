"""End to end: gRPC health checking through a real HAProxy in front of real gRPC servers.

Two ``grpcio`` servers with the standard health service (``grpcio-health-checking``), each
naming itself in the ``x-backend`` initial metadata: ``g-1`` (127.0.32.1) SERVING and
``g-2`` (127.0.32.2) NOT_SERVING. HAProxy terminates TLS on 127.0.30.1 and 127.0.30.2
(ALPN ``h2``, as an ALB listener in front of a gRPC target group) and balances round robin
over both, speaking HTTP/2 to them (``proto h2``). The session's dnsmasq answers
``www.corp.example`` with both HAProxy addresses; probe runs as a subprocess with
``--resolver`` pointing at it. Everything listens on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.e2e._procs import Process, haproxy_head, start_haproxy
from tests.e2e.conftest import HOSTNAME, LB_ADDRESSES, LB_NETWORK, Binaries, Dnsmasq, E2ePki
from tests.support.helpers import probe_cli

pytestmark = pytest.mark.e2e

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
GRPC_BACKENDS = (("g-1", "127.0.32.1", SERVING), ("g-2", "127.0.32.2", NOT_SERVING))
#: Bound on one whole ``probe check`` of these tests (the deadline is --timeout 5s).
BOUND = 15.0
DETAIL = r"(\d) of 4 requests: Health/Check of service '' \(the server as a whole\) answered NOT_SERVING"


class NamedHealth(health.HealthServicer):  # type: ignore[misc]
    """The standard health service, naming its server in the initial metadata (``x-backend``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def Check(self, request: Any, context: Any) -> Any:  # gRPC's method name
        context.send_initial_metadata((("x-backend", self.name),))
        return super().Check(request, context)


@dataclass
class GrpcBalancer:
    port: int
    dns: Dnsmasq
    ca_file: Path
    process: Process

    def check(self, *extra: str) -> tuple[dict[str, Any], float]:
        start = time.monotonic()
        done = probe_cli(
            "check",
            f"https://{HOSTNAME}:{self.port}/",
            "--resolver",
            self.dns.where,
            "--ca-file",
            str(self.ca_file),
            "--expect-network",
            LB_NETWORK,
            "--backend-header",
            "x-backend",
            "--timeout",
            "5",
            "--json",
            *extra,
            timeout=BOUND + 15,
        )
        elapsed = time.monotonic() - start
        assert done.stderr == "", done.stderr
        return json.loads(done.stdout)["targets"][0], elapsed


def _grpc_server(name: str, address: str, status: int) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = NamedHealth(name)
    for service in ("", "shop.Cart"):
        servicer.set(service, status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{address}:0")
    server.start()
    return server, port


def haproxy_config(port: int, pem: Path, servers: dict[str, tuple[str, int]]) -> str:
    binds = "\n".join(f"    bind {address}:{port} ssl crt {pem} alpn h2" for address in LB_ADDRESSES)
    lines = "\n".join(f"    server {name} {a}:{p} proto h2" for name, (a, p) in servers.items())
    return f"""{haproxy_head()}
frontend grpc
{binds}
    default_backend grpc

backend grpc
    balance roundrobin
{lines}
"""


@pytest.fixture
def balancer(binaries: Binaries, e2e_pki: E2ePki, dnsmasq: Dnsmasq, tmp_path: Path) -> Iterator[GrpcBalancer]:
    started = {name: _grpc_server(name, address, status) for name, address, status in GRPC_BACKENDS}
    servers = {name: (address, started[name][1]) for name, address, _ in GRPC_BACKENDS}
    try:
        process, port = start_haproxy(
            binaries.haproxy,
            lambda port: haproxy_config(port, e2e_pki.haproxy_pem, servers),
            LB_ADDRESSES,
            tmp_path,
        )
        try:
            yield GrpcBalancer(port, dnsmasq, e2e_pki.ca_file, process)
        finally:
            process.stop()
    finally:
        for server, _ in started.values():
            server.stop(None)


def test_health_check_through_the_balancer_names_the_backend_that_is_not_serving(
    balancer: GrpcBalancer,
) -> None:
    target, elapsed = balancer.check("--grpc-health", "--expect-backends", "g-1,g-2")

    assert target["status"] == "critical"
    note = "gRPC health checks instead of GETs: grpc.health.v1.Health/Check of the server as a whole, "
    assert note + "over HTTP/2" in target["notes"]
    assert {f["reason"] for f in target["failures"]} == {"grpc_not_serving"}
    # Both addresses are probed at once and HAProxy's round robin is shared: how the 4
    # NOT_SERVING answers split between the addresses varies, their sum does not.
    counts = [re.fullmatch(DETAIL, f["detail"]) for f in target["failures"]]
    assert all(counts), target["failures"]
    assert sum(int(match.group(1)) for match in counts if match) == 4
    attempts = [a for address in target["addresses"] for a in address["http"]]
    assert len(attempts) == 8
    # Each answer is named by its backend's metadata: SERVING from g-1, NOT_SERVING from g-2.
    assert {(a["backend"], a["grpc_serving_status"]) for a in attempts} == {
        ("g-1", "SERVING"),
        ("g-2", "NOT_SERVING"),
    }
    assert {
        (a["status_code"], a["http_version"], a["grpc_status"], a["grpc_status_name"]) for a in attempts
    } == {(200, "HTTP/2", 0, "OK")}
    assert target["backends"]["counts"] == {"g-1": 4, "g-2": 4}
    # Over the verified TLS connection: the first request of each address took it over.
    for address in target["addresses"]:
        assert address["tls"]["alpn"] == "h2" and address["tls"]["verified"] is True
    assert elapsed < BOUND


def test_a_service_the_health_servers_do_not_know(balancer: GrpcBalancer) -> None:
    target, elapsed = balancer.check("--grpc-service", "no.such.Service", "--requests", "2")

    assert {f["reason"] for f in target["failures"]} == {"grpc_service_unknown"}
    assert target["failures"][0]["detail"].startswith(
        "2 of 2 requests: the health server does not know the service 'no.such.Service' "
        "(grpc-status 5 NOT_FOUND"
    )
    attempts = [a for address in target["addresses"] for a in address["http"]]
    assert {(a["grpc_status_name"], a["grpc_serving_status"]) for a in attempts} == {("NOT_FOUND", None)}
    assert {a["backend"] for a in attempts} == {"g-1", "g-2"}  # the metadata came before the status
    assert elapsed < BOUND
