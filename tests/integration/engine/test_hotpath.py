"""The hot path: one handshake per address-probe, one HTTP client per target across cycles."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from probe.engine.cycle import run_cycle
from probe.engine.plan import close_plans
from probe.lab.servers import http2_responder
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from tests.support.helpers import make_plan, reasons, run

LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 1.0, "deadline": 6.0}


def timed(target: dict[str, Any], requests: int = 1, **fields: Any) -> tuple[TargetResult, float]:
    start = time.monotonic()
    result = run({**target, "requests_per_address": requests, "timeouts": LIMITS, **fields})
    return result, time.monotonic() - start


def test_the_first_request_goes_over_the_tls_stage_connection(scene: Any) -> None:
    s = scene(nodes=2)
    result, elapsed = timed(s.target)

    assert result.status is Status.OK, result.failures
    for node in s.nodes:  # one connection, one handshake per address
        assert node.connections == 1
        assert node.sni_names == [s.hostname]
    for address in result.addresses:
        (attempt,) = address.attempts
        assert attempt.status_code == 200 and attempt.backend in {"web-1", "web-2"}
        # Its connect and tls phases are the TLS stage's; its duration includes them.
        assert attempt.phases.connect == address.tls.connect_seconds is not None
        assert attempt.phases.tls == address.tls.handshake_seconds is not None
        assert attempt.duration_seconds >= attempt.phases.connect + attempt.phases.tls
        assert attempt.phases.processing is not None and attempt.phases.transfer is not None
    assert elapsed < 5


def test_later_requests_open_new_connections_and_see_every_backend(scene: Any) -> None:
    s = scene()
    result, elapsed = timed(s.target, requests=4)

    assert result.status is Status.OK, result.failures
    attempts = result.addresses[0].attempts
    assert s.nodes[0].connections == 4 and len(s.nodes[0].sni_names) == 4
    assert {a.backend for a in attempts} == {"web-1", "web-2"}
    tls = result.addresses[0].tls
    assert (attempts[0].phases.connect, attempts[0].phases.tls) == (
        tls.connect_seconds,
        tls.handshake_seconds,
    )
    for attempt in attempts[1:]:  # each measured on its own connection
        assert attempt.phases.connect is not None and attempt.phases.tls is not None
        assert attempt.phases.tls != tls.handshake_seconds
    assert elapsed < 5


def test_alpn_of_the_tls_stage_decides_http2_for_the_first_request(scene: Any) -> None:
    s = scene(handler=http2_responder(["web-1"]), backends=(), alpn=("h2", "http/1.1"))
    result, elapsed = timed(s.target, requests=2)

    assert result.status is Status.OK, result.failures
    address = result.addresses[0]
    assert address.tls.alpn == "h2"
    assert [a.http_version for a in address.attempts] == ["HTTP/2", "HTTP/2"]
    assert s.nodes[0].connections == 2 and s.nodes[0].alpn_selected == ["h2", "h2"]
    assert elapsed < 5


def test_http11_selected_by_the_tls_stage_is_spoken_on_its_connection(scene: Any) -> None:
    s = scene(alpn=("http/1.1",))
    result, _ = timed(s.target)

    assert result.status is Status.OK, result.failures
    assert result.addresses[0].tls.alpn == "http/1.1"
    assert result.addresses[0].attempts[0].http_version == "HTTP/1.1"


def test_a_server_silent_after_the_handshake_is_bounded_by_the_http_timeout(scene: Any) -> None:
    async def silent(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    s = scene(handler=silent, backends=())
    result, elapsed = timed(s.target)

    assert reasons(result) == {Reason.HTTP_TIMEOUT.value}
    assert result.failures[0].detail == "no complete response within 1s (waiting for the response headers)"
    assert s.nodes[0].connections == 1  # the TLS stage's connection carried the request
    assert elapsed < LIMITS["http"] + 2


def test_a_server_closing_after_the_handshake_is_a_protocol_error(scene: Any) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")

    s = scene(handler=hang_up, backends=())
    result, elapsed = timed(s.target)

    # The same finding as on a connection of its own (before the hand-over).
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    assert (
        result.failures[0].detail
        == "invalid HTTP response: the server closed the connection without sending a response"
    )
    assert s.nodes[0].connections == 1
    assert elapsed < 5


def test_one_http_client_serves_every_cycle_of_a_target_and_is_closed_at_the_end(scene: Any) -> None:
    s = scene(nodes=2)
    target_plan = make_plan(**{**s.target, "requests_per_address": 2, "timeouts": LIMITS})
    assert target_plan.http is not None

    async def cycles() -> tuple[list[TargetResult], list[Any]]:
        results, clients = [], []
        for _ in range(3):
            results.append(await run_cycle(target_plan))
            clients.append(target_plan.http.current)  # type: ignore[union-attr]
        await close_plans([target_plan])
        return results, clients

    start = time.monotonic()
    results, clients = asyncio.run(cycles())

    assert all(r.status is Status.OK for r in results), [r.failures for r in results]
    assert clients[0] is not None and all(c is clients[0] for c in clients)
    assert clients[0].is_closed and target_plan.http.current is None
    # Still a new connection per request: 2 requests x 3 cycles, the first of each on the
    # TLS stage's connection.
    assert [n.connections for n in s.nodes] == [6, 6]
    seen = {a.backend for r in results for addr in r.addresses for a in addr.attempts}
    assert seen == {"web-1", "web-2"}
    assert time.monotonic() - start < 10


def test_reuse_connections_keeps_the_tls_stage_connection_for_every_request(scene: Any) -> None:
    s = scene()
    target_plan = make_plan(
        **{**s.target, "requests_per_address": 3, "reuse_connections": True, "timeouts": LIMITS}
    )

    async def cycles() -> list[TargetResult]:
        return [await run_cycle(target_plan), await run_cycle(target_plan)]

    results = asyncio.run(cycles())

    assert all(r.status is Status.OK for r in results), [r.failures for r in results]
    # One connection per address-probe, never kept from one cycle to the next.
    assert s.nodes[0].connections == 2
    for result in results:
        attempts = result.addresses[0].attempts
        assert len({a.backend for a in attempts}) == 1
        assert all(a.phases.tls is None for a in attempts[1:])
