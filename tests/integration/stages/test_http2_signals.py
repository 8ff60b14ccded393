"""HTTP/2's own signals handled as RFC 9113, curl and Go handle them: GOAWAY, RST_STREAM, SETTINGS.

Each server is built on the ``h2`` library (``tests/support/h2servers.py``) and does what a
real one does: nginx at ``keepalive_requests``, Envoy or a Go server draining during a
deploy, an old nginx worker during ``nginx -s reload``, a backend that dies mid-body.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from probe.model.reasons import Platform, Reason, Status
from probe.model.results import TargetResult
from probe.report.hints import hint_for
from tests.support.curl import curl_get
from tests.support.h2servers import (
    BODY_PARTS,
    H2Server,
    answer,
    close,
    data,
    goaway,
    h2_server,
    headers_then,
    reset,
    trailers,
    window_update_first,
)
from tests.support.helpers import reasons, run

LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 1.0, "deadline": 5.0}
SLACK = 1.5  # seconds a loaded 2-core machine may add to a run of a few requests

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0, 1, 2, 7, 8, 11


def curl_http2(s: Any, ca_file: Any) -> Any:
    """curl --http2's verdict on the scene's node (exit code 0: it completed the GET)."""
    return curl_get(ca_file, s.hostname, s.nodes[0].address, s.nodes[0].port, "--http2")


def timed(scene: Any, handler: Any, requests: int = 4, **timeouts: float) -> tuple[TargetResult, float, Any]:
    s = scene(handler=handler, backends=(), alpn=("h2",))
    start = time.monotonic()
    result = run({**s.target, "requests_per_address": requests, "timeouts": {**LIMITS, **timeouts}})
    return result, time.monotonic() - start, s


# --------------------------------------------------------------------------- GOAWAY


def test_graceful_goaway_after_the_headers_lets_the_response_complete(scene: Any, ca_file: Any) -> None:
    # nginx at keepalive_requests, Envoy and Go servers draining: GOAWAY(NO_ERROR,
    # last_stream_id=1) between the headers and the body. The stream is at or below
    # last_stream_id, so it completes: curl reports 200.
    handler = h2_server(headers_then(goaway(NO_ERROR, 1), data(BODY_PARTS[0]), data(BODY_PARTS[1], end=True)))
    result, elapsed, s = timed(scene, handler)

    assert result.status is Status.OK, result.failures
    attempts = result.addresses[0].attempts
    assert [a.status_code for a in attempts] == [200] * 4
    assert {a.backend for a in attempts} == {"web-1"}
    assert {a.body_bytes for a in attempts} == {len(b"".join(BODY_PARTS))}
    assert {a.retried_after for a in attempts} == {None}
    assert s.nodes[0].connections == 4
    assert elapsed < 4 * LIMITS["http"] + SLACK
    assert curl_http2(s, ca_file).ok  # curl finishes the stream too


def test_goaway_with_an_error_code_that_lets_the_response_complete_is_named(scene: Any, ca_file: Any) -> None:
    handler = h2_server(headers_then(goaway(ENHANCE_YOUR_CALM, 1), data(BODY_PARTS[0], end=True)))
    result, elapsed, s = timed(scene, handler, requests=2)

    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_STREAM_ERROR.value}
    detail = result.failures[0].detail
    assert "2 of 2 requests: the server sent GOAWAY ENHANCE_YOUR_CALM (0xb) with last_stream_id 1" in detail
    assert "the response completed (curl and Go report it without an error)" in detail
    # The response itself was read and judged: status, backend, body.
    assert [(a.status_code, a.backend) for a in result.addresses[0].attempts] == [(200, "web-1")] * 2
    assert elapsed < 2 * LIMITS["http"] + SLACK
    # Deliberately stricter than curl, which reports the response; the detail says so.
    assert curl_http2(s, ca_file).ok


def test_goaway_with_an_error_code_then_the_connection_closing_mid_body(scene: Any) -> None:
    handler = h2_server(headers_then(data(BODY_PARTS[0]), goaway(PROTOCOL_ERROR, 1), close()))
    result, elapsed, _ = timed(scene, handler, requests=1)

    assert reasons(result) == {Reason.HTTP_STREAM_ERROR.value}
    assert result.failures[0].detail == (
        "the server closed the connection after GOAWAY PROTOCOL_ERROR (0x1) with last_stream_id 1, "
        f"{len(BODY_PARTS[0])} bytes into the body"
    )
    assert result.addresses[0].attempts[0].status_code == 200
    assert elapsed < LIMITS["http"] + SLACK


def test_graceful_goaway_then_the_connection_closing_mid_body_is_a_cut_response(scene: Any) -> None:
    handler = h2_server(headers_then(data(BODY_PARTS[0]), goaway(NO_ERROR, 1), close()))
    result, elapsed, _ = timed(scene, handler, requests=1)

    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    assert result.failures[0].detail == (
        "invalid HTTP response: the connection closed before the response was complete "
        "(after GOAWAY NO_ERROR (0x0) with last_stream_id 1)"
    )
    assert elapsed < LIMITS["http"] + SLACK


def test_goaway_with_last_stream_id_0_on_a_fresh_connection_is_retried_on_a_new_one(scene: Any) -> None:
    # An old nginx worker during `nginx -s reload`: its SETTINGS, then GOAWAY(NO_ERROR, 0)
    # on every other connection. The request was not processed (RFC 9113 §8.7), so it is
    # sent again on a new connection, once, as curl and Go's transport do.
    async def drain_every_other(server: H2Server, index: int) -> bool:
        if index % 2 == 0:
            await server.goaway(NO_ERROR, 0)
            return False
        return True

    handler = h2_server(answer, on_connect=drain_every_other)
    result, elapsed, s = timed(scene, handler)

    assert result.status is Status.OK, result.failures
    attempts = result.addresses[0].attempts
    assert [a.status_code for a in attempts] == [200] * 4
    assert {a.retried_after for a in attempts} <= {
        "GOAWAY NO_ERROR (0x0) with last_stream_id 0",
        "GOAWAY NO_ERROR (0x0) with last_stream_id 0, before the request was sent",
    }
    assert None not in {a.retried_after for a in attempts}
    assert s.nodes[0].connections == 8  # each request: the refused connection and the retry's
    assert elapsed < 4 * LIMITS["http"] + SLACK


# --------------------------------------------------------------------------- RST_STREAM


def test_refused_streams_are_retried_once_on_a_new_connection(scene: Any) -> None:
    # A server that refuses every other stream with RST_STREAM(REFUSED_STREAM).
    async def refuse_every_other(server: H2Server, stream_id: int, index: int) -> None:
        if index % 2 == 0:
            await server.reset(stream_id, REFUSED_STREAM)
        else:
            await server.answer(stream_id, f"web-{index}")

    result, elapsed, s = timed(scene, h2_server(refuse_every_other))

    assert result.status is Status.OK, result.failures
    attempts = result.addresses[0].attempts
    assert [a.retried_after for a in attempts] == ["RST_STREAM REFUSED_STREAM (0x7)"] * 4
    assert [a.backend for a in attempts] == ["web-1", "web-3", "web-5", "web-7"]
    # The retry's phases: a connection of its own, so connect and tls are its own.
    assert all(a.phases.connect is not None and a.phases.tls is not None for a in attempts)
    assert s.nodes[0].connections == 8
    assert elapsed < 4 * LIMITS["http"] + SLACK


def test_a_stream_refused_twice_is_a_finding(scene: Any) -> None:
    async def refuse(server: H2Server, stream_id: int, index: int) -> None:
        await server.reset(stream_id, REFUSED_STREAM)

    result, elapsed, s = timed(scene, h2_server(refuse), requests=2)

    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_STREAM_REFUSED.value}
    assert result.failures[0].detail == (
        "2 of 2 requests: the server refused the request's stream twice: RST_STREAM REFUSED_STREAM (0x7), "
        "then RST_STREAM REFUSED_STREAM (0x7) on a new connection (probe retries a refused request once; "
        "curl 7.88 tries a REFUSED_STREAM up to 5 times)"
    )
    assert s.nodes[0].connections == 4  # one retry per request, never more
    assert elapsed < 2 * LIMITS["http"] + SLACK


@pytest.mark.parametrize(
    ("code", "name"), [(CANCEL, "CANCEL (0x8)"), (INTERNAL_ERROR, "INTERNAL_ERROR (0x2)")]
)
def test_a_stream_reset_mid_body_names_the_code(scene: Any, ca_file: Any, code: int, name: str) -> None:
    handler = h2_server(headers_then(data(BODY_PARTS[0]), reset(code)))
    result, elapsed, s = timed(scene, handler, requests=1)

    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_STREAM_ERROR.value}
    assert result.failures[0].detail == (
        f"the server reset the stream with {name} after {len(BODY_PARTS[0])} bytes of the body, "
        "before its end"
    )
    assert s.nodes[0].connections == 1  # not a refusal: never retried
    assert elapsed < LIMITS["http"] + SLACK
    verdict = curl_http2(s, ca_file)
    assert (
        verdict.returncode == 92 and f"{name.split()[0]} (err {code})" in verdict.stderr
    )  # curl names it too


# --------------------------------------------------------------------------- SETTINGS, trailers


def test_a_server_that_never_sends_settings_times_out_and_says_so(scene: Any) -> None:
    result, elapsed, _ = timed(scene, h2_server(answer, preface=False), requests=1)

    assert reasons(result) == {Reason.HTTP_TIMEOUT.value}
    assert result.failures[0].detail == (
        "no complete response within 1s (waiting for the response headers; the server sent no "
        "HTTP/2 SETTINGS frame, which opens every HTTP/2 server's side)"
    )
    assert elapsed < LIMITS["http"] + SLACK


def test_a_server_whose_first_frame_is_not_settings_breaks_http2(scene: Any) -> None:
    result, elapsed, _ = timed(scene, window_update_first(), requests=1)

    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    assert result.failures[0].detail == (
        "invalid HTTP response: the server's first HTTP/2 frame was not SETTINGS, which must open "
        "every HTTP/2 server's side of a connection (RFC 9113 §3.4)"
    )
    assert elapsed < LIMITS["http"] + SLACK


def test_a_response_with_trailers_is_read_whole(scene: Any) -> None:
    handler = h2_server(headers_then(data(BODY_PARTS[0]), trailers(x_checksum="abc")))
    result, elapsed, _ = timed(scene, handler, requests=2)

    assert result.status is Status.OK, result.failures
    assert [(a.status_code, a.backend, a.body_bytes) for a in result.addresses[0].attempts] == [
        (200, "web-1", len(BODY_PARTS[0]))
    ] * 2
    assert elapsed < 2 * LIMITS["http"] + SLACK


# --------------------------------------------------------------------------- gRPC


def test_a_plain_get_answered_with_grpc_status_12_is_not_ok(scene: Any, ca_file: Any) -> None:
    # A gRPC service's answer to a plain GET: :status 200, content type application/grpc and
    # grpc-status 12 in the headers of a trailers-only response. It was reported ok.
    async def unimplemented(server: H2Server, stream_id: int, index: int) -> None:
        fields = [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("x-backend", "g-1"),
            ("grpc-status", "12"),
            ("grpc-message", "Method not found: /"),
        ]
        server.conn.send_headers(stream_id, fields, end_stream=True)
        await server.flush()

    result, elapsed, s = timed(scene, h2_server(unimplemented), requests=2)

    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.GRPC_STATUS.value}
    assert result.failures[0].detail == (
        "2 of 2 requests: the gRPC call failed: grpc-status 12 UNIMPLEMENTED, "
        "grpc-message 'Method not found: /'"
    )
    attempts = result.addresses[0].attempts
    assert [(a.status_code, a.backend, a.grpc_status, a.grpc_message) for a in attempts] == [
        (200, "g-1", 12, "Method not found: /")
    ] * 2
    assert elapsed < 2 * LIMITS["http"] + SLACK
    # curl only sees HTTP: 200. gRPC reports a call's outcome in grpc-status, so probe does.
    assert curl_http2(s, ca_file).ok


def test_grpc_health_against_an_http1_only_server_names_grpc_not_http_version(scene: Any) -> None:
    # `probe check URL --grpc-health` at a listener that speaks HTTP/1.1 only (no h2 in
    # ALPN): the user never set http_version, so the finding must not blame it, and the
    # hint must not offer --http-version 1.1 alone (grpc_health refuses it: gRPC needs h2).
    s = scene(backends=("web-1",))
    start = time.monotonic()
    result = run({**s.target, "grpc_health": {}, "requests_per_address": 2, "timeouts": LIMITS})
    elapsed = time.monotonic() - start

    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_ALPN_MISMATCH.value}
    detail = result.failures[0].detail
    assert detail.startswith(
        "grpc_health needs HTTP/2 (gRPC runs on nothing else) but the server offered no h2"
    )
    assert "http_version" not in detail
    hint = hint_for(result.failures[0], Platform.GENERIC)
    assert hint is not None and "--grpc-health" in hint
    assert elapsed < LIMITS["tls"] + SLACK
