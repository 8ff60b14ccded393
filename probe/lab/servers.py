"""Loopback servers for the lab: identifying HTTP backends and TLS "load-balancer nodes".

A :class:`TlsNode` terminates TLS like an ALB node and relays each connection to the next
backend, round-robin (the lab balances per connection; probe opens a new connection per
request by default, so that is per request too). A node can instead run a custom handler
to play a broken or hostile server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class _Server:
    """Common start/stop of an asyncio TCP server that tracks its connection tasks."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def _listen(self, ssl_context: ssl.SSLContext | None = None) -> None:
        extra: dict[str, object] = {"ssl": ssl_context, "ssl_handshake_timeout": 10} if ssl_context else {}
        self._server = await asyncio.start_server(self._accept, self.address, self.port, **extra)  # type: ignore[arg-type]
        self.port = self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Start listening (``port`` 0 becomes the port chosen)."""
        await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handle(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping; asyncio's stream callback must not see the cancel
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and end open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


class Backend(_Server):
    """A plain HTTP/1.1 server that says who it is in ``X-Backend`` and in its body.

    Args:
        name: the backend's name (the value of ``X-Backend``; body ``served by NAME``).
        address: loopback address to listen on.
        port: port (0 picks one).
        status: status code of every response.
    """

    def __init__(self, name: str, address: str, port: int = 0, status: int = 200) -> None:
        super().__init__(address, port)
        self.name = name
        self.status = status
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            self.requests += 1
            close = b"connection: close" in head.lower()
            body = f"served by {self.name}\n".encode()
            writer.write(
                f"HTTP/1.1 {self.status} {_reason_phrase(self.status)}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"X-Backend: {self.name}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            if close:
                return


class TlsNode(_Server):
    """A TLS-terminating node that relays each connection to the next backend.

    Args:
        address: loopback address to listen on.
        port: port (0 picks one).
        cert_file: PEM file with the certificate chain to send.
        key_file: PEM private key.
        backends: backends to balance over, round-robin per connection.
        handler: instead of relaying, serve each TLS connection with this coroutine.
        min_version / max_version: TLS versions offered (``"1.2"``, ``"1.3"`` …).
        tls: ``False`` serves plain TCP (e.g. HTTP on the HTTPS port).
    """

    def __init__(
        self,
        address: str,
        port: int,
        cert_file: Path | None,
        key_file: Path | None,
        backends: Sequence[Backend] = (),
        handler: Handler | None = None,
        min_version: str | None = None,
        max_version: str | None = None,
        tls: bool = True,
    ) -> None:
        super().__init__(address, port)
        self.cert_file = cert_file
        self.key_file = key_file
        self.backends = list(backends)
        self.handler = handler
        self.min_version = min_version
        self.max_version = max_version
        self.tls = tls
        self._next = itertools.cycle(range(max(len(self.backends), 1)))

    def ssl_context(self) -> ssl.SSLContext:
        """The server-side TLS context of this node."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.min_version or self.max_version in ("1.0", "1.1"):
            # OpenSSL 3 refuses TLS < 1.2 at the default security level.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        if self.min_version:
            context.minimum_version = _TLS_VERSIONS[self.min_version]
        if self.max_version:
            context.maximum_version = _TLS_VERSIONS[self.max_version]
        assert self.cert_file is not None and self.key_file is not None
        context.load_cert_chain(self.cert_file, self.key_file)
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def start(self) -> None:
        """Start listening."""
        await self._listen(self.ssl_context() if self.tls else None)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.handler is not None:
            await self.handler(reader, writer)
            return
        if not self.backends:
            return
        backend = self.backends[next(self._next)]
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(backend.address, backend.port), 5
            )
        except (OSError, TimeoutError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        try:
            await _splice(reader, writer, upstream_reader, upstream_writer)
        finally:
            upstream_writer.close()


async def _splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until either side closes."""

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()

    tasks = [
        asyncio.create_task(pipe(client_reader, upstream_writer)),
        asyncio.create_task(pipe(upstream_reader, client_writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reason_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
