"""The HTTP endpoint of ``probe run``: ``/metrics``, ``/-/healthy``, ``/-/ready``, the status pages.

The status pages (:mod:`probe.daemon.status_page`) are ``/`` (every target and address),
``/target/NAME`` (one target's page with the text report of its last cycle) and
``/target/NAME.json`` (the JSON document of its last cycle).

A small threaded WSGI server from the standard library, as prometheus_client's own
``start_http_server`` uses. ``/metrics`` behaves as prometheus_client's WSGI app does
(OpenMetrics content negotiation, gzip, ``name[]`` filtering) but serves the text each
target's cycle already rendered (:func:`probe.daemon.metrics.exposition`). Handlers only read the
store's snapshot, so a scrape never waits on a probe.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from probe._version import __version__
from probe.daemon.metrics import exposition_parts, negotiate
from probe.daemon.status_page import HEADERS, TARGET_PREFIX, overview_page, target_json, target_page
from probe.daemon.store import ResultStore
from probe.daemon.webconfig import BasicAuth

log = logging.getLogger("probe.web")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Seconds a client may take to send its request before the connection is dropped.
CLIENT_TIMEOUT = 5.0

#: Connections served at once; more are closed immediately.
MAX_CONNECTIONS = 64

#: gzip level of ``/metrics``: level 1 compresses probe's repetitive text about 25 to 1 in
#: a few milliseconds per megabyte, where level 9 (prometheus_client's) takes 15 times longer.
GZIP_LEVEL = 1


def make_app(
    store: ResultStore,
    auth: BasicAuth | None = None,
    loop_lag: Callable[[], float | None] | None = None,
    clock: Callable[[], float] = time.time,
) -> WsgiApp:
    """The WSGI application serving metrics, health, readiness and the status pages.

    Args:
        store: the daemon's store: its snapshot's stored exposition for ``/metrics``, and
            readiness and the status pages.
        auth: basic auth users; when set, every path needs valid credentials.
        loop_lag: the event loop's current lag in seconds (``probe.daemon.looplag.LoopLag.seconds``),
            called from the serving thread at each scrape.
        clock: Unix time, for the ages the status pages show.
    """
    return _Endpoint(store, auth, loop_lag, clock)


class _Endpoint:
    """The WSGI application of :func:`make_app`: one method per kind of path."""

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

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        auth = self.auth
        if auth is not None and auth.enabled and not auth.check(environ.get("HTTP_AUTHORIZATION")):
            return _reply(
                start_response,
                "401 Unauthorized",
                b"unauthorized\n",
                [("WWW-Authenticate", 'Basic realm="probe", charset="UTF-8"')],
            )
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _reply(
                start_response, "405 Method Not Allowed", b"only GET and HEAD\n", [("Allow", "GET, HEAD")]
            )
        body = self._route({**environ, "REQUEST_METHOD": "GET"}, start_response)
        if method == "HEAD":
            return [b""]  # the same headers (Content-Length included), no body
        return body

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/-/healthy":
            return _reply(start_response, "200 OK", b"OK\n")
        if path == "/-/ready":
            return self._ready(start_response)
        if path == "/":
            page = overview_page(self.store.snapshot(), self.clock(), __version__)
            return _reply(start_response, "200 OK", page.encode(), list(HEADERS), "text/html")
        if path.startswith(TARGET_PREFIX):
            return self._target(path[len(TARGET_PREFIX) :], start_response)
        return _reply(start_response, "404 Not Found", b"not found; see /metrics\n")

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        snapshot = self.store.snapshot()
        if snapshot.ready:
            return _reply(start_response, "200 OK", b"ready\n")
        waiting = [n for n in snapshot.configured if n not in snapshot.targets]
        body = f"not ready: waiting for the first cycle of {', '.join(waiting)}\n".encode()
        return _reply(start_response, "503 Service Unavailable", body)

    def _target(self, quoted: str, start_response: StartResponse) -> Iterable[bytes]:
        # PEP 3333: PATH_INFO is the decoded path as latin-1; names are UTF-8.
        try:
            name = quoted.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return _reply(start_response, "404 Not Found", b"no such target\n")
        snapshot = self.store.snapshot()
        if name in snapshot.configured:
            page = target_page(name, snapshot, self.clock(), __version__)
            assert page is not None
            return _reply(start_response, "200 OK", page.encode(), list(HEADERS), "text/html")
        stem = name.removesuffix(".json")
        if stem != name and stem in snapshot.configured:
            document = target_json(stem, snapshot, self.clock())
            if document is None:
                body = f"no cycle of {stem} has completed yet\n".encode()
                return _reply(start_response, "503 Service Unavailable", body, [("Retry-After", "5")])
            return _reply(start_response, "200 OK", document.encode(), content_type="application/json")
        return _reply(start_response, "404 Not Found", b"no such target; see /\n")

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        openmetrics, content_type = negotiate(environ.get("HTTP_ACCEPT"))
        names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        lag = self.loop_lag() if self.loop_lag is not None else None
        parts = exposition_parts(self.store.snapshot(), openmetrics=openmetrics, names=names, loop_lag=lag)
        headers = [("Content-Type", content_type)]
        if _gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
            body = _gzip(_batches(parts))
            headers += [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))]
            start_response("200 OK", headers)
            return [body]
        headers.append(("Content-Length", str(sum(map(len, parts)))))
        start_response("200 OK", headers)
        return _batches(parts)


#: Bytes of stored text joined into one piece of the ``/metrics`` body (written, or
#: compressed, one piece at a time): large enough that a piece costs few calls, small
#: enough that a scrape never holds a copy of the whole body.
BATCH_BYTES = 256 * 1024


#: glibc's ``M_MMAP_THRESHOLD`` (bytes): its default, but fixed. Left to itself glibc
#: raises the threshold to the largest block freed so far, so after a few scrapes the
#: endpoint's large buffers come from the serving threads' heaps instead of ``mmap`` and
#: stay in the process (the peak RSS rose 8-15 MiB over 50 scrapes at 1,000 targets).
MMAP_THRESHOLD = 128 * 1024

_M_MMAP_THRESHOLD = -3  # <malloc.h>


def fix_mmap_threshold() -> bool:
    """Fix glibc malloc's mmap threshold at :data:`MMAP_THRESHOLD` for the whole process.

    Blocks of that size or more are then always mapped, and unmapped when freed, so a
    scrape's buffers leave no heap behind. ``mallopt(3)`` through ``ctypes``; idempotent.

    Returns:
        Whether it was set: ``False`` without glibc (e.g. musl), where nothing changes.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


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


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "text/plain",
) -> Iterable[bytes]:
    start_response(
        status,
        [
            ("Content-Type", f"{content_type}; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    return [body]


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT  # a slow or silent client loses its connection

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("request", extra={"client": self.address_string(), "line": format % args})

    def handle(self) -> None:
        # A client that goes away or fails TLS must not disturb the server.
        with contextlib.suppress(OSError, ssl.SSLError):
            super().handle()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        # A bounded number of connections at once: beyond it, new ones are closed at once,
        # so a flood of slow clients cannot exhaust threads or memory.
        if not self._slots.acquire(blocking=False):
            log.warning("too many connections; one refused", extra={"client": str(client_address[0])})
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs in this connection's thread, bounded like the request.
        request.settimeout(CLIENT_TIMEOUT)
        try:
            tls = context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug(
                "TLS handshake with a client failed",
                extra={"client": str(client_address[0]), "error": str(exc)},
            )
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("client error", extra={"client": str(client_address)})


class WebServer:
    """The endpoint, serving from its own threads until :meth:`stop`.

    Args:
        host: address to listen on (IPv6 without brackets).
        port: port (0 picks one).
        app: the WSGI application.
        ssl_context: serve HTTPS with this server context (from a web config file).
    """

    def __init__(self, host: str, port: int, app: WsgiApp, ssl_context: ssl.SSLContext | None = None) -> None:
        self._host = host
        self._port = port
        self._app = app
        self._ssl_context = ssl_context
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind and start serving.

        Returns:
            The ``(host, port)`` bound.

        Raises:
            OSError: the address cannot be bound.
        """
        server_class = type(
            "_Server",
            (_ThreadingServer,),
            {"address_family": socket.AF_INET6 if ":" in self._host else socket.AF_INET},
        )
        server = server_class((self._host, self._port), _Handler)
        fix_mmap_threshold()  # before the first scrape's buffers
        server.set_app(self._app)
        server.ssl_context = self._ssl_context
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="probe-web", daemon=True
        )
        self._thread.start()
        host, port = server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
