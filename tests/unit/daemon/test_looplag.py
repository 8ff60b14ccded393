"""The event-loop lag monitor's bookkeeping: max per second over a window, one warning."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from probe.daemon.looplag import LoopLag


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_value_before_the_first_tick() -> None:
    assert LoopLag(clock=Clock()).seconds() is None


def test_the_largest_lateness_of_the_window_is_kept_then_forgotten() -> None:
    clock = Clock()
    lag = LoopLag(window=60, clock=clock)
    lag.record(0.002)
    lag.record(0.030)
    clock.now += 1
    lag.record(0.001)
    assert lag.seconds() == 0.030
    clock.now += 59
    lag.record(0.004)
    assert lag.seconds() == 0.004  # the 30 ms second is 60 s old
    clock.now += 120
    assert lag.seconds() is None  # nothing measured for a whole window


def test_one_warning_above_the_limit_until_back_below(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag(warn=0.1, clock=Clock())
    with caplog.at_level(logging.INFO, logger="probe.looplag"):
        lag.record(0.15)
        lag.record(0.30)
        lag.record(0.07)  # between half the limit and the limit: still late
        lag.record(0.01)
        lag.record(0.20)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "event loop late: timings are inflated",
        "event loop on time again",
        "event loop late: timings are inflated",
    ]


def test_a_blocked_loop_is_measured() -> None:
    lag = LoopLag(tick=0.02)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(lag.run())
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # block the loop
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    seconds = lag.seconds()
    assert seconds is not None and 0.15 <= seconds < 1.0
