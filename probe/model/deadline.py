"""The overall deadline of one cycle, as a monotonic expiry every stage clips to."""

from __future__ import annotations

import time
from dataclasses import dataclass

from probe.model.reasons import Reason


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock by which a cycle must end.

    Attributes:
        expires: ``time.monotonic()`` value of the deadline.
        seconds: the deadline's length, for messages.
    """

    expires: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires - time.monotonic())

    def clip(self, timeout: float) -> float:
        """``timeout`` shortened to what is left of the deadline (seconds)."""
        return min(timeout, self.remaining())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed (within a millisecond)."""
        return self.remaining() <= 0.001

    def timeout_reason(self, own: Reason) -> Reason:
        """Which timeout fired: the stage's ``own`` reason, or the cycle's deadline.

        A stage clips its own timeout to the deadline; when the deadline has passed, it is
        the cycle's deadline that cut the stage short (``cycle_deadline_exceeded``), not the
        stage's timeout. The one place that decides this, for every stage.
        """
        return Reason.CYCLE_DEADLINE_EXCEEDED if self.expired else own
