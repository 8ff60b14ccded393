"""HTTP stage: several requests to one address, with Host and SNI set to the hostname.

Each request goes on a new connection unless ``reuse_connections`` is set, so a load
balancer that balances per connection shows every backend (cloudprober's reasoning).
Every request is what a brand-new client sends: no cookies (a stickiness cookie such as
AWSALB would pin every request to one backend), no credentials, nothing learned from an
earlier response. Proxies from the environment are never used, redirects are not
followed, bodies are never read past ``max_body_bytes`` (the rest is left unread and the
connection closed; the part read is judged), gzip and deflate bodies are decoded with the
same cap, and a whole request, body included, is bounded by ``timeouts.http``. HTTP/2 is
spoken when the server selects it in ALPN (``http_version``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import http.cookiejar
import re
import ssl
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from probe._version import __version__

with contextlib.suppress(ImportError):
    # httpx imports its network backend and HTTP/1.1 machinery on the first request;
    # import them now so that the first measured request of a run is not slowed by it.
    import anyio._backends._asyncio  # noqa: F401
    import httpcore._async.http2
    import httpcore._async.http11

from probe._text import host_port, plural, shorten
from probe.config.models import TargetConfig
from probe.model.deadline import Deadline
from probe.model.reasons import Reason
from probe.model.results import Failure, HttpAttempt, IPAddress, PhaseTimes, TlsResult
from probe.stages._httpcore import NewConnectionPerRequest, SocketBackend, handed_over
from probe.stages.certs import classify_verify_error
from probe.stages.tls import OpenConnection, classify_connect_error, classify_tls_error

USER_AGENT = f"probe/{__version__}"
_MAX_BACKEND_NAME = 64
_MAX_COOKIES = 16
_MAX_LOCATION = 200
#: Largest difference between a response's Date and this machine's clock that is fine (seconds).
CLOCK_SKEW_LIMIT = 60.0
_PRINTABLE = re.compile(r"[^\x21-\x7e]+")
_PRINTABLE_SPACE = re.compile(r"[^\x20-\x7e]+")
# httpcore names its trace events http11.* or http2.*; probe reads them as http.*.
_HTTP_EVENT = re.compile(r"^http(11|2)\.")
_GZIP = frozenset({"gzip", "x-gzip"})
# The trace events whose return value is the connection's network stream.
_STREAM_EVENTS = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})
# When the reads that delivered the response's headers and its end returned (keys of `events`).
_FIRST_BYTE, _LAST_BYTE = "network.first_byte", "network.last_byte"


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
    Connections are made by :class:`probe.stages._httpcore.SocketBackend` (non-blocking
    sockets with ``ssl.SSLSocket``, and the TLS stage's connection for an address's first
    request).

    Args:
        target: the target (timeouts, reuse_connections, http_version).
        context: the SSL context for the requests (verifying unless insecure).
    """
    timeouts = target.timeouts
    http1, http2 = target.http_version != "2", target.http_version != "1.1"
    if target.plain:
        http1, http2 = True, False  # HTTP/1.1 only: probe does not speak h2c
    transport = httpx.AsyncHTTPTransport(verify=context, http1=http1, http2=http2, trust_env=False)
    # httpx takes no network backend; its transport's pool is rebuilt with probe's. The
    # addresses of a target are probed concurrently (each one request at a time), so the
    # pool is not limited; the cycle bounds the concurrency.
    if target.reuse_connections:
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=None,
            max_keepalive_connections=1,
            http1=http1,
            http2=http2,
            network_backend=SocketBackend(),
        )
    else:  # a connection per request, without a pool's shared state (see http_network)
        pool = NewConnectionPerRequest(context, http1=http1, http2=http2)
        transport._pool = pool  # type: ignore[assignment]  # the pool's interface, not its class
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


def request_url(address: IPAddress, target: TargetConfig) -> str:
    """The URL to request: the address in place of the hostname, the target's scheme."""
    return f"{target.scheme}://{host_port(str(address), target.port)}{target.path}"


def _default_port(scheme: str) -> int:
    return 80 if scheme == "http" else 443


def request_headers(target: TargetConfig) -> dict[str, str]:
    """Headers of every request: Host as a browser sends it, then the configured ones."""
    host = (
        target.hostname if target.port == _default_port(target.scheme) else f"{target.hostname}:{target.port}"
    )
    headers = {
        "Host": host,
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        # Ask for the body as is; a server that compresses anyway is decoded, capped.
        "Accept-Encoding": "identity",
    }
    headers.update({name: value.value for name, value in target.headers.items()})
    return headers


async def request_rounds(
    client: httpx.AsyncClient,
    address: IPAddress,
    target: TargetConfig,
    deadline: Deadline,
    connection: OpenConnection | None = None,
    tls: TlsResult | None = None,
) -> tuple[HttpAttempt, ...]:
    """Send ``target.requests_per_address`` GET requests to ``address``, one after another.

    Args:
        client: from :func:`build_client` (or :meth:`TargetClient.session`).
        address: the address to send to.
        target: URL path, headers, judgement rules and timeouts.
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
    url = request_url(address, target)
    headers = request_headers(target)
    attempts = []
    for index in range(target.requests_per_address):
        if deadline.expired:
            break
        if index == 0 and connection is not None:
            with handed_over(str(address), target.port, connection.connection) as offer:
                attempt = await _attempt(client, url, headers, address, target, deadline)
            if offer.taken and tls is not None:
                attempt = _with_tls_stage_phases(attempt, tls)
            attempts.append(attempt)
            continue
        attempts.append(await _attempt(client, url, headers, address, target, deadline))
    return tuple(attempts)


def _with_tls_stage_phases(attempt: HttpAttempt, tls: TlsResult) -> HttpAttempt:
    """An attempt sent over the TLS stage's connection, with that connection's set-up times."""
    connect, handshake = tls.connect_seconds, tls.handshake_seconds
    phases = PhaseTimes(connect, handshake, attempt.phases.processing, attempt.phases.transfer)
    return dataclasses.replace(
        attempt,
        phases=phases,
        duration_seconds=attempt.duration_seconds + (connect or 0.0) + (handshake or 0.0),
    )


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    address: IPAddress,
    target: TargetConfig,
    deadline: Deadline,
) -> HttpAttempt:
    events: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    limit = deadline.clip(target.timeouts.http)
    # The whole request is bounded by `limit`, but in two parts. Connecting (TCP and
    # TLS) is bounded by httpx's own connect timeout, half the limit each: httpcore
    # leaks the socket when it is cancelled inside a handshake, so nothing cancels it
    # there. Once HTTP starts (the HTTP/2 preface or the HTTP/1.1 request), an asyncio
    # timeout bounds the rest, headers and body, as a whole (a trickling server never
    # trips a per-read timeout); httpcore closes the connection properly when cancelled
    # there.
    inner = _clipped_timeouts(target, limit)
    bound = asyncio.timeout(None)

    # The connection's network stream, whose reads note when they returned (``read_at``):
    # the phases end at the network reads that delivered the response, as Go's httptrace
    # (and so blackbox_exporter) takes them, not after the HTTP layers parsed them.
    network: list[Any] = []

    async def trace(name: str, info: Mapping[str, Any]) -> None:
        if name in _STREAM_EVENTS:
            stream = info.get("return_value")
            if hasattr(stream, "read_at"):
                network[:] = [stream]
        name = _HTTP_EVENT.sub("http.", name)
        if name in events:
            return
        now = time.monotonic()
        events[name] = now
        if name == "http.receive_response_headers.complete" and network:
            # The read that delivered the end of the headers (Go's GotFirstResponseByte).
            events[_FIRST_BYTE] = min(now, network[0].read_at or now)
        elif name in ("http.send_connection_init.started", "http.send_request_headers.started"):
            bound.reschedule(loop.time() + max(0.0, limit - (now - start)))

    status: int | None = None
    version: str | None = None
    response_headers: httpx.Headers | None = None
    received: float | None = None
    body = _Body()
    failure: Failure | None = None
    try:
        async with (
            bound,
            client.stream(
                "GET",
                url,
                headers=headers,
                timeout=inner,
                extensions={"sni_hostname": target.hostname, "trace": trace},
            ) as response,
        ):
            status, version, response_headers = (
                response.status_code,
                response.http_version,
                response.headers,
            )
            received = time.time()
            await _read_body(response, target.max_body_bytes, target.body_size_limit, body)
            if network and network[0].read_at is not None:
                # The read that delivered the end of the response (or the last byte read).
                events[_LAST_BYTE] = network[0].read_at
    except TimeoutError:
        failure = _timeout_failure(events, limit, deadline, address)
    except httpx.TimeoutException:
        failure = _timeout_failure(events, limit, deadline, address)
    except httpx.HTTPError as exc:
        reason, detail = classify_http_error(exc, target.hostname, time.time())
        failure = Failure(reason, detail, address)
    except ssl.SSLError as exc:
        # httpcore does not wrap TLS errors raised while reading a response (e.g. the
        # TLS 1.3 alert of a server that requires a client certificate).
        reason, detail = classify_tls_error(exc)
        failure = Failure(reason, detail, address)
    except OSError as exc:
        failure = Failure(
            Reason.HTTP_PROTOCOL_ERROR,
            f"connection error during the response: {exc.strerror or exc}",
            address,
        )
    end = time.monotonic()
    phases = _phases(events, start, end if status is not None else None)
    facts: dict[str, Any] = {}
    if response_headers is not None:
        facts = {
            "cookies_set": cookie_names(response_headers),
            "location": redirect_location(status or 0, response_headers, target)[0],
            "content_encoding": ", ".join(content_codings(response_headers)) or None,
            "date_timestamp": response_date(response_headers),
            "received_timestamp": received,
        }
    raw = bytes(body.raw)
    if failure is not None:
        return HttpAttempt(
            status, version, None, len(raw), body.truncated, phases, end - start, (failure,), **facts
        )
    assert status is not None and response_headers is not None
    decoded, cut, undecodable = decode_body(raw, content_codings(response_headers), target.max_body_bytes)
    backend, failures = judge_response(
        status, response_headers, decoded, target, address, undecodable=undecodable
    )
    if body.too_large is not None:
        failures = (*failures, Failure(Reason.HTTP_BODY_TOO_LARGE, body.too_large, address))
    return HttpAttempt(
        status,
        version,
        backend,
        len(raw),
        body.truncated or cut,
        phases,
        end - start,
        failures,
        **facts,
    )


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


def decode_body(raw: bytes, codings: tuple[str, ...], cap: int) -> tuple[bytes, bool, str | None]:
    """Undo the content codings of a body (RFC 9110 §8.4), never producing more than ``cap`` bytes.

    gzip (``x-gzip``) and deflate (zlib-wrapped, or raw as some servers send it) are
    decoded with zlib's output limit, so a small compressed body that expands to gigabytes
    (a decompression bomb) yields ``cap`` bytes and stops. A body cut at the read cap
    decodes as far as it goes.

    Args:
        raw: the body as read.
        codings: the codings in the order applied (``Content-Encoding`` order), lower case.
        cap: the most bytes to produce (``max_body_bytes``).

    Returns:
        ``(body, cut, problem)``: the decoded body (``raw`` itself when nothing is to be
        decoded or decoding is impossible), whether decoding stopped at ``cap``, and a
        sentence such as ``"body is br-encoded"`` when the body cannot be decoded
        (``None`` when it could).
    """
    data = raw
    cut = False
    for coding in reversed(codings):
        if coding in _GZIP:
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            decoder = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
        else:
            return raw, False, f"body is {printable_token(coding)}-encoded, which probe cannot decode"
        if cap == 0:
            return b"", bool(data), None
        try:
            out = decoder.decompress(data, cap)
            # gzip allows several members one after another (RFC 1952 §2.2), as gzip(1) and
            # curl decode them; each member gets the room the earlier ones left.
            while coding in _GZIP and decoder.eof and decoder.unused_data and len(out) < cap:
                rest = decoder.unused_data
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += decoder.decompress(rest, cap - len(out))
        except zlib.error as exc:
            return raw, False, f"body is {coding}-encoded but does not decode ({exc})"
        cut = cut or bool(decoder.unconsumed_tail) or (len(out) >= cap and bool(decoder.unused_data))
        data = out
    return data, cut, None


def _zlib_header(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (RFC 1950), as deflate is meant to."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def printable_token(text: str) -> str:
    """A header token cut to 32 printable characters, for details."""
    return _PRINTABLE.sub("_", text)[:32]


def _distinct(values: list[str]) -> list[str]:
    """Values stripped, empty ones dropped, repeats dropped (first seen first)."""
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def _values(
    headers: httpx.Headers | Mapping[str, str], name: str, split_commas: bool = True
) -> list[str] | None:
    """Every value of a header field, ``None`` when absent (repeated fields are lists, RFC 9110 §5.3)."""
    if isinstance(headers, httpx.Headers):
        if name not in headers:
            return None
        return headers.get_list(name, split_commas=split_commas)
    value = headers.get(name)
    if value is None:
        return None
    return value.split(",") if split_commas else [value]


def content_codings(headers: httpx.Headers | Mapping[str, str]) -> tuple[str, ...]:
    """The response's content codings in the order applied, lower case, identity left out."""
    return tuple(c.lower() for c in _distinct_keep_order(_values(headers, "content-encoding") or []))


def _distinct_keep_order(values: list[str]) -> list[str]:
    # Codings may legitimately repeat (gzip applied twice); only blanks and identity go.
    return [v.strip() for v in values if v.strip() and v.strip().lower() != "identity"]


def cookie_names(headers: httpx.Headers | Mapping[str, str]) -> tuple[str, ...]:
    """Names of the cookies set by ``Set-Cookie`` fields (never their values), at most 16."""
    names = []
    for field in _values(headers, "set-cookie", split_commas=False) or []:
        name = field.split(";", 1)[0].split("=", 1)[0].strip()
        cleaned = _PRINTABLE.sub("_", name)[:_MAX_BACKEND_NAME]
        if cleaned:
            names.append(cleaned)
    return tuple(dict.fromkeys(names))[:_MAX_COOKIES]


def response_date(headers: httpx.Headers | Mapping[str, str]) -> float | None:
    """The ``Date`` header as Unix time; ``None`` when absent, unreadable or given twice differently."""
    values = _distinct(_values(headers, "date", split_commas=False) or [])
    if len(values) != 1:
        return None
    try:
        when = parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or an obsolete zone: RFC 9110 says GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def redirect_location(
    status: int, headers: httpx.Headers | Mapping[str, str], target: TargetConfig
) -> tuple[str | None, str | None]:
    """The ``Location`` of a redirect (3xx) as an absolute URL, and a note on where it points.

    The note says whether it stays on the same host, goes to another one, downgrades to
    ``http://`` (from an ``https://`` target) or upgrades to ``https://`` (from an
    ``http://`` one) (RFC 9110 §10.2.2: a relative reference is resolved against the
    request URL, whose host is the target's hostname and whose scheme is the target's).

    Returns:
        ``(url, note)``, both ``None`` for other statuses or without a Location.
    """
    if not 300 <= status <= 399:
        return None, None
    values = _distinct(_values(headers, "location", split_commas=False) or [])
    if not values:
        return None, None
    try:
        url = urljoin(_base_url(target), values[0].strip())
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return _PRINTABLE_SPACE.sub("_", values[0])[:_MAX_LOCATION], "not a valid URL"
    url = _PRINTABLE_SPACE.sub("_", url)[:_MAX_LOCATION]
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        note = f"to a {printable_token(parts.scheme)}: URL"
    elif scheme == "http" and not target.plain:
        note = "a downgrade to http://"
    elif host != target.hostname or (
        scheme == target.scheme and (port or _default_port(scheme)) != target.port
    ):
        where = host_port(host or "", port) if port and port != _default_port(scheme) else host or ""
        note = f"another host: {shorten(_PRINTABLE.sub('_', where), 80)}"
    elif scheme != target.scheme:
        note = "an upgrade to https://, same host"
    else:
        note = "same host"
    if len(values) > 1:
        note += f"; {len(values)} different Location headers, the first is shown"
    return url, note


def _base_url(target: TargetConfig) -> str:
    """The URL a request asks for, with the hostname: what a relative Location resolves against."""
    default = target.port == _default_port(target.scheme)
    authority = target.hostname if default else host_port(target.hostname, target.port)
    return f"{target.scheme}://{authority}{target.path}"


#: The statuses ``expect_redirect`` accepts: what an ALB redirect action (HTTP_301,
#: HTTP_302) and HAProxy's ``redirect scheme https`` (302 by default) send.
REDIRECT_STATUSES = (301, 302)


def expected_redirect(target: TargetConfig) -> str:
    """The ``https://`` form of an ``http://`` target's URL: same host and path, port 443."""
    return f"https://{target.hostname}{target.path}"


def judge_redirect(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    target: TargetConfig,
    address: IPAddress | None = None,
) -> tuple[Failure, ...]:
    """Check one response of an ``expect_redirect: https`` target; the redirect is not followed.

    The response must be a 301 or 302 whose ``Location`` (resolved against the request
    URL, RFC 9110 §10.2.2) is the ``https://`` form of the URL: the same host, port 443
    (implied or explicit), the same path and the same query. ALB's default redirect
    action (``#{host}``, ``#{path}``, ``#{query}``) and HAProxy's ``redirect scheme
    https`` keep all three. Stricter than curl, which would follow any redirect.

    Returns:
        ``http_redirect_missing`` for a response that is not a redirect (a 200 means the
        listener serves over plain HTTP), ``http_redirect_wrong`` for any other redirect
        (status 303, 307 or 308; no Location; to ``http://``, another host, port or path),
        naming the Location and what was expected; empty when the redirect is right.
    """
    expected = expected_redirect(target)
    if not 300 <= status <= 399:
        return (
            Failure(
                Reason.HTTP_REDIRECT_MISSING,
                f"status {status}, not a redirect (expected 301 or 302 to {expected})",
                address,
            ),
        )
    location, _ = redirect_location(status, headers, target)
    if location is None:
        return (
            Failure(
                Reason.HTTP_REDIRECT_WRONG,
                f"status {status} without a Location header (expected 301 or 302 to {expected})",
                address,
            ),
        )
    why = _redirect_problem(location, target)
    if status not in REDIRECT_STATUSES:
        why = f"status {status}, not 301 or 302" + (f"; {why}" if why else "")
    if why is None:
        return ()
    return (
        Failure(
            Reason.HTTP_REDIRECT_WRONG,
            f"{status} to {location}: {why} (expected 301 or 302 to {expected})",
            address,
        ),
    )


def _redirect_problem(location: str, target: TargetConfig) -> str | None:
    """What is wrong with a redirect's (absolute) Location for ``expect_redirect``, ``None`` if right."""
    try:
        parts = urlsplit(location)
        host, port = (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return "not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"a {printable_token(parts.scheme)}: URL, not https://"
    problems = []
    if scheme == "http":
        problems.append("still plain http://")
    if host != target.hostname:
        problems.append(f"another host ({shorten(_PRINTABLE.sub('_', host), 80) or 'none'})")
    if scheme == "https" and port not in (None, 443):
        problems.append(f"port {port}, not 443")
    if (parts.path or "/") != target.path.split("?", 1)[0]:
        problems.append("another path")
    elif (f"?{parts.query}" if parts.query else "") != target.path[len(parts.path or "/") :]:
        problems.append("another query")
    return "; ".join(problems) or None


def _timeout_failure(
    events: Mapping[str, float], limit: float, deadline: Deadline, address: IPAddress
) -> Failure:
    """The finding for a request that ran out of time, named after the phase it was in."""
    if "connection.connect_tcp.complete" not in events and not _http_started(events):
        reason, detail = Reason.TCP_TIMEOUT, f"no TCP connection within {limit:.3g}s"
    elif "connection.start_tls.started" in events and "connection.start_tls.complete" not in events:
        reason, detail = Reason.TLS_HANDSHAKE_TIMEOUT, f"TLS handshake did not complete within {limit:.3g}s"
    else:
        waiting = (
            "the response headers"
            if "http.receive_response_headers.complete" not in events
            else "the end of the body"
        )
        reason = Reason.HTTP_TIMEOUT
        detail = f"no complete response within {limit:.3g}s (waiting for {waiting})"
    if deadline.timeout_reason(reason) is Reason.CYCLE_DEADLINE_EXCEEDED:
        reason, detail = (
            Reason.CYCLE_DEADLINE_EXCEEDED,
            f"the {deadline.seconds:g}s cycle deadline passed during a request",
        )
    return Failure(reason, detail, address)


def _http_started(events: Mapping[str, float]) -> float | None:
    """When HTTP began on the connection: the HTTP/2 preface or the HTTP/1.1 request."""
    return events.get("http.send_connection_init.started") or events.get("http.send_request_headers.started")


def classify_http_error(
    exc: httpx.HTTPError, hostname: str | None = None, now: float | None = None
) -> tuple[Reason, str]:
    """Map an httpx exception (not a timeout) to a reason and a sentence.

    Chosen by exception type and, for connect errors, by the underlying ``OSError`` or
    ``ssl.SSLError`` found along the cause chain.

    Args:
        exc: the exception.
        hostname: the name verified, for certificate messages.
        now: Unix time, for certificate messages.
    """
    if isinstance(exc, httpx.ConnectError):
        # httpx wraps httpcore's error, which wraps anyio's, which wraps the real one.
        cause = _root_cause(exc, (ssl.SSLError, ConnectionRefusedError))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return classify_verify_error(
                cause.verify_code, cause.verify_message or str(cause), (), hostname or "", now or 0.0
            )
        if isinstance(cause, ssl.SSLError):
            return classify_tls_error(cause)
        if isinstance(cause, ConnectionRefusedError):
            return classify_connect_error(cause)
        deepest = _root_cause(exc, (OSError,))
        if isinstance(deepest, OSError):
            return classify_connect_error(deepest)
        return Reason.TCP_ERROR, f"connect failed: {_short(exc)}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return Reason.HTTP_PROTOCOL_ERROR, f"invalid HTTP response: {_short(exc)}"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        # TLS 1.3 servers that require a client certificate say so only after the
        # handshake, with an alert that arrives on the first read.
        alert = _root_cause(exc, (ssl.SSLError,))
        if isinstance(alert, ssl.SSLError):
            return classify_tls_error(alert)
        return Reason.HTTP_PROTOCOL_ERROR, "the connection closed before the response was complete"
    if isinstance(exc, httpx.DecodingError):
        return Reason.HTTP_PROTOCOL_ERROR, f"the response cannot be decoded: {_short(exc)}"
    return Reason.HTTP_PROTOCOL_ERROR, f"{type(exc).__name__}: {_short(exc)}"


def _root_cause(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` along ``__cause__``/``__context__`` (cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _short(exc: BaseException) -> str:
    return shorten(str(exc) or type(exc).__name__)


def _phases(events: Mapping[str, float], start: float, end: float | None) -> PhaseTimes:
    """The phases of one request, at the points Go's ``net/http/httptrace`` takes them.

    As blackbox_exporter reports them: connect from the connect's start to the socket
    connected, tls from the handshake's start to its end, processing from the request
    starting to be written on a ready connection (``GotConn``: the request headers, after
    an HTTP/2 connection's preface and SETTINGS) to the return of the network read that
    delivered the response's headers (``GotFirstResponseByte``), transfer from there to
    the return of the read that delivered the end of the response (or the last byte
    read, for a body cut at ``max_body_bytes``). So the HTTP/2 and HTTP/1.1 parsing, httpx
    and probe's own work after a read are not counted as the server's time. Without the
    network stream's read times (a kept-alive connection) the HTTP layer's events stand in.

    Args:
        events: ``time.monotonic()`` of each trace event, and of the network reads.
        start: when the request started.
        end: when the request ended; ``None`` when no response arrived.
    """

    def span(first: str, last: str) -> float | None:
        if first in events and last in events:
            return max(0.0, events[last] - events[first])
        return None

    ready = (
        events.get("http.send_request_headers.started")
        or events.get("connection.start_tls.complete")
        or events.get("connection.connect_tcp.complete")
        or _http_started(events)
    )
    first_byte = events.get(_FIRST_BYTE) or events.get("http.receive_response_headers.complete")
    if end is not None:
        end = events.get(_LAST_BYTE) or end
    processing = max(0.0, first_byte - ready) if ready is not None and first_byte is not None else None
    transfer = max(0.0, end - first_byte) if end is not None and first_byte is not None else None
    return PhaseTimes(
        connect=span("connection.connect_tcp.started", "connection.connect_tcp.complete"),
        tls=span("connection.start_tls.started", "connection.start_tls.complete"),
        processing=processing,
        transfer=transfer,
    )


def judge_response(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    body: bytes,
    target: TargetConfig,
    address: IPAddress | None = None,
    *,
    undecodable: str | None = None,
) -> tuple[str | None, tuple[Failure, ...]]:
    """Identify the backend and check one response against the target's rules.

    A header field sent more than once (RFC 9110 §5.3) counts once when its values are
    the same; different backend values are a finding naming them, never a made-up name.
    The body is read as text in the charset of its ``Content-Type`` (UTF-8 when none).

    With ``expect_redirect`` only :func:`judge_redirect` applies (no backend is
    identified: the listener itself answers).

    Args:
        status: the status code.
        headers: the response headers (case-insensitive lookups for ``httpx.Headers``).
        body: the body as read and decoded (at most ``max_body_bytes``).
        target: valid_status_codes, body_regex and backend rules.
        address: the address, for the failures.
        undecodable: why the body could not be decoded (e.g. ``"body is br-encoded, …"``);
            body rules then say so instead of reporting a mismatch.

    Returns:
        ``(backend name or None, failures)``. Backend names are cut to 64 printable
        characters so a hostile server cannot create unbounded labels.
    """
    if target.expect_redirect is not None:
        # The listener answers with the redirect itself: no status, body or backend rule.
        return None, judge_redirect(status, headers, target, address)
    failures = []
    if not target.status_accepted(status):
        detail = f"status {status} (expected {target.status_codes_text()})"
        location, note = redirect_location(status, headers, target)
        if location is not None:
            detail += f"; Location: {location} ({note})"
        failures.append(Failure(Reason.HTTP_STATUS, detail, address))
    text: str | None = None
    if target.body_regex is not None:
        text = _text(body, headers)
        if undecodable is not None:
            detail = f"{undecodable}; not matched against '{target.body_regex.pattern}'"
            failures.append(Failure(Reason.HTTP_BODY_MISMATCH, detail, address))
        elif not target.body_regex.search(text):
            failures.append(
                Failure(
                    Reason.HTTP_BODY_MISMATCH,
                    f"body does not match '{target.body_regex.pattern}'",
                    address,
                )
            )
    backend: str | None = None
    rule = target.backend
    if rule is not None:
        if rule.header is not None:
            values = _values(headers, rule.header)
            names = list(dict.fromkeys(filter(None, (_clean_backend(v) for v in values or []))))
            backend = names[0] if len(names) == 1 else None
            if values is None:
                missing = f"no {rule.header} header in the response"
            elif not names:
                missing = f"the {rule.header} header is empty"
            else:
                shown_names = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
                missing = f"the {rule.header} header has {len(names)} different values: {shown_names}"
        else:
            assert rule.body_regex is not None
            text = text if text is not None else _text(body, headers)
            match = None if undecodable is not None else rule.body_regex.search(text)
            backend = _clean_backend(match.group(1)) if match and match.group(1) else None
            if undecodable is not None:
                missing = (
                    f"{undecodable}; not matched against the backend pattern '{rule.body_regex.pattern}'"
                )
            elif match is None:
                missing = f"body does not match the backend pattern '{rule.body_regex.pattern}'"
            else:
                missing = f"the backend pattern '{rule.body_regex.pattern}' captured an empty name"
        if backend is None:
            failures.append(Failure(Reason.BACKEND_UNIDENTIFIED, missing, address))
    return backend, tuple(failures)


def _text(body: bytes, headers: httpx.Headers | Mapping[str, str]) -> str:
    """The body as text in its declared charset (UTF-8 when none or unknown), errors replaced."""
    charset = "utf-8"
    content_type = (_values(headers, "content-type", split_commas=False) or [""])[0]
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            wanted = value.strip().strip('"')
            with contextlib.suppress(LookupError, ValueError):
                charset = codecs.lookup(wanted).name
    return body.decode(charset, "replace")


def _clean_backend(value: str) -> str | None:
    cleaned = _PRINTABLE.sub("_", value.strip())[:_MAX_BACKEND_NAME]
    return cleaned or None


def summarise(attempts: tuple[HttpAttempt, ...], address: IPAddress) -> tuple[Failure, ...]:
    """One failure per reason over an address's requests: ``"3 of 4 requests: status 503"``.

    Adds :func:`clock_skew` over the responses' ``Date`` headers.
    """
    by_reason: dict[Reason, list[Failure]] = {}
    for attempt in attempts:
        for failure in attempt.failures:
            by_reason.setdefault(failure.reason, []).append(failure)
    total = len(attempts)
    summary = []
    for reason, failures in by_reason.items():
        details = Counter(f.detail for f in failures)
        detail, _ = details.most_common(1)[0]
        if total > 1:
            detail = f"{len(failures)} of {total} requests: {detail}"
            if len(details) > 1:
                detail += f" (and {plural(len(details) - 1, 'other variant')})"
        summary.append(Failure(reason, detail, address))
    skew = clock_skew(attempts, address)
    return (*summary, *skew)


def clock_skew(attempts: tuple[HttpAttempt, ...], address: IPAddress) -> tuple[Failure, ...]:
    """A warning when the server's ``Date`` is more than 60 s off this machine's clock.

    Judged on the last response with a ``Date`` (RFC 9110 §6.6.1; one-second resolution).
    Either clock may be the wrong one; a wrong clock on the probing machine is a common
    cause of ``cert_not_yet_valid`` and ``cert_expired``.
    """
    dated = [a for a in attempts if a.date_timestamp is not None and a.received_timestamp is not None]
    if not dated:
        return ()
    last = dated[-1]
    assert last.date_timestamp is not None and last.received_timestamp is not None
    skew = last.date_timestamp - last.received_timestamp
    if abs(skew) <= CLOCK_SKEW_LIMIT:
        return ()
    side = "ahead of" if skew > 0 else "behind"
    amount = _duration(abs(skew))
    return (
        Failure(
            Reason.HTTP_CLOCK_SKEW,
            f"the server's clock is {amount} {side} this machine's: its Date header says "
            f"{_utc(last.date_timestamp)}, this machine's clock said {_utc(last.received_timestamp)} "
            "(a wrong clock here makes certificates look expired or not yet valid)",
            address,
        ),
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
