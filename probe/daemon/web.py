"""The application of ``probe run``'s endpoint: ``/metrics``, ``/-/healthy``, ``/-/ready``, the status pages.

The status pages (:mod:`probe.daemon.status_page`) are ``/`` (every target and address),
``/target/NAME`` (one target's page with the text report of its last cycle) and
``/target/NAME.json`` (the JSON document of its last cycle).

The server (:class:`probe.daemon.httpserver.WebServer`, its own thread and event loop, every
client bounded in time and connections) calls it with each request. ``/metrics`` behaves as
prometheus_client's WSGI app does (OpenMetrics content negotiation, gzip, ``name[]``
filtering) but serves the text each target's cycle already rendered
(:func:`probe.daemon.metrics.exposition`). Handlers only read the store's snapshot, so a
scrape never waits on a probe; a password is checked off the serving loop
(:meth:`probe.daemon.webconfig.BasicAuth.verify`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import parse_qs, unquote_to_bytes

from probe._version import __version__
from probe.daemon.httpserver import Request, Response, plain
from probe.daemon.metrics import exposition_parts, negotiate
from probe.daemon.status_page import HEADERS, TARGET_PREFIX, overview_page, target_json, target_page
from probe.daemon.store import ResultStore
from probe.daemon.webconfig import BasicAuth

#: gzip level of ``/metrics``: level 1 compresses probe's repetitive text about 25 to 1 in
#: a few milliseconds per megabyte, where level 9 (prometheus_client's) takes 15 times longer.
GZIP_LEVEL = 1

#: The challenge: a realm that names no software (exporter-toolkit sends a bare "Basic").
_UNAUTHORIZED = [("WWW-Authenticate", 'Basic realm="metrics", charset="UTF-8"')]


def make_app(
    store: ResultStore,
    auth: BasicAuth | None = None,
    loop_lag: Callable[[], float | None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Endpoint:
    """The application serving metrics, health, readiness and the status pages.

    Args:
        store: the daemon's store: its snapshot's stored exposition for ``/metrics``, and
            readiness and the status pages.
        auth: basic auth users; when set, every path needs valid credentials. The
            returned endpoint's ``auth`` may be replaced while serving (a reload).
        loop_lag: the event loop's current lag in seconds (``probe.daemon.looplag.LoopLag.seconds``),
            called from the serving thread at each scrape.
        clock: Unix time, for the ages the status pages show.
    """
    return Endpoint(store, auth, loop_lag, clock)


class Endpoint:
    """The application of :func:`make_app`: a method per kind of path."""

    def __init__(
        self,
        store: ResultStore,
        auth: BasicAuth | None,
        loop_lag: Callable[[], float | None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.auth = auth
        self.loop_lag = loop_lag
        self.clock = clock

    async def __call__(self, request: Request) -> Response:
        """Answer ``request``: ``401`` without valid credentials, ``405`` but for GET and HEAD."""
        auth = self.auth
        if auth is not None and auth.enabled and not await auth.verify(request.headers.get("authorization")):
            return plain(401, "unauthorized\n", _UNAUTHORIZED)
        if request.method not in ("GET", "HEAD"):
            return plain(405, "only GET and HEAD\n", [("Allow", "GET, HEAD")])
        response = self._route(request)
        if request.method == "HEAD":  # the same headers (Content-Length included), no body
            return Response(response.status, response.headers)
        return response

    def _route(self, request: Request) -> Response:
        try:  # percent-decoded; target names are UTF-8 (a %2F is part of a name)
            path = unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return plain(404, "not found; see /metrics\n")
        if path == "/metrics":
            return self._metrics(request)
        if path == "/-/healthy":
            return plain(200, "OK\n")
        if path == "/-/ready":
            return self._ready()
        if path == "/":
            page = overview_page(self.store.snapshot(), self.clock(), __version__)
            return _page(200, page, "text/html", HEADERS)
        if path.startswith(TARGET_PREFIX):
            return self._target(path[len(TARGET_PREFIX) :])
        return plain(404, "not found; see /metrics\n")

    def _ready(self) -> Response:
        snapshot = self.store.snapshot()
        if snapshot.ready:
            return plain(200, "ready\n")
        waiting = [n for n in snapshot.configured if n not in snapshot.targets]
        return plain(503, f"not ready: waiting for the first cycle of {', '.join(waiting)}\n")

    def _target(self, name: str) -> Response:
        snapshot = self.store.snapshot()
        if name in snapshot.configured:
            page = target_page(name, snapshot, self.clock(), __version__)
            assert page is not None
            return _page(200, page, "text/html", HEADERS)
        stem = name.removesuffix(".json")
        if stem != name and stem in snapshot.configured:
            document = target_json(stem, snapshot, self.clock())
            if document is None:
                return plain(503, f"no cycle of {stem} has completed yet\n", [("Retry-After", "5")])
            return _page(200, document, "application/json")
        return plain(404, "no such target; see /\n")

    def _metrics(self, request: Request) -> Response:
        openmetrics, content_type = negotiate(request.headers.get("accept"))
        names = parse_qs(request.query).get("name[]")
        lag = self.loop_lag() if self.loop_lag is not None else None
        parts = exposition_parts(self.store.snapshot(), openmetrics=openmetrics, names=names, loop_lag=lag)
        headers = [("Content-Type", content_type)]
        if _gzip_accepted(request.headers.get("accept-encoding")):
            body = _gzip(_batches(parts))
            headers += [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))]
            return Response(200, headers, [body])
        headers.append(("Content-Length", str(sum(map(len, parts)))))
        return Response(200, headers, _batches(parts))


def _page(status: int, text: str, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = text.encode()
    return Response(
        status,
        [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(body))), *headers],
        [body],
    )


#: Bytes of stored text joined into one piece of the ``/metrics`` body (written, or
#: compressed, one piece at a time): large enough that a piece costs few calls, small
#: enough that a scrape never holds a copy of the whole body.
BATCH_BYTES = 256 * 1024


def _batches(parts: list[bytes]) -> Iterator[bytes]:
    """``parts`` joined into pieces of about :data:`BATCH_BYTES`, one piece at a time."""
    start, size = 0, 0
    for index, part in enumerate(parts):
        size += len(part)
        if size >= BATCH_BYTES:
            yield b"".join(parts[start : index + 1])
            start, size = index + 1, 0
    if start < len(parts):
        yield b"".join(parts[start:])


def _gzip(chunks: Iterable[bytes]) -> bytes:
    """``chunks`` compressed as one gzip member, as ``gzip.compress(..., mtime=0)`` writes it."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip header
    out = [compressor.compress(chunk) for chunk in chunks]
    out.append(compressor.flush())
    return b"".join(out)


def _gzip_accepted(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` lists gzip (as prometheus_client reads it: q values ignored)."""
    return any(part.split(";")[0].strip().lower() == "gzip" for part in (accept_encoding or "").split(","))
