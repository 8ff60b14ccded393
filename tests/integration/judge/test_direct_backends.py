"""Backends checked directly (direct_backends) against HTTPS backends with self-signed
certificates in the loopback lab, behind a lab node that speaks TLS to them unverified
(as an ALB does): the pin, the certificate facts and expiry, and the three correlations."""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.daemon.metrics import go_float, render_target
from probe.daemon.store import ResultStore
from probe.judge.direct_backends import colon_hex
from probe.lab import DnsServer, Lab, Pki
from probe.lab.pki import Issued, issue
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from probe.report.document import to_json
from probe.report.text import render_text
from tests.support import docs
from tests.support.helpers import reasons, run

NOW_BOUND = 4.0  # every check here ends well within its 5 s deadline


def fingerprint(cert: Issued) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.cert.fingerprint(hashes.SHA256()).hex()


class Farm:
    """A target behind one lab node, with HTTPS backends that have self-signed certificates."""

    def __init__(self, lab: Lab, dns: DnsServer, new_ip: Any, pki: Pki, ca_file: Path, tmp: Path) -> None:
        self.lab, self.dns, self.new_ip, self.pki, self.ca_file, self.tmp = (
            lab,
            dns,
            new_ip,
            pki,
            ca_file,
            tmp,
        )
        self.started: list[Any] = []
        self.certs: dict[str, Issued] = {}
        self.backends: dict[str, Any] = {}

    def backend(self, name: str, days: float = 365) -> Any:
        cert = issue(f"{name}.internal", dns_names=(f"{name}.internal",), days=days)
        server = self.lab.start_tls_backend(name, self.new_ip(), cert, workdir=self.tmp)
        self.started.append(server)
        self.certs[name], self.backends[name] = cert, server
        return server

    def url(self, name: str) -> str:
        server = self.backends[name]
        return f"https://{server.address}:{server.port}/health"

    def pinned(self, name: str, **overrides: Any) -> dict[str, Any]:
        return {
            "name": name,
            "url": self.url(name),
            "fingerprint_sha256": fingerprint(self.certs[name]),
            **overrides,
        }

    def target(self, behind: list[str], direct: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        host = f"farm{len(self.started)}-{self.new_ip().replace('.', '-')}.corp.example"
        node = self.lab.start_node(
            self.new_ip(),
            cert=self.pki.leaf(host),
            backends=[self.backends[n] for n in behind],
            workdir=self.tmp,
        )
        self.started.append(node)
        self.dns.set(host, ("A", node.address))
        target = {
            "url": f"https://{host}:{node.port}/",
            "resolvers": [self.dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(self.ca_file),
            "backend": {"header": "X-Backend"},
            "expect_backends": sorted(self.backends),
            "direct_backends": direct,
            "timeouts": {"dns": 1, "connect": 0.5, "tls": 1, "http": 1, "deadline": 5},
        }
        target.update(fields)
        return target


@pytest.fixture
def farm(lab: Lab, dns: DnsServer, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path) -> Iterator[Farm]:
    made = Farm(lab, dns, new_ip, pki, ca_file, tmp_path)
    yield made
    for server in made.started:
        try:
            lab.stop(server)
        except Exception:
            continue


@pytest.fixture
def black_hole(new_ip: Any) -> Iterator[tuple[str, int]]:
    """A listener whose accept queue is full: SYNs are dropped, a connect times out."""
    listener = socket.socket()
    listener.bind((new_ip(), 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield listener.getsockname()
    filler.close()
    listener.close()


def direct(result: TargetResult, name: str) -> Any:
    return next(d for d in result.direct_backends if d.name == name)


def finding(result: TargetResult, reason: Reason) -> Any:
    return next(f for f in result.failures if f.reason is reason)


def test_healthy_farm_pins_match_and_certificate_facts_are_reported(farm: Farm) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    result = run(farm.target(["web-1", "web-2"], [farm.pinned("web-1"), farm.pinned("web-2")]))
    assert result.status is Status.OK, result.failures
    assert result.failures == ()
    assert result.duration_seconds < NOW_BOUND
    for name in ("web-1", "web-2"):
        check = direct(result, name)
        assert check.answered and check.pin_matches is True
        assert check.trust == "fingerprint_sha256"
        assert check.attempt is not None and check.attempt.status_code == 200
        assert check.attempt.backend == name
        assert check.tls.leaf.subject == f"CN={name}.internal"
        assert check.tls.leaf.self_issued
        assert check.tls.verified is False  # the pin is the trust
    # The text report has a block per backend; the JSON a member per backend.
    text = io.StringIO()
    render_text([result], text, result.started_timestamp)
    assert "direct   web-2" in text.getvalue()
    assert "pin matches" in text.getvalue()
    document = to_json([result], result.started_timestamp)
    members = document["targets"][0]["direct_backends"]
    assert [m["name"] for m in members] == ["web-1", "web-2"]
    assert members[1]["pin_matches"] is True and members[1]["http"]["status_code"] == 200
    assert members[1]["tls"]["leaf"]["sha256_fingerprint"] == fingerprint(farm.certs["web-2"])
    json.dumps(document)
    # The docs' JSON section names every key of a member, and its trust values.
    section = docs.section("docs/json-document.md", "JSON document").split("```")[1]
    member_part = section.split('"direct_backends": [{', 1)[1].split("}]", 1)[0]
    documented = set(re.findall(r'"([a-z_0-9]+)"', member_part))
    assert set(members[1]) <= documented
    assert {"ca_file", "fingerprint_sha256", "insecure_skip_verify"} <= documented


def test_pin_that_does_not_match_names_both_fingerprints_and_sends_no_request(farm: Farm) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    wrong = "AA:" * 31 + "AA"
    result = run(
        farm.target(
            ["web-1", "web-2"], [farm.pinned("web-1"), farm.pinned("web-2", fingerprint_sha256=wrong)]
        )
    )
    check = direct(result, "web-2")
    pin = next(f for f in check.failures if f.reason is Reason.BACKEND_CERT_PIN_MISMATCH)
    assert colon_hex(fingerprint(farm.certs["web-2"])) in pin.detail
    assert wrong in pin.detail
    assert check.attempt is None and check.pin_matches is False  # no request after a failed pin
    # Through the load balancer web-2 answers: the direct failure is a warning naming the hop.
    assert reasons(result) == {Reason.BACKEND_DIRECT_FAILED.value}
    assert result.status is Status.WARNING
    failed = finding(result, Reason.BACKEND_DIRECT_FAILED)
    assert failed.detail.startswith("web-2 answers through the load balancer")
    assert "backend_cert_pin_mismatch" in failed.detail
    assert result.duration_seconds < NOW_BOUND


def test_missing_behind_the_lb_and_down_directly_is_backend_down(farm: Farm, new_ip: Any) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    refused = f"https://{new_ip()}:{farm.backends['web-2'].port}/health"
    result = run(
        farm.target(
            ["web-1"],
            [farm.pinned("web-1"), farm.pinned("web-2", url=refused)],
        )
    )
    assert reasons(result) == {Reason.BACKEND_DOWN.value}  # and no backend_missing beside it
    down = finding(result, Reason.BACKEND_DOWN)
    assert down.detail.startswith("web-2 does not answer directly either (tcp_refused at ")
    assert down.detail.endswith("the instance or its service is down")
    assert down.backend == "web-2"
    assert result.status is Status.CRITICAL
    assert result.duration_seconds < NOW_BOUND


def test_missing_behind_the_lb_but_fine_directly_is_not_in_rotation(farm: Farm) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    result = run(farm.target(["web-1"], [farm.pinned("web-1"), farm.pinned("web-2")]))
    assert reasons(result) == {Reason.BACKEND_NOT_IN_ROTATION.value}
    detail = finding(result, Reason.BACKEND_NOT_IN_ROTATION).detail
    assert detail.startswith("web-2 answers directly (status 200 at ")
    assert "the load balancer does not send to it: check its registration, the health check path" in detail
    assert result.status is Status.CRITICAL
    assert direct(result, "web-2").answered
    assert result.duration_seconds < NOW_BOUND


def test_missing_by_count_is_replaced_too(farm: Farm) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    target = farm.target(["web-1"], [farm.pinned("web-2")], expect_backends=2)
    result = run(target)
    assert reasons(result) == {Reason.BACKEND_NOT_IN_ROTATION.value}


def test_fine_behind_the_lb_but_blocked_directly_is_a_warning(
    farm: Farm, black_hole: tuple[str, int]
) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    address, port = black_hole
    result = run(
        farm.target(
            ["web-1", "web-2"],
            [farm.pinned("web-1"), farm.pinned("web-2", url=f"https://{address}:{port}/health")],
        )
    )
    assert reasons(result) == {Reason.BACKEND_DIRECT_BLOCKED.value}
    assert result.status is Status.WARNING
    blocked = finding(result, Reason.BACKEND_DIRECT_BLOCKED)
    assert blocked.detail.startswith("web-2 answers through the load balancer (2 of 4)")
    assert f"tcp_timeout at {address}:{port}" in blocked.detail
    assert "the path from this host to the backend is blocked" in blocked.detail
    assert result.duration_seconds < NOW_BOUND  # connect timeout 0.5 s, beside the LB probe


def test_backend_certificate_expiring_soon_is_its_own_warning_and_can_be_off(farm: Farm) -> None:
    farm.backend("web-1", days=10)
    target = farm.target(["web-1"], [farm.pinned("web-1")])
    result = run(target)
    assert reasons(result) == {Reason.BACKEND_CERT_EXPIRING_SOON.value}
    soon = finding(result, Reason.BACKEND_CERT_EXPIRING_SOON)
    assert soon.detail.startswith("web-1: leaf 'web-1.internal' expires on ")
    assert "warning at 30 days" in soon.detail
    assert result.status is Status.WARNING
    off = run({**target, "direct_backend_cert_expiry_warning_days": 0})
    assert off.status is Status.OK and off.failures == ()


def test_expired_self_signed_certificate_with_a_pin_still_warns(farm: Farm) -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) - timedelta(days=40)
    cert = issue("old.internal", dns_names=("old.internal",), not_before=start, days=30)
    server = farm.lab.start_tls_backend("web-1", farm.new_ip(), cert, workdir=farm.tmp)
    farm.started.append(server)
    farm.certs["web-1"], farm.backends["web-1"] = cert, server
    result = run(farm.target(["web-1"], [farm.pinned("web-1")]))
    soon = finding(result, Reason.BACKEND_CERT_EXPIRING_SOON)
    assert "expired on" in soon.detail and "verification is off" in soon.detail
    assert result.status is Status.WARNING  # the ALB does not care; other clients will


def test_ca_file_trust_verifies_the_hop_and_server_name(farm: Farm, pki: Pki, ca_file: Path) -> None:
    cert = pki.leaf("web-1.internal")
    server = farm.lab.start_tls_backend("web-1", farm.new_ip(), cert, workdir=farm.tmp)
    farm.started.append(server)
    farm.certs["web-1"], farm.backends["web-1"] = cert, server
    entry = {
        "name": "web-1",
        "url": farm.url("web-1"),
        "server_name": "web-1.internal",
        "ca_file": str(ca_file),
    }
    result = run(farm.target(["web-1"], [entry]))
    assert result.status is Status.OK, result.failures
    check = direct(result, "web-1")
    assert check.tls.verified and check.trust == "ca_file" and check.server_name == "web-1.internal"
    assert server.requests >= 2  # the load balancer's and the direct request


def test_no_backend_rule_self_signed_with_ca_file_is_direct_failed(farm: Farm, ca_file: Path) -> None:
    farm.backend("web-1")
    entry = {"name": "web-1", "url": farm.url("web-1"), "ca_file": str(ca_file)}
    target = farm.target(["web-1"], [entry])
    del target["backend"], target["expect_backends"]
    result = run(target)
    assert reasons(result) == {Reason.BACKEND_DIRECT_FAILED.value}
    detail = finding(result, Reason.BACKEND_DIRECT_FAILED).detail
    assert detail.startswith("whether web-1 answers through the load balancer is unknown (no backend rule)")
    assert "cert_self_signed" in detail
    assert result.status is Status.WARNING


def test_insecure_hop_is_said_so_and_metrics_cover_each_backend(farm: Farm) -> None:
    farm.backend("web-1")
    farm.backend("web-2")
    entries = [
        farm.pinned("web-1"),
        {"name": "web-2", "url": farm.url("web-2"), "insecure_skip_verify": True},
    ]
    result = run(farm.target(["web-1", "web-2"], entries))
    assert result.status is Status.OK, result.failures
    text = io.StringIO()
    render_text([result], text, result.started_timestamp)
    assert "NOT verified (insecure_skip_verify)" in text.getvalue()
    store = ResultStore([result.target.name], result.started_timestamp, render=render_target)
    store.record(result)
    from probe.daemon.metrics import exposition

    body = exposition(store.snapshot()).decode()
    labels = f'backend="web-1",target="{result.target.name}"'
    assert f"probe_direct_backend_success{{{labels}}} 1.0" in body
    assert f"probe_direct_backend_http_status_code{{{labels}}} 200.0" in body
    assert f"probe_direct_backend_cert_pin_match{{{labels}}} 1.0" in body
    assert 'probe_direct_backend_cert_pin_match{backend="web-2"' not in body  # no pin, no series
    expiry = farm.certs["web-2"].cert.not_valid_after_utc.timestamp()
    assert (
        f'probe_direct_backend_ssl_earliest_cert_expiry{{backend="web-2",target="{result.target.name}"}} '
        f"{go_float(expiry)}\n"
    ) in body
    version = f'{{backend="web-2",target="{result.target.name}",version="TLS 1.3"}} 1.0'
    assert f"probe_direct_backend_tls_version_info{version}" in body


def test_weighted_random_unseen_in_one_undecided_check_is_not_called_out_of_rotation(farm: Farm) -> None:
    """With a random balancer, one cycle's few requests cannot say that the load balancer does
    not send to a backend (12.5 % of healthy cycles miss one of 2 in 4 requests): the direct
    view must not turn an undecided backend into a critical backend_not_in_rotation (which
    would flap in the daemon), and a direct failure then is the warning of an unknown view.
    Once the requests decide, the correlation is made as for round robin."""
    farm.backend("web-1")
    farm.backend("web-2")
    entries = [farm.pinned("web-1"), farm.pinned("web-2")]
    target = farm.target(["web-1"], entries, balancing="weighted_random")
    undecided = run(target)
    assert reasons(undecided) == {Reason.BACKEND_UNDECIDED.value}, undecided.failures
    assert undecided.status is Status.WARNING
    note = finding(undecided, Reason.BACKEND_UNDECIDED)
    assert note.detail.startswith("web-2 not seen in 4 identified responses")
    assert "use --requests 21" in note.detail
    assert undecided.duration_seconds < NOW_BOUND
    # Decided (21 requests): web-2 answers directly but never through the load balancer.
    decided = run({**target, "requests_per_address": 21})
    assert reasons(decided) == {Reason.BACKEND_NOT_IN_ROTATION.value}, decided.failures
    assert decided.status is Status.CRITICAL
    assert finding(decided, Reason.BACKEND_NOT_IN_ROTATION).backend == "web-2"
    assert decided.duration_seconds < NOW_BOUND
    # Undecided and failing directly: not backend_down (the load balancer's view is unknown).
    wrong = "AA:" * 31 + "AA"
    entries = [farm.pinned("web-1"), farm.pinned("web-2", fingerprint_sha256=wrong)]
    failing = run(farm.target(["web-1"], entries, balancing="weighted_random"))
    assert reasons(failing) == {Reason.BACKEND_UNDECIDED.value, Reason.BACKEND_DIRECT_FAILED.value}
    assert failing.status is Status.WARNING
    failed = finding(failing, Reason.BACKEND_DIRECT_FAILED)
    assert failed.detail.startswith("whether web-2 answers through the load balancer is undecided")
    assert failing.duration_seconds < NOW_BOUND


def test_balancing_any_never_calls_a_backend_out_of_rotation(farm: Farm) -> None:
    """``balancing: any`` claims nothing about the spread: an unseen backend that answers
    directly is fine, one that fails directly is a warning about the direct hop."""
    farm.backend("web-1")
    farm.backend("web-2")
    result = run(farm.target(["web-1"], [farm.pinned("web-1"), farm.pinned("web-2")], balancing="any"))
    assert result.failures == () and result.status is Status.OK
    assert result.duration_seconds < NOW_BOUND
    wrong = "AA:" * 31 + "AA"
    entries = [farm.pinned("web-1"), farm.pinned("web-2", fingerprint_sha256=wrong)]
    failing = run(farm.target(["web-1"], entries, balancing="any"))
    assert reasons(failing) == {Reason.BACKEND_DIRECT_FAILED.value}
    assert failing.status is Status.WARNING
    detail = finding(failing, Reason.BACKEND_DIRECT_FAILED).detail
    assert detail.startswith("whether web-2 answers through the load balancer is unknown (balancing: any)")
    assert failing.duration_seconds < NOW_BOUND
