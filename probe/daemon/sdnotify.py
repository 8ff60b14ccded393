"""systemd's notify protocol: datagrams to ``$NOTIFY_SOCKET``, without a dependency.

See sd_notify(3): ``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=…`` and
``WATCHDOG=1``. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("probe.sdnotify")


class Notifier:
    """Sends notifications to the service manager.

    Args:
        environ: the process environment (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``,
            ``WATCHDOG_PID``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()  # abstract socket namespace
        elif path.startswith("/"):
            self._address = path
        self._socket: socket.socket | None = None
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._address is not None

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` lines in one datagram; failures are logged, never raised.

        The socket is non-blocking: a receiver that does not read (its queue full) costs
        a dropped notification, never a stalled event loop.
        """
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except BlockingIOError:
            log.warning("the service manager's notify queue is full; notification dropped")
        except OSError as exc:
            log.warning("cannot notify the service manager", extra={"error": str(exc)})

    def ready(self, status: str) -> None:
        """Start-up is complete."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A configuration reload starts (``MONOTONIC_USEC`` as systemd 253+ wants)."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self, status: str) -> None:
        """A reload finished (successfully or not)."""
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status for ``systemctl status``."""
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """The service is alive."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown starts."""
        self.send("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """The watchdog period in seconds, ``None`` when no watchdog is set for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000
