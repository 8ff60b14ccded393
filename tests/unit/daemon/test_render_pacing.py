"""The endpoint's pacing: :class:`Pace` (a token bucket, turns) and :class:`Renders` (shared renderings)."""

from __future__ import annotations

import asyncio

from probe.daemon.httpserver import Pace, Response, plain
from probe.daemon.web import Renders


class FakeCpu:
    """A CPU clock that moves only when told to."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def test_a_turn_waits_until_the_share_has_paid_for_what_was_used() -> None:
    async def main() -> list[float]:
        cpu = FakeCpu()
        pace = Pace(rate=0.25, burst=0.0, used=cpu)
        loop = asyncio.get_running_loop()
        waited = []
        for used in (0.0, 0.05, 0.0):
            cpu.seconds += used
            start = loop.time()
            await pace.turn()
            waited.append(loop.time() - start)
        return waited

    first, after_50_ms, then = asyncio.run(main())

    assert first < 0.01 and then < 0.01
    # 50 ms of CPU at a quarter of a core: 200 ms of wall time before the next turn.
    assert 0.19 <= after_50_ms < 0.3, after_50_ms


def test_a_burst_is_free_after_a_quiet_while() -> None:
    async def main() -> float:
        cpu = FakeCpu()
        pace = Pace(rate=0.25, burst=0.1, used=cpu)
        await pace.turn()
        cpu.seconds += 0.08  # one large rendering, within the burst
        loop = asyncio.get_running_loop()
        start = loop.time()
        await pace.turn()
        return loop.time() - start

    assert asyncio.run(main()) < 0.01


def test_requests_that_arrive_before_a_rendering_begins_share_it() -> None:
    calls = []

    def render() -> Response:
        calls.append(len(calls))
        return plain(200, f"rendering {len(calls)}\n")

    async def main() -> list[bytes]:
        renders = Renders()
        together = await asyncio.gather(*(renders.get("k", render) for _ in range(50)))
        later = await renders.get("k", render)
        return [b"".join(r.body) for r in [*together, later]]

    bodies = asyncio.run(main())

    assert set(bodies[:50]) == {b"rendering 1\n"}
    assert bodies[50] == b"rendering 2\n"  # asked after the first began: a fresh one
    assert len(calls) == 2


def test_a_request_during_a_rendering_gets_the_next_one_never_the_older() -> None:
    versions = iter(range(1, 100))
    seen: list[int] = []

    async def main() -> list[bytes]:
        renders = Renders()
        late: list[asyncio.Task[Response]] = []

        def render() -> Response:
            version = next(versions)
            seen.append(version)
            if version == 1:  # a request arrives while the first rendering runs
                late.append(asyncio.ensure_future(renders.get("k", render)))
            return plain(200, f"{version}\n")

        first = await renders.get("k", render)
        second = await late[0]
        return [b"".join(first.body), b"".join(second.body)]

    assert asyncio.run(main()) == [b"1\n", b"2\n"]
    assert seen == [1, 2]


def test_a_rendering_nobody_waits_for_is_skipped() -> None:
    calls = []

    def render() -> Response:
        calls.append(1)
        return plain(200, "x\n")

    async def main() -> Response:
        renders = Renders()
        await renders.get("first", lambda: plain(200, "first\n"))
        renders.cpu += 0.12  # as if it had taken 120 ms: the next rendering waits its turn
        gone = asyncio.ensure_future(renders.get("k", render))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client went away before its rendering began
        await asyncio.sleep(0.01)
        return await renders.get("k", render)

    assert asyncio.run(main()).status == 200
    assert len(calls) == 1  # only the request still waiting was rendered
