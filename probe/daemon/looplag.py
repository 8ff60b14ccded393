"""How late the daemon's event loop runs: a probe too busy to measure time honestly says so.

Every duration probe reports is read on the event loop: a phase ends when the loop gets
round to the callback, not when the bytes arrived. When the loop is busy (many targets, a
long scrape holding the GIL, a slow machine), every timing grows by that wait. The monitor
measures it the way Node's ``monitorEventLoopDelay`` and asyncio's debug mode do: a timer
that asks to wake every :data:`TICK_SECONDS` and records how late it woke.

The daemon exports the largest lateness of the last :data:`WINDOW_SECONDS` as
``probe_event_loop_lag_seconds`` and logs one warning when it exceeds
:data:`WARN_SECONDS` (and one line when it is back below), rather than adding a finding to
every target: the lag is the prober's own condition, not the service's, and must not turn
into a made-up outage of every target.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("probe.looplag")

#: How often the timer asks to wake (seconds): fine enough to see a 100 ms stall, cheap
#: (ten wake-ups a second).
TICK_SECONDS = 0.1

#: The window of the exported maximum (seconds): covers two scrapes at Prometheus' usual
#: 15 s–30 s interval, so a stall between two scrapes is never missed.
WINDOW_SECONDS = 60

#: Lateness above which the timings of the moment are not trustworthy (seconds): well
#: above what a busy-but-healthy prober shows (a few ms) and the size of a stage timeout's
#: usual granularity; a 100 ms error on a 300 ms request is a third of it.
WARN_SECONDS = 0.1


class LoopLag:
    """The lateness of a periodic timer on the running loop, max per second over a window.

    Args:
        tick: seconds between the timer's wake-ups.
        window: seconds over which :meth:`seconds` takes the maximum.
        warn: lateness (seconds) that logs a warning, once until it is back below.
        clock: a monotonic clock in seconds (the loop's own clock is used for sleeping).

    :meth:`seconds` may be called from any thread (the web server's).
    """

    def __init__(
        self,
        tick: float = TICK_SECONDS,
        window: int = WINDOW_SECONDS,
        warn: float = WARN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tick = tick
        self.warn = warn
        self._clock = clock
        # (whole second, max lateness in it), newest last; at most `window` entries.
        self._seconds: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)
        self._warned = False

    def record(self, lateness: float) -> None:
        """Add one measured lateness (seconds, ≥ 0) at the clock's current time."""
        now = int(self._clock())
        if self._seconds and self._seconds[-1][0] == now:
            if lateness > self._seconds[-1][1]:
                self._seconds[-1] = (now, lateness)
        else:
            self._seconds.append((now, lateness))
        if lateness > self.warn and not self._warned:
            self._warned = True
            log.warning(
                "event loop late: timings are inflated",
                extra={"lag_seconds": round(lateness, 3), "limit_seconds": self.warn},
            )
        elif lateness <= self.warn / 2 and self._warned:
            self._warned = False
            log.info("event loop on time again", extra={"lag_seconds": round(lateness, 3)})

    def seconds(self) -> float | None:
        """The largest lateness over the window (seconds); ``None`` before the first tick."""
        horizon = int(self._clock()) - (self._seconds.maxlen or 0)
        recent = [late for second, late in list(self._seconds) if second > horizon]
        return max(recent) if recent else None

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            late = loop.time() - due
            self.record(late if late > 0 and math.isfinite(late) else 0.0)
