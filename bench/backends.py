"""The lab's backends as their own process, so their CPU is neither probe's nor the harness's.

``python -m bench.backends NAME=IP[:DELAY] ...`` starts one identifying HTTP/1.1 backend per
argument on a loopback address (port chosen by the kernel), prints one JSON line
``{"NAME": [IP, PORT], ...}`` once all listen, and serves until stdin closes or SIGTERM.
``DELAY`` (seconds) makes every response wait that long before its first byte (the slow
backend of the timing-fidelity figure).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import sys

from probe.lab.servers import Backend


class DelayedBackend(Backend):
    """A :class:`Backend` that waits ``delay`` seconds before answering each request.

    Args:
        name: the value of ``X-Backend``.
        address: loopback address to listen on.
        delay: seconds between the end of the request head and the response.
    """

    def __init__(self, name: str, address: str, delay: float) -> None:
        super().__init__(name, address)
        self.delay = delay

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests, each after the delay, until the client closes or asks to close."""
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            self.requests += 1
            await asyncio.sleep(self.delay)
            close = b"connection: close" in head.lower()
            body = f"served by {self.name}\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nX-Backend: {self.name}\r\n".encode()
                + f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            if close:
                return


def parse_spec(spec: str) -> tuple[str, str, float]:
    """``NAME=IP[:DELAY]`` → ``(name, ip, delay_seconds)``.

    Raises:
        ValueError: the spec has no ``=``, the address is not loopback, or the delay is not a
            number.
    """
    name, _, rest = spec.partition("=")
    if not name or not rest:
        raise ValueError(f"expected NAME=IP[:DELAY], got {spec!r}")
    address, _, delay = rest.partition(":")
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"backends listen on loopback only, not {address}")
    return name, address, float(delay) if delay else 0.0


async def _serve(specs: list[tuple[str, str, float]]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the harness closing our stdin means stop
    servers: list[Backend] = []
    for name, address, delay in specs:
        server = DelayedBackend(name, address, delay) if delay else Backend(name, address)
        await server.start()
        servers.append(server)
    print(json.dumps({s.name: [s.address, s.port] for s in servers}), flush=True)
    await stop.wait()
    for server in servers:
        await server.stop()


def main() -> None:
    """Start the backends named on the command line."""
    asyncio.run(_serve([parse_spec(arg) for arg in sys.argv[1:]]))


if __name__ == "__main__":
    main()
