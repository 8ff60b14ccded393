"""The HTTP stage's rules: pure functions over one response, its headers and its requests.

Decoding a body (gzip, deflate) within the cap (header fields are read by
:mod:`probe.stages.headers`); where a redirect points and whether it is the one
``expect_redirect`` wants; judging a response (status, body, backend); naming a failed
request's reason (:func:`classify_http_error`, :func:`timeout_failure`); the phase times
of a request from its trace events; and the summary of an address's requests. No I/O:
:mod:`probe.stages.http` sends the requests and reads the bodies, then calls these.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
import ssl
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from probe._text import host_port, plural, shorten, url_host
from probe.config.fields import LinearRegex
from probe.config.models import TargetConfig
from probe.model.deadline import Deadline
from probe.model.reasons import Reason
from probe.model.results import Failure, HttpAttempt, IPAddress, LoadBalancerAnswer, PhaseTimes
from probe.stages._wire import GoAway, ProtocolViolation, StreamError, StreamRefused
from probe.stages.certs import classify_verify_error
from probe.stages.headers import (
    MAX_NAME,
    content_codings,
    cookie_names,
    cut_label,
    distinct,
    field_values,
    printable_token,
)
from probe.stages.origin import load_balancer_answer, not_reached
from probe.stages.tls import classify_connect_error, classify_tls_error

#: A Location shown in a finding or the report is cut to this many characters (saying so).
SHOWN_LOCATION = 200
#: The JSON (and the result) keep a Location whole up to this many characters; past it, cut with ``…``.
MAX_LOCATION = 8192
#: Largest difference between a response's Date and this machine's clock that is fine (seconds).
CLOCK_SKEW_LIMIT = 60.0
_PRINTABLE = re.compile(r"[^\x21-\x7e]+")
_PRINTABLE_SPACE = re.compile(r"[^\x20-\x7e]+")
_GZIP = frozenset({"gzip", "x-gzip"})
#: Bodies up to this size (bytes) are decoded and judged on the event loop, in well under a
#: millisecond; larger ones (a max_body_bytes raised above it) in a worker thread.
INLINE_BODY_BYTES = 256 * 1024
#: The piece of a body turned into text in one step (see :func:`_utf8`).
_PIECE = 1 << 20
#: When the reads that delivered the response's headers and its end returned (keys of the
#: trace events that :func:`phase_times` reads).
FIRST_BYTE, LAST_BYTE = "network.first_byte", "network.last_byte"


def default_port(scheme: str) -> int:
    """The port a URL of ``scheme`` implies: 80 for ``http``, else 443."""
    return 80 if scheme == "http" else 443


#: The most content codings decoded one after another: curl's limit (CVE-2022-32206).
MAX_CODINGS = 5
#: The most gzip members decoded one after another (RFC 1952 §2.2): each costs a decoder.
MAX_GZIP_MEMBERS = 1024


def decode_body(raw: bytes, codings: tuple[str, ...], cap: int) -> tuple[bytes, bool, str | None]:
    """Undo the content codings of a body (RFC 9110 §8.4), never producing more than ``cap`` bytes.

    gzip (``x-gzip``) and deflate (zlib-wrapped, or raw as some servers send it) are
    decoded with zlib's output limit, so a small compressed body that expands to gigabytes
    (a decompression bomb) yields ``cap`` bytes and stops. A body cut at the read cap
    decodes as far as it goes. The work is bounded by what the server cannot multiply:
    at most :data:`MAX_CODINGS` codings (as curl) and :data:`MAX_GZIP_MEMBERS` gzip
    members; past either the body is not decoded and ``problem`` says so.

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
    if len(codings) > MAX_CODINGS:
        return (
            raw,
            False,
            (
                f"body has {len(codings)} content codings, more than the {MAX_CODINGS} that probe "
                "(as curl) decodes"
            ),
        )
    data = raw
    cut = False
    for coding in reversed(codings):
        if coding not in _GZIP and coding != "deflate":
            return raw, False, f"body is {printable_token(coding)}-encoded, which probe cannot decode"
        if cap == 0:
            return b"", bool(data), None
        try:
            data, more = _inflate(data, coding, cap)
        except zlib.error as exc:
            return raw, False, f"body is {coding}-encoded but does not decode ({exc})"
        except _TooManyMembers:
            return (
                raw,
                False,
                (f"body is gzip-encoded in more than {MAX_GZIP_MEMBERS} members, more than probe decodes"),
            )
        cut = cut or more
    return data, cut, None


class _TooManyMembers(Exception):
    """A gzip body of more than :data:`MAX_GZIP_MEMBERS` members."""


def _inflate(data: bytes, coding: str, cap: int) -> tuple[bytes, bool]:
    """One gzip or deflate coding undone: ``(at most cap bytes, whether more was left)``.

    Raises:
        zlib.error: the data does not decode.
        _TooManyMembers: a gzip body of more than MAX_GZIP_MEMBERS members.
    """
    if coding in _GZIP:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    else:
        decoder = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
    parts = [decoder.decompress(data, cap)]
    size = len(parts[0])
    # gzip allows several members one after another (RFC 1952 §2.2), as gzip(1) and curl
    # decode them; each member gets the room the earlier ones left.
    members = 1
    while coding in _GZIP and decoder.eof and decoder.unused_data and size < cap:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise _TooManyMembers
        rest = decoder.unused_data
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts.append(decoder.decompress(rest, cap - size))
        size += len(parts[-1])
    more = bool(decoder.unconsumed_tail) or (size >= cap and bool(decoder.unused_data))
    return b"".join(parts), more


def _zlib_header(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (RFC 1950), as deflate is meant to."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def redirect_location(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    target: TargetConfig,
    *,
    limit: int | None = SHOWN_LOCATION,
) -> tuple[str | None, str | None]:
    """The ``Location`` of a redirect (3xx) as an absolute URL, and a note on where it points.

    The note says whether it stays on the same host, goes to another one, downgrades to
    ``http://`` (from an ``https://`` target) or upgrades to ``https://`` (from an
    ``http://`` one) (RFC 9110 §10.2.2: a relative reference is resolved against the
    request URL, whose host is the target's hostname and whose scheme is the target's).

    Args:
        status: the response's status.
        headers: the response's headers.
        target: the target, whose URL a relative Location is resolved against.
        limit: the most characters of the URL kept, for showing (non-printable characters
            replaced; a longer one is cut, ending with ``…`` and its full length); ``None``:
            the URL as resolved, to compare.

    Returns:
        ``(url, note)``, both ``None`` for other statuses or without a Location.
    """
    if not 300 <= status <= 399:
        return None, None
    values = distinct(field_values(headers, "location", split_commas=False) or [])
    if not values:
        return None, None
    try:
        url = urljoin(_base_url(target), values[0].strip())
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return _shown_url(values[0], limit), "not a valid URL"
    url = _shown_url(url, limit)
    note = _where_it_points(parts.scheme, host, port, target)
    if len(values) > 1:
        note += f"; {len(values)} different Location headers, the first is shown"
    return url, note


def _shown_url(url: str, limit: int | None) -> str:
    """``url`` printable, in at most ``limit`` characters (a cut one says so); as is for ``None``."""
    return url if limit is None else shorten(_PRINTABLE_SPACE.sub("_", url), limit, length=len(url))


def location_facts(
    status: int, headers: httpx.Headers | Mapping[str, str], target: TargetConfig
) -> dict[str, Any]:
    """A redirect's Location as the result keeps it: ``location`` and ``location_length``.

    ``location`` is the absolute URL, printable, whole up to :data:`MAX_LOCATION`
    characters (longer: cut there, ending with ``…``); ``location_length`` its full length
    in characters. Both ``None`` for other statuses or without a Location.
    """
    url, _ = redirect_location(status, headers, target, limit=None)
    if url is None:
        return {"location": None, "location_length": None}
    printable = _PRINTABLE_SPACE.sub("_", url)
    kept = printable if len(printable) <= MAX_LOCATION else printable[: MAX_LOCATION - 1] + "…"
    return {"location": kept, "location_length": len(url)}


def _where_it_points(scheme_text: str, host: str | None, port: int | None, target: TargetConfig) -> str:
    """Where a redirect's Location (scheme, host, port) points, from the target's point of view."""
    scheme = scheme_text.lower()
    if scheme not in ("http", "https"):
        return f"to a {printable_token(scheme_text)}: URL"
    if scheme == "http" and not target.plain:
        return "a downgrade to http://"
    if host != target.hostname or (scheme == target.scheme and (port or default_port(scheme)) != target.port):
        return f"another host: {shorten(_PRINTABLE.sub('_', _authority(scheme, host, port)), 80)}"
    if scheme != target.scheme:
        return "an upgrade to https://, same host"
    return "same host"


def _authority(scheme: str, host: str | None, port: int | None) -> str:
    """``host``, or ``host:port`` when the port is not the scheme's default."""
    if port and port != default_port(scheme):
        return host_port(host or "", port)
    return host or ""


def _base_url(target: TargetConfig) -> str:
    """The URL a request asks for, with the hostname: what a relative Location resolves against."""
    default = target.port == default_port(target.scheme)
    authority = url_host(target.hostname) if default else host_port(target.hostname, target.port)
    return f"{target.scheme}://{authority}{target.path}"


#: The statuses ``expect_redirect`` accepts: what an ALB redirect action (HTTP_301,
#: HTTP_302) and HAProxy's ``redirect scheme https`` (302 by default) send.
REDIRECT_STATUSES = (301, 302)


def expected_redirect(target: TargetConfig) -> str:
    """The ``https://`` form of an ``http://`` target's URL: same host and path, port 443."""
    return f"https://{url_host(target.hostname)}{target.path}"


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
    location, _ = redirect_location(status, headers, target, limit=None)
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
            f"{status} to {_shown_url(location, SHOWN_LOCATION)}: {why} (expected 301 or 302 to {expected})",
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


def timeout_failure(
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
        if (
            "http.send_connection_init.started" in events
            and "http.receive_remote_settings.complete" not in events
        ):
            waiting += "; the server sent no HTTP/2 SETTINGS frame, which opens every HTTP/2 server's side"
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
        # httpx.ConnectError is raised from the OSError or ssl.SSLError (perhaps wrapped again).
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
    own = _transport_finding(exc)
    if own is not None:
        return own
    if isinstance(exc, httpx.RemoteProtocolError):
        return Reason.HTTP_PROTOCOL_ERROR, f"invalid HTTP response: {_httpx_words(exc)}"
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


def _httpx_words(exc: httpx.RemoteProtocolError) -> str:
    """What httpx itself refused in a response (not probe's transport), in probe's words where known."""
    if str(exc).startswith("Invalid URL in location header"):
        # httpx builds the redirect's URL even when it does not follow it.
        return "the Location header is not a URL httpx accepts (longer than 65,536 characters, or malformed)"
    return _short(exc)


def _transport_finding(exc: httpx.HTTPError) -> tuple[Reason, str] | None:
    """The reason of an error probe's transport raised with its own sentence, ``None`` for others."""
    if isinstance(exc, StreamRefused):
        return Reason.HTTP_STREAM_REFUSED, str(exc)
    if isinstance(exc, StreamError):
        return Reason.HTTP_STREAM_ERROR, str(exc)
    if isinstance(exc, ProtocolViolation):  # bounded: never cut
        return Reason.HTTP_PROTOCOL_ERROR, f"invalid HTTP response: {exc}"
    return None


def refusal_failure(first: str, second: str | None, limit: float, address: IPAddress) -> Failure:
    """``http_stream_refused``: the server refused the request's HTTP/2 stream, and its retry.

    Args:
        first: what refused the first try, in words (``"RST_STREAM REFUSED_STREAM (0x7)"``).
        second: what refused the retry on a new connection; ``None`` when no time was left
            within the request's ``limit`` (seconds) to retry.
        limit: the request's time bound, seconds.
        address: the address.
    """
    if second is None:
        detail = (
            f"the server refused the request's stream ({first}) and no time was left within "
            f"{limit:.3g}s to retry it on a new connection"
        )
    else:
        detail = (
            f"the server refused the request's stream twice: {first}, then {second} on a new "
            "connection (probe retries a refused request once; curl 7.88 tries a REFUSED_STREAM "
            "up to 5 times)"
        )
    return Failure(Reason.HTTP_STREAM_REFUSED, detail, address)


def goaway_failure(goaway: GoAway, address: IPAddress | None) -> Failure:
    """``http_stream_error`` for a GOAWAY with an error code that still let the response complete.

    curl and Go report such a response without an error; probe names the code, because
    a load balancer closing connections with an error is worth knowing.
    """
    return Failure(
        Reason.HTTP_STREAM_ERROR,
        f"the server sent {goaway.words()} with the response; the response completed "
        "(curl and Go report it without an error)",
        address,
    )


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


def phase_times(events: Mapping[str, float], start: float, end: float | None) -> PhaseTimes:
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
    first_byte = events.get(FIRST_BYTE) or events.get("http.receive_response_headers.complete")
    if end is not None:
        end = events.get(LAST_BYTE) or end
    processing = max(0.0, first_byte - ready) if ready is not None and first_byte is not None else None
    transfer = max(0.0, end - first_byte) if end is not None and first_byte is not None else None
    return PhaseTimes(
        connect=span("connection.connect_tcp.started", "connection.connect_tcp.complete"),
        tls=span("connection.start_tls.started", "connection.start_tls.complete"),
        processing=processing,
        transfer=transfer,
    )


async def judge_body(
    status: int,
    headers: httpx.Headers,
    raw: bytes,
    target: TargetConfig,
    address: IPAddress,
) -> tuple[str | None, tuple[Failure, ...], bool, LoadBalancerAnswer | None]:
    """:func:`decode_body`, then :func:`judge_answer`, off the event loop for a large body.

    The work is linear in the body (RE2, zlib with an output limit), and a body of at
    most :data:`INLINE_BODY_BYTES` (the default ``max_body_bytes`` is 64 KiB) is judged
    on the loop; a larger one, or a compressed one that may expand past it, in a worker
    thread, where zlib and RE2 release the interpreter, so that other targets' requests
    and the scrapes go on meanwhile.

    Returns:
        ``(backend name or None, failures, whether decoding stopped at max_body_bytes,
        the load balancer's own answer or None)``.
    """
    codings = content_codings(headers)

    def judged() -> tuple[str | None, tuple[Failure, ...], bool, LoadBalancerAnswer | None]:
        decoded, cut, undecodable = decode_body(raw, codings, target.max_body_bytes)
        backend, failures, answer = judge_answer(
            status, headers, decoded, target, address, undecodable=undecodable
        )
        return backend, failures, cut, answer

    small = len(raw) <= INLINE_BODY_BYTES and (not codings or target.max_body_bytes <= INLINE_BODY_BYTES)
    if small:
        return judged()
    return await asyncio.to_thread(judged)


def judge_answer(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    body: bytes,
    target: TargetConfig,
    address: IPAddress | None = None,
    *,
    undecodable: str | None = None,
) -> tuple[str | None, tuple[Failure, ...], LoadBalancerAnswer | None]:
    """Identify the backend, or the load balancer's own answer, and check one response.

    A header field sent more than once (RFC 9110 §5.3) counts once when its values are
    the same; different backend values are a finding naming them, never a made-up name.
    The body is read as text in the charset of its ``Content-Type`` (UTF-8 when none).

    A response in which no backend was identified and that says it is the load
    balancer's own (:func:`probe.stages.origin.load_balancer_answer`: an ALB's 503 or
    authenticate redirect, a WAF block, a fixed response, HAProxy's own 503 …) is judged
    by its origin: reported once, never also as ``backend_unidentified``. A status the
    target does not accept is ``http_status`` naming the origin; an accepted one is
    ``backend_not_reached`` when a backend rule says a backend should answer (a
    fixed-response 200 must not pass for the service), and otherwise judged by
    ``body_regex`` as any response.

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
        ``(backend name or None, failures, the load balancer's own answer or None)``.
        Backend names are cut to 64 printable characters (ending with ``…`` when cut) so
        a hostile server cannot create unbounded labels.
    """
    if target.expect_redirect is not None:
        # The listener answers with the redirect itself: no status, body or backend rule.
        return (
            None,
            judge_redirect(status, headers, target, address),
            _own_answer(status, headers, body, target),
        )
    rule = target.backend
    backend, missing, text = None, "", None
    if rule is not None:
        backend, missing, text = _identify(rule.header, rule.body_regex, headers, body, undecodable)
    answer = None if backend is not None else _own_answer(status, headers, body, target)
    failures = []
    if not target.status_accepted(status):
        failures.append(_status_failure(status, headers, target, address, answer))
    elif answer is not None and rule is not None:
        failures.append(not_reached(status, answer, address))
    if target.body_regex is not None and (answer is None or not failures):
        text = text if text is not None else _utf8(body, headers)
        failures.extend(_body_mismatch(text, target.body_regex, undecodable, address, answer))
    if rule is not None and backend is None and answer is None:
        failures.append(Failure(Reason.BACKEND_UNIDENTIFIED, missing, address))
    return backend, tuple(failures), answer


def _identify(
    header: str | None,
    backend_regex: LinearRegex | None,
    headers: httpx.Headers | Mapping[str, str],
    body: bytes,
    undecodable: str | None,
) -> tuple[str | None, str, bytes | None]:
    """The backend by the rule's header or body pattern.

    Returns:
        ``(name or None, why not, the body as text when it was read as text, else None)``.
    """
    if header is not None:
        return (*_backend_in_header(headers, header), None)
    assert backend_regex is not None
    text = _utf8(body, headers)
    return (*_backend_in_body(text, backend_regex, undecodable), text)


def _own_answer(
    status: int, headers: httpx.Headers | Mapping[str, str], body: bytes, target: TargetConfig
) -> LoadBalancerAnswer | None:
    """The load balancer's own answer in a response that named no backend (see :mod:`probe.stages.origin`)."""
    location, _ = redirect_location(status, headers, target, limit=None)
    return load_balancer_answer(status, headers, body, cookies=cookie_names(headers), location=location)


def _status_failure(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    target: TargetConfig,
    address: IPAddress | None,
    answer: LoadBalancerAnswer | None = None,
) -> Failure:
    """``http_status`` for a status the target does not accept, naming its origin and a redirect's Location.

    ``answer``: the load balancer's own answer, ``None`` for a backend's.
    """
    detail = f"status {status} (expected {target.status_codes_text()})"
    if answer is not None:
        detail += f" from the load balancer itself, not a backend: {answer.said}"
    location, note = redirect_location(status, headers, target)
    if location is not None:
        detail += f"; Location: {location} ({note})"
    return Failure(Reason.HTTP_STATUS, detail, address)


def _body_mismatch(
    text: bytes,
    body_regex: LinearRegex,
    undecodable: str | None,
    address: IPAddress | None,
    answer: LoadBalancerAnswer | None,
) -> tuple[Failure, ...]:
    """``http_body_mismatch`` when the body (as text) does not match ``body_regex``; empty when it does.

    The detail names the load balancer when ``answer`` says the response is its own.
    """
    if undecodable is not None:
        detail = f"{undecodable}; not matched against '{body_regex.pattern}'"
    elif body_regex.search(text) is None:
        detail = f"body does not match '{body_regex.pattern}'"
    else:
        return ()
    if answer is not None:
        detail += f"; the load balancer answered itself: {answer.said}"
    return (Failure(Reason.HTTP_BODY_MISMATCH, detail, address),)


def _backend_in_header(headers: httpx.Headers | Mapping[str, str], header: str) -> tuple[str | None, str]:
    """The backend named by the ``header`` field: ``(name, "")``, or ``(None, why not)``."""
    values = field_values(headers, header)
    names = list(dict.fromkeys(filter(None, (_clean_backend(v) for v in values or []))))
    if len(names) == 1:
        return names[0], ""
    if values is None:
        return None, f"no {header} header in the response"
    if not names:
        return None, f"the {header} header is empty"
    shown_names = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    return None, f"the {header} header has {len(names)} different values: {shown_names}"


def _backend_in_body(
    text: bytes, backend_regex: LinearRegex, undecodable: str | None
) -> tuple[str | None, str]:
    """The backend that group 1 of ``backend_regex`` captures: ``(name, "")``, or ``(None, why not)``."""
    if undecodable is not None:
        return None, f"{undecodable}; not matched against the backend pattern '{backend_regex.pattern}'"
    match = backend_regex.search(text)
    if match is None:
        return None, f"body does not match the backend pattern '{backend_regex.pattern}'"
    backend = _clean_backend(match[1]) if match[1] else None
    if backend is None:
        return None, f"the backend pattern '{backend_regex.pattern}' captured an empty name"
    return backend, ""


def _utf8(body: bytes, headers: httpx.Headers | Mapping[str, str]) -> bytes:
    """The body as UTF-8, read in its declared charset (UTF-8 when none or unknown), errors replaced.

    What the regexes search: the text as Python decodes it, encoded as RE2 reads it. Done
    a piece (:data:`_PIECE` bytes) at a time, so that no single step holds the interpreter
    long when a large body is judged in a worker thread (:func:`judge_body`).
    """
    charset = "utf-8"
    content_type = (field_values(headers, "content-type", split_commas=False) or [""])[0]
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            wanted = value.strip().strip('"')
            with contextlib.suppress(LookupError, ValueError):
                charset = codecs.lookup(wanted).name
    if charset == "utf-8" and body.isascii():
        return body
    decoder = codecs.getincrementaldecoder(charset)("replace")
    pieces = [decoder.decode(body[at : at + _PIECE]) for at in range(0, len(body), _PIECE)]
    pieces.append(decoder.decode(b"", final=True))
    # "replace" for the lone surrogates a few codecs (UTF-7) let through
    return b"".join(piece.encode("utf-8", "replace") for piece in pieces)


def _clean_backend(value: str) -> str | None:
    cleaned = cut_label(_PRINTABLE.sub("_", value.strip()), MAX_NAME)
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
