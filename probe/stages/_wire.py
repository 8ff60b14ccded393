"""What probe's HTTP/1.1 and HTTP/2 exchanges share: reads and writes, errors, the response head.

The exchanges (:mod:`probe.stages._http11`, :mod:`probe.stages._http2`) drive the sans-IO
``h11`` and ``h2`` libraries over one :class:`probe.stages._sockets.Connection`; the
transport (:mod:`probe.stages._transport`) hands their responses to httpx.

Every error they raise is an httpx exception whose message probe wrote (never a library's
message or repr): ``httpx.ReadTimeout`` / ``httpx.WriteTimeout`` when a read or write
bound passed, ``httpx.ReadError`` / ``httpx.WriteError`` raised ``from`` the socket's
``OSError`` or ``ssl.SSLError`` (so that classifiers find a TLS alert along the chain),
and the subclasses of ``httpx.RemoteProtocolError`` below for what the server sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from probe.stages import _sockets as netio

#: Bytes asked of the socket per read (as httpcore's 64 KiB).
READ_BYTES = 64 * 1024

#: Called with a phase event's name and, for the connection events, the connection whose
#: reads note when they returned (``read_at``). The names are those :mod:`probe.stages.http`
#: reads: ``connection.connect_tcp.started`` / ``.complete``, ``connection.start_tls.started``
#: / ``.complete``, ``http.send_connection_init.started`` (HTTP/2), ``http.send_request_headers
#: .started``, ``http.receive_remote_settings.complete`` (HTTP/2) and
#: ``http.receive_response_headers.complete``.
Trace = Callable[[str, "netio.Connection | None"], None]


def no_trace(name: str, connection: netio.Connection | None = None) -> None:
    """The trace of a request that asked for none."""


#: RFC 9113 §7's names of the HTTP/2 error codes.
H2_ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}


def h2_error_name(code: int) -> str:
    """An HTTP/2 error code in words: ``"ENHANCE_YOUR_CALM (0xb)"``; unknown codes by number."""
    name = H2_ERROR_NAMES.get(int(code))
    return f"{name} (0x{int(code):x})" if name else f"unknown error code 0x{int(code):x}"


class StreamRefused(httpx.RemoteProtocolError):
    """The server refused the request before processing it (RFC 9113 §8.7): safe to retry.

    Args:
        how: what refused it, in words (``"RST_STREAM REFUSED_STREAM (0x7)"``, ``"GOAWAY
            NO_ERROR (0x0) with last_stream_id 0"``).
    """

    def __init__(self, how: str) -> None:
        super().__init__(f"the server refused the request's stream ({how})")
        self.how = how


class StreamError(httpx.RemoteProtocolError):
    """The server ended the request's HTTP/2 stream or connection with an error code.

    The message is probe's sentence, e.g. "the server reset the stream with CANCEL (0x8)
    after 1024 bytes of the body".
    """


class ProtocolViolation(httpx.RemoteProtocolError):
    """What the server sent is not valid HTTP/1.1 or HTTP/2; the message says what, in probe's words."""


@dataclass(slots=True)
class GoAway:
    """A GOAWAY the server sent: its error code and the highest stream it may have processed."""

    code: int
    last_stream_id: int

    def words(self) -> str:
        """``"GOAWAY NO_ERROR (0x0) with last_stream_id 1"``."""
        return f"GOAWAY {h2_error_name(self.code)} with last_stream_id {self.last_stream_id}"


@dataclass(slots=True)
class Notes:
    """What a response said besides its head and body; filled while its body is read.

    Attributes:
        trailers: the HTTP/2 trailers (a HEADERS frame after the body), lower-case names,
            ``None`` when none came.
        goaway_error: a GOAWAY with an error code that let the response complete (its
            stream was at or below ``last_stream_id``), ``None`` without one.
    """

    trailers: list[tuple[bytes, bytes]] | None = None
    goaway_error: GoAway | None = None


@dataclass(slots=True)
class Head:
    """A response's status line and headers, as an exchange received them."""

    status: int
    headers: list[tuple[bytes, bytes]]
    http_version: bytes
    reason: bytes = b""
    notes: Notes = field(default_factory=Notes)


async def read(connection: netio.Connection, timeout: float | None) -> bytes:
    """One read of up to :data:`READ_BYTES`; ``b""`` at the end of the stream.

    Raises:
        httpx.ReadTimeout: nothing within ``timeout`` seconds.
        httpx.ReadError: the connection failed (a TLS alert, a reset), from the cause.
    """
    try:
        return await connection.recv(READ_BYTES, connection.deadline(timeout))
    except TimeoutError as exc:
        raise httpx.ReadTimeout("no data within the read timeout") from exc
    except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
        raise httpx.ReadError("the connection failed while reading") from exc


async def write(connection: netio.Connection, data: bytes, timeout: float | None) -> None:
    """Write all of ``data``.

    Raises:
        httpx.WriteTimeout: not sent within ``timeout`` seconds.
        httpx.WriteError: the connection failed or is closed, from the cause.
    """
    if not data:
        return
    try:
        await connection.send(data, connection.deadline(timeout))
    except TimeoutError as exc:
        raise httpx.WriteTimeout("not sent within the write timeout") from exc
    except (OSError, EOFError, ValueError) as exc:  # ValueError: a closed SSLSocket
        raise httpx.WriteError("the connection failed while writing") from exc


_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")


def excerpt(data: bytes, limit: int = 40) -> str:
    """The start of what a server sent, printable: other bytes as ``.``, cut with ``…``."""
    shown = _UNPRINTABLE.sub(b".", data[:limit]).decode("ascii")
    return shown + ("…" if len(data) > limit else "")
