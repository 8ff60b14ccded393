"""HTTP stage against loopback TLS servers: status, body, backends, timeouts, bad HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from probe.model.reasons import Reason, Status
from tests.support.helpers import reasons, run


def responder(head: bytes, body: bytes = b"", delay: float = 0) -> Any:
    """A handler that reads one request and sends ``head`` + ``body`` after ``delay`` seconds."""

    async def handle(reader: Any, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if delay:
            await asyncio.sleep(delay)
        writer.write(head + body)
        await writer.drain()

    return handle


def ok_head(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n").encode()


def test_status_outside_valid_codes(scene: Any) -> None:
    s = scene()
    for backend in s.backends:
        backend.status = 503
    result = run(s.target)

    assert reasons(result) == {Reason.HTTP_STATUS.value}
    assert result.failures[0].detail == "4 of 4 requests: status 503 (expected 200-299)"
    assert [a.status_code for a in result.addresses[0].attempts] == [503] * 4


def test_valid_status_codes_are_configurable(scene: Any) -> None:
    s = scene()
    for backend in s.backends:
        backend.status = 503
    result = run({**s.target, "valid_status_codes": [200, 503]})
    assert result.status is Status.OK


def test_body_mismatch(scene: Any) -> None:
    s = scene()
    result = run({**s.target, "body_regex": "^healthy$"})
    assert reasons(result) == {Reason.HTTP_BODY_MISMATCH.value}
    assert "'^healthy$'" in result.failures[0].detail


def test_body_regex_match_and_backend_from_body(scene: Any) -> None:
    s = scene()
    result = run({**s.target, "body_regex": "served by", "backend": {"body_regex": r"served by (\S+)"}})
    assert result.status is Status.OK
    assert result.backend_counts == {"web-1": 2, "web-2": 2}


def test_backend_unidentified(scene: Any) -> None:
    body = b"hello"
    s = scene(handler=responder(ok_head(body), body), backends=())
    result = run(s.target)
    assert reasons(result) == {Reason.BACKEND_UNIDENTIFIED.value}
    assert result.failures[0].detail == "4 of 4 requests: no X-Backend header in the response"


def test_request_carries_host_sni_and_no_proxy(scene: Any, monkeypatch: Any) -> None:
    seen: list[bytes] = []

    async def record(reader: Any, writer: Any) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        body = b"ok"
        writer.write(ok_head(body, "X-Backend: solo\r\n") + body)
        await writer.drain()

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # must be ignored
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    s = scene(handler=record, backends=())
    result = run({**s.target, "requests_per_address": 2, "headers": {"X-Probe": "yes"}})

    assert result.status is Status.OK, result.failures
    assert len(seen) == 2
    head = seen[0].decode().lower()
    assert f"host: {s.hostname}:{s.port}\r\n" in head
    assert "x-probe: yes\r\n" in head and "accept-encoding: identity\r\n" in head
    assert head.startswith("get / http/1.1")
    # One handshake by the TLS stage, whose connection carries the first request, and one
    # for the second request; every one with SNI = hostname.
    assert s.nodes[0].sni_names == [s.hostname] * 2
