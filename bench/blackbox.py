"""blackbox_exporter's load: ``/probe`` called as Prometheus would, the slow backend beside it."""

from __future__ import annotations

import http.client
import threading
import time

from bench import measure
from bench.scene import (
    BLACKBOX_ADDRESS,
    LB_ADDRESSES,
    Scene,
    http_get,
)
from bench.timings import Timing, blackbox_timing


class BlackboxDriver:
    """Calls blackbox_exporter's /probe as Prometheus would: ``rate`` probes per second, spread.

    Address-probes alternate between HAProxy's two addresses on ``fe_bb``; ``threads``
    clients with keep-alive connections share the schedule. A second, slower loop probes
    the slow backend every ``slow_interval`` seconds at both addresses and keeps the timings.
    """

    def __init__(self, scene: Scene, rate: float, slow_interval: float, threads: int = 4) -> None:
        self.scene = scene
        self.rate = rate
        self.slow_interval = slow_interval
        self.stop_event = threading.Event()
        self.done = 0
        self.failed = 0
        self.slow: list[Timing] = []
        self.samples_per_probe: int | None = None
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=(k, threads), name=f"bb-{k}", daemon=True)
            for k in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._slow, name="bb-slow", daemon=True))
        self._paths = [scene.blackbox_probe_path("fe_bb", a) for a in LB_ADDRESSES]
        self._start = 0.0

    def start(self) -> None:
        """Start probing."""
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop and wait for the clients."""
        self.stop_event.set()
        for thread in self._threads:
            thread.join(10)

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(BLACKBOX_ADDRESS, self.scene.blackbox_port, timeout=30)

    def _work(self, k: int, threads: int) -> None:
        connection = self._connection()
        index = k
        while not self.stop_event.is_set():
            delay = self._start + index / self.rate - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            try:
                connection.request("GET", self._paths[index % 2])
                body = connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = self._connection()
                body = b""
            ok = b"\nprobe_success 1\n" in body
            with self._lock:
                self.done += 1
                self.failed += not ok
                if ok and self.samples_per_probe is None:
                    self.samples_per_probe = len(measure.parse_samples(body.decode()))
            index += threads
        connection.close()

    def _slow(self) -> None:
        while not self.stop_event.wait(self.slow_interval):
            for address in LB_ADDRESSES:
                self.slow.append(blackbox_slow_probe(self.scene, address))


def blackbox_slow_probe(scene: Scene, address: str) -> Timing:
    """One /probe of the slow backend at one address."""
    status, body = http_get(
        BLACKBOX_ADDRESS, scene.blackbox_port, scene.blackbox_probe_path("fe_slow", address, "/")
    )
    if status != 200:
        return Timing(float("nan"), float("nan"), False)
    return blackbox_timing(body)
