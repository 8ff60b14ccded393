"""probe's HTTP/2 and HTTP/1.1 exchanges: the one hook into h2, and their errors in probe's words.

The hook: h2 closes its connection state machine on any GOAWAY and then refuses every
later frame (python-hyper/h2#1181); probe keeps it open so that a stream at or below
``last_stream_id`` completes (RFC 9113 §6.8). These tests drive real ``h2`` and ``h11``
state machines with bytes, and fail loudly if h2's names or behaviour change under it.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, SettingsFrame

from probe.stages._http2 import _h2_words, _OpenAfterGoaway, new_state
from probe.stages._http11 import _words
from probe.stages._wire import GoAway, excerpt, h2_error_name

RAW = ("<", ">", "bytearray", "b'", "ConnectionInputs", "ConnectionState", "Error(")


def server_bytes_after_goaway() -> bytes:
    """A server's SETTINGS, the response HEADERS on stream 1, GOAWAY(NO_ERROR, 1), then the body."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    head = server.data_to_send()
    headers = HeadersFrame(1, flags=["END_HEADERS"])
    headers.data = server.encoder.encode([(b":status", b"200")])
    goaway = GoAwayFrame(0, last_stream_id=1, error_code=0)
    data = DataFrame(1, data=b"the body", flags=["END_STREAM"])
    return head + headers.serialize() + goaway.serialize() + data.serialize()


def client_with_stream(state: h2.connection.H2Connection) -> h2.connection.H2Connection:
    state.initiate_connection()
    state.send_headers(
        1, [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")], True
    )
    state.data_to_send()
    return state


def test_the_hook_keeps_reading_a_stream_the_goaway_lets_complete() -> None:
    state = client_with_stream(new_state())
    assert type(state.state_machine) is _OpenAfterGoaway

    events = state.receive_data(server_bytes_after_goaway())

    kinds = [type(e) for e in events]
    assert h2.events.ConnectionTerminated in kinds
    assert kinds[kinds.index(h2.events.ConnectionTerminated) + 1 :] == [
        h2.events.DataReceived,
        h2.events.StreamEnded,
    ]
    assert next(e for e in events if isinstance(e, h2.events.DataReceived)).data == b"the body"


def test_h2_alone_still_refuses_the_rest_of_the_stream() -> None:
    # The reason for the hook. If this fails, h2 fixed python-hyper/h2#1181: drop the hook.
    state = client_with_stream(h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)))
    with pytest.raises(h2.exceptions.ProtocolError):
        state.receive_data(server_bytes_after_goaway())


def test_the_hook_still_closes_the_connection_for_every_other_cause() -> None:
    machine = _OpenAfterGoaway()
    machine.process_input(h2.connection.ConnectionInputs.SEND_HEADERS)
    machine.process_input(h2.connection.ConnectionInputs.SEND_GOAWAY)
    assert machine.state is h2.connection.ConnectionState.CLOSED


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0x0, "NO_ERROR (0x0)"),
        (0x7, "REFUSED_STREAM (0x7)"),
        (0xB, "ENHANCE_YOUR_CALM (0xb)"),
        (0x1F, "unknown error code 0x1f"),
    ],
)
def test_http2_error_codes_are_named_as_rfc_9113_names_them(code: int, words: str) -> None:
    assert h2_error_name(code) == words


def test_a_goaway_in_words() -> None:
    assert GoAway(0xB, 1).words() == "GOAWAY ENHANCE_YOUR_CALM (0xb) with last_stream_id 1"


def h11_error(data: bytes) -> h11.ProtocolError:
    connection = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=100)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    with pytest.raises(h11.RemoteProtocolError) as raised:
        while True:
            if connection.next_event() is h11.NEED_DATA:
                connection.receive_data(b"")
    return raised.value


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            b"\x00\x01 not HTTP\r\n\r\n",
            "the response does not start with an HTTP/1.x status line (it starts with '.. not HTTP....')",
        ),
        (b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n", "a response header line is malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "the Content-Length header is not a number"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 200, "the response head is larger than 100 KiB"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "the connection closed before the response was complete",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "the chunked body is malformed"),
    ],
)
def test_h11_errors_in_probes_words(data: bytes, words: str) -> None:
    error = h11_error(data)
    assert not any(mark in words for mark in RAW)
    assert _words(error, data) == words


def test_h2_errors_in_probes_words() -> None:
    state = client_with_stream(new_state())
    too_large = HeadersFrame(1, flags=["END_HEADERS"])
    too_large.data = b"\x00" * 20000  # over the default 16 KiB frame size
    with pytest.raises(h2.exceptions.H2Error) as raised:
        state.receive_data(SettingsFrame(0).serialize() + too_large.serialize())
    words = _h2_words(raised.value)
    assert words == "a frame larger than the size probe allows (FRAME_SIZE_ERROR)"
    other = _h2_words(
        h2.exceptions.ProtocolError(
            "Invalid input ConnectionInputs.RECV_DATA in state ConnectionState.CLOSED"
        )
    )
    assert other == "frames that RFC 9113 does not allow in this state (PROTOCOL_ERROR)"
    assert not any(mark in words + other for mark in RAW)


def test_an_excerpt_of_what_a_server_sent_is_printable_and_says_when_it_is_cut() -> None:
    assert excerpt(b"\x16\x03\x01 hello") == "... hello"
    assert excerpt(b"x" * 50) == "x" * 40 + "…"
