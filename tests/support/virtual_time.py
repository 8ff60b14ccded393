"""An asyncio event loop on virtual time: whatever waits for a timer gets there at once.

``asyncio.sleep``, ``asyncio.wait(timeout=…)``, ``asyncio.timeout`` and ``loop.call_later`` all
read ``loop.time()``. This loop's clock starts at 0 and stands still while callbacks run; when
nothing is ready it jumps straight to the next timer instead of waiting for it. Code that
waits seconds then runs in milliseconds, and every time it reads is exact (no load can make a
sleep late), so tests can assert what happens when.

Sockets are still polled (without blocking) before each jump, so a datagram sent and read
within the test works. Only a real wait for outside I/O does not mix with it: a pending timer
would fire first. Drive code that waits for the network or for threads on the real clock.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, instead of sleeping until the next timer, tells the loop to jump there."""

    def __init__(self, jump: Callable[[float], None]) -> None:
        super().__init__()
        self._jump = jump

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer pending: only I/O can wake the loop
            return super().select(None)
        self._jump(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual seconds since it was made."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self._advance))

    def time(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._now

    def _advance(self, seconds: float) -> None:
        self._now += seconds


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop`, like ``asyncio.run``.

    Returns:
        What ``main`` returns.
    """
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
