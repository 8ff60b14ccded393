"""The endpoint's server against slow and abusive loopback peers: deadlines, limits, no banner (issue 17).

Each test serves on 127.0.0.1 in process and talks to it with raw sockets from other
loopback addresses (127.0.18.x), so that the per-address limit sees distinct clients.
Most use a shorter client timeout than the default 5 s: the behaviour is the same, sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from probe.daemon import httpserver
from probe.daemon.httpserver import Request, Response, WebServer
from probe.daemon.store import ResultStore
from probe.daemon.web import make_app
from probe.daemon.webconfig import BasicAuth
from probe.lab import Pki
from probe.lab.pki import issue


def serve(
    timeout: float = httpserver.CLIENT_TIMEOUT, ssl_context: ssl.SSLContext | None = None
) -> Iterator[tuple[WebServer, int]]:
    app = make_app(ResultStore(["www"], time.time()))
    server = WebServer("127.0.0.1", 0, app, ssl_context=ssl_context, client_timeout=timeout)
    _, port = server.start()
    try:
        yield server, port
    finally:
        server.stop()


@pytest.fixture
def quick() -> Iterator[tuple[WebServer, int]]:
    """A server whose clients have 0.5 s per phase."""
    yield from serve(0.5)


def connect(port: int, source: str, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def closed_after(sock: socket.socket, trickle: bytes = b"", every: float = 0.25) -> float:
    """Send ``trickle`` a byte every ``every`` seconds until the server closes; seconds until then."""
    start = time.monotonic()
    sock.settimeout(every)
    for byte in trickle or b"\0" * 1000:
        if trickle:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
        try:
            if sock.recv(1) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - start


def refused_at_once(port: int, source: str) -> bool:
    """A connection from ``source`` is closed within 0.5 s of its handshake.

    The server's reset can come before ``connect()`` returns on a busy machine (loopback
    completes the handshake in the kernel): then ``connect()`` itself fails with ECONNRESET.
    """
    try:
        sock = connect(port, source)
    except ConnectionResetError:
        return True
    with sock:
        return closed_after(sock) < 0.5


def healthy(port: int) -> int:
    with httpx.Client(trust_env=False, timeout=2) as client:
        return client.get(f"http://127.0.0.1:{port}/-/healthy").status_code


# --------------------------------------------------------------------------- deadlines


def test_a_client_trickling_its_request_head_is_dropped_after_5_s_however_it_trickles() -> None:
    # The default deadline; a byte every 0.25 s used to renew a per-read timeout forever.
    for server, port in serve():
        assert server.client_timeout == 5.0
        with connect(port, "127.0.18.1") as slow:
            lasted = closed_after(slow, b"GET /metrics HTTP/1.1\r\nHost: probe\r\nX-Pad: " + b"a" * 100)
        assert 4.9 <= lasted < 6.5, lasted
        assert healthy(port) == 200


def test_a_request_body_trickled_is_dropped_at_its_deadline(quick: tuple[WebServer, int]) -> None:
    _, port = quick
    with connect(port, "127.0.18.2") as slow:
        slow.sendall(b"POST /metrics HTTP/1.1\r\nHost: probe\r\nContent-Length: 1000\r\n\r\n")
        lasted = closed_after(slow, b"x" * 1000, every=0.1)
    assert 0.45 <= lasted < 1.5, lasted


def test_a_large_request_body_is_refused_with_413(quick: tuple[WebServer, int]) -> None:
    _, port = quick
    with connect(port, "127.0.18.3") as client:
        client.sendall(b"POST /metrics HTTP/1.1\r\nHost: probe\r\nContent-Length: 10000000\r\n\r\n")
        client.sendall(b"x" * 200_000)
        answer = client.recv(200)
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer


def answers(sock: socket.socket) -> list[bytes]:
    """The status lines of every response until the server closes (or 2 s pass)."""
    sock.settimeout(2)
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", received)


@pytest.mark.parametrize("pieces", [1, 3])
@pytest.mark.parametrize(
    ("size", "status"), [(httpserver.MAX_HEAD_BYTES, b"200 OK"), (httpserver.MAX_HEAD_BYTES + 1, b"431")]
)
def test_a_request_head_over_16_kib_is_refused_however_it_arrives(
    quick: tuple[WebServer, int], size: int, status: bytes, pieces: int
) -> None:
    # h11 checks its limit only on a head still incomplete: one that arrived whole in a read
    # was taken at any size up to the read's 64 KiB.
    _, port = quick
    start = b"GET /-/healthy HTTP/1.1\r\nHost: probe\r\nConnection: close\r\nX-Pad: "
    head = start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == size
    with connect(port, "127.0.18.10") as client:
        step = -(-size // pieces)
        for offset in range(0, size, step):
            client.sendall(head[offset : offset + step])
            time.sleep(0.05)
        [answer] = answers(client)
    assert answer.startswith(b"HTTP/1.1 " + status), answer


def test_a_request_line_over_16_kib_sent_whole_is_a_414(quick: tuple[WebServer, int]) -> None:
    _, port = quick
    with connect(port, "127.0.18.11") as client:
        client.sendall(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: probe\r\n\r\n")
        assert answers(client) == [b"HTTP/1.1 414 Request-URI Too Long"]


def test_pipelined_requests_are_answered_in_order(quick: tuple[WebServer, int]) -> None:
    _, port = quick
    request = b"GET /-/healthy HTTP/1.1\r\nHost: probe\r\n\r\n"
    with connect(port, "127.0.18.12") as client:
        client.sendall(request * 20 + request.replace(b"/-/healthy", b"/nowhere"))
        assert answers(client) == [b"HTTP/1.1 200 OK"] * 20 + [b"HTTP/1.1 404 Not Found"]


@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_transfer_encoding_with_content_length_is_refused_and_nothing_after_it_answered(
    quick: tuple[WebServer, int], method: bytes
) -> None:
    # Request smuggling: chunked says the body ends at once, Content-Length that it goes on;
    # RFC 9112 (6.1) says close the connection after answering such a request, nginx refuses it.
    _, port = quick
    smuggled = b"GET /-/healthy HTTP/1.1\r\nHost: probe\r\n\r\n"
    with connect(port, "127.0.18.13") as client:
        client.sendall(
            method + b" /-/healthy HTTP/1.1\r\nHost: probe\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: " + str(len(smuggled) + 5).encode() + b"\r\n\r\n0\r\n\r\n" + smuggled
        )
        assert answers(client) == [b"HTTP/1.1 400 Bad Request"]


def test_a_small_request_body_is_read_and_the_method_refused(quick: tuple[WebServer, int]) -> None:
    _, port = quick
    with connect(port, "127.0.18.4") as client:
        client.sendall(b"POST /metrics HTTP/1.1\r\nHost: probe\r\nContent-Length: 3\r\n\r\nx=1")
        answer = client.recv(200)
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), answer


async def _huge(request: Request) -> Response:
    chunk = b"x" * (1 << 20)
    return Response(200, [("Content-Length", str(64 << 20))], (chunk for _ in range(64)))


def test_a_client_that_does_not_read_its_response_is_dropped() -> None:
    server = WebServer("127.0.0.1", 0, _huge, client_timeout=0.5)
    _, port = server.start()
    try:
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
        reader.bind(("127.0.18.5", 0))
        reader.connect(("127.0.0.1", port))
        reader.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\n\r\n")
        time.sleep(1.5)  # three times the deadline
        reader.settimeout(5)
        received = 0
        try:
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        reader.close()
        # What the kernel had buffered, then the end: the server gave up on the 64 MiB.
        assert received < 16 << 20, received
        assert healthy(port) == 200
    finally:
        server.stop()


def test_a_tls_client_that_never_finishes_its_handshake_is_dropped(tmp_path: Path) -> None:
    pki = Pki.create("endpoint")
    crt, key = issue("127.0.0.1", pki.intermediate, ip_addresses=("127.0.0.1",)).write(tmp_path, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    for _, port in serve(0.5, ssl_context=context):
        with connect(port, "127.0.18.6") as slow:
            # Half a ClientHello, a byte at a time: the handshake counts in the head's deadline.
            lasted = closed_after(
                slow, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 100, every=0.1
            )
        assert 0.45 <= lasted < 1.5, lasted


# --------------------------------------------------------------------------- connections


def test_one_address_holds_at_most_8_connections_and_others_are_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="probe.web")
    for _, port in serve():
        held = [connect(port, "127.0.18.7") for _ in range(httpserver.MAX_PER_CLIENT)]
        try:
            time.sleep(0.1)
            assert refused_at_once(port, "127.0.18.7")
            for sock in held:  # the first eight are still there
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)
            assert healthy(port) == 200  # from 127.0.0.1
        finally:
            for sock in held:
                sock.close()
    [line] = [r for r in caplog.records if r.name == "probe.web"]
    assert line.getMessage() == "clients refused or dropped to keep the endpoint serving"
    assert (line.refused_per_client, line.clients) == (1, 1)  # type: ignore[attr-defined]


def assert_a_scraper_got_the_oldest_slot(port: int, held: list[socket.socket]) -> None:
    """On a server full of ``held`` (oldest first), a scraper is answered; the oldest closed for it."""
    assert healthy(port) == 200  # the 129th connection, from 127.0.0.1
    held[0].settimeout(2)
    assert held[0].recv(1) == b""  # the oldest (idle, or in its step) was closed for it
    held[-1].setblocking(False)
    with pytest.raises(BlockingIOError):  # the newest is still open
        held[-1].recv(1)


def test_idle_connections_on_a_full_server_give_way_to_a_scraper_oldest_first() -> None:
    for _, port in serve():
        count = httpserver.MAX_CONNECTIONS
        idle = [connect(port, f"127.0.19.{1 + i // httpserver.MAX_PER_CLIENT}") for i in range(count)]
        try:
            time.sleep(0.2)
            assert_a_scraper_got_the_oldest_slot(port, idle)
        finally:
            for sock in idle:
                sock.close()


async def _stalls(request: Request) -> Response:
    """An application whose answers to ``/stall`` take an hour (a password check that waits)."""
    if request.path == "/stall":
        await asyncio.sleep(3600)
    return httpserver.plain(200, "OK\n")


@pytest.mark.parametrize(
    ("step", "request_bytes"),
    [
        ("trickling a body", b"POST /metrics HTTP/1.1\r\nHost: probe\r\nContent-Length: 100000\r\n\r\nx"),
        ("waiting for the answer", b"GET /stall HTTP/1.1\r\nHost: probe\r\n\r\n"),
    ],
)
def test_a_full_server_of_connections_past_their_head_gives_way_to_a_scraper(
    step: str, request_bytes: bytes
) -> None:
    # Only connections waiting for a request head could be closed for a new one: 128 clients
    # trickling a body, or waiting for a password check, locked every scraper out.
    server = WebServer("127.0.0.1", 0, _stalls)
    _, port = server.start()
    count = httpserver.MAX_CONNECTIONS
    held = [connect(port, f"127.0.20.{1 + i // httpserver.MAX_PER_CLIENT}") for i in range(count)]
    try:
        held[0].sendall(request_bytes)
        time.sleep(0.2)  # its step began first
        for sock in held[1:]:
            sock.sendall(request_bytes)
        time.sleep(0.3)
        assert_a_scraper_got_the_oldest_slot(port, held)
    finally:
        for sock in held:
            sock.close()
        server.stop()


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("127.0.18.9", "127.0.18.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # one host's /64 is one client
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # IPv4 on a dual-stack socket
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_what_the_per_client_limit_counts_by(host: str, key: str) -> None:
    assert httpserver.client_key(host) == key


# --------------------------------------------------------------------------- what a client learns


@pytest.mark.parametrize(
    ("request_bytes", "password", "status"),
    [
        (b"GET /-/healthy HTTP/1.1\r\nHost: probe\r\n\r\n", False, 200),
        (b"GET /nowhere HTTP/1.1\r\nHost: probe\r\n\r\n", False, 404),
        (b"\x16\x03\x01garbage\r\n\r\n", False, 400),
        (b"GET /metrics HTTP/1.1\r\nHost: probe\r\n\r\n", True, 401),
        (b"BREW /pot HTTP/1.1\r\nHost: probe\r\n\r\n", True, 401),
    ],
)
def test_no_banner_names_the_software_or_python(request_bytes: bytes, password: bool, status: int) -> None:
    hashed = bcrypt.hashpw(b"p", bcrypt.gensalt(rounds=4)).decode()
    app = make_app(ResultStore(["www"], time.time()), BasicAuth({"u": hashed}) if password else None)
    server = WebServer("127.0.0.1", 0, app)
    _, port = server.start()
    try:
        with connect(port, "127.0.18.8") as client:
            client.sendall(request_bytes)
            head = client.recv(4096).partition(b"\r\n\r\n")[0].decode().lower()
    finally:
        server.stop()
    assert head.startswith(f"http/1.1 {status} ")
    names = [line.partition(":")[0] for line in head.split("\r\n")[1:]]
    assert "server" not in names and "x-powered-by" not in names, names
    assert not any(word in head for word in ("python", "probe", "h11", "asyncio")), head


def test_the_same_connection_serves_request_after_request() -> None:
    for _, port in serve():
        with httpx.Client(trust_env=False, timeout=2) as client:
            answers = [client.get(f"http://127.0.0.1:{port}/-/healthy") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert all("date" in a.headers for a in answers)
