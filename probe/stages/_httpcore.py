"""httpcore's network layer on non-blocking sockets, able to take over the TLS stage's connection.

httpx and httpcore stay probe's HTTP layer; this module only replaces the network backend
under httpcore's connection pool (``httpcore.AsyncNetworkBackend``), for two reasons:

* **One handshake per address-probe.** The TLS stage's verified connection is handed to
  the first HTTP request (:func:`handed_over`), so an address costs one TCP connect and
  one handshake, not two. ``connect_tcp`` returns that connection once, and
  ``start_tls`` on it returns it as it is: the TLS stage already verified it with an
  equivalent context (same trust anchors, same ALPN list), and the protocol it selected in
  ALPN decides HTTP/1.1 or HTTP/2 for the request, as httpcore reads it from the
  ``ssl_object``. Later requests get new connections as before.
* **Cheaper connections.** Connections are :class:`probe.stages._sockets.Connection`: a
  non-blocking socket, TLS by ``ssl.SSLSocket``, driven by the running loop's
  ``add_reader``/``add_writer`` — as the TLS stage's own. Neither anyio's ``TLSStream``
  (which hands ``wrap_bio`` to a worker thread for any ``SSLContext`` subclass, and
  probe's contexts pin their ALPN list) nor asyncio's streams over its Python TLS
  transport (``sslproto``, every record copied through memory BIOs). Each read notes when
  it returned (``read_at``), so the phases end at the reads that delivered the response.

:class:`NewConnectionPerRequest` replaces httpcore's connection pool where no connection
is kept alive (probe's default): httpcore's connection-level API, one connection per
request, closed with its response. A shared pool let one address's finished request close
another address's connection while its HTTP/2 preface was being sent (httpcore counts a
new HTTP/2 connection as idle until its first stream opens); the request then opened a
second TCP connection and handshake. Its HTTP/2 connections (:class:`Http2Connection`)
also skip httpcore's 99 semaphore round trips through the event loop per connection.

Exceptions are httpcore's, mapped as httpcore's anyio backend maps them (``ConnectError``,
``ConnectTimeout``, ``ReadError`` …), each raised ``from`` the original ``OSError`` or
``ssl.SSLError`` so that probe's classifiers find the cause along the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import h2.settings
import httpcore

from probe.stages import _sockets as netio


class Offer:
    """A connection offered to the next request of one task to ``host``:``port``.

    Attributes:
        host: the address as the request URL spells it (an IP literal, no brackets).
        port: the TCP port.
        stream: the connection; ``None`` once a request took it.
        taken: whether a request took it.
    """

    __slots__ = ("host", "port", "stream", "taken")

    def __init__(self, host: str, port: int, stream: SocketStream) -> None:
        self.host = host
        self.port = port
        self.stream: SocketStream | None = stream
        self.taken = False

    def take(self, host: str, port: int) -> SocketStream | None:
        """The stream, once, if it is for ``host``:``port``."""
        stream = self.stream
        if stream is None or host != self.host or port != self.port:
            return None
        self.stream, self.taken = None, True
        return stream


# What the next connect_tcp of this task may take over (a holder, so that a copied context
# sees the same offer taken).
_OFFER: contextvars.ContextVar[Offer | None] = contextvars.ContextVar("probe_http_offer", default=None)


class SocketStream(httpcore.AsyncNetworkStream):
    """An httpcore network stream over a :class:`probe.stages._sockets.Connection` (a non-blocking socket).

    Args:
        connection: the connection (TLS once ``start_tls`` ran).
        handed_over: the connection comes from the TLS stage, already verified:
            ``start_tls`` returns it unchanged.
    """

    __slots__ = ("connection", "handed_over")

    def __init__(self, connection: netio.Connection, *, handed_over: bool = False) -> None:
        self.connection = connection
        self.handed_over = handed_over

    @property
    def read_at(self) -> float | None:
        """When the latest read returned data or the end of the stream (``time.monotonic()``)."""
        return self.connection.read_at

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read up to ``max_bytes``; ``b""`` at the end of the stream.

        Raises:
            httpcore.ReadTimeout: nothing within ``timeout`` seconds.
            httpcore.ReadError: the connection failed (e.g. a TLS alert, a reset).
        """
        connection = self.connection
        try:
            return await connection.recv(max_bytes, connection.deadline(timeout))
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write all of ``buffer``.

        Raises:
            httpcore.WriteTimeout: not sent within ``timeout`` seconds.
            httpcore.WriteError: the connection failed or is closed.
        """
        if not buffer:
            return
        connection = self.connection
        try:
            await connection.send(buffer, connection.deadline(timeout))
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except (OSError, EOFError, ValueError) as exc:  # ValueError: a closed SSLSocket
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        """Close the connection at once (no TLS close_notify wait, as for an abandoned probe)."""
        self.connection.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Complete a TLS handshake over this connection (or nothing, for a handed-over one).

        Raises:
            httpcore.ConnectTimeout: the handshake did not complete within ``timeout`` seconds.
            httpcore.ConnectError: the handshake failed (``ssl.SSLError``, reset, EOF).
            The connection is closed then.
        """
        if self.handed_over:
            return self
        connection = self.connection
        try:
            await connection.handshake(ssl_context, server_hostname, connection.deadline(timeout))
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, EOFError, ValueError) as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        """``ssl_object``, ``client_addr``, ``server_addr``, ``socket`` or ``is_readable``."""
        connection = self.connection
        if info == "ssl_object":
            return connection.ssl_object
        if info == "is_readable":
            # An idle connection is readable only when the server closed it or sent junk.
            return connection.readable()
        if info == "socket":
            return connection.sock
        try:
            if info == "client_addr":
                return connection.sock.getsockname()
            if info == "server_addr":
                return connection.sock.getpeername()
        except OSError:
            return None
        return None


class SocketBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on :mod:`probe.stages._sockets`; takes over a handed-over connection."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """The connection handed over for ``host``:``port`` in this task, else a new one.

        Raises:
            httpcore.ConnectTimeout: no connection within ``timeout`` seconds.
            httpcore.ConnectError: the connection failed (refused, unreachable …).
        """
        offer = _OFFER.get()
        handed = offer.take(host, port) if offer is not None else None
        if handed is not None:
            return handed
        try:
            connection = await netio.connect(host, port, timeout, local_address)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        for option in socket_options or ():
            connection.sock.setsockopt(*option)
        return SocketStream(connection)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Not used by probe.

        Raises:
            httpcore.ConnectError: always.
        """
        raise httpcore.ConnectError("probe does not connect to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (httpcore's retry back-off; probe does not retry)."""
        await asyncio.sleep(seconds)


@contextlib.contextmanager
def handed_over(host: str, port: int, connection: netio.Connection) -> Iterator[Offer]:
    """Offer a verified TLS connection to the next request of this task to ``host``:``port``.

    The offer lasts for the ``with`` block; a connection still not taken at its end (the
    pool had a kept-alive connection, or no request was sent) is closed then.

    Args:
        host: the address as the request URL spells it (an IP literal, no brackets).
        port: the TCP port.
        connection: the TLS stage's connection, its handshake done (or plain TCP for an
            ``http://`` target).

    Yields:
        The offer; ``offer.taken`` tells afterwards whether a request took it.
    """
    offer = Offer(host, port, SocketStream(connection, handed_over=True))
    token = _OFFER.set(offer)
    try:
        yield offer
    finally:
        _OFFER.reset(token)
        if not offer.taken:
            offer.stream = None
            connection.close()


class _Lock:
    """An ``asyncio.Lock`` with the interface of httpcore's ``AsyncLock``.

    httpcore's lock goes through anyio, whose ``acquire`` always passes through the event
    loop (a cancellation checkpoint), even when the lock is free; an HTTP/2 request takes
    about 20 of them. This one is taken at once when free. The connections that use it
    serve one request of one task, so it is never contended anyway.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> _Lock:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()


def _own_locks(connection: object, *names: str) -> None:
    """Replace httpcore's locks of ``connection`` by :class:`_Lock` (those it has by these names)."""
    for name in names:
        if hasattr(connection, name):
            setattr(connection, name, _Lock())


class Http11Connection(httpcore.AsyncHTTP11Connection):
    """httpcore's HTTP/1.1 connection with locks that do not pass through the event loop when free."""

    def __init__(self, origin: httpcore.Origin, stream: httpcore.AsyncNetworkStream) -> None:
        super().__init__(origin=origin, stream=stream)
        _own_locks(self, "_state_lock")


class Http2Connection(httpcore.AsyncHTTP2Connection):
    """httpcore's HTTP/2 connection, announcing ``MAX_CONCURRENT_STREAMS`` 1 instead of 100.

    The setting limits the streams the *server* may open (RFC 9113 §6.5.2), which with
    push disabled is none at all, so the requests and responses are the same. httpcore
    sizes a semaphore from it and then takes all but one of its permits one by one, each
    a round trip through the event loop: 99 per connection at 100, the largest single CPU
    cost of an HTTP/2 request in a probe that opens one connection per request. Its locks
    are :class:`_Lock`.
    """

    def __init__(self, origin: httpcore.Origin, stream: httpcore.AsyncNetworkStream) -> None:
        super().__init__(origin=origin, stream=stream)
        _own_locks(self, "_init_lock", "_state_lock", "_read_lock", "_write_lock")

    async def _send_connection_init(self, request: httpcore.Request) -> None:
        """The client preface and SETTINGS: httpcore's, with ``MAX_CONCURRENT_STREAMS`` 1."""
        self._h2_state.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        # As httpcore: some servers balk at this setting in the first SETTINGS frame.
        del self._h2_state.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        self._h2_state.initiate_connection()
        self._h2_state.increment_flow_control_window(2**24)
        await self._write_outgoing_data(request)


async def _traced(request: httpcore.Request, name: str, info: dict[str, Any]) -> None:
    """Call the request's ``trace`` extension with ``connection.NAME`` (as httpcore names it)."""
    trace = request.extensions.get("trace")
    if trace is not None:
        await trace(f"connection.{name}", info)


class NewConnectionPerRequest:
    """Sends each request on a connection of its own, closed when its response is closed.

    What httpcore's pool does with no keep-alive, through httpcore's connection-level API
    (:class:`Http11Connection`, :class:`Http2Connection`), without a pool's shared state:
    connect (or take the connection handed over, see :func:`handed_over`), TLS with the
    request's ``sni_hostname``, then HTTP/2 when the server selected ``h2`` in ALPN (or
    when only HTTP/2 is allowed), else HTTP/1.1. The trace extension sees httpcore's
    ``connection.connect_tcp`` and ``connection.start_tls`` events.

    Args:
        ssl_context: the context of the requests' handshakes (its ALPN list is pinned).
        http1: HTTP/1.1 allowed.
        http2: HTTP/2 allowed.
        network_backend: makes the TCP connections.

    It has the two methods httpx's transport calls on its pool (``handle_async_request``
    and ``aclose``); :meth:`handle_async_request` raises httpcore's exceptions, as the
    pool does, which the transport maps to httpx's.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        http1: bool = True,
        http2: bool = False,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._http1 = http1
        self._http2 = http2
        self._backend = network_backend or SocketBackend()
        self._open: set[httpcore.AsyncConnectionInterface] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Connect, send ``request``, return its response; closing the response closes the connection."""
        stream = await self._connect(request)
        ssl_object = stream.get_extra_info("ssl_object")
        negotiated_h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        origin = request.url.origin
        connection: httpcore.AsyncConnectionInterface
        if negotiated_h2 or (self._http2 and not self._http1):
            connection = Http2Connection(origin=origin, stream=stream)
        else:
            connection = Http11Connection(origin=origin, stream=stream)
        self._open.add(connection)
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            await self._close(connection)
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ClosingStream(response, connection, self),
            extensions=response.extensions,
        )

    async def _connect(self, request: httpcore.Request) -> httpcore.AsyncNetworkStream:
        timeout = request.extensions.get("timeout", {}).get("connect")
        origin = request.url.origin
        host = origin.host.decode("ascii")
        info: dict[str, Any] = {"host": host, "port": origin.port, "timeout": timeout}
        stream = await _step(
            request, "connect_tcp", info, lambda: self._backend.connect_tcp(host, origin.port, timeout)
        )
        if origin.scheme != b"https":
            return stream
        server_hostname = request.extensions.get("sni_hostname") or host
        info = {"ssl_context": self._ssl_context, "server_hostname": server_hostname, "timeout": timeout}
        try:
            return await _step(
                request,
                "start_tls",
                info,
                lambda: stream.start_tls(self._ssl_context, server_hostname, timeout),
            )
        except BaseException:
            await stream.aclose()
            raise

    async def _close(self, connection: httpcore.AsyncConnectionInterface) -> None:
        self._open.discard(connection)
        await connection.aclose()

    async def aclose(self) -> None:
        """Close the connections of responses not closed yet."""
        for connection in list(self._open):
            await self._close(connection)


async def _step(
    request: httpcore.Request,
    name: str,
    info: dict[str, Any],
    step: Callable[[], Awaitable[httpcore.AsyncNetworkStream]],
) -> httpcore.AsyncNetworkStream:
    """Run one connection step between its ``started`` and ``complete``/``failed`` trace events."""
    await _traced(request, f"{name}.started", info)
    try:
        stream = await step()
    except BaseException as exc:
        await _traced(request, f"{name}.failed", {"exception": exc})
        raise
    await _traced(request, f"{name}.complete", {"return_value": stream})
    return stream


class _ClosingStream:
    """A response body that closes its connection when it is closed."""

    def __init__(
        self,
        response: httpcore.Response,
        connection: httpcore.AsyncConnectionInterface,
        owner: NewConnectionPerRequest,
    ) -> None:
        self._stream = response.stream
        self._connection = connection
        self._owner = owner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:  # type: ignore[union-attr]
            yield chunk

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            await self._owner._close(self._connection)
