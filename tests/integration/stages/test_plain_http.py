"""``http://`` targets: plain HTTP nodes in the lab, rotation, refusal, and ``expect_redirect``.

Plain nodes are the lab's ``TlsNode`` with ``tls=False`` (relaying round-robin per
connection to lab backends, or answering with a handler that redirects as an HTTP:80
listener does). Everything listens on 127.0.0.0/8; names come from the lab DNS server.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from probe.daemon.metrics import render_target
from probe.daemon.store import TargetState
from probe.lab import Lab
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from probe.report.document import render_json
from probe.report.text import render_text
from tests.support.helpers import reasons, run

#: Every test's cycle must finish well inside its 5 s deadline (tests.support.helpers.FAST).
BOUND = 5.0


def plain(scene: Any, **options: Any) -> tuple[Any, dict[str, Any]]:
    """A scene of plain-HTTP nodes and the target fields that probe it over ``http://``."""
    s = scene(tls=False, **options)
    target = {**s.target, "url": f"http://{s.hostname}:{s.port}/health?full=1"}
    return s, target


def redirector(
    location: Callable[[str, str], str], status: int = 301
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """A node handler answering every request with ``status`` and ``location(host, target)``.

    ``host`` is the Host header without its port, ``target`` the request target (path and
    query), as an HTTP listener's redirect action sees them.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        path = request_line.split(" ")[1]
        host = next(v.strip() for k, _, v in (line.partition(":") for line in lines) if k.lower() == "host")
        host = host.rsplit(":", 1)[0]
        where = location(host, path)
        writer.write(
            f"HTTP/1.1 {status} Moved\r\nLocation: {where}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()

    return handle


def timed(target: dict[str, Any]) -> tuple[TargetResult, float]:
    start = time.monotonic()
    result = run(target)
    return result, time.monotonic() - start


def as_json(result: TargetResult) -> dict[str, Any]:
    out = io.StringIO()
    render_json([result], out, now=time.time())
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def as_text(result: TargetResult) -> str:
    out = io.StringIO()
    render_text([result], out, now=time.time())
    return out.getvalue()


def metrics_text(result: TargetResult) -> str:
    state = TargetState(result=result, cycles=1, failures_total={}, backends={}, phases={})
    return b"".join(render_target(state)).decode()


# --------------------------------------------------------------------------- plain HTTP


def test_two_plain_nodes_rotate_over_two_backends(scene: Any) -> None:
    s, target = plain(scene, nodes=2, backends=("web-1", "web-2"))
    result, took = timed({**target, "expect_backends": ["web-1", "web-2"]})

    assert result.status is Status.OK, result.failures
    assert took < BOUND
    assert result.target.port == s.port and result.target.plain
    assert result.backend_counts == {"web-1": 4, "web-2": 4}
    for address in result.addresses:
        assert address.backend_counts == {"web-1": 2, "web-2": 2}
        tls = address.tls
        assert tls.plain and tls.connected and tls.handshake_outcome == "plain"
        assert (tls.version, tls.cipher, tls.alpn, tls.handshake_seconds) == (None, None, None, None)
        assert tls.chain == () and tls.verified_chain == ()
        assert [a.http_version for a in address.attempts] == ["HTTP/1.1"] * 4
        assert all(a.phases.connect is not None and a.phases.tls is None for a in address.attempts)
    # The nodes saw no TLS and the lab backends the Host the URL names.
    assert all(n.sni_names == [] for n in s.nodes)

    text = as_text(result)
    assert "plain HTTP" in text
    assert "no certificate checked" in text
    assert "NOT verified" not in text and "verified up to" not in text
    doc = as_json(result)
    assert doc["certificates_verified"] is None
    [entry] = doc["targets"]
    assert entry["scheme"] == "http" and entry["expect_redirect"] is None
    tls_doc = entry["addresses"][0]["tls"]
    assert tls_doc["handshake"] == "plain" and tls_doc["verified"] is None
    assert tls_doc["version"] is None and tls_doc["leaf"] is None and tls_doc["connect_seconds"] > 0
    exposition = metrics_text(result)
    assert "probe_tcp_connect_seconds{" in exposition
    for absent in ("probe_tls_", "probe_ssl_"):
        assert absent not in exposition


def test_plain_rotation_finds_a_missing_backend(scene: Any) -> None:
    _, target = plain(scene, nodes=2, backends=("web-1",))
    result, took = timed({**target, "expect_backends": ["web-1", "web-2"]})

    assert result.status is Status.CRITICAL
    assert reasons(result) == {"backend_missing"}
    assert "backend web-2 answered none of the 8 identified responses" in result.failures[0].detail
    assert took < BOUND


def test_a_plain_node_that_refuses(scene: Any, lab: Lab) -> None:
    s, target = plain(scene, nodes=2, backends=("web-1", "web-2"))
    lab.stop(s.nodes[1])
    result, took = timed(target)

    assert result.status is Status.CRITICAL
    refused = [f for f in result.failures if f.reason is Reason.TCP_REFUSED]
    assert [str(f.address) for f in refused] == [s.nodes[1].address]
    assert f"connection refused (port {s.port})" in refused[0].detail
    down = result.addresses[1]
    assert down.tls.handshake_outcome == "not_attempted" and down.attempts == ()
    assert result.addresses[0].status is Status.OK
    assert took < BOUND
    assert f"  {s.nodes[1].address}" in as_text(result)


def test_an_unexpected_redirect_on_plain_http_names_its_location(scene: Any) -> None:
    _, target = plain(scene, backends=(), handler=redirector(lambda host, path: f"https://{host}{path}"))
    del target["backend"]
    result, took = timed(target)

    assert reasons(result) == {"http_status"}
    [failure] = result.failures
    assert "status 301 (expected 200-299)" in failure.detail
    assert (
        f"Location: https://{result.target.hostname}/health?full=1 (an upgrade to https://, same host)"
        in (failure.detail)
    )
    assert took < BOUND


def test_http_url_refused_by_a_tls_only_port_is_a_protocol_error(scene: Any) -> None:
    s = scene()  # TLS nodes: plain HTTP to an HTTPS port
    result, took = timed({**s.target, "url": f"http://{s.hostname}:{s.port}/"})

    assert result.status is Status.CRITICAL
    assert reasons(result) <= {"http_protocol_error", "http_timeout"}
    assert took < BOUND


# --------------------------------------------------------------------------- expect_redirect


@pytest.mark.parametrize("status", [301, 302])
def test_a_correct_redirect_to_https_is_ok(scene: Any, status: int) -> None:
    s, target = plain(
        scene, nodes=2, backends=(), handler=redirector(lambda host, path: f"https://{host}{path}", status)
    )
    result, took = timed({**target, "expect_redirect": "https", "backend": {"header": "X-Backend"}})

    assert result.status is Status.OK, result.failures
    assert took < BOUND
    expected = f"https://{s.hostname}/health?full=1"
    for address in result.addresses:
        assert [a.status_code for a in address.attempts] == [status] * 4
        assert {a.location for a in address.attempts} == {expected}
        assert {a.backend for a in address.attempts} == {None}
    assert result.target.identifying_rule is None and result.target.expect_redirect == "https"
    text = as_text(result)
    assert f"redirects to {expected}" in text
    assert "backends not judged: the listener answers with a redirect (expect_redirect)" in text
    assert "expect_redirect: every address must answer with a 301 or 302 to " + expected in text
    assert as_json(result)["targets"][0]["expect_redirect"] == "https"


def test_an_explicit_port_443_is_the_same_redirect(scene: Any) -> None:
    _, target = plain(scene, backends=(), handler=redirector(lambda host, path: f"https://{host}:443{path}"))
    result = run({**target, "expect_redirect": "https"})

    assert result.status is Status.OK, result.failures


@pytest.mark.parametrize(
    ("location", "why"),
    [
        (lambda host, path: f"https://www.elsewhere.example{path}", "another host (www.elsewhere.example)"),
        (lambda host, path: f"http://{host}{path}", "still plain http://"),
        (lambda host, path: path, "still plain http://"),  # relative: resolved against http://
        (lambda host, path: f"https://{host}:8443{path}", "port 8443, not 443"),
        (lambda host, path: f"https://{host}/", "another path"),
        (lambda host, path: f"https://{host}/health", "another query"),
    ],
    ids=["another-host", "http", "relative", "port", "path", "query"],
)
def test_a_wrong_redirect_is_critical_and_names_location_and_expectation(
    scene: Any, location: Callable[[str, str], str], why: str
) -> None:
    s, target = plain(scene, nodes=2, backends=(), handler=redirector(location))
    result, took = timed({**target, "expect_redirect": "https"})

    assert result.status is Status.CRITICAL
    assert took < BOUND
    wrong = [f for f in result.failures if f.reason is Reason.HTTP_REDIRECT_WRONG]
    assert [str(f.address) for f in wrong] == [n.address for n in s.nodes]
    expected = f"https://{s.hostname}/health?full=1"
    assert wrong[0].detail.startswith("4 of 4 requests: 301 to ")
    assert f": {why} (expected 301 or 302 to {expected})" in wrong[0].detail
    doc = as_json(result)
    assert doc["targets"][0]["failures"][0]["reason"] == "http_redirect_wrong"
    assert "redirect" in doc["targets"][0]["failures"][0]["hint"]


def test_a_307_is_not_the_redirect_expected(scene: Any) -> None:
    _, target = plain(scene, backends=(), handler=redirector(lambda host, path: f"https://{host}{path}", 307))
    result = run({**target, "expect_redirect": "https"})

    assert reasons(result) == {"http_redirect_wrong"}
    assert "status 307, not 301 or 302" in result.failures[0].detail


def test_a_200_where_a_redirect_was_expected(scene: Any) -> None:
    s, target = plain(scene, nodes=2, backends=("web-1", "web-2"))
    result, took = timed({**target, "expect_redirect": "https"})

    assert result.status is Status.CRITICAL
    assert took < BOUND
    assert reasons(result) == {"http_redirect_missing"}
    detail = result.failures[0].detail
    assert detail == (
        f"4 of 4 requests: status 200, not a redirect (expected 301 or 302 to "
        f"https://{s.hostname}/health?full=1)"
    )
    # No backend finding: backends are not judged under expect_redirect.
    assert result.backend_counts == {}


def test_expect_redirect_with_a_refusing_node(scene: Any, lab: Lab) -> None:
    s, target = plain(
        scene, nodes=2, backends=(), handler=redirector(lambda host, path: f"https://{host}{path}")
    )
    lab.stop(s.nodes[0])
    result, took = timed({**target, "expect_redirect": "https"})

    assert reasons(result) == {"tcp_refused"}
    assert result.addresses[1].status is Status.OK
    assert took < BOUND


# --------------------------------------------------------------------------- direct backends


def test_direct_backends_behind_a_plain_listener(scene: Any, lab: Lab, new_ip: Any, tmp_path: Any) -> None:
    """An http:// target's direct hops are HTTPS (their own scheme and port), correlated as for
    an https:// target; under expect_redirect no backend is identified, so a failing direct
    hop is a warning that says why the load balancer's view is unknown."""
    from cryptography.hazmat.primitives import hashes

    from probe.lab.pki import issue

    cert = issue("web-2.internal", dns_names=("web-2.internal",), days=365)
    web2 = lab.start_tls_backend("web-2", new_ip(), cert, workdir=tmp_path)
    try:
        pin = cert.cert.fingerprint(hashes.SHA256()).hex()
        hop = {
            "name": "web-2",
            "url": f"https://{web2.address}:{web2.port}/health",
            "fingerprint_sha256": pin,
        }
        # Forwarding to web-1 only: web-2 answers directly but is not in rotation.
        _, forwarding = plain(scene, nodes=2, backends=("web-1",))
        result, took = timed({**forwarding, "expect_backends": ["web-1", "web-2"], "direct_backends": [hop]})
        assert reasons(result) == {Reason.BACKEND_NOT_IN_ROTATION.value}, result.failures
        assert result.status is Status.CRITICAL
        (check,) = result.direct_backends
        assert check.answered and check.pin_matches is True and check.tls.port == web2.port
        assert took < BOUND
        # A redirecting listener: nothing identified; a failing hop is a warning and says why.
        _, redirecting = plain(
            scene, nodes=2, backends=(), handler=redirector(lambda host, path: f"https://{host}{path}")
        )
        wrong = {**hop, "fingerprint_sha256": "ab" * 32}
        fields = {"expect_redirect": "https", "backend": {"header": "X-Backend"}}
        ok, took = timed({**redirecting, **fields, "direct_backends": [hop]})
        assert ok.status is Status.OK, ok.failures
        assert took < BOUND
        failing, took = timed({**redirecting, **fields, "direct_backends": [wrong]})
        assert reasons(failing) == {Reason.BACKEND_DIRECT_FAILED.value}
        assert failing.status is Status.WARNING
        detail = failing.failures[0].detail
        assert detail.startswith(
            "whether web-2 answers through the load balancer is unknown "
            "(expect_redirect: the listener answers itself)"
        )
        assert "backend_cert_pin_mismatch" in detail
        assert took < BOUND
    finally:
        lab.stop(web2)
