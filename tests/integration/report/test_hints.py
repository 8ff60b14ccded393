"""Hints in the platform's words, against real loopback servers: text, JSON, never metrics."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from probe.daemon.metrics import ProbeCollector
from probe.daemon.store import ResultStore
from probe.engine.cycle import run_cycle
from probe.lab import DemoLab, DnsServer, Lab, Pki
from probe.model.reasons import ExitCode, Platform, Reason
from probe.report.hints import HINTS, PUBLIC_ADDRESS_HINT, STATUS_HINTS
from tests.support.helpers import check_config as check
from tests.support.helpers import make_plan

AWS = Platform.AWS


def failures_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["reason"]: f for f in document["targets"][0]["failures"]}


def hint_line(out: str, reason: Reason) -> str:
    """The line after the finding's line, which must be its hint."""
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"critical {reason.value}"))
    return lines[index + 1].strip()


def test_tcp_refused_hint_in_text_and_json(tmp_path: Path, dns: DnsServer, new_ip: Any) -> None:
    address = new_ip()
    dns.set("closed.corp.example", ("A", address))
    target = {
        "url": "https://closed.corp.example:9/",
        "resolvers": [dns.where],
        "expect_networks": ["127.0.0.0/8"],
        "platform": "aws",
    }
    code, out, seconds = check(tmp_path, target)
    assert code == ExitCode.CRITICAL and seconds < 3
    assert f"critical tcp_refused {address}:" in out
    assert hint_line(out, Reason.TCP_REFUSED) == f"hint (aws): {HINTS[Reason.TCP_REFUSED][AWS]}"
    assert "no listener on this port" in out

    code, out, _ = check(tmp_path, target, "--json")
    document = json.loads(out)
    assert document["targets"][0]["platform"] == "aws"
    refused = failures_of(document)["tcp_refused"]
    assert refused["hint"] == HINTS[Reason.TCP_REFUSED][AWS]
    assert document["targets"][0]["addresses"][0]["failures"][0]["hint"] == refused["hint"]


@pytest.fixture
def full_backlog(new_ip: Any) -> Iterator[tuple[str, int]]:
    """A listener whose accept queue is full: the kernel drops further SYNs."""
    listener = socket.socket()
    listener.bind((new_ip(), 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield listener.getsockname()
    filler.close()
    listener.close()


def test_tcp_timeout_hint_names_security_group_and_routes(
    tmp_path: Path, dns: DnsServer, full_backlog: tuple[str, int]
) -> None:
    address, port = full_backlog
    dns.set("filtered.corp.example", ("A", address))
    target = {
        "url": f"https://filtered.corp.example:{port}/",
        "resolvers": [dns.where],
        "expect_networks": ["127.0.0.0/8"],
        "timeouts": {"dns": 1, "connect": 0.3, "tls": 1, "http": 1, "deadline": 5},
    }
    code, out, seconds = check(tmp_path, target, "--platform", "aws")
    assert code == ExitCode.CRITICAL and seconds < 2
    line = hint_line(out, Reason.TCP_TIMEOUT)
    assert line.startswith("hint (aws): the load balancer's security group does not allow this port")
    assert "network ACL, VPC peering or transit gateway" in line

    # The default platform speaks generic words, labelled plainly.
    _, out, _ = check(tmp_path, target)
    assert hint_line(out, Reason.TCP_TIMEOUT) == f"hint: {HINTS[Reason.TCP_TIMEOUT][Platform.GENERIC]}"


def test_cert_hostname_mismatch_and_chain_incomplete_hints(tmp_path: Path, scene: Any, pki: Pki) -> None:
    wrong = scene(cert=pki.leaf("other.corp.example"))
    code, out, seconds = check(tmp_path, {**wrong.target, "platform": "aws"}, "--json")
    failure = failures_of(json.loads(out))["cert_hostname_mismatch"]
    assert code == ExitCode.CRITICAL and seconds < 3
    assert "other.corp.example" in failure["detail"]
    assert "add the certificate for this name to the listener's certificate list (SNI)" in failure["hint"]

    leaf = pki.leaf("bare.corp.example")
    bare = scene(hostname="bare.corp.example", cert=leaf, chain_pem=leaf.cert_pem)
    code, out, _ = check(tmp_path, {**bare.target, "platform": "aws"})
    assert code == ExitCode.CRITICAL
    assert hint_line(out, Reason.CERT_CHAIN_INCOMPLETE).startswith(
        "hint (aws): an imported certificate without its chain"
    )


def test_dns_hints_nxdomain_public_address_and_alias(tmp_path: Path, dns: DnsServer, new_ip: Any) -> None:
    base = {"resolvers": [dns.where], "expect_networks": ["127.0.0.0/8"], "platform": "aws"}
    code, out, seconds = check(tmp_path, {**base, "url": "https://missing-hint.corp.example/"}, "--json")
    failure = failures_of(json.loads(out))["dns_nxdomain"]
    assert code == ExitCode.CRITICAL and seconds < 3
    assert "private hosted zone is not associated" in failure["hint"]

    # A public answer is never connected to (the loopback guard would fail the test).
    dns.set("public-hint.corp.example", ("A", "52.95.110.1"))
    code, out, _ = check(tmp_path, {**base, "url": "https://public-hint.corp.example/"}, "--json")
    failure = failures_of(json.loads(out))["dns_unexpected_address"]
    assert failure["address"] == "52.95.110.1"
    assert failure["hint"] == PUBLIC_ADDRESS_HINT[AWS]
    assert "internet-facing load balancer" in failure["hint"]

    dns.set("alias-hint.corp.example", ("A", new_ip()))
    dns.set("internal-other-alb.elb.example", ("A", new_ip()))
    target = {
        **base,
        "url": "https://alias-hint.corp.example:9/",
        "expect_same_addresses_as": "internal-other-alb.elb.example",
    }
    code, out, _ = check(tmp_path, target, "--json")
    failure = failures_of(json.loads(out))["dns_alias_mismatch"]
    assert failure["hint"] == HINTS[Reason.DNS_ALIAS_MISMATCH][AWS]


def test_http_status_hint_follows_each_status_code(
    tmp_path: Path, lab: Lab, dns: DnsServer, pki: Pki, ca_file: Path, new_ip: Any
) -> None:
    name = "status-hint.corp.example"
    backends = [
        lab.start_backend("web-1", new_ip(), status=503),
        lab.start_backend("web-2", new_ip(), status=502),
    ]
    node = lab.start_node(new_ip(), cert=pki.leaf(name), backends=backends, workdir=tmp_path)
    try:
        dns.set(name, ("A", node.address))
        target = {
            "url": f"https://{name}:{node.port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(ca_file),
        }
        code, out, seconds = check(tmp_path, target, "--platform", "aws", "--json")
        document = json.loads(out)
        assert code == ExitCode.CRITICAL and seconds < 3
        address = document["targets"][0]["addresses"][0]
        assert sorted({a["status_code"] for a in address["http"]}) == [502, 503]
        failure = failures_of(document)["http_status"]
        assert failure["hint"] == f"{STATUS_HINTS[502][AWS]}; {STATUS_HINTS[503][AWS]}"
        assert "Classic Load Balancer also answers 503" in failure["hint"]
        # Each request's own finding names its own code only.
        for attempt in address["http"]:
            (own,) = attempt["failures"]
            assert own["hint"] == STATUS_HINTS[attempt["status_code"]][AWS]

        code, out, _ = check(tmp_path, target, "--platform", "generic")
        line = hint_line(out, Reason.HTTP_STATUS)
        assert line.startswith("hint: 502: the load balancer got no valid response from the backend")
        assert "503: no backend is available" in line and "ALB" not in line
    finally:
        for server in (node, *backends):
            lab.stop(server)


def test_backend_missing_hint_and_platform_override(tmp_path: Path, demo: DemoLab) -> None:
    target = demo.target(expect_backends=["web-1", "web-2", "web-3"], platform="aws")
    code, out, seconds = check(tmp_path, target)
    assert code == ExitCode.CRITICAL and seconds < 5
    line = hint_line(out, Reason.BACKEND_MISSING)
    assert line.startswith("hint (aws): a target is unhealthy or deregistered")
    assert "cross-zone load balancing is off and each zone has one target" in line

    # --platform on the command line wins over the file's.
    _, out, _ = check(tmp_path, target, "--platform", "generic")
    assert (
        hint_line(out, Reason.BACKEND_MISSING) == f"hint: {HINTS[Reason.BACKEND_MISSING][Platform.GENERIC]}"
    )


def test_hints_never_reach_metric_labels(
    lab: Lab, dns: DnsServer, pki: Pki, ca_file: Path, new_ip: Any
) -> None:
    name = "metrics-only.corp.example"
    backend = lab.start_backend("web-1", new_ip(), status=503)
    node = lab.start_node(new_ip(), cert=pki.leaf(name), backends=[backend])
    try:
        dns.set(name, ("A", node.address))
        plan = make_plan(
            url=f"https://{name}:{node.port}/",
            resolvers=[dns.where],
            expect_networks=["127.0.0.0/8"],
            ca_file=str(ca_file),
            platform="aws",
        )
        result = asyncio.run(run_cycle(plan))
    finally:
        lab.stop(node)
        lab.stop(backend)
    assert result.target.platform is AWS and Reason.HTTP_STATUS in result.reasons
    store = ResultStore([result.target.name], result.started_timestamp)
    store.record(result)
    registry = CollectorRegistry()
    registry.register(ProbeCollector(store))
    exposition = generate_latest(registry).decode()
    assert 'reason="http_status"' in exposition
    for text in (STATUS_HINTS[503][AWS], "ALB", "hint", "aws", "platform"):
        assert text not in exposition
