"""Memory per target (issue 9): what is shared between targets changes no request or verdict.

Targets with equal client settings share one httpx client; each request is still what a new
client sends (its own Host, path, headers and SNI, no cookie, a new connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from probe.config.load import build_config
from probe.engine.cycle import run_cycle
from probe.engine.plan import close_plans, plan
from probe.model.reasons import Status
from probe.model.results import TargetResult

LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 1.0, "deadline": 6.0}


def recording(heads: list[bytes], backend: str) -> Callable[..., Any]:
    """A handler: record one HTTP/1.1 request head, answer 200 and set a stickiness cookie."""

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(
            f"HTTP/1.1 200 OK\r\nX-Backend: {backend}\r\nSet-Cookie: AWSALB={backend}; Path=/\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\nok".encode()
        )
        await writer.drain()

    return handle


def test_targets_with_equal_settings_share_one_client_and_send_their_own_requests(scene: Any) -> None:
    heads_a: list[bytes] = []
    heads_b: list[bytes] = []
    a = scene(handler=recording(heads_a, "web-a"), backends=())
    b = scene(handler=recording(heads_b, "web-b"), backends=())
    common = {"requests_per_address": 2, "timeouts": LIMITS}
    config = build_config(
        {
            "targets": [
                {**a.target, **common, "name": "a", "url": a.target["url"] + "a", "headers": {"X-Who": "a"}},
                {**b.target, **common, "name": "b", "url": b.target["url"] + "b"},
                # Other timeouts: a client of its own.
                {**b.target, **common, "name": "c", "timeouts": {**LIMITS, "http": 2.0}},
            ]
        }
    )
    plans = plan(config)
    assert plans[0].http is not None and plans[0].http is plans[1].http
    assert plans[2].http is not None and plans[2].http is not plans[0].http

    async def cycles() -> list[TargetResult]:
        results: list[TargetResult] = []
        for _ in range(2):
            results += await asyncio.gather(run_cycle(plans[0]), run_cycle(plans[1]))
        await close_plans(plans)
        return results

    start = time.monotonic()
    results = asyncio.run(cycles())
    elapsed = time.monotonic() - start

    assert [r.status for r in results] == [Status.OK] * 4, [r.failures for r in results]
    assert {r.target.name: r.backend_counts for r in results} == {"a": {"web-a": 2}, "b": {"web-b": 2}}
    assert plans[0].http.current is None  # closed once, for both
    # A new connection per request, each with its target's SNI, Host, path and headers and
    # no cookie, although both servers set one on every response.
    assert (a.nodes[0].connections, b.nodes[0].connections) == (4, 4)
    assert a.nodes[0].sni_names == [a.hostname] * 4 and b.nodes[0].sni_names == [b.hostname] * 4
    for heads, scene_, path, who in ((heads_a, a, "/a", b"x-who: a"), (heads_b, b, "/b", None)):
        assert len(heads) == 4
        for head in heads:
            lines = head.lower().split(b"\r\n")
            assert lines[0] == f"get {path} http/1.1".encode()
            assert f"host: {scene_.hostname}:{scene_.port}".encode() in lines
            assert not any(line.startswith(b"cookie:") for line in lines)
            assert (who in lines) if who else not any(line.startswith(b"x-who:") for line in lines)
    assert elapsed < 2 * LIMITS["deadline"]
