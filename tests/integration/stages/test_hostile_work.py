"""A server's reply never runs the probe's CPU away (issue 17, part 3).

Work that grows with what a peer sends (a regex over the body, decoding, headers, DNS
answers, certificate chains) is bounded in size and time and stays off the event loop, so
one hostile peer leaves every other target's cycle alone. Each test uses a real hostile
loopback peer and asserts the finding a user would see and that the work stayed bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import dns.flags
import dns.message
import httpx

from probe.engine.cycle import run_cycle
from probe.lab import Behaviour, DnsServer, Pki
from probe.lab.pki import Issued, issue
from probe.model.deadline import Deadline
from probe.model.reasons import Reason, Status
from probe.model.results import TargetResult
from probe.stages import dns as dns_stage
from probe.stages import http_rules
from tests.support.helpers import make_plan, make_target, reasons, run

T = TypeVar("T")
SLACK = 0.6  # seconds of allowance over a configured bound for a loaded 2-core machine
LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 1.0, "http": 2.0, "deadline": 8.0}


def answer(head: str, body: bytes = b"") -> Any:
    """A handler: read one request head, send ``head`` (CRLF lines, no blank line) and ``body``."""

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"{head}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    return handle


def timed(target: dict[str, Any], requests: int = 1) -> tuple[TargetResult, float]:
    start = time.monotonic()
    result = run({**target, "requests_per_address": requests, "timeouts": LIMITS})
    return result, time.monotonic() - start


# --------------------------------------------------------------------------- the regex


async def watching_the_loop(work: Awaitable[T]) -> tuple[T, float]:
    """``work``'s outcome and the worst lag of the event loop while it ran (seconds)."""
    lag = 0.0
    running = True

    async def watch() -> None:
        nonlocal lag
        while running:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lag = max(lag, time.monotonic() - before - 0.005)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.02)
    try:
        outcome = await work
    finally:
        running = False
        await watcher  # its last turn measures a stall that ended with the work
    return outcome, lag


async def _side_by_side(hostile: Any, healthy: Any) -> tuple[tuple[TargetResult, list[TargetResult]], float]:
    """The hostile target's cycle, the healthy target's cycles run meanwhile, the worst loop lag."""

    async def both() -> tuple[TargetResult, list[TargetResult]]:
        bad = asyncio.create_task(run_cycle(hostile))
        good = [await run_cycle(healthy)]
        while not bad.done():
            good.append(await run_cycle(healthy))
        return await bad, good

    return await watching_the_loop(both())


def test_a_backtracking_backend_regex_over_a_hostile_body_leaves_other_targets_alone(scene: Any) -> None:
    # Python's re took seconds per response here (quadratic: 8 KB took 0.14 s, 64 KB ~9 s)
    # and held the event loop the whole time: every other target's cycle and every scrape
    # waited (issue 17: a healthy target's cycle reported as 15 s, loop lag 9.7 s).
    hostile_scene = scene(handler=answer("HTTP/1.1 200 OK", b"<h1>" * 16384), backends=())
    hostile = make_plan(
        **{
            **hostile_scene.target,
            "backend": {"body_regex": "<h1>(.*)</h1>"},
            "requests_per_address": 4,
            "timeouts": LIMITS,
        }
    )
    healthy = make_plan(**{**scene().target, "requests_per_address": 2, "timeouts": LIMITS})

    (bad, good), lag = asyncio.run(_side_by_side(hostile, healthy))

    assert bad.status is Status.CRITICAL
    assert reasons(bad) == {Reason.BACKEND_UNIDENTIFIED.value}
    assert (
        bad.failures[0].detail == "4 of 4 requests: body does not match the backend pattern '<h1>(.*)</h1>'"
    )
    assert [a.body_bytes for a in bad.addresses[0].attempts] == [65536] * 4
    assert bad.duration_seconds < 2.0  # four requests and four searches over 64 KB each
    assert all(g.status is Status.OK for g in good), [g.failures for g in good]
    assert max(g.duration_seconds for g in good) < 2.0  # the old code: 9 s and more
    assert lag < 1.0


def test_a_large_body_is_judged_off_the_event_loop() -> None:
    # max_body_bytes raised to its 64 MiB maximum, and a body that is not UTF-8 (the
    # slowest decode): turning it into text and searching it took the loop 2.3 s, however
    # linear; in a worker thread the loop keeps turning.
    body = bytes(range(128, 256)) * (64 * 1024 * 1024 // 128)
    target = make_target(url="https://www.corp.example/", body_regex="healthy", max_body_bytes=len(body))
    headers = httpx.Headers({"Content-Type": "text/html"})
    judged = http_rules.judge_body(200, headers, body, target, ipaddress.ip_address("127.0.0.1"))
    (_, failures, _, _), lag = asyncio.run(watching_the_loop(judged))
    assert [(f.reason, f.detail) for f in failures] == [
        (Reason.HTTP_BODY_MISMATCH, "body does not match 'healthy'")
    ]
    assert lag < 1.0


# --------------------------------------------------------------------------- decoding


def test_a_gzip_body_of_many_tiny_members_is_not_decoded_past_the_member_limit(scene: Any) -> None:
    member = gzip.compress(b"x")
    body = member * (http_rules.MAX_GZIP_MEMBERS + 1)
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: gzip", body), backends=())
    result, elapsed = timed({**s.target, "body_regex": "x", "backend": None, "max_body_bytes": 1 << 20})
    assert reasons(result) == {Reason.HTTP_BODY_MISMATCH.value}
    assert result.failures[0].detail == (
        "body is gzip-encoded in more than 1024 members, more than probe decodes; not matched against 'x'"
    )
    assert elapsed < LIMITS["http"] + SLACK


def test_a_gzip_body_within_the_member_limit_is_decoded_whole(scene: Any) -> None:
    body = b"".join(gzip.compress(b"served by web-%d\n" % n) for n in range(1, 1025))
    s = scene(handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: gzip", body), backends=())
    result, _ = timed({**s.target, "body_regex": "served by web-1024\n", "backend": None})
    assert result.status is Status.OK, result.failures


def test_more_content_codings_than_curl_decodes_are_not_decoded(scene: Any) -> None:
    body = b"served by web-1\n"
    for _ in range(6):
        body = gzip.compress(body)
    s = scene(
        handler=answer("HTTP/1.1 200 OK\r\nContent-Encoding: " + ", ".join(["gzip"] * 6), body), backends=()
    )
    result, elapsed = timed({**s.target, "backend": {"body_regex": r"served by (\S+)"}})
    assert reasons(result) == {Reason.BACKEND_UNIDENTIFIED.value}
    assert result.failures[0].detail.startswith(
        "body has 6 content codings, more than the 5 that probe (as curl) decodes; not matched"
    )
    assert elapsed < LIMITS["http"] + SLACK


# --------------------------------------------------------------------------- DNS


def _many_records(dns: DnsServer, host: str) -> dict[str, Any]:
    for n in range(4000):  # ~64 KB: the most one TCP answer holds
        dns.add(host, "A", f"127.9.{n // 250}.{n % 250 + 1}")
    dns.behave(host, Behaviour.TRUNCATE)
    return {"url": f"https://{host}:9/", "resolvers": [dns.where], "expect_networks": ["127.0.0.0/8"]}


def test_an_answer_with_thousands_of_addresses_probes_the_lowest_64(dns: DnsServer) -> None:
    host = "many-records.corp.example"
    target = _many_records(dns, host)
    start = time.monotonic()
    result = run({**target, "requests_per_address": 1, "timeouts": {**LIMITS, "dns": 3.0}})
    elapsed = time.monotonic() - start

    assert result.dns.queries[0].tcp is True
    assert len(result.dns.answers) == len(result.addresses) == dns_stage.MAX_ADDRESSES == 64
    assert str(result.addresses[0].address) == "127.9.0.1"
    assert str(result.addresses[-1].address) == "127.9.0.64"
    too_many = [f for f in result.failures if f.reason is Reason.DNS_TOO_MANY_ADDRESSES]
    assert [f.detail for f in too_many] == [
        f"{host} has 4000 A records, more than the 64 that probe probes: the 64 lowest addresses "
        "were probed, the others not connected to"
    ]
    assert Reason.DNS_TOO_MANY_ADDRESSES.severity is Status.WARNING
    assert elapsed < 3.0 + LIMITS["connect"] + SLACK  # 4,000 address-probes took 7 s


def test_a_64_kib_answer_is_parsed_off_the_event_loop(dns: DnsServer) -> None:
    # dnspython takes ~0.5 s for 4,000 records; on the loop that was 0.5 s of lag.
    target = make_target(
        **_many_records(dns, "many-records-lag.corp.example"), timeouts={**LIMITS, "dns": 3.0}
    )

    plan = dns_stage.DnsPlan.of(target, target.resolvers or ())
    result, lag = asyncio.run(watching_the_loop(dns_stage.resolve(plan, Deadline.after(5))))
    assert len(result.answers) == 64 and result.queries[0].tcp is True
    assert lag < 0.25  # parsed on the loop: 0.56-0.68 s


def _truncating_resolver(address: str) -> tuple[int, Callable[[], None]]:
    """A resolver whose UDP answers say TC and whose TCP answers stop halfway; returns (port, stop)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, 0))
    port = udp.getsockname()[1]
    tcp = socket.create_server((address, port))
    stop = threading.Event()

    def serve_udp() -> None:
        udp.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                data, peer = udp.recvfrom(512)
                response = dns.message.make_response(dns.message.from_wire(data))
                response.flags |= dns.flags.TC
                udp.sendto(response.to_wire(), peer)

    def serve_tcp() -> None:
        tcp.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = tcp.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(struct.pack("!H", 64000) + b"\x00" * 100)  # 100 of 64,000 bytes

    threads = [threading.Thread(target=serve_udp), threading.Thread(target=serve_tcp)]
    for thread in threads:
        thread.start()

    def close() -> None:
        stop.set()
        for thread in threads:
            thread.join()
        udp.close()
        tcp.close()

    return port, close


def test_a_tcp_answer_that_stops_halfway_is_a_dns_error_at_once() -> None:
    port, close = _truncating_resolver("127.0.53.17")
    try:
        target = make_target(url="https://cut.corp.example/", resolvers=[f"127.0.53.17:{port}"])
        start = time.monotonic()
        result = asyncio.run(
            dns_stage.resolve(dns_stage.DnsPlan.of(target, target.resolvers or ()), Deadline.after(5))
        )
        elapsed = time.monotonic() - start
    finally:
        close()
    assert [f.reason for f in result.failures] == [Reason.DNS_ERROR]
    assert result.failures[0].detail.endswith(
        f"127.0.53.17:{port}: cannot query: the resolver closed the TCP connection before its answer"
    )
    assert elapsed < 1.0


# --------------------------------------------------------------------------- headers


def test_a_response_head_of_thousands_of_fields_past_100_kib_is_a_protocol_error(scene: Any) -> None:
    # probe's HTTP/1.1 exchange keeps h11 to a 100 KiB response head (as httpcore did); past it
    # the response is refused.
    fields = "\r\n".join(f"X-Field-{n}: {n}" for n in range(8000))  # ~140 KB
    s = scene(handler=answer(f"HTTP/1.1 200 OK\r\n{fields}"), backends=())
    result, elapsed = timed(s.target)
    assert reasons(result) == {Reason.HTTP_PROTOCOL_ERROR.value}
    assert result.failures[0].detail == "invalid HTTP response: the response head is larger than 100 KiB"
    assert elapsed < LIMITS["http"] + SLACK


def test_thousands_of_set_cookie_fields_are_named_sixteen_at_most_saying_so(scene: Any) -> None:
    cookies = "\r\n".join(f"Set-Cookie: c{n}=v" for n in range(3000))  # ~60 KB, within the limit
    s = scene(handler=answer(f"HTTP/1.1 200 OK\r\nX-Backend: web-1\r\n{cookies}"), backends=())
    result, elapsed = timed(s.target)
    assert result.status is Status.OK, result.failures
    named = result.addresses[0].attempts[0].cookies_set
    assert named == (*(f"c{n}" for n in range(15)), "… and 2985 more")
    assert (
        result.cookie_note is not None and "c14, … and 2985 more); requests were sent" in result.cookie_note
    )
    assert elapsed < LIMITS["http"] + SLACK


def test_a_20_kib_location_is_cut_saying_so(scene: Any) -> None:
    # Shown in the finding cut to 200 characters, ending with "…" and its full length; kept
    # in the result (and the JSON) up to 8,192 characters, with its full length beside it.
    path = "/" + "p" * 20 * 1024
    s = scene(handler=answer(f"HTTP/1.1 302 Found\r\nX-Backend: web-1\r\nLocation: {path}"), backends=())
    result, elapsed = timed(s.target)
    assert reasons(result) == {Reason.HTTP_STATUS.value}
    attempt = result.addresses[0].attempts[0]
    url = f"https://{s.hostname}:{s.port}{path}"
    assert attempt.location_length == len(url)
    assert attempt.location is not None and len(attempt.location) == 8192 and attempt.location.endswith("…")
    assert url.startswith(attempt.location[:-1])
    shown = f"{url[: 200 - len(f'… ({len(url)} characters)')]}… ({len(url)} characters)"
    assert len(shown) == 200
    assert result.failures[0].detail.endswith(f"Location: {shown} (same host)")
    assert elapsed < LIMITS["http"] + SLACK


def test_a_location_over_64_kib_is_refused_by_httpx_as_a_protocol_error(scene: Any) -> None:
    path = "/" + "p" * 70 * 1024
    s = scene(handler=answer(f"HTTP/1.1 302 Found\r\nX-Backend: web-1\r\nLocation: {path}"), backends=())
    result, elapsed = timed(s.target)
    assert [(f.reason, f.detail) for f in result.failures] == [
        (
            Reason.HTTP_PROTOCOL_ERROR,
            "invalid HTTP response: the Location header is not a URL httpx accepts "
            "(longer than 65,536 characters, or malformed)",
        )
    ]
    assert elapsed < LIMITS["http"] + SLACK


# --------------------------------------------------------------------------- certificate chains


def _chain_of(pki: Pki, name: str, extra: int) -> Issued:
    """The leaf for ``name`` sent with its intermediate and ``extra`` unrelated self-signed certificates."""
    leaf = pki.leaf(name)
    junk = tuple(issue(f"junk-{n}.example") for n in range(extra))
    return dataclasses.replace(leaf, parents=(*leaf.parents[:-1], *junk))


def test_a_chain_of_230_certificates_is_verified_and_recorded_whole(scene: Any, pki: Pki) -> None:
    # ~97 KB of certificates, just under OpenSSL's 100 KiB limit on the list; OpenSSL
    # ignores the unrelated ones when it builds the path. Parsed once (FactsCache).
    name = "chain-230.corp.example"
    s = scene(cert=_chain_of(pki, name, 230), hostname=name)
    plan = make_plan(**{**s.target, "requests_per_address": 1, "timeouts": LIMITS})

    async def twice() -> tuple[TargetResult, TargetResult]:
        return await run_cycle(plan), await run_cycle(plan)

    first, second = asyncio.run(twice())
    assert first.status is Status.OK and second.status is Status.OK, first.failures
    tls = second.addresses[0].tls
    assert len(tls.chain) == 231 and len(tls.verified_chain) == 3  # nothing cut, nothing made up
    assert first.duration_seconds < LIMITS["tls"] + LIMITS["http"]
    assert second.duration_seconds < 1.0


def test_a_chain_over_openssls_100_kib_limit_fails_the_handshake_at_once(scene: Any, pki: Pki) -> None:
    name = "chain-300.corp.example"
    s = scene(cert=_chain_of(pki, name, 300), hostname=name)
    result, elapsed = timed(s.target)
    assert [(f.reason, f.detail) for f in result.failures] == [
        (Reason.TLS_HANDSHAKE_FAILED, "handshake failed: excessive message size")
    ]
    assert elapsed < LIMITS["tls"] + SLACK
