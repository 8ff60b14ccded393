"""HTTP stage: several requests to one address, with Host and SNI set to the hostname.

Each request goes on a new connection unless ``reuse_connections`` is set, so a load
balancer that balances per connection shows every backend (cloudprober's reasoning).
Proxies from the environment are never used, redirects are not followed, bodies are
never read past ``max_body_bytes`` and a whole request, body included, is bounded by
``timeouts.http``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import httpx

from probe import __version__

with contextlib.suppress(ImportError):
    # httpx imports its network backend and HTTP/1.1 machinery on the first request;
    # import them now so that the first measured request of a run is not slowed by it.
    import anyio._backends._asyncio  # noqa: F401
    import httpcore._async.http11  # noqa: F401

from probe._text import host_port, plural, shorten
from probe.certs import classify_verify_error
from probe.config import TargetConfig
from probe.deadline import Deadline
from probe.reasons import Reason
from probe.results import Failure, HttpAttempt, IPAddress, PhaseTimes
from probe.tls_stage import classify_connect_error, classify_tls_error

USER_AGENT = f"probe/{__version__}"
_MAX_BACKEND_NAME = 64
_PRINTABLE = re.compile(r"[^\x21-\x7e]+")


def build_client(target: TargetConfig, context: ssl.SSLContext) -> httpx.AsyncClient:
    """An httpx client for one target and cycle: no proxies, no redirects, explicit timeouts.

    Args:
        target: the target (timeouts, reuse_connections).
        context: the SSL context for the requests (verifying unless insecure).
    """
    timeouts = target.timeouts
    return httpx.AsyncClient(
        verify=context,
        trust_env=False,
        follow_redirects=False,
        http2=False,
        timeout=httpx.Timeout(
            connect=max(timeouts.connect, timeouts.tls),
            read=timeouts.http,
            write=timeouts.http,
            pool=timeouts.http,
        ),
        limits=httpx.Limits(
            max_connections=4, max_keepalive_connections=1 if target.reuse_connections else 0
        ),
    )


def request_url(address: IPAddress, target: TargetConfig) -> str:
    """The URL to request: the address in place of the hostname."""
    return f"https://{host_port(str(address), target.port)}{target.path}"


def request_headers(target: TargetConfig) -> dict[str, str]:
    """Headers of every request: Host as a browser sends it, then the configured ones."""
    host = target.hostname if target.port == 443 else f"{target.hostname}:{target.port}"
    headers = {
        "Host": host,
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        # Bodies are matched as sent; no decompression means memory stays bounded.
        "Accept-Encoding": "identity",
    }
    headers.update({name: value.value for name, value in target.headers.items()})
    return headers


async def request_rounds(
    client: httpx.AsyncClient, address: IPAddress, target: TargetConfig, deadline: Deadline
) -> tuple[HttpAttempt, ...]:
    """Send ``target.requests_per_address`` GET requests to ``address``, one after another.

    Args:
        client: from :func:`build_client`.
        address: the address to send to.
        target: URL path, headers, judgement rules and timeouts.
        deadline: the cycle's deadline; requests not started by then are not sent.

    Returns:
        One attempt per request sent; faults are findings inside each attempt.
    """
    url = request_url(address, target)
    headers = request_headers(target)
    attempts = []
    for _ in range(target.requests_per_address):
        if deadline.expired:
            break
        attempts.append(await _attempt(client, url, headers, address, target, deadline))
    return tuple(attempts)


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
    # there. Once the request is being sent, an asyncio timeout bounds the rest, headers
    # and body, as a whole (a trickling server never trips a per-read timeout);
    # httpcore closes the connection properly when cancelled there.
    inner = _clipped_timeouts(target, limit)
    bound = asyncio.timeout(None)

    async def trace(name: str, info: Mapping[str, Any]) -> None:
        events.setdefault(name, time.monotonic())
        if name == "http11.send_request_headers.started":
            bound.reschedule(loop.time() + max(0.0, limit - (time.monotonic() - start)))

    status: int | None = None
    version: str | None = None
    response_headers: httpx.Headers | None = None
    body = bytearray()
    truncated = False
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
            body, truncated = await _read_capped(response, target.max_body_bytes)
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
    if failure is not None:
        return HttpAttempt(status, version, None, len(body), truncated, phases, end - start, (failure,))
    assert status is not None and response_headers is not None
    backend, failures = judge_response(status, response_headers, bytes(body), target, address)
    if truncated:
        # Like blackbox_exporter's body_size_limit: an oversized body fails the probe.
        oversized = Failure(
            Reason.HTTP_PROTOCOL_ERROR,
            f"the body is larger than max_body_bytes ({target.max_body_bytes} bytes); not read further",
            address,
        )
        failures = (*failures, oversized)
    return HttpAttempt(status, version, backend, len(body), truncated, phases, end - start, failures)


def _clipped_timeouts(target: TargetConfig, limit: float) -> httpx.Timeout:
    timeouts = target.timeouts
    return httpx.Timeout(
        connect=min(max(timeouts.connect, timeouts.tls), limit / 2),
        read=min(timeouts.http, limit),
        write=min(timeouts.http, limit),
        pool=min(timeouts.http, limit),
    )


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytearray, bool]:
    """Read at most ``limit`` bytes of the body; ``True`` when more was on offer."""
    body = bytearray()
    if limit == 0:
        return body, False
    async for chunk in response.aiter_raw():
        room = limit - len(body)
        if len(chunk) > room:
            body += chunk[:room]
            return body, True
        body += chunk
    return body, False


def _timeout_failure(
    events: Mapping[str, float], limit: float, deadline: Deadline, address: IPAddress
) -> Failure:
    if deadline.expired:
        return Failure(
            Reason.CYCLE_DEADLINE_EXCEEDED,
            f"the {deadline.seconds:g}s cycle deadline passed during a request",
            address,
        )
    if (
        "connection.connect_tcp.complete" not in events
        and "http11.send_request_headers.started" not in events
    ):
        return Failure(Reason.TCP_TIMEOUT, f"no TCP connection within {limit:.3g}s", address)
    if "connection.start_tls.started" in events and "connection.start_tls.complete" not in events:
        return Failure(
            Reason.TLS_HANDSHAKE_TIMEOUT, f"TLS handshake did not complete within {limit:.3g}s", address
        )
    if "http11.receive_response_headers.complete" not in events:
        waiting = "the response headers"
    else:
        waiting = "the end of the body"
    return Failure(
        Reason.HTTP_TIMEOUT, f"no complete response within {limit:.3g}s (waiting for {waiting})", address
    )


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
    def span(first: str, last: str) -> float | None:
        if first in events and last in events:
            return max(0.0, events[last] - events[first])
        return None

    ready = (
        events.get("connection.start_tls.complete")
        or events.get("connection.connect_tcp.complete")
        or events.get("http11.send_request_headers.started")
    )
    first_byte = events.get("http11.receive_response_headers.complete")
    processing = first_byte - ready if ready is not None and first_byte is not None else None
    transfer = end - first_byte if end is not None and first_byte is not None else None
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
) -> tuple[str | None, tuple[Failure, ...]]:
    """Identify the backend and check one response against the target's rules.

    Args:
        status: the status code.
        headers: the response headers (case-insensitive lookups for ``httpx.Headers``).
        body: the body as read (at most ``max_body_bytes``).
        target: valid_status_codes, body_regex and backend rules.
        address: the address, for the failures.

    Returns:
        ``(backend name or None, failures)``. Backend names are cut to 64 printable
        characters so a hostile server cannot create unbounded labels.
    """
    failures = []
    if not target.status_accepted(status):
        failures.append(
            Failure(Reason.HTTP_STATUS, f"status {status} (expected {target.status_codes_text()})", address)
        )
    text: str | None = None
    if target.body_regex is not None:
        text = body.decode("utf-8", "replace")
        if not target.body_regex.search(text):
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
            value = headers.get(rule.header)
            backend = _clean_backend(value) if value else None
            missing = (
                f"no {rule.header} header in the response"
                if value is None
                else f"the {rule.header} header is empty"
            )
        else:
            assert rule.body_regex is not None
            text = text if text is not None else body.decode("utf-8", "replace")
            match = rule.body_regex.search(text)
            backend = _clean_backend(match.group(1)) if match and match.group(1) else None
            missing = (
                f"body does not match the backend pattern '{rule.body_regex.pattern}'"
                if match is None
                else f"the backend pattern '{rule.body_regex.pattern}' captured an empty name"
            )
        if backend is None:
            failures.append(Failure(Reason.BACKEND_UNIDENTIFIED, missing, address))
    return backend, tuple(failures)


def _clean_backend(value: str) -> str | None:
    cleaned = _PRINTABLE.sub("_", value.strip())[:_MAX_BACKEND_NAME]
    return cleaned or None


def summarise(attempts: tuple[HttpAttempt, ...], address: IPAddress) -> tuple[Failure, ...]:
    """One failure per reason over an address's requests: ``"3 of 4 requests: status 503"``."""
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
    return tuple(summary)
