"""probe's httpx transport: HTTP/1.1 (``h11``) and HTTP/2 (``h2``) on probe's own sockets.

httpx stays the request and response API (the client, headers, URLs, cookies policy,
timeouts); this module is the transport under it (httpx's ``AsyncBaseTransport``), in
place of httpcore's. The HTTP stage owns what the transport does on the wire:

* **One handshake per address-probe.** The TLS stage's verified connection is handed to
  the first request (:func:`handed_over`): an address costs one TCP connect and one
  handshake. The protocol it selected in ALPN decides HTTP/1.1 or HTTP/2 for the request.
* **A new connection per request**, closed with its response, unless ``reuse_connections``
  keeps the last one for the next request (``keep_alive``).
* **HTTP/2 as curl and Go speak it** (:mod:`probe.stages._http2`): a graceful GOAWAY lets
  the response complete, a refused stream is :class:`~probe.stages._wire.StreamRefused`
  (the stage retries it once), trailers are kept.
* **Phase times** at Go's httptrace points: the request's ``probe_trace`` extension (a
  :data:`~probe.stages._wire.Trace`) hears each point, with the connection whose reads
  note when they returned.
* **Errors** are httpx's exceptions with probe's sentences; a connect or TLS failure is
  ``httpx.ConnectError`` / ``httpx.ConnectTimeout`` raised ``from`` the ``OSError`` or
  ``ssl.SSLError``, so the classifiers find the cause along the chain.

Connections are :class:`probe.stages._sockets.Connection`: a non-blocking socket, TLS by
``ssl.SSLSocket``, driven by the loop's ``add_reader``/``add_writer``.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Iterator

import httpx

from probe.stages import _sockets as netio
from probe.stages._http2 import Http2Exchange
from probe.stages._http11 import Http11Exchange
from probe.stages._wire import Head, Trace, no_trace

Exchange = Http11Exchange | Http2Exchange


class Offer:
    """A connection offered to the next request of one task to ``host``:``port``.

    Attributes:
        host: the address as the request URL spells it (an IP literal, no brackets).
        port: the TCP port.
        connection: the connection; ``None`` once a request took it.
        taken: whether a request took it.
    """

    __slots__ = ("connection", "host", "port", "taken")

    def __init__(self, host: str, port: int, connection: netio.Connection) -> None:
        self.host = host
        self.port = port
        self.connection: netio.Connection | None = connection
        self.taken = False

    def take(self, host: str, port: int) -> netio.Connection | None:
        """The connection, once, if it is for ``host``:``port``."""
        connection = self.connection
        if connection is None or host != self.host or port != self.port:
            return None
        self.connection, self.taken = None, True
        return connection


# What the next request of this task may take over (a holder, so that a copied context
# sees the same offer taken).
_OFFER: contextvars.ContextVar[Offer | None] = contextvars.ContextVar("probe_http_offer", default=None)


@contextlib.contextmanager
def handed_over(host: str, port: int, connection: netio.Connection) -> Iterator[Offer]:
    """Offer a verified TLS connection to the next request of this task to ``host``:``port``.

    The offer lasts for the ``with`` block; a connection still not taken at its end (a
    kept-alive connection served the request, or no request was sent) is closed then.

    Args:
        host: the address as the request URL spells it (an IP literal, no brackets).
        port: the TCP port.
        connection: the TLS stage's connection, its handshake done (or plain TCP for an
            ``http://`` target).

    Yields:
        The offer; ``offer.taken`` tells afterwards whether a request took it.
    """
    offer = Offer(host, port, connection)
    token = _OFFER.set(offer)
    try:
        yield offer
    finally:
        _OFFER.reset(token)
        if not offer.taken:
            offer.connection = None
            connection.close()


class ProbeTransport(httpx.AsyncBaseTransport):
    """Sends each request on a connection of its own (or the one kept alive), HTTP/1.1 or HTTP/2.

    Connect (or take the connection handed over, see :func:`handed_over`), TLS with the
    request's ``sni_hostname`` extension as SNI, then HTTP/2 when the server selected
    ``h2`` in ALPN (or when only HTTP/2 is allowed), else HTTP/1.1.

    Args:
        ssl_context: the context of the requests' handshakes (its ALPN list is pinned).
        http1: HTTP/1.1 allowed.
        http2: HTTP/2 allowed.
        keep_alive: keep the last connection open for the next request to the same
            origin (``reuse_connections``); without it every request gets a new one.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        http1: bool = True,
        http2: bool = False,
        keep_alive: bool = False,
    ) -> None:
        self._ssl_context = ssl_context
        self._http1 = http1
        self._http2 = http2
        self._keep_alive = keep_alive
        self._idle: tuple[tuple[str, str, int], Exchange] | None = None
        self._open: set[Exchange] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Connect, send ``request``, return its response; closing the response ends the exchange.

        Raises:
            httpx.ConnectTimeout, httpx.ConnectError: no connection or no handshake.
            httpx.TransportError: the exchange failed (see :mod:`probe.stages._wire`).
        """
        trace: Trace = request.extensions.get("probe_trace") or no_trace
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        exchange = self._kept(origin)
        if exchange is None:
            exchange = await self._connect(request, origin, trace)
        self._open.add(exchange)
        try:
            head = await exchange.send(request, trace)
        except BaseException:
            self._end(exchange, origin, reusable=False)
            raise
        extensions = {
            "http_version": head.http_version,
            "reason_phrase": head.reason,
            "probe_notes": head.notes,
        }
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_Body(self, exchange, origin, request, head),
            extensions=extensions,
        )

    async def aclose(self) -> None:
        """Close every connection still open."""
        for exchange in list(self._open):
            exchange.close()
        self._open.clear()
        if self._idle is not None:
            self._idle[1].close()
            self._idle = None

    def _kept(self, origin: tuple[str, str, int]) -> Exchange | None:
        """The connection kept alive for ``origin``, if it can carry another request."""
        idle, self._idle = self._idle, None
        if idle is None:
            return None
        if idle[0] == origin and idle[1].reusable:
            return idle[1]
        idle[1].close()
        return None

    def _end(self, exchange: Exchange, origin: tuple[str, str, int], *, reusable: bool) -> None:
        """An exchange is over: keep its connection for the next request, or close it."""
        self._open.discard(exchange)
        if reusable and self._keep_alive:
            exchange.finish()
            if exchange.reusable:
                if self._idle is not None:
                    self._idle[1].close()
                self._idle = (origin, exchange)
                return
        exchange.close()

    async def _connect(self, request: httpx.Request, origin: tuple[str, str, int], trace: Trace) -> Exchange:
        """A new exchange: the handed-over connection or a new one, TLS, and the protocol ALPN chose."""
        scheme, host, port = origin
        timeout = request.extensions.get("timeout", {}).get("connect")
        trace("connection.connect_tcp.started", None)
        offer = _OFFER.get()
        connection = offer.take(host, port) if offer is not None else None
        handed = connection is not None
        if connection is None:
            try:
                connection = await netio.connect(host, port, timeout)
            except TimeoutError as exc:
                raise httpx.ConnectTimeout("no TCP connection within the connect timeout") from exc
            except OSError as exc:
                raise httpx.ConnectError("the TCP connect failed") from exc
        trace("connection.connect_tcp.complete", connection)
        if scheme == "https":
            trace("connection.start_tls.started", None)
            if not handed:
                await _handshake(connection, self._ssl_context, request, host, timeout)
            trace("connection.start_tls.complete", connection)
        ssl_object = connection.ssl_object
        negotiated_h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
        if scheme == "https" and (negotiated_h2 or (self._http2 and not self._http1)):
            return Http2Exchange(connection)
        return Http11Exchange(connection)


async def _handshake(
    connection: netio.Connection,
    context: ssl.SSLContext,
    request: httpx.Request,
    host: str,
    timeout: float | None,
) -> None:
    """The TLS handshake of a new connection, SNI from the ``sni_hostname`` extension.

    Raises:
        httpx.ConnectTimeout: not complete within ``timeout`` seconds.
        httpx.ConnectError: it failed (from the ``ssl.SSLError`` or ``OSError``); the
            connection is closed then.
    """
    server_hostname = request.extensions.get("sni_hostname") or host
    try:
        await connection.handshake(context, server_hostname, connection.deadline(timeout))
    except TimeoutError as exc:
        raise httpx.ConnectTimeout("the TLS handshake did not complete within the connect timeout") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise httpx.ConnectError("the TLS handshake failed") from exc


def _default_port(scheme: str) -> int:
    return 80 if scheme == "http" else 443


class _Body(httpx.AsyncByteStream):
    """A response body; closing it ends the exchange (its connection kept alive or closed)."""

    def __init__(
        self,
        transport: ProbeTransport,
        exchange: Exchange,
        origin: tuple[str, str, int],
        request: httpx.Request,
        head: Head,
    ) -> None:
        self._transport = transport
        self._exchange = exchange
        self._origin = origin
        self._request = request
        self._head = head
        self._complete = False
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._exchange.body(self._request, self._head):
            yield chunk
        self._complete = True

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport._end(self._exchange, self._origin, reusable=self._complete)
