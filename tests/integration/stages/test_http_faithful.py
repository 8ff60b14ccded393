"""HTTP faithfulness (issue 7): what a new client sees, against real loopback servers.

No state between requests (stickiness cookies), the body cap bounds memory and not the
verdict, content encodings not asked for, repeated header fields, HTTP/2 and ALPN,
redirect locations and clock skew. Each test asserts the status, the reason code, the
key facts of the detail and that the check stayed within its time bound.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from probe.lab import DnsServer, Pki
from probe.lab.servers import http2_responder
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from probe.report.document import to_json
from probe.report.text import render_text
from tests.support.helpers import reasons, run

SLACK = 0.6  # seconds of allowance over a configured bound for a loaded 2-core machine
LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 2.0, "deadline": 8.0}


def timed(target: dict[str, Any], requests: int = 1, **timeouts: float) -> tuple[TargetResult, float]:
    start = time.monotonic()
    result = run({**target, "requests_per_address": requests, "timeouts": {**LIMITS, **timeouts}})
    return result, time.monotonic() - start


def text_of(result: TargetResult) -> str:
    out = io.StringIO()
    render_text([result], out, time.time())
    return out.getvalue()


def answer(head: str, body: bytes = b"", *, chunked: bool = False) -> Callable[..., Any]:
    """A handler: read one request head, send ``head`` (CRLF lines, no blank line) and the body."""

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        writer.write(f"{head}\r\n{framing}\r\nConnection: close\r\n\r\n".encode())
        step = 65536
        for offset in range(0, len(body), step):
            part = body[offset : offset + step]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handle


# --------------------------------------------------------------------------- 1. no state


def test_stickiness_cookie_is_never_sent_back_so_every_backend_is_seen(scene: Any) -> None:
    s = scene(nodes=2, sticky_cookie="AWSALB")
    result, elapsed = timed({**s.target, "expect_backends": ["web-1", "web-2"]}, requests=4)

    assert result.status is Status.OK, result.failures
    assert result.backend_counts == {"web-1": 4, "web-2": 4}
    for address in result.addresses:
        assert {a.cookies_set for a in address.attempts} == {("AWSALB", "AWSALBCORS")}
    note = "the load balancer sets stickiness cookies (AWSALB, AWSALBCORS); requests were sent without them"
    assert result.cookie_note == note
    assert to_json([result], time.time())["targets"][0]["cookies"] == {
        "set": ["AWSALB", "AWSALBCORS"],
        "note": note,
    }
    assert f"cookies  {note}" in text_of(result)
    assert elapsed < LIMITS["deadline"]


def test_a_request_carrying_the_stickiness_cookie_is_pinned_by_the_lab(scene: Any) -> None:
    # The other side of the test above: the lab really pins a client that sends the cookie.
    s = scene(nodes=2, sticky_cookie="AWSALB")
    result, _ = timed(
        {**s.target, "expect_backends": ["web-1", "web-2"], "headers": {"Cookie": "AWSALB=web-2"}}, requests=4
    )
    assert result.backend_counts == {"web-2": 8}
    assert Reason.BACKEND_MISSING.value in reasons(result)


def test_cookies_set_by_the_application_are_listed_by_name_only(scene: Any) -> None:
    head = (
        "HTTP/1.1 200 OK\r\nX-Backend: web-1\r\nSet-Cookie: session=s3cr3t; HttpOnly\r\nSet-Cookie: lang=en"
    )
    s = scene(handler=answer(head, b"ok"), backends=())
    result, _ = timed(s.target, requests=2)
    assert result.status is Status.OK
    assert (
        result.cookie_note == "the application sets cookies (session, lang); requests were sent without them"
    )
    assert "s3cr3t" not in str(to_json([result], time.time()))


# --------------------------------------------------------------------------- 2. body cap

PAGE = b"<html><p>served by web-1</p>" + b"x" * (3 * 1024 * 1024) + b"</html>"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_3_mb_page_is_judged_on_what_was_read(scene: Any, chunked: bool) -> None:
    s = scene(
        handler=answer("HTTP/1.1 200 OK\r\nContent-Type: text/html", PAGE, chunked=chunked), backends=()
    )
    result, elapsed = timed(
        {**s.target, "backend": {"body_regex": r"served by (\S+?)<"}, "body_regex": "<html>"}, requests=2
    )
    assert result.status is Status.OK, result.failures
    assert result.backend_counts == {"web-1": 2}
    attempt = result.addresses[0].attempts[0]
    assert attempt.body_truncated and attempt.body_bytes == 65536
    assert to_json([result], time.time())["targets"][0]["addresses"][0]["http"][0]["body_truncated"] is True
    assert "bodies cut at 65536 bytes" in text_of(result)
    assert elapsed < 2 * LIMITS["http"] + SLACK


def test_body_size_limit_fails_from_content_length(scene: Any) -> None:
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nX-Backend: web-1", PAGE), backends=())
    result, elapsed = timed({**s.target, "body_size_limit": 1048576})
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_BODY_TOO_LARGE.value}
    assert result.failures[0].detail == (
        f"Content-Length is {len(PAGE)} bytes, over body_size_limit (1048576 bytes)"
    )
    assert result.addresses[0].attempts[0].body_bytes == 65536
    assert elapsed < LIMITS["http"] + SLACK


def test_body_size_limit_without_content_length_counts_with_bounded_memory(scene: Any) -> None:
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nX-Backend: web-1", PAGE, chunked=True), backends=())
    tracemalloc.start()
    try:
        result, elapsed = timed({**s.target, "body_size_limit": 2 * 1024 * 1024})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reasons(result) == {Reason.HTTP_BODY_TOO_LARGE.value}
    assert "went past body_size_limit (2097152 bytes)" in result.failures[0].detail
    assert result.addresses[0].attempts[0].body_bytes == 65536
    assert peak < 8 * 1024 * 1024  # the 3 MB page is sent from this process; never held twice
    assert elapsed < LIMITS["http"] + SLACK


def test_body_under_body_size_limit_is_fine(scene: Any) -> None:
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nX-Backend: web-1", PAGE, chunked=True), backends=())
    result, _ = timed({**s.target, "body_size_limit": 4 * 1024 * 1024})
    assert result.status is Status.OK, result.failures


# --------------------------------------------------------------------------- 3. encodings


def test_gzip_body_sent_to_an_identity_request_is_decoded(scene: Any) -> None:
    body = gzip.compress(b"served by web-1\n")
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: gzip", body), backends=())
    result, elapsed = timed(
        {**s.target, "backend": {"body_regex": r"served by (\S+)"}, "body_regex": "^served"}
    )
    assert result.status is Status.OK, result.failures
    assert result.backend_counts == {"web-1": 1}
    attempt = result.addresses[0].attempts[0]
    assert attempt.content_encoding == "gzip" and attempt.body_bytes == len(body)
    assert "gzip-encoded though identity was asked for" in text_of(result)
    assert elapsed < LIMITS["http"] + SLACK


@pytest.mark.parametrize("wrapped", [True, False], ids=["zlib", "raw"])
def test_deflate_body_is_decoded_both_ways_servers_send_it(scene: Any, wrapped: bool) -> None:
    if wrapped:
        body = zlib.compress(b"served by web-2\n")
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = packer.compress(b"served by web-2\n") + packer.flush()
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: deflate", body), backends=())
    result, _ = timed({**s.target, "backend": {"body_regex": r"served by (\S+)"}})
    assert result.status is Status.OK, result.failures
    assert result.backend_counts == {"web-2": 1}


def test_a_gzip_bomb_stays_within_max_body_bytes(scene: Any) -> None:
    bomb = gzip.compress(b"a" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in about 64 KB
    s = scene(
        handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nX-Backend: web-1", bomb), backends=()
    )
    tracemalloc.start()
    try:
        result, elapsed = timed({**s.target, "body_regex": "^a+$", "max_body_bytes": 1_000_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status is Status.OK, result.failures
    attempt = result.addresses[0].attempts[0]
    assert attempt.body_truncated and attempt.body_bytes == len(bomb)
    assert peak < 16 * 1024 * 1024  # 64 MiB never lands in memory
    assert elapsed < LIMITS["http"] + SLACK


@pytest.mark.parametrize("rule", ["body_regex", "backend"])
def test_an_encoding_probe_cannot_decode_is_named(scene: Any, rule: str) -> None:
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: br", b"\x1b\x0f\x00\xf8"), backends=())
    extra: dict[str, Any] = (
        {"body_regex": "served by", "backend": None}
        if rule == "body_regex"
        else {"backend": {"body_regex": r"served by (\S+)"}}
    )
    result, elapsed = timed({**s.target, **extra})
    assert result.status is Status.CRITICAL
    expected = Reason.HTTP_BODY_MISMATCH if rule == "body_regex" else Reason.BACKEND_UNIDENTIFIED
    assert reasons(result) == {expected.value}
    assert result.failures[0].detail.startswith("body is br-encoded, which probe cannot decode; not matched")
    assert elapsed < LIMITS["http"] + SLACK


def test_a_body_in_another_charset_is_read_in_that_charset(scene: Any) -> None:
    body = "served by web-1\n".encode("utf-16")
    s = scene(
        handler=answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-16", body), backends=()
    )
    result, _ = timed({**s.target, "backend": {"body_regex": r"served by (\S+)"}})
    assert result.status is Status.OK, result.failures
    assert result.backend_counts == {"web-1": 1}


# --------------------------------------------------------------------------- 4. repeated fields


def test_the_backend_header_sent_twice_with_one_value_counts_once(scene: Any) -> None:
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nX-Backend: web-1\r\nX-Backend: web-1", b"ok"), backends=())
    result, elapsed = timed({**s.target, "expect_backends": ["web-1"]}, requests=2)
    assert result.status is Status.OK, result.failures
    assert result.backend_counts == {"web-1": 2}
    assert elapsed < 2 * LIMITS["http"] + SLACK


def test_the_backend_header_with_two_different_values_is_a_finding_naming_both(scene: Any) -> None:
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nX-Backend: web-1\r\nX-Backend: web-2", b"ok"), backends=())
    result, _ = timed({**s.target, "expect_backends": ["web-1", "web-2"]})
    assert reasons(result) == {Reason.BACKEND_UNIDENTIFIED.value}
    assert result.failures[0].detail == "the X-Backend header has 2 different values: web-1, web-2"
    assert result.backend_counts == {}  # never a made-up "web-1, web-2" backend


# --------------------------------------------------------------------------- 5. HTTP/2 and ALPN


def test_an_http2_only_server_is_probed_over_http2(scene: Any) -> None:
    s = scene(handler=http2_responder(["web-1", "web-2"]), backends=(), alpn=("h2",))
    result, elapsed = timed({**s.target, "expect_backends": ["web-1", "web-2"]}, requests=4)
    assert result.status is Status.OK, result.failures
    address = result.addresses[0]
    assert address.tls.alpn == "h2"
    assert {a.http_version for a in address.attempts} == {"HTTP/2"}
    assert result.backend_counts == {"web-1": 2, "web-2": 2}
    assert all(a.phases.processing is not None and a.phases.tls is not None for a in address.attempts)
    assert "HTTP/2" in text_of(result)
    assert elapsed < LIMITS["deadline"]


def test_http_version_2_against_an_http2_server(scene: Any) -> None:
    s = scene(handler=http2_responder(["web-1"]), backends=(), alpn=("h2",))
    result, _ = timed({**s.target, "http_version": "2"}, requests=2)
    assert result.status is Status.OK, result.failures
    assert {a.http_version for a in result.addresses[0].attempts} == {"HTTP/2"}


def test_requests_offer_exactly_the_alpn_list_of_the_tls_stage(scene: Any) -> None:
    # The node prefers http/1.1 but also accepts h2. With http_version 2 both stages offer
    # h2 alone, so every connection agrees on h2 (httpcore would offer http/1.1 too). The
    # first request goes over the TLS stage's connection: two handshakes for two requests.
    s = scene(handler=http2_responder(["web-1"]), backends=(), alpn=("http/1.1", "h2"))
    result, _ = timed({**s.target, "http_version": "2"}, requests=2)
    assert result.status is Status.OK, result.failures
    assert s.nodes[0].alpn_selected == ["h2", "h2"]


def test_http_version_2_against_an_http11_only_server_says_no_h2_was_offered(scene: Any) -> None:
    s = scene()
    result, elapsed = timed({**s.target, "http_version": "2"})
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_ALPN_MISMATCH.value}
    assert "the server offered no h2 in ALPN" in result.failures[0].detail
    assert result.addresses[0].attempts == ()
    assert elapsed < LIMITS["tls"] + SLACK


def test_http_version_1_1_offers_only_http11(scene: Any) -> None:
    s = scene()
    result, _ = timed({**s.target, "http_version": 1.1}, requests=2)
    assert result.status is Status.OK, result.failures
    assert result.addresses[0].tls.alpn == "http/1.1"
    assert {a.http_version for a in result.addresses[0].attempts} == {"HTTP/1.1"}


def test_http2_server_that_never_answers_is_bounded_by_the_http_timeout(scene: Any) -> None:
    async def mute(reader: asyncio.StreamReader, writer: Any) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            conn.receive_data(data)  # settle SETTINGS, never answer the request
            writer.write(conn.data_to_send())
            await writer.drain()

    s = scene(handler=mute, backends=(), alpn=("h2",))
    result, elapsed = timed(s.target, http=1.0)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.HTTP_TIMEOUT.value}
    assert "waiting for the response headers" in result.failures[0].detail
    assert elapsed < 1.0 + SLACK


@pytest.fixture
def h2_only_openssl(dns: DnsServer, pki: Pki, new_ip: Any, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``openssl s_server -alpn h2``: refuses other ALPN lists with a fatal alert."""
    name = "alpn-alert.corp.example"
    address = new_ip()
    cert, key = pki.leaf(name).write(tmp_path, "alpn")
    port = 20000 + int(address.split(".")[-1]) * 37 % 20000
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{address}:{port}", "-cert", str(cert), "-key", str(key),
         "-alpn", "h2", "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            probe = subprocess.run(["ss", "-ltnH", f"src {address}:{port}"], capture_output=True, text=True)
            if probe.stdout.strip():
                break
            time.sleep(0.05)
        dns.set(name, ("A", address))
        yield name, port
    finally:
        server.terminate()
        server.wait(5)


def test_a_server_refusing_the_offered_alpn_with_an_alert(
    h2_only_openssl: tuple[str, int], dns: Any, ca_file: Path
) -> None:
    name, port = h2_only_openssl
    target = {
        "url": f"https://{name}:{port}/",
        "resolvers": [dns.where],
        "expect_networks": ["127.0.0.0/8"],
        "ca_file": str(ca_file),
        "http_version": "1.1",
    }
    result, elapsed = timed(target)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_ALPN_MISMATCH.value}
    assert "no_application_protocol" in result.failures[0].detail
    assert elapsed < LIMITS["tls"] + SLACK


# --------------------------------------------------------------------------- 6. Location, Date


@pytest.mark.parametrize(
    ("location", "note"),
    [
        ("http://{host}/login", "a downgrade to http://"),
        ("/login", "same host"),
        ("https://sso.corp.example/start", "another host: sso.corp.example"),
    ],
    ids=["downgrade", "same-host", "other-host"],
)
def test_a_redirect_records_where_it_pointed(scene: Any, location: str, note: str) -> None:
    s = scene(backends=())
    where = location.format(host=s.hostname)
    s.nodes[0].handler = answer(f"HTTP/1.1 301 Moved Permanently\r\nLocation: {where}\r\nX-Backend: web-1")
    result, elapsed = timed(s.target)
    assert reasons(result) == {Reason.HTTP_STATUS.value}
    absolute = where if where.startswith("http") else f"https://{s.hostname}:{s.port}{where}"
    assert result.failures[0].detail == f"status 301 (expected 200-299); Location: {absolute} ({note})"
    assert result.addresses[0].attempts[0].location == absolute
    assert to_json([result], time.time())["targets"][0]["addresses"][0]["http"][0]["location"] == absolute
    assert elapsed < LIMITS["http"] + SLACK


def test_an_accepted_redirect_shows_where_it_pointed_in_the_report(scene: Any) -> None:
    s = scene(backends=())
    s.nodes[0].handler = answer("HTTP/1.1 302 Found\r\nLocation: /login\r\nX-Backend: web-1")
    result, elapsed = timed({**s.target, "valid_status_codes": ["2xx", "302"]}, requests=2)
    assert result.status is Status.OK, result.failures
    assert f"redirects to https://{s.hostname}:{s.port}/login" in text_of(result)
    assert elapsed < 2 * LIMITS["http"] + SLACK


def test_a_server_clock_two_hours_ahead_is_a_warning_with_both_times(scene: Any) -> None:
    ahead = formatdate(time.time() + 7200, usegmt=True)
    s = scene(handler=answer(f"HTTP/1.1 200 OK\r\nDate: {ahead}\r\nX-Backend: web-1", b"ok"), backends=())
    result, elapsed = timed(s.target, requests=2)
    assert result.status is Status.WARNING
    assert reasons(result) == {Reason.HTTP_CLOCK_SKEW.value}
    detail = result.failures[0].detail
    assert detail.startswith("the server's clock is 2 hours ahead of this machine's: its Date header says ")
    assert detail.count(" UTC") == 2 and time.strftime("%Y-%m-%d", time.gmtime(time.time() + 7200)) in detail
    assert elapsed < 2 * LIMITS["http"] + SLACK


def test_a_server_clock_a_few_seconds_off_is_fine(scene: Any) -> None:
    near = formatdate(time.time() - 5, usegmt=True)
    s = scene(handler=answer(f"HTTP/1.1 200 OK\r\nDate: {near}\r\nX-Backend: web-1", b"ok"), backends=())
    result, _ = timed(s.target)
    assert result.status is Status.OK, result.failures
    assert result.addresses[0].attempts[0].date_timestamp is not None
