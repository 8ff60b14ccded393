"""One connection per address-probe over HTTP/2, and the HTTP/2 settings probe announces."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from probe.engine.cycle import run_cycle
from probe.engine.plan import close_plans
from probe.lab.servers import http2_responder
from probe.model.reasons import Status
from probe.model.results import TargetResult
from tests.support.helpers import make_plan, run

LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 1.0, "deadline": 6.0}
CYCLES = 30


def test_concurrent_http2_address_probes_open_one_connection_each(scene: Any) -> None:
    # Two addresses probed at once, one HTTP client for both, HTTP/2: one address's
    # finished request must never close the other's connection while its preface is
    # being sent (httpcore's shared pool did that, and the request then opened a second
    # connection with a second handshake).
    s = scene(nodes=2, handler=http2_responder(["web-1", "web-2"]), backends=(), alpn=("h2", "http/1.1"))
    target_plan = make_plan(**{**s.target, "requests_per_address": 1, "timeouts": LIMITS})

    async def cycles() -> list[TargetResult]:
        results = [await run_cycle(target_plan) for _ in range(CYCLES)]
        await close_plans([target_plan])
        return results

    start = time.monotonic()
    results = asyncio.run(cycles())

    assert all(r.status is Status.OK for r in results), [r.failures for r in results if r.failures]
    assert {a.http_version for r in results for addr in r.addresses for a in addr.attempts} == {"HTTP/2"}
    assert [n.connections for n in s.nodes] == [CYCLES, CYCLES]
    assert time.monotonic() - start < 15


def _settings_recorder(seen: list[dict[int, int]]) -> Any:
    """An HTTP/2 node handler that records the client's SETTINGS and answers 200 ``web-1``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        await writer.drain()
        while data := await asyncio.wait_for(reader.read(65536), 10):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    seen.append({int(k): v.new_value for k, v in event.changed_settings.items()})
                elif isinstance(event, h2.events.RequestReceived):
                    conn.send_headers(event.stream_id, [(":status", "200"), ("x-backend", "web-1")])
                    conn.send_data(event.stream_id, b"served by web-1\n", end_stream=True)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
            writer.write(conn.data_to_send())
            await writer.drain()

    return handle


def test_http2_settings_allow_the_server_no_more_than_one_stream(scene: Any) -> None:
    seen: list[dict[int, int]] = []
    s = scene(handler=_settings_recorder(seen), backends=(), alpn=("h2",))
    start = time.monotonic()
    result = run({**s.target, "requests_per_address": 2, "timeouts": LIMITS})

    assert result.status is Status.OK, result.failures
    assert [a.http_version for a in result.addresses[0].attempts] == ["HTTP/2", "HTTP/2"]
    codes = h2.settings.SettingCodes
    # Push stays off; one concurrent server-initiated stream (there are none without push)
    # instead of httpcore's 100, which cost 99 event-loop round trips per connection.
    announced = [
        (s[codes.ENABLE_PUSH], s[codes.MAX_CONCURRENT_STREAMS], s[codes.MAX_HEADER_LIST_SIZE]) for s in seen
    ]
    assert announced == [(0, 1, 65536)] * 2
    assert time.monotonic() - start < 5
