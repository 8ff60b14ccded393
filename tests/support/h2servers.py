"""HTTP/2 servers on the ``h2`` library that do what real ones do when draining, refusing or failing.

Each function returns a node handler (``scene(handler=…, alpn=("h2",))``). The servers
answer like :func:`probe.lab.servers.http2_responder` (``x-backend`` and ``served by NAME``)
except for what their name says. GOAWAY frames are written with ``hyperframe`` directly,
because ``h2`` refuses to send anything after its own GOAWAY.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame, WindowUpdateFrame

from probe.lab.servers import Handler

#: ``on_request(server, stream_id, index)``: answer (or not) the index-th request of the node.
OnRequest = Callable[["H2Server", int, int], Awaitable[None]]

BODY_PARTS = (b"served by web-1\n", b"and more of the body\n")


class H2Server:
    """One server-side HTTP/2 connection: the h2 state and the stream to write to."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.writer = writer

    async def flush(self) -> None:
        """Write what h2 queued."""
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def raw(self, frame: bytes) -> None:
        """Write a frame h2 did not make (after what h2 queued)."""
        await self.flush()
        self.writer.write(frame)
        await self.writer.drain()

    async def goaway(self, code: int, last_stream_id: int) -> None:
        """Send GOAWAY(code, last_stream_id); h2's own state stays open for the streams it keeps."""
        await self.raw(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code).serialize())

    async def headers(self, stream_id: int, name: str = "web-1", **extra: str) -> None:
        """Send the response headers (200, ``x-backend: name``, no content-length)."""
        fields = [(":status", "200"), ("content-type", "text/plain"), ("x-backend", name)]
        fields += [(k.replace("_", "-"), v) for k, v in extra.items()]
        self.conn.send_headers(stream_id, fields)
        await self.flush()

    async def body(self, stream_id: int, *parts: bytes, end: bool = True) -> None:
        """Send the body in ``parts`` (one DATA frame each), ending the stream with the last."""
        for index, part in enumerate(parts):
            self.conn.send_data(stream_id, part, end_stream=end and index == len(parts) - 1)
            await self.flush()

    async def answer(self, stream_id: int, name: str = "web-1") -> None:
        """A whole response: headers and body."""
        await self.headers(stream_id, name)
        await self.body(stream_id, f"served by {name}\n".encode())

    async def reset(self, stream_id: int, code: int) -> None:
        """RST_STREAM(code)."""
        self.conn.reset_stream(stream_id, error_code=code)
        await self.flush()


def h2_server(
    on_request: OnRequest,
    *,
    on_connect: Callable[[H2Server, int], Awaitable[bool]] | None = None,
    preface: bool = True,
) -> Handler:
    """A node handler speaking HTTP/2 that lets ``on_request`` answer each request.

    Args:
        on_request: called for each request with the connection, the stream and the
            request's index on this node (0, 1, 2 … across connections).
        on_connect: called with the connection and its index on this node right after
            the server's SETTINGS; returning ``False`` stops serving it (the connection
            stays open until the client closes it, as a draining server's does).
        preface: send the server's SETTINGS (``False``: never send anything at all).
    """
    requests = itertools.count()
    connections = itertools.count()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = H2Server(writer)
        if not preface:
            while await asyncio.wait_for(reader.read(65536), 30):
                pass
            return
        server.conn.initiate_connection()
        await server.flush()
        serving = True
        if on_connect is not None:
            serving = await on_connect(server, next(connections))
        while data := await asyncio.wait_for(reader.read(65536), 30):
            if not serving:
                continue  # read until the client closes, as a lingering close does
            try:
                events = server.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                await server.flush()
                return
            try:
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        await on_request(server, event.stream_id, next(requests))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
            except Hangup:
                return
            await server.flush()

    return handle


def raw_first_frame(frame: bytes) -> Handler:
    """A server whose first frame is ``frame`` (not SETTINGS), then silence until the client closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame)
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 30):
            pass

    return handle


def window_update_first() -> Handler:
    """A server that opens with WINDOW_UPDATE instead of its SETTINGS."""
    return raw_first_frame(WindowUpdateFrame(0, window_increment=1024).serialize())


async def answer(server: H2Server, stream_id: int, index: int) -> None:
    """``on_request`` of a healthy server."""
    await server.answer(stream_id)


Step = Callable[[H2Server, int], Awaitable[None]]


def headers_then(*steps: Step) -> OnRequest:
    """``on_request`` that sends the response headers, then runs each step on the stream."""

    async def on_request(server: H2Server, stream_id: int, index: int) -> None:
        await server.headers(stream_id)
        for step in steps:
            await step(server, stream_id)

    return on_request


def data(part: bytes, *, end: bool = False) -> Step:
    """A step: one DATA frame, ending the stream when ``end``."""

    async def step(server: H2Server, stream_id: int) -> None:
        await server.body(stream_id, part, end=end)

    return step


def goaway(code: int, last_stream_id: int) -> Step:
    """A step: GOAWAY(code, last_stream_id)."""

    async def step(server: H2Server, stream_id: int) -> None:
        await server.goaway(code, last_stream_id)

    return step


def reset(code: int) -> Step:
    """A step: RST_STREAM(code) on the stream."""

    async def step(server: H2Server, stream_id: int) -> None:
        await server.reset(stream_id, code)

    return step


class Hangup(Exception):
    """Raised by a step to end the connection (the node then closes it)."""


def close() -> Step:
    """A step: close the connection (after what was queued)."""

    async def step(server: H2Server, stream_id: int) -> None:
        await server.flush()
        raise Hangup

    return step


def trailers(**fields: str) -> Step:
    """A step: a trailer HEADERS frame ending the stream."""

    async def step(server: H2Server, stream_id: int) -> None:
        server.conn.send_headers(
            stream_id, [(k.replace("_", "-"), v) for k, v in fields.items()], end_stream=True
        )
        await server.flush()

    return step
