"""What /proc says of a running process: its CPU time, its memory, the remote ends of its sockets."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from bench import measure

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, children waited for included) of a running process."""
    return measure.cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), TICKS, children=True)


def proc_memory(pid: int, key: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` of a running process, in bytes."""
    return measure.status_bytes(Path(f"/proc/{pid}/status").read_text(), key)


class SocketWatch:
    """Samples, every ``pause`` seconds, the remote ends of the sockets of some processes.

    The evidence behind "everything stayed on loopback": every TCP and UDP socket the
    processes hold is looked up in /proc/PID/net/{tcp,udp,tcp6,udp6}. Sampling can miss
    a socket that lives shorter than ``pause``; bench/README.md says why none is expected.
    """

    def __init__(self, pids: dict[str, int], pause: float = 0.2) -> None:
        self.pids = pids
        self.pause = pause
        self.peers: dict[str, set[tuple[str, int]]] = {name: set() for name in pids}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="socket-watch", daemon=True)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.pause):
            for name, pid in self.pids.items():
                self.peers[name] |= process_peers(pid)
            self.samples += 1

    def report(self) -> dict[str, Any]:
        """Per process: distinct remote addresses seen, and those that are not loopback."""
        result: dict[str, Any] = {"samples": self.samples}
        for name, peers in self.peers.items():
            result[name] = {
                "remote_addresses": sorted({address for address, _ in peers}),
                "not_loopback": sorted(measure.non_loopback(peers)),
            }
        return result


def process_peers(pid: int) -> set[tuple[str, int]]:
    """The remote ends of the TCP and UDP sockets process ``pid`` holds now."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
        tables = {}
        for kind in ("tcp", "udp", "tcp6", "udp6"):
            with contextlib.suppress(OSError):
                tables.update(measure.socket_peers(Path(f"/proc/{pid}/net/{kind}").read_text()))
    except OSError:  # the process exited
        return set()
    return {tables[inode] for inode in inodes if inode in tables}
