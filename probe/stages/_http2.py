"""One HTTP/2 connection of probe's transport: requests and responses over ``h2``, as curl and Go do.

What RFC 9113 asks of a client, and what curl (nghttp2) and Go's transport do with it:

* **The server's preface.** Its first frame must be SETTINGS (§3.4); anything else is a
  protocol error, as curl's "unexpected data while we expected SETTINGS frame".
* **GOAWAY** (§6.8). A stream at or below the GOAWAY's ``last_stream_id`` may still
  complete, and is read to its end: a graceful GOAWAY (``NO_ERROR``, sent by nginx at
  ``keepalive_requests`` and by Envoy and Go servers while draining) changes nothing. A
  stream above it was not processed: :class:`~probe.stages._wire.StreamRefused`, safe to
  retry on a new connection (§8.7). A GOAWAY with an error code that lets the response
  complete is noted (:class:`~probe.stages._wire.Notes`); the connection closing before the
  response's end after one is a :class:`~probe.stages._wire.StreamError` naming the code.
  h2 itself stops reading frames after any GOAWAY (python-hyper/h2#1181), so probe's
  connection keeps h2's state machine open (:class:`_OpenAfterGoaway`); probe never opens
  a stream on a connection after a GOAWAY.
* **RST_STREAM.** ``REFUSED_STREAM`` before the response headers means the request was not
  processed: :class:`~probe.stages._wire.StreamRefused`. Any other reset before the end of
  the response is a :class:`~probe.stages._wire.StreamError` naming the code.
* **Trailers** (a HEADERS frame after the body) are kept: gRPC puts its status there.

Settings as httpcore's, but ``MAX_CONCURRENT_STREAMS`` 1 (it limits the streams the server
may open, none with push off). The client preface and the request's HEADERS go out in one
write. Errors are httpx exceptions in probe's words (:mod:`probe.stages._wire`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import httpx
import hyperframe.exceptions

from probe.stages import _sockets as netio
from probe.stages._wire import (
    READ_BYTES,
    GoAway,
    Head,
    ProtocolViolation,
    StreamError,
    StreamRefused,
    Trace,
    h2_error_name,
    no_trace,
    read,
    write,
)

_REFUSED_STREAM = 0x7
_NO_ERROR = 0x0
# As httpcore: the server's header fields are not validated beyond what HPACK needs.
_CONFIG = h2.config.H2Configuration(client_side=True, validate_inbound_headers=False)
_SETTINGS = {
    h2.settings.SettingCodes.ENABLE_PUSH: 0,
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
}
#: The flow-control window the client adds to the connection and to each stream (as httpcore).
WINDOW = 2**24


class _OpenAfterGoaway(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a GOAWAY received leaves it open.

    h2 moves to CLOSED on any GOAWAY and then refuses every later frame, so the rest of a
    response that RFC 9113 §6.8 lets complete could not be read (python-hyper/h2#1181).
    Every other transition is h2's.
    """

    def process_input(self, input_: h2.connection.ConnectionInputs) -> list[h2.events.Event]:
        if (
            input_ is h2.connection.ConnectionInputs.RECV_GOAWAY
            and self.state is not h2.connection.ConnectionState.CLOSED
        ):
            return []
        return super().process_input(input_)


def new_state() -> h2.connection.H2Connection:
    """A client-side h2 connection that keeps reading after a GOAWAY (see :class:`_OpenAfterGoaway`)."""
    state = h2.connection.H2Connection(config=_CONFIG)
    state.state_machine = _OpenAfterGoaway()
    return state


class _Stream:
    """What arrived on the request's stream so far."""

    __slots__ = ("chunks", "ended", "head", "id", "received", "reset", "reset_here")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.head: Head | None = None
        self.chunks: list[bytes] = []
        self.received = 0
        self.ended = False
        self.reset: int | None = None
        self.reset_here = False  # h2 reset it for what the server sent, not the server


class Http2Exchange:
    """Requests over one HTTP/2 connection, one stream at a time.

    Args:
        connection: the connection, its TLS handshake done (``h2`` selected in ALPN).
    """

    http2 = True

    def __init__(self, connection: netio.Connection) -> None:
        self.connection = connection
        self.goaway: GoAway | None = None
        self._h2 = new_state()
        self._initiated = False
        self._settings_seen = False
        self._eof = False
        self._failed = False
        self._stream: _Stream | None = None
        self._trace: Trace = no_trace
        self._timeouts: dict[str, Any] = {}

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request: the last one completed, no GOAWAY."""
        stream = self._stream
        return (
            not (self.connection.closed or self._eof or self._failed)
            and self.goaway is None
            and (stream is None or stream.ended)
            and not self.connection.readable()
        )

    async def send(self, request: httpx.Request, trace: Trace) -> Head:
        """Send ``request`` on a new stream and read the response head.

        Raises:
            httpx.WriteTimeout, httpx.WriteError, httpx.ReadTimeout, httpx.ReadError: as
                :func:`probe.stages._wire.read` and :func:`~probe.stages._wire.write`.
            StreamRefused: the server refused the stream before processing it.
            StreamError: the server reset the stream, or closed the connection after a
                GOAWAY with an error code, before the response head.
            ProtocolViolation: the server broke HTTP/2, or closed the connection without
                a response.
        """
        self._trace = trace
        self._timeouts = request.extensions.get("timeout", {})
        body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        if not self._initiated:
            trace("http.send_connection_init.started", None)
            self._initiate()
            # The server's SETTINGS usually arrived during the handshake: taken now, their
            # acknowledgement goes out with the preface and the request in one write.
            self._take_all(_received_now(self.connection))
        if self.goaway is not None:
            # No stream may be opened after a GOAWAY (RFC 9113 §6.8): not sent, not processed.
            raise StreamRefused(f"{self.goaway.words()}, before the request was sent")
        try:
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, _request_headers(request), end_stream=not body)
            self._h2.increment_flow_control_window(WINDOW, stream_id=stream_id)
        except h2.exceptions.H2Error as exc:
            raise httpx.LocalProtocolError("probe could not write the request as HTTP/2") from exc
        stream = self._stream = _Stream(stream_id)
        trace("http.send_request_headers.started", None)
        await self._send_body(stream, body)
        while stream.head is None:
            self._check_head(stream)
            await self._pump()
        trace("http.receive_response_headers.complete", None)
        return stream.head

    async def body(self, request: httpx.Request, head: Head) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, until the stream ends; trailers go to ``head.notes``.

        Raises:
            As :meth:`send`, but never :class:`StreamRefused`.
        """
        stream = self._stream
        assert stream is not None
        while True:
            while stream.chunks:
                yield stream.chunks.pop(0)
            if stream.ended:
                goaway = self.goaway
                if goaway is not None and goaway.code != _NO_ERROR:
                    head.notes.goaway_error = goaway
                return
            self._check_body(stream)
            await self._pump()

    def finish(self) -> None:
        """Nothing to do: a stream that ended leaves the connection ready for the next one."""

    def close(self) -> None:
        """Close the connection at once (no GOAWAY: the connection is abandoned, as probe's TLS close)."""
        self.connection.close()

    def _initiate(self) -> None:
        """Queue the client preface: the connection preface, SETTINGS, a larger window."""
        state = self._h2
        state.local_settings = h2.settings.Settings(client=True, initial_values=_SETTINGS)
        # As httpcore: some servers balk at this setting in the first SETTINGS frame.
        del state.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        state.initiate_connection()
        state.increment_flow_control_window(WINDOW)
        self._initiated = True

    async def _send_body(self, stream: _Stream, body: bytes) -> None:
        """Write the queued frames and the body as the flow-control window allows, its end included.

        What fits in the window goes out with the preface and the HEADERS in one write (a
        gRPC request's few bytes always do). A failed write ends the sending but not the
        exchange: the server may have answered (or refused the stream) before it closed,
        and the reads say so.
        """
        state = self._h2
        sent = 0
        try:
            while True:
                while sent < len(body):
                    window = min(state.local_flow_control_window(stream.id), state.max_outbound_frame_size)
                    if window <= 0:
                        break
                    piece = body[sent : sent + window]
                    sent += len(piece)
                    state.send_data(stream.id, piece, end_stream=sent >= len(body))
                await write(self.connection, state.data_to_send(), self._timeouts.get("write"))
                if sent >= len(body):
                    return
                self._check_head(stream)
                await self._pump()  # until the server opens the window
        except httpx.WriteError:
            self._failed = True
        except h2.exceptions.H2Error:
            self._failed = True  # the stream was reset meanwhile; the reads say why

    async def _pump(self) -> None:
        """Read once, take the events, and answer what h2 answers (SETTINGS and PING acks, windows)."""
        self._take_all(await read(self.connection, self._timeouts.get("read")))
        pending = self._h2.data_to_send()
        if pending:
            try:
                await write(self.connection, pending, self._timeouts.get("write"))
            except (httpx.WriteError, httpx.WriteTimeout):
                # The next read says what happened to the connection; a response already
                # complete stays complete.
                self._failed = True

    def _take_all(self, data: bytes | None) -> None:
        """Feed what was read to h2 and take its events (nothing for ``None``, the end for ``b""``).

        Raises:
            ProtocolViolation: the server broke HTTP/2.
        """
        if data is None:
            return
        if not data:
            self._eof = True
            return
        try:
            events = self._h2.receive_data(data)
        except (h2.exceptions.H2Error, hyperframe.exceptions.HyperframeError, hpack.HPACKError) as exc:
            self._failed = True
            raise ProtocolViolation(f"the server broke the HTTP/2 protocol: {_h2_words(exc)}") from None
        for event in events:
            self._take(event)

    def _take(self, event: h2.events.Event) -> None:
        """Note one event: the server's preface, a GOAWAY, or what arrived on the request's stream."""
        if not self._settings_seen:
            self._take_preface(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = GoAway(int(event.error_code or 0), int(event.last_stream_id or 0))
        elif self._stream is not None and getattr(event, "stream_id", None) == self._stream.id:
            self._take_stream(self._stream, event)

    def _take_preface(self, event: h2.events.Event) -> None:
        """The server's first frame, which must be SETTINGS (RFC 9113 §3.4)."""
        if not isinstance(event, h2.events.RemoteSettingsChanged):
            self._failed = True
            raise ProtocolViolation(
                "the server's first HTTP/2 frame was not SETTINGS, which must open every "
                "HTTP/2 server's side of a connection (RFC 9113 §3.4)"
            )
        self._settings_seen = True
        self._trace("http.receive_remote_settings.complete", None)

    def _take_stream(self, stream: _Stream, event: h2.events.Event) -> None:
        """What arrived on the request's stream: the head, data, trailers, its end or reset."""
        if isinstance(event, h2.events.ResponseReceived):
            stream.head = _head(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream.chunks.append(event.data or b"")
            stream.received += len(event.data or b"")
            self._h2.acknowledge_received_data(event.flow_controlled_length or 0, stream.id)
        elif isinstance(event, h2.events.TrailersReceived) and stream.head is not None:
            stream.head.notes.trailers = [(bytes(k), bytes(v)) for k, v in event.headers or []]
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = int(event.error_code or 0)
            stream.reset_here = not event.remote_reset

    def _check_head(self, stream: _Stream) -> None:
        """Raise what ended the stream before its response head, if anything did."""
        goaway = self.goaway
        _check_reset_here(stream)
        if stream.reset == _REFUSED_STREAM:
            raise StreamRefused(f"RST_STREAM {h2_error_name(_REFUSED_STREAM)}")
        if stream.reset is not None:
            raise StreamError(
                f"the server reset the stream with {h2_error_name(stream.reset)} before the response"
            )
        if goaway is not None and stream.id > goaway.last_stream_id:
            raise StreamRefused(goaway.words())
        if self._eof:
            if goaway is not None and goaway.code != _NO_ERROR:
                raise StreamError(
                    f"the server closed the connection after {goaway.words()} before the response"
                )
            after = f" (after {goaway.words()})" if goaway is not None else ""
            raise ProtocolViolation(f"the server closed the connection without sending a response{after}")

    def _check_body(self, stream: _Stream) -> None:
        """Raise what ended the stream before the end of its body, if anything did."""
        goaway = self.goaway
        _check_reset_here(stream)
        if stream.reset is not None:
            raise StreamError(
                f"the server reset the stream with {h2_error_name(stream.reset)} after "
                f"{stream.received} bytes of the body, before its end"
            )
        if self._eof:
            if goaway is not None and goaway.code != _NO_ERROR:
                raise StreamError(
                    f"the server closed the connection after {goaway.words()}, "
                    f"{stream.received} bytes into the body"
                )
            after = f" (after {goaway.words()})" if goaway is not None else ""
            raise ProtocolViolation(f"the connection closed before the response was complete{after}")


def _received_now(connection: netio.Connection) -> bytes | None:
    """What the connection already received, without waiting (``None`` when nothing).

    Raises:
        httpx.ReadError: the connection failed (a TLS alert, a reset), from the cause.
    """
    try:
        return connection.recv_now(READ_BYTES)
    except (OSError, EOFError) as exc:
        raise httpx.ReadError("the connection failed while reading") from exc


def _check_reset_here(stream: _Stream) -> None:
    """Raise when h2 reset the stream itself, for frames the server sent on it."""
    if stream.reset is not None and stream.reset_here:
        raise ProtocolViolation(
            f"the server sent frames on the request's stream that break RFC 9113; probe reset it "
            f"with {h2_error_name(stream.reset)}"
        )


def _request_headers(request: httpx.Request) -> list[tuple[bytes, bytes]]:
    """The request's header block: pseudo-headers from the URL and Host, then the fields, lower case."""
    raw = request.headers.raw
    authority = next((v for k, v in raw if k.lower() == b"host"), request.url.netloc)
    fields = [(k.lower(), v) for k, v in raw if k.lower() not in (b"host", b"transfer-encoding")]
    return [
        (b":method", request.method.encode("ascii")),
        (b":authority", authority),
        (b":scheme", request.url.raw_scheme),
        (b":path", request.url.raw_path),
        *fields,
    ]


def _head(headers: Any) -> Head:
    """The response head from a HEADERS block: ``:status`` and the other fields."""
    status: int | None = None
    fields = []
    for name, value in headers or []:
        if name == b":status":
            status = int(value) if value.isdigit() and len(value) == 3 else None
        elif not name.startswith(b":"):
            fields.append((bytes(name), bytes(value)))
    if status is None:
        raise ProtocolViolation("the response headers have no valid :status")
    return Head(status=status, headers=fields, http_version=b"HTTP/2")


#: What an h2 error means, most specific first.
_H2_WORDS: tuple[tuple[type[Exception], str], ...] = (
    (h2.exceptions.FrameTooLargeError, "a frame larger than the size probe allows (FRAME_SIZE_ERROR)"),
    (h2.exceptions.FrameDataMissingError, "a frame shorter than its header says (FRAME_SIZE_ERROR)"),
    (h2.exceptions.FlowControlError, "more data than the flow-control window allows (FLOW_CONTROL_ERROR)"),
    (h2.exceptions.InvalidBodyLengthError, "a body of another length than its content-length"),
    (h2.exceptions.DenialOfServiceError, "a header list larger than the 64 KiB probe announced"),
    (h2.exceptions.InvalidSettingsValueError, "a SETTINGS value out of its range"),
)


def _h2_words(exc: Exception) -> str:
    """What the server did wrong, in probe's words (never h2's message, which names its internals)."""
    for kind, words in _H2_WORDS:
        if isinstance(exc, kind):
            return words
    if isinstance(exc, hpack.HPACKError):
        return "a header block that does not decode (COMPRESSION_ERROR)"
    return "frames that RFC 9113 does not allow in this state (PROTOCOL_ERROR)"
