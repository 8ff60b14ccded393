"""One HTTP/1.1 connection of probe's transport: requests and responses over ``h11``.

As httpcore's HTTP/1.1 connection does it: the request head and body in one write (a
failed write is ignored, so that a server that answers early and closes is still read),
then the response head (1xx skipped, except 101), then the body as the server sends it.
Response heads are limited to 100 KiB, as httpcore's. After a complete exchange the
connection may carry another request (``reuse_connections``).

A response that is not HTTP/1.x is a :class:`~probe.stages._wire.ProtocolViolation` in
probe's words (h11's own messages carry Python reprs of the bytes received).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import h11
import httpx

from probe.stages import _sockets as netio
from probe.stages._wire import Head, ProtocolViolation, Trace, excerpt, read, write

#: The largest response head accepted (bytes), as httpcore's.
MAX_HEAD_BYTES = 100 * 1024

#: h11's message prefixes, in probe's words.
_H11_WORDS = (
    ("illegal status line", "the response does not start with an HTTP/1.x status line"),
    ("no response line", "the response does not start with an HTTP/1.x status line"),
    ("illegal header line", "a response header line is malformed"),
    ("illegal header name", "a response header name holds characters HTTP does not allow"),
    ("illegal header value", "a response header value holds characters HTTP does not allow"),
    ("continuation line", "a response header line is folded (obsolete line folding)"),
    ("bad content-length", "the Content-Length header is not a number"),
    ("conflicting content-length", "the response has two different Content-Length headers"),
    ("transfer-encoding", "the response's Transfer-Encoding is not one HTTP/1.1 allows"),
    ("receive buffer too long", f"the response head is larger than {MAX_HEAD_BYTES // 1024} KiB"),
    ("peer closed connection without", "the connection closed before the response was complete"),
    ("peer unexpectedly closed", "the connection closed before the response was complete"),
    ("illegal chunk header", "the chunked body is malformed"),
    ("malformed chunk footer", "the chunked body is malformed"),
)


def _words(exc: h11.ProtocolError, first_bytes: bytes) -> str:
    """What an h11 error says, in probe's words (never h11's message)."""
    message = str(exc).lower()
    for prefix, words in _H11_WORDS:
        if message.startswith(prefix):
            if "status line" in words and first_bytes:
                return f"{words} (it starts with '{excerpt(first_bytes)}')"
            return words
    return "the response is not valid HTTP/1.1"


class Http11Exchange:
    """Requests over one HTTP/1.1 connection, one at a time.

    Args:
        connection: the connection, TLS done (or plain TCP for ``http://``).
    """

    http2 = False

    def __init__(self, connection: netio.Connection) -> None:
        self.connection = connection
        self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._first = b""

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request (the last exchange completed)."""
        return (
            not self.connection.closed
            and self._h11.our_state is h11.IDLE
            and self._h11.their_state is h11.IDLE
            and not self.connection.readable()
        )

    async def send(self, request: httpx.Request, trace: Trace) -> Head:
        """Send ``request`` and read the response head.

        Raises:
            httpx.WriteTimeout, httpx.ReadTimeout, httpx.ReadError: as
                :func:`probe.stages._wire.read` and :func:`~probe.stages._wire.write`.
            ProtocolViolation: the response is not valid HTTP/1.1, or the server closed
                the connection without one.
        """
        timeouts = request.extensions.get("timeout", {})
        trace("http.send_request_headers.started", None)
        try:
            parts = [
                self._h11.send(
                    h11.Request(
                        method=request.method, target=request.url.raw_path, headers=request.headers.raw
                    )
                )
            ]
            parts += [self._h11.send(h11.Data(data=chunk)) async for chunk in _chunks(request)]
            parts.append(self._h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError("probe could not write the request as HTTP/1.1") from exc
        data = b"".join(part for part in parts if part)
        # As httpcore: a server may answer and close before it read the whole request.
        with contextlib.suppress(httpx.WriteError):
            await write(self.connection, data, timeouts.get("write"))
        read_timeout = timeouts.get("read")
        while True:
            event = await self._next(read_timeout)
            if isinstance(event, h11.Response) or (
                isinstance(event, h11.InformationalResponse) and event.status_code == 101
            ):
                break
        trace("http.receive_response_headers.complete", None)
        return Head(
            status=event.status_code,
            headers=list(event.headers.raw_items()),
            http_version=b"HTTP/" + event.http_version,
            reason=event.reason,
        )

    async def body(self, request: httpx.Request, head: Head) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, until its end.

        Raises:
            As :meth:`send`.
        """
        read_timeout = request.extensions.get("timeout", {}).get("read")
        while True:
            event = await self._next(read_timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                return

    def finish(self) -> None:
        """Make the connection ready for the next request, if the exchange completed."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()

    def close(self) -> None:
        """Close the connection at once."""
        self.connection.close()

    async def _next(self, timeout: float | None) -> object:
        """h11's next event, reading from the connection as needed."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolViolation(_words(exc, self._first)) from None
            if event is not h11.NEED_DATA:
                return event
            data = await read(self.connection, timeout)
            if not self._first:
                self._first = data[:64]
            if not data and self._h11.their_state is h11.SEND_RESPONSE:
                raise ProtocolViolation("the server closed the connection without sending a response")
            self._h11.receive_data(data)


async def _chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    """The request body's non-empty chunks."""
    async for chunk in request.stream:  # type: ignore[union-attr]
        if chunk:
            yield chunk
