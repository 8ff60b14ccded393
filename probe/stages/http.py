"""HTTP stage: several requests to one address, with Host and SNI set to the hostname.

Each request goes on a new connection unless ``reuse_connections`` is set, so a load
balancer that balances per connection shows every backend (cloudprober's reasoning).
Every request is what a brand-new client sends: no cookies (a stickiness cookie such as
AWSALB would pin every request to one backend), no credentials, nothing learned from an
earlier response. Proxies from the environment are never used, redirects are not
followed, bodies are never read past ``max_body_bytes`` (the rest is left unread and the
connection closed; the part read is judged), gzip and deflate bodies are decoded with the
same cap, and a whole request, body included, is bounded by ``timeouts.http``. HTTP/2 is
spoken when the server selects it in ALPN (``http_version``). With ``grpc_health`` each
request is a gRPC health check (``grpc.health.v1.Health/Check``, HTTP/2 only) under the
same rules, and any gRPC response is judged by its ``grpc-status`` too
(:mod:`probe.stages.grpc_rules`).

This module does the I/O (the client, the requests, reading the body); the rules that
judge what came back are pure functions in :mod:`probe.stages.http_rules`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.cookiejar
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from probe._text import host_port, url_host
from probe._version import __version__
from probe.config.models import TargetConfig
from probe.model.deadline import Deadline
from probe.model.reasons import Reason
from probe.model.results import Failure, HttpAttempt, IPAddress, PhaseTimes, TlsResult
from probe.stages import _sockets as netio
from probe.stages._transport import ProbeTransport, handed_over
from probe.stages._wire import Notes, StreamRefused
from probe.stages.grpc_rules import HEALTH_PATH, health_request, judge_grpc
from probe.stages.headers import content_codings, cookie_names, response_date
from probe.stages.http_rules import (
    FIRST_BYTE,
    LAST_BYTE,
    classify_http_error,
    default_port,
    goaway_failure,
    judge_body,
    location_facts,
    phase_times,
    refusal_failure,
    timeout_failure,
)
from probe.stages.tls import OpenConnection, classify_tls_error

if TYPE_CHECKING:
    from probe.stages.plan import TargetPlan

USER_AGENT = f"probe/{__version__}"


class _NoCookies(http.cookiejar.CookiePolicy):
    """A cookie policy that neither keeps nor sends any cookie."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = False

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: urllib.request.Request) -> bool:
        return False

    def path_return_ok(self, path: str, request: urllib.request.Request) -> bool:
        return False


def build_client(target: TargetConfig, context: ssl.SSLContext) -> httpx.AsyncClient:
    """An httpx client for one target: no proxies, no redirects, explicit timeouts.

    The client keeps no cookies and has no credentials, so every request is what a new
    client sends; without ``reuse_connections`` it keeps no connection alive either, so
    one client serves every address and every cycle of the target (see
    :class:`TargetClient`). ``http_version`` picks HTTP/1.1, HTTP/2 or (``auto``) whichever
    the server selects in ALPN; the ALPN list itself is the one pinned on ``context``. An
    ``http://`` target speaks HTTP/1.1 only (no h2c upgrade, no prior knowledge).
    Its transport is probe's own (:class:`probe.stages._transport.ProbeTransport`:
    non-blocking sockets with ``ssl.SSLSocket``, and the TLS stage's connection for an
    address's first request).

    Args:
        target: the target (timeouts, reuse_connections, http_version).
        context: the SSL context for the requests (verifying unless insecure).
    """
    timeouts = target.timeouts
    http1, http2 = target.http_version != "2", target.http_version != "1.1"
    if target.plain:
        http1, http2 = True, False  # HTTP/1.1 only: probe does not speak h2c
    transport = ProbeTransport(context, http1=http1, http2=http2, keep_alive=target.reuse_connections)
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        timeout=httpx.Timeout(
            connect=max(timeouts.connect, timeouts.tls),
            read=timeouts.http,
            write=timeouts.http,
            pool=timeouts.http,
        ),
    )


class TargetClient:
    """The httpx client of a target, built on first use and kept across cycles.

    :func:`probe.engine.plan.plan` gives one to every target with the same SSL context and
    :func:`probe.engine.plan.client_key` (timeouts, ``http_version``, scheme,
    ``reuse_connections``: all that :func:`build_client` reads). Sharing it changes no
    request: the client keeps no cookies, every request carries its own headers, SNI and
    timeouts, and goes on a new connection (without ``reuse_connections`` the pool keeps
    none alive). With ``reuse_connections`` each address-probe gets a client of its own
    (closed at its end), so a kept-alive connection never outlives its address-probe. A
    client belongs to one event loop; a call from another loop builds a new one.

    Args:
        target: a target with these settings (only what :func:`build_client` reads is used).
        context: the SSL context of the requests.
    """

    def __init__(self, target: TargetConfig, context: ssl.SSLContext) -> None:
        self._target = target
        self._context = context
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        self._closing = False

    @property
    def current(self) -> httpx.AsyncClient | None:
        """The shared client built so far, ``None`` before the first use and after closing."""
        return self._client

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[httpx.AsyncClient]:
        """The client for one address-probe's requests."""
        if self._target.reuse_connections:
            async with build_client(self._target, self._context) as own:
                yield own
            return
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client, self._loop = build_client(self._target, self._context), loop
        client = self._client
        self._users += 1
        try:
            yield client
        finally:
            self._users -= 1
            if self._closing and self._users == 0 and client is self._client:
                await self._close_now()

    async def aclose(self) -> None:
        """Close the client once no address-probe uses it (on reload and at stop)."""
        self._closing = True
        if self._users == 0:
            await self._close_now()

    async def _close_now(self) -> None:
        client, self._client = self._client, None
        self._closing = False
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """What each request to an address sends: a GET of the URL, or a gRPC Health/Check."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None
    #: The service of a Health/Check request (``""``: the server), ``None`` for a GET.
    health: str | None = None


def _request(address: IPAddress, target: TargetConfig) -> _Request:
    """The request of ``target`` to ``address`` (see :class:`_Request`)."""
    if target.grpc_health is None:
        return _Request("GET", request_url(address, target), request_headers(target))
    service = target.grpc_health.service
    return _Request(
        "POST",
        f"https://{host_port(str(address), target.port)}{HEALTH_PATH}",
        grpc_headers(target),
        health_request(service),
        service,
    )


def request_url(address: IPAddress, target: TargetConfig) -> str:
    """The URL to request: the address in place of the hostname, the target's scheme."""
    return f"{target.scheme}://{host_port(str(address), target.port)}{target.path}"


def _host_header(target: TargetConfig) -> str:
    """Host as a browser sends it: the hostname, and the port unless it is the scheme's default.

    An IPv6 address (an IP-address URL without a server name) is in brackets (RFC 9110 §7.2).
    """
    if target.port == default_port(target.scheme):
        return url_host(target.hostname)
    return host_port(target.hostname, target.port)


def request_headers(target: TargetConfig) -> dict[str, str]:
    """Headers of every request: Host as a browser sends it, then the configured ones."""
    headers = {
        "Host": _host_header(target),
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        # Ask for the body as is; a server that compresses anyway is decoded, capped.
        "Accept-Encoding": "identity",
    }
    headers.update({name: value.value for name, value in target.headers.items()})
    return headers


def grpc_headers(target: TargetConfig) -> dict[str, str]:
    """Headers of a gRPC call: Host (``:authority``), gRPC's own, then the configured ones (metadata)."""
    headers = {
        "Host": _host_header(target),
        "User-Agent": USER_AGENT,
        "Content-Type": "application/grpc",
        "TE": "trailers",  # gRPC's servers refuse a call without it
    }
    headers.update({name: value.value for name, value in target.headers.items()})
    return headers


async def request_rounds(
    plan: TargetPlan,
    address: IPAddress,
    deadline: Deadline,
    connection: OpenConnection | None = None,
    tls: TlsResult | None = None,
) -> tuple[HttpAttempt, ...]:
    """The HTTP stage at one address: ``requests_per_address`` GET requests, one after another.

    Args:
        plan: the target's plan: URL path, headers, judgement rules, timeouts and its HTTP
            client (:meth:`~probe.stages.plan.TargetPlan.http_client`).
        address: the address to send to.
        deadline: the cycle's deadline; requests not started by then are not sent.
        connection: the TLS stage's verified connection to ``address``, for the first
            request (closed once that request is done; the caller closes it when
            unused). That request's ``connect`` and ``tls`` phases are then the TLS
            stage's (``tls.connect_seconds`` and ``tls.handshake_seconds``), and its
            duration includes them, so that it means what it means for a request on a
            new connection.
        tls: the TLS stage's result that ``connection`` comes from.

    Returns:
        One attempt per request sent; faults are findings inside each attempt.
    """
    async with plan.http_client().session() as client:
        return await _rounds(client, address, plan.target, deadline, connection, tls)


async def _rounds(
    client: httpx.AsyncClient,
    address: IPAddress,
    target: TargetConfig,
    deadline: Deadline,
    connection: OpenConnection | None,
    tls: TlsResult | None,
) -> tuple[HttpAttempt, ...]:
    request = _request(address, target)
    attempts = []
    for index in range(target.requests_per_address):
        if deadline.expired:
            break
        if index == 0 and connection is not None:
            with handed_over(str(address), target.port, connection.connection) as offer:
                attempt = await _attempt(client, request, address, target, deadline)
            if offer.taken and tls is not None:
                attempt = _with_tls_stage_phases(attempt, tls)
            attempts.append(attempt)
            continue
        attempts.append(await _attempt(client, request, address, target, deadline))
    return tuple(attempts)


def _with_tls_stage_phases(attempt: HttpAttempt, tls: TlsResult) -> HttpAttempt:
    """An attempt sent over the TLS stage's connection, with that connection's set-up times.

    A retried attempt's phases are its retry's, on a new connection; only its duration
    takes in the TLS stage's connect and handshake, which its first try used.
    """
    connect, handshake = tls.connect_seconds, tls.handshake_seconds
    duration = attempt.duration_seconds + (connect or 0.0) + (handshake or 0.0)
    if attempt.retried_after is not None:
        return dataclasses.replace(attempt, duration_seconds=duration)
    phases = PhaseTimes(
        connect=connect,
        tls=handshake,
        processing=attempt.phases.processing,
        transfer=attempt.phases.transfer,
    )
    return dataclasses.replace(attempt, phases=phases, duration_seconds=duration)


class _Try:
    """One try of a request: its trace events and what came back.

    Attributes:
        start: when it started (``time.monotonic()``).
        end: when it ended.
        events: ``time.monotonic()`` of each trace event and of the network reads.
        status, version, headers: the response's, ``None`` when no response arrived.
        received: this machine's clock when the response headers arrived (Unix time).
        notes: what the response said besides its head and body (trailers, a GOAWAY).
        body: what was read of the body.
        error: what ended the try early, ``None`` when the response was read as needed.
    """

    __slots__ = (
        "body",
        "end",
        "error",
        "events",
        "headers",
        "notes",
        "received",
        "start",
        "status",
        "version",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.end = start
        self.events: dict[str, float] = {}
        self.status: int | None = None
        self.version: str | None = None
        self.headers: httpx.Headers | None = None
        self.received: float | None = None
        self.notes: Notes | None = None
        self.body = _Body()
        self.error: httpx.HTTPError | OSError | None = None


async def _attempt(
    client: httpx.AsyncClient,
    request: _Request,
    address: IPAddress,
    target: TargetConfig,
    deadline: Deadline,
) -> HttpAttempt:
    """One request, retried once on a new connection when the server refused its HTTP/2 stream.

    A refused stream (``RST_STREAM REFUSED_STREAM``, or a GOAWAY whose ``last_stream_id``
    leaves it unprocessed) was not processed (RFC 9113 §8.7); curl and Go's transport
    retry it on a new connection, and probe does so once, within the same
    ``timeouts.http`` and the cycle's deadline. The retry is a fact of the attempt
    (``retried_after``); a second refusal is ``http_stream_refused``.
    """
    start = time.monotonic()
    limit = deadline.clip(target.timeouts.http)
    first = await _send(client, request, target, start, limit)
    final, retried_after = first, None
    if isinstance(first.error, StreamRefused):
        left = limit - (time.monotonic() - start)
        if left > 0 and not deadline.expired:
            retried_after = first.error.how
            final = await _send(client, request, target, time.monotonic(), left)
    failure = _try_failure(final, first, retried_after, limit, deadline, address, target.hostname)
    phases = phase_times(final.events, final.start, final.end if final.status is not None else None)
    facts = _response_facts(final.status, final.headers, final.received, target)
    raw = bytes(final.body.raw)
    common: dict[str, Any] = {
        "status_code": final.status,
        "http_version": final.version,
        "body_bytes": len(raw),
        "phases": phases,
        "duration_seconds": final.end - start,
        "retried_after": retried_after,
        **facts,
    }
    if failure is not None:
        return HttpAttempt(backend=None, body_truncated=final.body.truncated, failures=(failure,), **common)
    assert final.status is not None and final.headers is not None
    backend, failures, cut, answer = await judge_body(final.status, final.headers, raw, target, address)
    if final.body.too_large is not None:
        failures = (*failures, Failure(Reason.HTTP_BODY_TOO_LARGE, final.body.too_large, address))
    notes = final.notes or Notes()
    if notes.goaway_error is not None:
        failures = (*failures, goaway_failure(notes.goaway_error, address))
    grpc, grpc_failures = judge_grpc(
        final.headers,
        notes.trailers,
        raw,
        http_ok=target.status_accepted(final.status),
        health=request.health,
        address=address,
    )
    return HttpAttempt(
        backend=backend,
        body_truncated=final.body.truncated or cut,
        failures=(*failures, *grpc_failures),
        grpc_status=grpc.status,
        grpc_message=grpc.message,
        grpc_serving_status=grpc.serving,
        load_balancer=answer,
        **common,
    )


async def _send(
    client: httpx.AsyncClient,
    request: _Request,
    target: TargetConfig,
    start: float,
    limit: float,
) -> _Try:
    """Send the request once and read its response (body within the caps), within ``limit`` seconds."""
    tried = _Try(start)
    events = tried.events
    loop = asyncio.get_running_loop()
    # The whole request is bounded by `limit`, but in two parts. Connecting (TCP and
    # TLS) is bounded by the transport's connect timeout, half the limit each, so that
    # a connect or handshake that times out is named after its phase. Once HTTP starts
    # (the HTTP/2 preface or the HTTP/1.1 request), an asyncio timeout bounds the rest,
    # headers and body, as a whole (a trickling server never trips a per-read timeout).
    inner = _clipped_timeouts(target, limit)
    bound = asyncio.timeout(None)

    # The connection, whose reads note when they returned (``read_at``): the phases end
    # at the network reads that delivered the response, as Go's httptrace (and so
    # blackbox_exporter) takes them, not after the HTTP layers parsed them.
    network: list[netio.Connection] = []

    def trace(name: str, connection: netio.Connection | None) -> None:
        if connection is not None:
            network[:] = [connection]
        if name in events:
            return
        now = time.monotonic()
        events[name] = now
        if name == "http.receive_response_headers.complete" and network:
            # The read that delivered the end of the headers (Go's GotFirstResponseByte).
            events[FIRST_BYTE] = min(now, network[0].read_at or now)
        elif name in ("http.send_connection_init.started", "http.send_request_headers.started"):
            bound.reschedule(loop.time() + max(0.0, limit - (now - start)))

    try:
        async with (
            bound,
            client.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.content,
                timeout=inner,
                extensions={"sni_hostname": target.hostname, "probe_trace": trace},
            ) as response,
        ):
            tried.status, tried.version, tried.headers = (
                response.status_code,
                response.http_version,
                response.headers,
            )
            tried.notes = response.extensions.get("probe_notes")
            tried.received = time.time()
            await _read_body(response, target.max_body_bytes, target.body_size_limit, tried.body)
            if network and network[0].read_at is not None:
                # The read that delivered the end of the response (or the last byte read).
                events[LAST_BYTE] = network[0].read_at
    except (httpx.HTTPError, OSError) as exc:  # OSError: TimeoutError and ssl.SSLError too
        tried.error = exc
    tried.end = time.monotonic()
    return tried


def _try_failure(
    final: _Try,
    first: _Try,
    retried_after: str | None,
    limit: float,
    deadline: Deadline,
    address: IPAddress,
    hostname: str,
) -> Failure | None:
    """The finding of an attempt whose last try ended early, ``None`` when it did not."""
    exc = final.error
    if exc is None:
        return None
    if isinstance(exc, StreamRefused):
        assert isinstance(first.error, StreamRefused)
        return refusal_failure(
            first.error.how, exc.how if retried_after is not None else None, limit, address
        )
    return _request_failure(exc, final.events, limit, deadline, address, hostname)


def _request_failure(
    exc: httpx.HTTPError | OSError,
    events: Mapping[str, float],
    limit: float,
    deadline: Deadline,
    address: IPAddress,
    hostname: str,
) -> Failure:
    """The finding for a request that raised ``exc``; checked in this order, the first kind wins.

    A timeout (asyncio's, ``TimeoutError``, or httpx's) is named after the phase it
    happened in; another httpx error is classified by :func:`classify_http_error`; a TLS
    error that the transport does not wrap by ``classify_tls_error``; any other
    ``OSError`` is a connection error during the response.
    """
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return timeout_failure(events, limit, deadline, address)
    if isinstance(exc, httpx.HTTPError):
        reason, detail = classify_http_error(exc, hostname, time.time())
    elif isinstance(exc, ssl.SSLError):
        reason, detail = classify_tls_error(exc)
    else:
        reason = Reason.HTTP_PROTOCOL_ERROR
        detail = f"connection error during the response: {exc.strerror or type(exc).__name__}"
    return Failure(reason, detail, address)


def _response_facts(
    status: int | None, headers: httpx.Headers | None, received: float | None, target: TargetConfig
) -> dict[str, Any]:
    """What a response's headers say besides its status: cookie names, Location, codings, Date.

    Empty (the attempt's defaults) when no headers arrived.
    """
    if headers is None:
        return {}
    return {
        "cookies_set": cookie_names(headers),
        **location_facts(status or 0, headers, target),
        "content_encoding": ", ".join(content_codings(headers)) or None,
        "date_timestamp": response_date(headers),
        "received_timestamp": received,
    }


def _clipped_timeouts(target: TargetConfig, limit: float) -> httpx.Timeout:
    timeouts = target.timeouts
    return httpx.Timeout(
        connect=min(max(timeouts.connect, timeouts.tls), limit / 2),
        read=min(timeouts.http, limit),
        write=min(timeouts.http, limit),
        pool=min(timeouts.http, limit),
    )


class _Body:
    """What was read of one body: the bytes kept, whether more was sent, a size finding."""

    __slots__ = ("raw", "too_large", "truncated")

    def __init__(self) -> None:
        self.raw = bytearray()
        self.truncated = False
        self.too_large: str | None = None


async def _read_body(response: httpx.Response, cap: int, size_limit: int | None, body: _Body) -> None:
    """Read the body as sent, keeping at most ``cap`` bytes, into ``body``.

    Without ``size_limit`` reading stops once more than ``cap`` bytes arrived (the
    connection is then closed, unread). With it, a ``Content-Length`` above the limit is
    a finding at once; without a ``Content-Length`` the bytes past ``cap`` are read and
    discarded until the body ends or passes the limit. Memory stays within ``cap`` plus
    one read (64 KiB) whatever the server sends.
    """
    declared = _content_length(response.headers)
    counting = False
    if size_limit is not None:
        if declared is not None and declared > size_limit:
            body.too_large = f"Content-Length is {declared} bytes, over body_size_limit ({size_limit} bytes)"
        elif declared is None:
            counting = True
    if cap == 0 and not counting:
        return
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        room = cap - len(body.raw)
        if room > 0:
            body.raw += chunk[:room]
        if seen > cap:
            body.truncated = True
            if not counting:
                return
        if counting and size_limit is not None and seen > size_limit:
            body.too_large = (
                f"the body (no Content-Length) went past body_size_limit ({size_limit} bytes); "
                "reading stopped there"
            )
            return


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # h11 and h2 refuse invalid or conflicting lengths before this
    return int(value)
