"""Hostile and broken peers: every case names the fault and ends within its bound.

Each test asserts the verdict, the reason code, and that the time stayed within the
configured timeout (plus a small allowance for the machine).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Lab, Pki
from probe.lab.pki import issue
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from tests.support.helpers import reasons, run

SLACK = 0.6  # seconds of allowance over a configured bound for a loaded 2-core machine


def timed(target: dict[str, Any], **timeouts: float) -> tuple[TargetResult, float]:
    limits = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 1.0, "deadline": 5.0, **timeouts}
    start = time.monotonic()
    result = run({**target, "requests_per_address": 1, "timeouts": limits})
    return result, time.monotonic() - start


def reply_with(*parts: bytes, pause: float = 0, then_sleep: float = 0) -> Callable[..., Any]:
    """A handler: read the request head, write ``parts`` with ``pause`` between them."""

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if then_sleep:
            await asyncio.sleep(then_sleep)

    return handle


async def silent(reader: asyncio.StreamReader, writer: Any) -> None:
    await asyncio.sleep(30)


# --------------------------------------------------------------------------- TLS level


def test_accepts_and_never_sends_a_byte(scene: Any) -> None:
    s = scene(handler=silent, tls=False, backends=())
    result, elapsed = timed(s.target, tls=0.5)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_HANDSHAKE_TIMEOUT.value}
    assert result.addresses[0].tls.connected
    assert elapsed < 0.5 + SLACK


def test_stalls_in_the_middle_of_the_handshake(scene: Any) -> None:
    async def half_hello(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.read(4096)  # the ClientHello
        writer.write(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03")  # a ServerHello cut short
        await writer.drain()
        await asyncio.sleep(30)

    s = scene(handler=half_hello, tls=False, backends=())
    result, elapsed = timed(s.target, tls=0.5)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_HANDSHAKE_TIMEOUT.value}
    assert elapsed < 0.5 + SLACK


def test_http_on_the_https_port(scene: Any) -> None:
    async def http_server(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.read(4096)  # a TLS ClientHello is a bad request to an HTTP server
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    s = scene(handler=http_server, tls=False, backends=())
    result, elapsed = timed(s.target)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_HANDSHAKE_FAILED.value}
    assert "did not answer with TLS" in result.failures[0].detail
    assert elapsed < 1 + SLACK


@pytest.mark.parametrize("max_version", ["1.2", None], ids=["tls1.2", "tls1.3"])
def test_server_requires_a_client_certificate(scene: Any, tmp_path: Path, max_version: str | None) -> None:
    clients = Pki.create("clients")
    client_ca = clients.write_ca(tmp_path / "clients.pem")
    s = scene(client_ca=client_ca, max_version=max_version)
    result, elapsed = timed(s.target)
    assert result.status is Status.CRITICAL
    # TLS 1.2 fails in the handshake; TLS 1.3 says so with an alert on the first read.
    assert reasons(result) == {Reason.TLS_CLIENT_CERT_REQUIRED.value}
    detail = result.failures[0].detail
    alert = "certificate_required" if max_version is None else "handshake_failure"
    assert f"(alert {alert}); no client certificate is configured (tls_client, --cert/--key)" in detail
    # Python's ssl names no CA in its request (it sets no client CA list).
    assert detail.endswith("the listener names no CA it accepts")
    assert elapsed < 2 + SLACK


# --------------------------------------------------------------------------- HTTP level


def test_response_headers_one_byte_a_second(scene: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Backend: slow\r\n\r\n"
    s = scene(handler=reply_with(*[head[i : i + 1] for i in range(len(head))], pause=1.0), backends=())
    result, elapsed = timed(s.target, http=1.5)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_TIMEOUT.value}
    assert "waiting for the response headers" in result.failures[0].detail
    assert elapsed < 1.5 + SLACK


def test_body_trickled_within_any_read_timeout_is_bounded_by_the_http_timeout(scene: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Backend: slow\r\n\r\n"
    s = scene(handler=reply_with(head, *[b"x"] * 1000, pause=0.05), backends=())
    result, elapsed = timed(s.target, http=1.0)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_TIMEOUT.value}
    assert "waiting for the end of the body" in result.failures[0].detail
    assert elapsed < 1.0 + SLACK


def test_endless_chunked_body_is_cut_at_max_body_bytes(scene: Any) -> None:
    async def endless(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: web\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (4096, b"z" * 4096)
        while True:
            writer.write(chunk)
            await writer.drain()

    s = scene(handler=endless, backends=())
    result, elapsed = timed({**s.target, "max_body_bytes": 65536})
    # The cap bounds memory, not the verdict: the part read is judged, the rest left unread.
    assert result.status is Status.OK, result.failures
    attempt = result.addresses[0].attempts[0]
    assert attempt.body_truncated and attempt.body_bytes == 65536
    assert elapsed < 1 + SLACK


def test_endless_chunked_body_with_body_size_limit(scene: Any) -> None:
    async def endless(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: web\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (4096, b"z" * 4096)
        while True:
            writer.write(chunk)
            await writer.drain()

    s = scene(handler=endless, backends=())
    result, elapsed = timed({**s.target, "max_body_bytes": 65536, "body_size_limit": 1_000_000})
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_BODY_TOO_LARGE.value}
    assert "went past body_size_limit (1000000 bytes)" in result.failures[0].detail
    assert result.addresses[0].attempts[0].body_bytes == 65536
    assert elapsed < 1 + SLACK


def test_a_100_mb_body_keeps_memory_bounded(scene: Any) -> None:
    size = 100 * 1024 * 1024

    async def huge(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: web\r\n\r\n" % size)
        block = b"b" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()

    s = scene(handler=huge, backends=())
    tracemalloc.start()
    try:
        result, elapsed = timed({**s.target, "max_body_bytes": 65536})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status is Status.OK, result.failures
    assert result.addresses[0].attempts[0].body_bytes == 65536
    assert result.addresses[0].attempts[0].body_truncated
    assert peak < 16 * 1024 * 1024  # the lab server shares the process; 100 MB never lands in memory
    assert elapsed < 1 + SLACK


def test_a_1_mb_header_line(scene: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 1024 * 1024 + b"\r\nContent-Length: 0\r\n\r\n"
    s = scene(handler=reply_with(head), backends=())
    result, elapsed = timed(s.target)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    assert result.failures[0].detail == "invalid HTTP response: the response head is larger than 100 KiB"
    assert elapsed < 1 + SLACK


def test_garbage_instead_of_http(scene: Any) -> None:
    s = scene(handler=reply_with(b"\x00\x01\x02 this is not HTTP at all\r\n\r\n"), backends=())
    result, elapsed = timed(s.target)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    # In probe's words, with the start of what came printable (never h11's bytearray repr).
    assert result.failures[0].detail == (
        "invalid HTTP response: the response does not start with an HTTP/1.x status line "
        "(it starts with '... this is not HTTP at all....')"
    )
    assert elapsed < 1 + SLACK


def test_closes_in_the_middle_of_the_response(scene: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Backend: web\r\n\r\n"
    s = scene(handler=reply_with(head, b"only part of the body"), backends=())
    result, elapsed = timed(s.target)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    assert result.failures[0].detail == (
        "invalid HTTP response: the connection closed before the response was complete"
    )
    assert elapsed < 1 + SLACK


# --------------------------------------------------------------------------- many addresses


def test_eight_addresses_some_dead_some_slow_end_by_the_deadline(
    lab: Lab, dns: Any, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path
) -> None:
    name = "eight.corp.example"
    cert = pki.leaf(name)
    web = lab.start_backend("web-1", new_ip())
    healthy = lab.start_nodes([new_ip() for _ in range(3)], cert=cert, backends=[web], workdir=tmp_path)
    port = healthy[0].port
    stalled = [lab.start_node(new_ip(), port, handler=silent, tls=False) for _ in range(3)]
    dead = [new_ip() for _ in range(2)]  # nothing listens: refused
    started = [web, *healthy, *stalled]
    try:
        dns.set(name, *[("A", n.address) for n in healthy + stalled], *[("A", a) for a in dead])
        target = {
            "url": f"https://{name}:{port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(ca_file),
            "backend": {"header": "X-Backend"},
        }
        # The handshake timeout as long as the deadline (a longer one is refused): the
        # connect uses part of the deadline, so the deadline ends the stalled handshakes.
        result, elapsed = timed(target, tls=1.5, deadline=1.5)
    finally:
        for server in started:
            lab.stop(server)
    by_address = {str(a.address): a for a in result.addresses}
    assert len(by_address) == 8
    assert elapsed < 1.5 + SLACK
    assert result.status is Status.CRITICAL
    for node in healthy:
        assert by_address[node.address].status is Status.OK
    for node in stalled:
        assert {f.reason for f in by_address[node.address].failures} == {Reason.CYCLE_DEADLINE_EXCEEDED}
    for address in dead:
        assert {f.reason for f in by_address[address].failures} == {Reason.TCP_REFUSED}


def test_certificate_issued_with_many_key_kinds_verify(scene: Any, pki: Pki) -> None:
    for key_type in ("rsa-2048", "rsa-4096", "ec-p256", "ec-p384", "ed25519"):
        name = f"{key_type}.corp.example"
        s = scene(hostname=name, cert=issue(name, pki.intermediate, dns_names=(name,), key_type=key_type))
        result, _ = timed(s.target)
        assert result.status is Status.OK, (key_type, result.failures)
        leaf = result.addresses[0].tls.leaf
        assert leaf is not None
        assert (
            leaf.key
            == {
                "rsa-2048": "RSA 2048",
                "rsa-4096": "RSA 4096",
                "ec-p256": "EC P-256",
                "ec-p384": "EC P-384",
                "ed25519": "Ed25519",
            }[key_type]
        )
