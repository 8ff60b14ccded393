"""Phase times as Go's httptrace takes them (what blackbox_exporter reports), end to end.

A loopback server sleeps before it sends the response headers and again between the
headers and the body: ``processing`` is the first sleep, ``transfer`` the second, over
HTTP/1.1 and HTTP/2, on the TLS stage's connection and on a new one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import h2.config
import h2.connection
import h2.events

from probe.model.reasons import Status
from probe.model.results import TargetResult
from tests.support.helpers import run

LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 3.0, "deadline": 8.0}
BEFORE_HEADERS = 0.3  # seconds the server waits before the response headers
BEFORE_BODY = 0.2  # and between the headers and the body
# What a loaded 2-core machine may add to a phase (the event loop waking late, the lab's
# own relay); the phases no longer carry the HTTP layers' parsing after a read.
ALLOWANCE = 0.15
BODY = b"served by web-1\n"


async def slow_http11(reader: asyncio.StreamReader, writer: Any) -> None:
    """HTTP/1.1: one response per connection, headers late, body later."""
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(BEFORE_HEADERS)
    writer.write(
        b"HTTP/1.1 200 OK\r\nX-Backend: web-1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY)
    )
    await writer.drain()
    await asyncio.sleep(BEFORE_BODY)
    writer.write(BODY)
    await writer.drain()


async def slow_http2(reader: asyncio.StreamReader, writer: Any) -> None:
    """HTTP/2: SETTINGS at once, the response HEADERS late, DATA with END_STREAM later."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    await writer.drain()
    while data := await asyncio.wait_for(reader.read(65536), 10):
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                writer.write(conn.data_to_send())  # the SETTINGS ack, before the wait
                await writer.drain()
                await asyncio.sleep(BEFORE_HEADERS)
                headers = [(":status", "200"), ("x-backend", "web-1"), ("content-length", str(len(BODY)))]
                conn.send_headers(event.stream_id, headers)
                writer.write(conn.data_to_send())
                await writer.drain()
                await asyncio.sleep(BEFORE_BODY)
                conn.send_data(event.stream_id, BODY, end_stream=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                return
        writer.write(conn.data_to_send())
        await writer.drain()


def timed(target: dict[str, Any]) -> tuple[TargetResult, float]:
    start = time.monotonic()
    result = run({**target, "requests_per_address": 2, "timeouts": LIMITS})
    return result, time.monotonic() - start


def assert_server_times(result: TargetResult, version: str) -> None:
    assert result.status is Status.OK, result.failures
    (address,) = result.addresses
    assert len(address.attempts) == 2  # the TLS stage's connection, then a new one
    for attempt in address.attempts:
        assert attempt.http_version == version and attempt.backend == "web-1"
        processing, transfer = attempt.phases.processing, attempt.phases.transfer
        assert processing is not None and transfer is not None
        assert BEFORE_HEADERS - 0.01 <= processing <= BEFORE_HEADERS + ALLOWANCE, attempt.phases
        assert BEFORE_BODY - 0.01 <= transfer <= BEFORE_BODY + ALLOWANCE, attempt.phases
        assert attempt.phases.connect is not None and attempt.phases.tls is not None
        # The request's duration covers every phase.
        assert attempt.duration_seconds >= processing + transfer


def test_http11_processing_and_transfer_are_the_servers_waits(scene: Any) -> None:
    s = scene(handler=slow_http11, backends=(), alpn=("http/1.1",))
    result, elapsed = timed(s.target)

    assert_server_times(result, "HTTP/1.1")
    assert s.nodes[0].connections == 2
    assert elapsed < 2 * (BEFORE_HEADERS + BEFORE_BODY) + 3


def test_http2_processing_starts_at_the_request_headers_and_ends_at_the_headers_read(scene: Any) -> None:
    # The server's SETTINGS arrive at once: the first byte is the read with the HEADERS.
    s = scene(handler=slow_http2, backends=(), alpn=("h2",))
    result, elapsed = timed(s.target)

    assert_server_times(result, "HTTP/2")
    assert s.nodes[0].connections == 2 and s.nodes[0].alpn_selected == ["h2", "h2"]
    assert elapsed < 2 * (BEFORE_HEADERS + BEFORE_BODY) + 3
