"""Abusive clients of the daemon's endpoint and a well-behaved scraper beside them (issue 17).

The abusive clients run on their own event loop in their own thread, each bound to one of
several loopback source addresses (127.0.17.x), and reconnect at once whenever the server
drops them, as the issue's attackers did; the scraper scrapes on a fixed period from
127.0.0.1 and records every answer and the daemon's schedule as ``/metrics`` shows it.
Loopback only, bounded in count and time.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import REPO, environment_without_proxies

#: A request head that never ends within any test's time: one byte at a time, it trickles.
SLOW_HEAD = b"GET /metrics HTTP/1.1\r\nHost: probe\r\nX-Pad: " + b"a" * 4096


def sources(count: int, subnet: int = 17) -> list[str]:
    """``count`` loopback source addresses, ``127.0.<subnet>.1`` and on."""
    return [f"127.0.{subnet}.{n}" for n in range(1, count + 1)]


def basic(user: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Attack:
    """``clients`` copies of one behaviour, spread over ``addresses``, until the ``with`` ends.

    They run in a child process (``python -m tests.support.abuse``), so that their work
    shares neither the test's GIL (the lab's servers, the scraper) nor the daemon's.

    Attributes:
        lifetimes: seconds each connection lasted until the server closed it.
        statuses: the status of each answer the clients got (``wrong_password``).
        connections: connections opened.
    """

    host: str
    port: int
    behaviour: str  # trickle, idle, wrong_password or flood
    clients: int
    addresses: list[str]
    period: float = 1.0
    path: str = "/metrics"  # what ``flood`` asks for
    authorization: str = ""  # ``flood``'s Authorization header, if any
    depth: int = 1  # requests ``flood`` pipelines before it reads their answers
    lifetimes: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    connections: int = 0
    _process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Attack:
        names = (
            "host",
            "port",
            "behaviour",
            "clients",
            "addresses",
            "period",
            "path",
            "authorization",
            "depth",
        )
        spec = {k: getattr(self, k) for k in names}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.abuse", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=environment_without_proxies(),
            text=True,
        )
        assert self._process.stdout is not None
        assert self._process.stdout.readline() == "started\n"
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.close()
        with process.stdout:
            figures = json.loads(process.stdout.read())
        process.wait(20)
        self.lifetimes, self.statuses, self.connections = (
            figures["lifetimes"],
            figures["statuses"],
            figures["connections"],
        )


@dataclass
class _Swarm:
    """The clients of an :class:`Attack`, in the child process, on its event loop."""

    host: str
    port: int
    behaviour: str
    clients: int
    addresses: list[str]
    period: float
    path: str
    authorization: str
    depth: int
    lifetimes: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    connections: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Start every client, say so on stdout, and go on until :attr:`stop` is set."""
        behaviour = BEHAVIOURS[self.behaviour]
        clients = [
            asyncio.create_task(self._forever(behaviour, self.addresses[i % len(self.addresses)]))
            for i in range(self.clients)
        ]
        print("started", flush=True)
        await self.stop.wait()
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)

    async def _forever(self, behaviour: Callable[[_Swarm, str], Awaitable[None]], source: str) -> None:
        while not self.stop.is_set():
            try:
                await behaviour(self, source)
            except OSError:
                await asyncio.sleep(0)  # refused or reset: again at once

    async def connect(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the endpoint from ``source``."""
        reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=(source, 0))
        self.connections += 1
        return reader, writer


async def trickle(attack: _Swarm, source: str) -> None:
    """Send a request head one byte per ``attack.period`` until the server closes the connection."""
    reader, writer = await attack.connect(source)
    start = time.monotonic()
    closed = asyncio.ensure_future(reader.read(1))
    try:
        for byte in SLOW_HEAD:
            writer.write(bytes([byte]))
            await asyncio.wait([closed], timeout=attack.period)
            if closed.done():
                break
        await _closed(closed)
        attack.lifetimes.append(time.monotonic() - start)
    finally:
        closed.cancel()
        writer.close()


async def idle(attack: _Swarm, source: str) -> None:
    """Connect, send nothing, and wait for the server to close the connection."""
    reader, writer = await attack.connect(source)
    start = time.monotonic()
    try:
        await _closed(asyncio.ensure_future(reader.read(1)))
        attack.lifetimes.append(time.monotonic() - start)
    finally:
        writer.close()


async def wrong_password(attack: _Swarm, source: str) -> None:
    """Ask for ``/metrics`` with a password never tried before; note the status."""
    reader, writer = await attack.connect(source)
    try:
        header = basic("prometheus", secrets.token_hex(8))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n")
        writer.write(f"Authorization: {header}\r\n\r\n".encode())
        answer = await reader.read(100)
        if answer.startswith(b"HTTP/1.1 "):
            attack.statuses.append(int(answer[9:12]))
    finally:
        writer.close()


async def flood(attack: _Swarm, source: str) -> None:
    """Ask for ``attack.path`` again and again on one kept-alive connection, as fast as answered.

    ``attack.depth`` requests are written at once (pipelined), then their answers read
    whole (gzip asked for, as Prometheus does); the status of each is noted. When the
    server closes the connection, :meth:`_Swarm._forever` opens a new one at once.
    """
    reader, writer = await attack.connect(source)
    head = f"GET {attack.path} HTTP/1.1\r\nHost: probe\r\nAccept-Encoding: gzip\r\n"
    if attack.authorization:
        head += f"Authorization: {attack.authorization}\r\n"
    requests = (head + "\r\n").encode() * attack.depth
    try:
        while True:
            writer.write(requests)
            for _ in range(attack.depth):
                status, keep = await _answer(reader)
                attack.statuses.append(status)
                if not keep:
                    return
    except asyncio.IncompleteReadError:
        return  # closed by the server
    finally:
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response whole: its status, and whether the connection stays open."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head[9:12])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status, "connection: close" not in head


async def _closed(read: asyncio.Future[bytes]) -> None:
    """Wait until a pending ``read`` ends: the server closed (or reset) the connection."""
    try:
        data = await read
    except OSError:
        return
    assert not data, f"the server answered a request that never ended: {data!r}"


BEHAVIOURS: dict[str, Callable[[_Swarm, str], Awaitable[None]]] = {
    "trickle": trickle,
    "idle": idle,
    "wrong_password": wrong_password,
    "flood": flood,
}


def _child() -> None:
    """``python -m tests.support.abuse SPEC``: the clients until stdin closes, then the figures as JSON."""
    spec = json.loads(sys.argv[1])

    async def main() -> dict[str, object]:
        swarm = _Swarm(**spec)
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, _stop_at_eof, loop, swarm.stop)
        await swarm.run()
        return {"lifetimes": swarm.lifetimes, "statuses": swarm.statuses, "connections": swarm.connections}

    print(json.dumps(asyncio.run(main())), flush=True)


def _stop_at_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    sys.stdin.read()
    loop.call_soon_threadsafe(stop.set)


@dataclass
class Scrape:
    """One scrape: when, how long, the status, and the samples of the schedule."""

    at: float
    seconds: float
    status: int
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scraper:
    """Scrapes ``/metrics`` every ``period`` seconds over a new connection, as a strict Prometheus."""

    def __init__(self, base: str, headers: dict[str, str] | None = None, period: float = 0.5) -> None:
        self.base = base
        # A new connection for every scrape: each must win a place among the attackers'.
        self.client = httpx.Client(
            headers={**(headers or {}), "Connection": "close"}, timeout=2, trust_env=False
        )
        self.period = period
        self.scrapes: list[Scrape] = []
        self.failures: list[str] = []

    def scrape(self) -> Scrape | None:
        """One scrape (recorded); ``None`` when it got no answer within 2 s."""
        start = time.monotonic()
        try:
            response = self.client.get(self.base + "/metrics")
        except httpx.HTTPError as exc:
            self.failures.append(f"{time.monotonic() - start:.2f}s: {type(exc).__name__}: {exc}")
            return None
        samples = {}
        if response.status_code == 200:
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(response.text)
                for s in family.samples
            }
        scrape = Scrape(start, time.monotonic() - start, response.status_code, samples)
        self.scrapes.append(scrape)
        return scrape

    def summary(self) -> str:
        """The scrapes in one line: how many answered, median and slowest."""
        times = sorted(s.seconds for s in self.scrapes)
        ok = sum(s.status == 200 for s in self.scrapes)
        median = times[len(times) // 2] if times else 0.0
        return (
            f"{ok} of {len(self.scrapes) + len(self.failures)} scrapes answered 200, "
            f"median {median * 1000:.1f} ms, slowest {max(times, default=0) * 1000:.1f} ms"
        )

    def run(self, seconds: float) -> list[Scrape]:
        """Scrape every period for ``seconds``; the scrapes of this run."""
        first = len(self.scrapes)
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while next_at < end:
            self.scrape()
            next_at += self.period
            time.sleep(max(0.0, next_at - time.monotonic()))
        return self.scrapes[first:]


@dataclass
class Schedule:
    """The probing schedule as a run of scrapes saw it, per target."""

    gaps: dict[str, list[float]]
    durations: dict[str, list[float]]
    lag: float

    @classmethod
    def of(cls, scrapes: list[Scrape], targets: list[str]) -> Schedule:
        """Gaps between the cycles' end times, their durations, and the last loop lag seen."""
        gaps: dict[str, list[float]] = {}
        durations: dict[str, list[float]] = {}
        answered = [s.samples for s in scrapes if s.samples]
        for name in targets:
            label = (("target", name),)
            ends = sorted({samples[("probe_last_cycle_timestamp_seconds", label)] for samples in answered})
            gaps[name] = [round(b - a, 3) for a, b in itertools.pairwise(ends)]
            durations[name] = sorted({samples[("probe_duration_seconds", label)] for samples in answered})
        lags = [s.samples.get(("probe_event_loop_lag_seconds", ()), 0.0) for s in scrapes if s.samples]
        return cls(gaps, durations, lags[-1] if lags else 0.0)

    def summary(self) -> str:
        """The schedule in one line, for the run's output (``pytest -s``) and the docs' figures."""
        gaps = [g for values in self.gaps.values() for g in values]
        durations = [d for values in self.durations.values() for d in values]
        return (
            f"cycles {min(gaps, default=0):.2f}-{max(gaps, default=0):.2f} s apart, "
            f"took {min(durations, default=0) * 1000:.0f}-{max(durations, default=0) * 1000:.0f} ms, "
            f"loop lag {self.lag * 1000:.0f} ms"
        )

    def kept(self, interval: float, slack: float, longest_cycle: float, most_lag: float) -> list[str]:
        """What broke the schedule (empty when it kept its interval)."""
        problems = []
        for name, gaps in self.gaps.items():
            if len(gaps) < 2:
                problems.append(f"{name}: {len(gaps) + 1} cycles seen")
            late = [g for g in gaps if abs(g - interval) > slack]
            if late:
                problems.append(f"{name}: cycles {late} s apart, not {interval} s")
            slow = [d for d in self.durations[name] if d > longest_cycle]
            if slow:
                problems.append(f"{name}: cycles took {slow} s")
        if self.lag > most_lag:
            problems.append(f"event loop lag {self.lag} s")
        return problems


if __name__ == "__main__":
    _child()
