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

The serving thread shares the interpreter's lock with the probing loop, so what it does is
paced (:class:`~probe.daemon.httpserver.Pace`): each request waits for a turn within
:data:`REQUESTS_PER_SECOND`, and the work an answer costs (``/metrics``, the status
pages: milliseconds to a tenth of a second at 1,000 targets) goes through
:class:`Renders`, within :data:`RENDER_SHARE`, each rendering shared by the requests for
the same answer that arrived before it began. A flood of valid requests slows only its
own answers, never the probing nor a scraper's answer.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, Iterator
from urllib.parse import parse_qs, unquote_to_bytes

from probe._version import __version__
from probe.daemon.httpserver import Pace, Request, Response, plain
from probe.daemon.metrics import exposition_parts, negotiate
from probe.daemon.status_page import HEADERS, TARGET_PREFIX, overview_page, target_json, target_page
from probe.daemon.store import ResultStore
from probe.daemon.webconfig import BasicAuth

#: gzip level of ``/metrics``: level 1 compresses probe's repetitive text about 25 to 1 in
#: a few milliseconds per megabyte, where level 9 (prometheus_client's) takes 15 times longer.
GZIP_LEVEL = 1

#: The challenge: a realm that names no software (exporter-toolkit sends a bare "Basic").
_UNAUTHORIZED = [("WWW-Authenticate", 'Basic realm="metrics", charset="UTF-8"')]


#: Requests answered per second, at most, on average (:class:`~probe.daemon.httpserver.Pace`):
#: each costs the serving thread some 0.4 ms of CPU besides its rendering (reading,
#: parsing, answering, writing), so a flood of cheap requests (``401``, ``404``) takes at
#: most a fifth of one core. A request beyond waits for its turn, first come first served.
REQUESTS_PER_SECOND = 500

#: Requests that may come at once after a quiet while.
REQUEST_BURST = 50

#: The largest share of one core that renderings take (:class:`Renders`: ``/metrics``, the
#: status pages), in CPU seconds per second.
RENDER_SHARE = 0.2

#: CPU seconds of renderings that may be taken at once after a quiet while (a scrape at
#: 1,000 targets takes some 20-30 ms, so a scrape after a quiet while never waits).
RENDER_BURST = 0.1


class Renders:
    """Renderings of the endpoint's answers: paced, shared by the requests that arrive before one begins.

    A request for an answer (its ``key``: the path, and for ``/metrics`` the format, the
    ``name[]`` filter and the encoding) gets the next rendering of that key that begins
    after it arrived, so every answer holds every cycle recorded before its request, never
    an older one; the requests for the same key that arrive before that rendering begins
    (a flood of them, or Prometheus servers scraping at the same moment) share it.
    Renderings take turns (:class:`~probe.daemon.httpserver.Pace`, :data:`RENDER_SHARE`
    of the serving thread, in the order first asked for); one whose every request has
    gone (the client closed, or its answer timed out) is skipped.

    Attributes:
        cpu: CPU seconds the renderings took so far (the serving thread's).
    """

    def __init__(self) -> None:
        self.cpu = 0.0
        self._pace = Pace(RENDER_SHARE, RENDER_BURST, lambda: self.cpu)
        self._pending: dict[Hashable, tuple[asyncio.Future[Response], list[int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: Hashable, render: Callable[[], Response]) -> Response:
        """The answer for ``key``, from a call of ``render`` that begins after this call."""
        entry = self._pending.get(key)
        if entry is None or entry[0].cancelled():
            entry = self._pending[key] = (asyncio.get_running_loop().create_future(), [0])
            task = asyncio.create_task(self._render(key, entry, render))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future, waiting = entry
        waiting[0] += 1
        try:
            return await asyncio.shield(future)
        finally:
            waiting[0] -= 1
            if not waiting[0] and not future.done():
                future.cancel()  # nobody waits for it any more: skipped

    async def _render(
        self,
        key: Hashable,
        entry: tuple[asyncio.Future[Response], list[int]],
        render: Callable[[], Response],
    ) -> None:
        try:
            await self._pace.turn()
        finally:
            if self._pending.get(key) is entry:
                del self._pending[key]  # requests from now on get the next rendering
        future = entry[0]
        if future.cancelled():
            return
        start = time.thread_time()
        try:
            future.set_result(render())
        except Exception as exc:  # handed to each request, which the server answers 500 and logs
            future.set_exception(exc)
        finally:
            self.cpu += time.thread_time() - start


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
        self.renders = Renders()
        self.requests = 0
        self.turns = Pace(REQUESTS_PER_SECOND, REQUEST_BURST, lambda: self.requests)

    async def __call__(self, request: Request) -> Response:
        """Answer ``request``: ``401`` without valid credentials, ``405`` but for GET and HEAD.

        Each request first waits for its turn (:data:`REQUESTS_PER_SECOND`), so that a flood
        of requests, however cheap each one is, leaves the interpreter's lock to the probing loop.
        """
        self.requests += 1
        await self.turns.turn()
        auth = self.auth
        if auth is not None and auth.enabled and not await auth.verify(request.headers.get("authorization")):
            return plain(401, "unauthorized\n", _UNAUTHORIZED)
        if request.method not in ("GET", "HEAD"):
            return plain(405, "only GET and HEAD\n", [("Allow", "GET, HEAD")])
        response = await self._route(request)
        if request.method == "HEAD":  # the same headers (Content-Length included), no body
            return Response(response.status, response.headers)
        return response

    async def _route(self, request: Request) -> Response:
        try:  # percent-decoded; target names are UTF-8 (a %2F is part of a name)
            path = unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return plain(404, "not found; see /metrics\n")
        if path == "/metrics":
            openmetrics, content_type = negotiate(request.headers.get("accept"))
            names = parse_qs(request.query).get("name[]")
            gzip = _gzip_accepted(request.headers.get("accept-encoding"))
            key = (path, content_type, tuple(names) if names is not None else None, gzip)
            return await self.renders.get(key, lambda: self._metrics(openmetrics, content_type, names, gzip))
        if path == "/-/healthy":
            return plain(200, "OK\n")
        if path == "/-/ready":
            return self._ready()
        if path == "/":
            return await self.renders.get(path, self._overview)
        if path.startswith(TARGET_PREFIX):
            return await self.renders.get(path, lambda: self._target(path[len(TARGET_PREFIX) :]))
        return plain(404, "not found; see /metrics\n")

    def _overview(self) -> Response:
        page = overview_page(self.store.snapshot(), self.clock(), __version__)
        return _page(200, page, "text/html", HEADERS)

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

    def _metrics(self, openmetrics: bool, content_type: str, names: list[str] | None, gzip: bool) -> Response:
        lag = self.loop_lag() if self.loop_lag is not None else None
        parts = exposition_parts(self.store.snapshot(), openmetrics=openmetrics, names=names, loop_lag=lag)
        headers = [("Content-Type", content_type)]
        if gzip:
            body = _gzip(_batches(parts))
            headers += [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))]
            return Response(200, headers, [body])
        headers.append(("Content-Length", str(sum(map(len, parts)))))
        return Response(200, headers, _Batched(parts))


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


class _Batched:
    """``parts`` in batches (:func:`_batches`), anew for each response that shares them."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[bytes]:
        return _batches(self._parts)


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
