"""Loopback servers for the lab: identifying HTTP backends and TLS "load-balancer nodes".

A :class:`TlsNode` terminates TLS like an ALB node and relays each connection to the next
backend, round-robin (the lab balances per connection; probe opens a new connection per
request by default, so that is per request too). A node can instead run a custom handler
to play a broken or hostile server, pin clients with a stickiness cookie as an ALB target
group with stickiness does, or speak HTTP/2 (:func:`http2_responder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class _Server:
    """A TCP server with its own accept loop; each connection is one task that closes it.

    asyncio's ``start_server`` on Python 3.11 can leave an accepted socket open when the
    server closes during an accept (``Server._attach`` fails); owning the accept loop
    avoids that, and every socket is closed by this class, never by the garbage collector.
    """

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[socket.socket] = set()
        self.connections = 0

    async def start(self) -> None:
        """Start listening (``port`` 0 becomes the port chosen)."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.address, self.port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept_ready, listener)

    def _accept_ready(self, listener: socket.socket) -> None:
        # Accept synchronously, so an accepted socket is never lost in a cancelled future.
        for _ in range(64):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setblocking(False)
            # asyncio sets TCP_NODELAY only when the socket's proto is IPPROTO_TCP, which an
            # accept()ed socket does not report; without it Nagle and delayed ACKs add 40 ms.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self._sockets.add(conn)
            task = asyncio.create_task(self._connection(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, conn: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            await self.handle(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError, EOFError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            if writer is not None:
                writer.transport.abort()
            conn.close()
            self._sockets.discard(conn)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and end open connections."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        for conn in list(self._sockets):
            conn.close()
        self._sockets.clear()


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
        """Answer requests until the client closes or asks to close."""
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


class TlsBackend(Backend):
    """A backend that serves HTTPS itself, as an instance behind an ALB with HTTPS targets.

    Usually with a self-signed certificate (``probe.lab.pki.issue(name)``), which the
    load balancer does not verify. A :class:`TlsNode` relaying to it speaks TLS to it
    without verification, as an ALB does.

    Args:
        name: the backend's name (``X-Backend`` and the body).
        address: loopback address to listen on.
        port: port (0 picks one).
        cert_file: PEM certificate (chain) to send.
        key_file: PEM private key.
        status: status code of every response.
    """

    def __init__(
        self, name: str, address: str, port: int, cert_file: Path, key_file: Path, status: int = 200
    ) -> None:
        super().__init__(name, address, port, status)
        self.cert_file = cert_file
        self.key_file = key_file
        self.handshakes = 0

    async def start(self) -> None:
        """Load the certificate, then listen."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        self._context = context
        await super().start()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Terminate TLS, then answer as the plain backend does."""
        tls = _ServerTls(reader, writer, self._context)
        await asyncio.wait_for(tls.handshake(), 10)
        self.handshakes += 1
        app_reader = asyncio.StreamReader()
        pump = asyncio.create_task(tls.pump(app_reader))
        try:
            await super().handle(app_reader, tls)  # type: ignore[arg-type]
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


def _upstream_tls() -> ssl.SSLContext:
    """TLS to a backend as an ALB speaks it: no certificate or name verification."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _open_upstream(backend: Backend) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a backend, over TLS without verification when it is a :class:`TlsBackend`."""
    if isinstance(backend, TlsBackend):
        return await asyncio.wait_for(
            asyncio.open_connection(backend.address, backend.port, ssl=_upstream_tls(), server_hostname=""),
            5,
        )
    return await asyncio.wait_for(asyncio.open_connection(backend.address, backend.port), 5)


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
        client_ca: require a client certificate issued by this CA (PEM file).
        post_handshake_auth: with ``client_ca``, ask for it only after the handshake, when
            the handler calls ``verify_client_post_handshake()`` on the connection's
            ``ssl_object`` (TLS 1.3; Apache's client authentication per location).
        alpn: the ALPN protocols the node accepts, in its order of preference (a client
            offering none of them gets no protocol selected).
        sticky_cookie: like an ALB target group with stickiness: every response sets
            this cookie (and ``<name>CORS``) to the backend's name, and a request carrying
            it goes to that backend; one without it goes round-robin.
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
        client_ca: Path | None = None,
        alpn: Sequence[str] = ("http/1.1",),
        sticky_cookie: str | None = None,
        post_handshake_auth: bool = False,
    ) -> None:
        super().__init__(address, port)
        self.post_handshake_auth = post_handshake_auth
        self.alpn = list(alpn)
        self.sticky_cookie = sticky_cookie
        self.client_ca = client_ca
        self.cert_file = cert_file
        self.key_file = key_file
        self.backends = list(backends)
        self.handler = handler
        self.min_version = min_version
        self.max_version = max_version
        self.tls = tls
        self.sni_names: list[str | None] = []
        self.alpn_selected: list[str | None] = []
        self._next = itertools.cycle(range(max(len(self.backends), 1)))

    def ssl_context(self) -> ssl.SSLContext:
        """The server-side TLS context of this node."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.min_version or self.max_version in ("1.0", "1.1"):
            # OpenSSL 3 refuses TLS < 1.2 at the default security level.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
            if self.min_version:
                context.minimum_version = _TLS_VERSIONS[self.min_version]
            if self.max_version:
                context.maximum_version = _TLS_VERSIONS[self.max_version]
        assert self.cert_file is not None and self.key_file is not None
        context.load_cert_chain(self.cert_file, self.key_file)
        context.set_alpn_protocols(self.alpn)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.client_ca)
            context.post_handshake_auth = self.post_handshake_auth

        def record_sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.sni_names.append(name)

        context.sni_callback = record_sni
        return context

    async def start(self) -> None:
        """Start listening."""
        self._context = self.ssl_context() if self.tls else None
        await super().start()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Terminate TLS, then run the handler or relay to the next backend."""
        if self._context is None:
            await self._serve(reader, writer)
            return
        tls = _ServerTls(reader, writer, self._context)
        await asyncio.wait_for(tls.handshake(), 10)
        self.alpn_selected.append(tls.selected_alpn_protocol())
        app_reader = asyncio.StreamReader()
        pump = asyncio.create_task(tls.pump(app_reader))
        try:
            await self._serve(app_reader, tls)  # type: ignore[arg-type]
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.handler is not None:
            await self.handler(reader, writer)
            return
        if not self.backends:
            return
        if self.sticky_cookie is not None:
            await self._serve_sticky(reader, writer, self.sticky_cookie)
            return
        backend = self.backends[next(self._next)]
        try:
            upstream_reader, upstream_writer = await _open_upstream(backend)
        except (OSError, TimeoutError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        try:
            await _splice(reader, writer, upstream_reader, upstream_writer)
        finally:
            upstream_writer.close()

    async def _serve_sticky(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cookie: str
    ) -> None:
        """Route one request by its stickiness cookie and set the cookie on the response."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        backend = None
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() != "cookie":
                continue
            for pair in value.split(";"):
                key, _, chosen = pair.strip().partition("=")
                if key == cookie:
                    backend = next((b for b in self.backends if b.name == chosen), None)
        if backend is None:
            backend = self.backends[next(self._next)]
        upstream_reader, upstream_writer = await asyncio.wait_for(
            asyncio.open_connection(backend.address, backend.port), 5
        )
        try:
            upstream_writer.write(head)
            await upstream_writer.drain()
            response_head = await asyncio.wait_for(upstream_reader.readuntil(b"\r\n\r\n"), 10)
            status_line, _, rest = response_head.partition(b"\r\n")
            cookies = (
                f"Set-Cookie: {cookie}={backend.name}; Path=/\r\n"
                f"Set-Cookie: {cookie}CORS={backend.name}; Path=/; SameSite=None; Secure\r\n"
            ).encode()
            writer.write(status_line + b"\r\n" + cookies + rest)
            await writer.drain()
            await _splice(reader, writer, upstream_reader, upstream_writer)
        finally:
            upstream_writer.close()


def http2_responder(names: Sequence[str]) -> Handler:
    """A node handler that speaks HTTP/2 (the ``h2`` package) and answers every request itself.

    Each request (stream) is answered by the next name, round-robin, as a backend would:
    ``x-backend: NAME`` and the body ``served by NAME``. Use it on a node whose ``alpn``
    is ``("h2",)``; a client that speaks anything but HTTP/2 gets a GOAWAY.
    """
    turn = itertools.cycle(names)

    def answer() -> tuple[list[tuple[str, str]], bytes]:
        name = next(turn)
        body = f"served by {name}\n".encode()
        headers = [
            (":status", "200"),
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("x-backend", name),
        ]
        return headers, body

    return http2_handler(answer)


def http2_handler(answer: Callable[[], tuple[list[tuple[str, str]], bytes]]) -> Handler:
    """A node handler that speaks HTTP/2 (the ``h2`` package): each stream gets ``answer()``.

    ``answer()`` gives the response's header fields (``:status`` first, lower-case names)
    and its body (empty: the HEADERS frame ends the stream). Use it on a node whose
    ``alpn`` is ``("h2",)``; a client that speaks anything but HTTP/2 gets a GOAWAY.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        await writer.drain()
        while data := await asyncio.wait_for(reader.read(65536), 30):
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                writer.write(conn.data_to_send())
                await writer.drain()
                return
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    headers, body = answer()
                    conn.send_headers(event.stream_id, headers, end_stream=not body)
                    if body:
                        conn.send_data(event.stream_id, body, end_stream=True)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
            writer.write(conn.data_to_send())
            await writer.drain()

    return handle


class _ServerTls:
    """Server-side TLS over memory BIOs, run inside the connection's own task.

    asyncio's own TLS server leaves sockets of some failed handshakes open (Python 3.11);
    here one task owns the connection from accept to close. Offers the ``StreamWriter``
    methods the lab's handlers use (``write``, ``drain``, ``close``, ``get_extra_info``).
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.transport = writer.transport

    async def _pull(self) -> bool:
        data = await self._reader.read(65536)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    def _push(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)

    async def handshake(self) -> None:
        """Complete the handshake; raises ``ssl.SSLError`` or ``ConnectionError``."""
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._push()
                await self._writer.drain()
                if not await self._pull():
                    raise ConnectionResetError("EOF during the TLS handshake") from None
                continue
            except ssl.SSLError:
                self._push()  # the alert
                raise
            self._push()
            await self._writer.drain()
            return

    async def pump(self, app_reader: asyncio.StreamReader) -> None:
        """Decrypt into ``app_reader`` until EOF."""
        try:
            while True:
                try:
                    data = self._ssl.read(65536)
                except ssl.SSLWantReadError:
                    self._push()
                    if not await self._pull():
                        return
                    continue
                except ssl.SSLZeroReturnError:
                    return
                if not data:
                    return
                app_reader.feed_data(data)
        except ssl.SSLError:
            self._push()  # the alert, as after a failed post-handshake authentication
        except ConnectionError:
            return
        finally:
            app_reader.feed_eof()

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol agreed in the handshake, ``None`` when none."""
        return self._ssl.selected_alpn_protocol()

    def write(self, data: bytes) -> None:
        """Encrypt and send ``data``."""
        self._ssl.write(data)
        self._push()

    async def drain(self) -> None:
        """Wait until the socket buffer drains."""
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection (without close_notify)."""
        self._writer.transport.abort()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._writer.is_closing()

    def get_extra_info(self, name: str, default: object = None) -> object:
        """``ssl_object`` for this connection, else the socket's info."""
        if name == "ssl_object":
            return self._ssl
        return self._writer.get_extra_info(name, default)


async def _splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until either side closes."""

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
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
