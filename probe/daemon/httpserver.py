"""The endpoint's HTTP/1.1 server: its own event loop in its own thread, every client bounded.

The daemon's application (:mod:`probe.daemon.web`) answers a :class:`Request` with a
:class:`Response`; this module owns the connections. `h11 <https://h11.readthedocs.io/>`_
parses the requests and frames the responses (the HTTP/1.1 state machine httpx's own
transport uses); the sockets are non-blocking and driven by the loop
(:class:`probe.stages._sockets.Connection`), TLS done by OpenSSL on the socket, so a
refused client certificate reaches the client as OpenSSL's alert. No ``Server`` header.

The loop runs in the thread ``probe-web``, never on the probing loop. What one client can
hold (docs/daemon.md, "Locking down the endpoint"):

* **Time.** Each phase of an exchange has a deadline of ``client_timeout`` seconds
  (:data:`CLIENT_TIMEOUT`), a deadline and not a per-read timeout, so trickling bytes
  does not extend it: the TLS handshake and the whole request head, from the connection
  (or from the previous response on a kept-alive connection); a request body, from the
  head; the answer (a password check included), else ``503``; writing the response,
  else the connection is dropped.
* **Size.** A request head of at most :data:`MAX_HEAD_BYTES` (``431``, or ``414`` when
  the request line alone is longer); a body (no path takes one) read and discarded up
  to :data:`MAX_BODY_BYTES` (``413`` beyond).
* **Connections.** At most :data:`MAX_PER_CLIENT` from one client address (an IPv6
  ``/64`` counts as one address), more are closed at once; at most
  :data:`MAX_CONNECTIONS` in all, and a new connection beyond that closes the one that
  has been longest in its current step (idle or trickling a head or a body, its password
  waiting for a check, not reading its response), so slow or idle clients never lock a
  scraper out.

Refused and dropped clients are logged as one warning line per :data:`LOG_INTERVAL`
seconds at most, with counts, so that a flood does not flood the journal too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import errno
import http
import ipaddress
import logging
import math
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import h11

from probe.stages._sockets import Connection, fd_limit

log = logging.getLogger("probe.web")

#: Seconds for each phase of an exchange (TLS handshake and request head; body; answer;
#: response): ``probe run --web.client-timeout``.
CLIENT_TIMEOUT = 5.0

#: Connections at once, in all. Each costs a file descriptor and some 20-60 KiB (TLS).
MAX_CONNECTIONS = 128

#: Connections at once from one client address (an IPv6 /64): Prometheus needs one or two,
#: a browser opens up to six.
MAX_PER_CLIENT = 8

#: A request head (request line and headers): 16 KiB, h11's default, as nginx's default
#: ``large_client_header_buffers`` allows lines of 8 KiB.
MAX_HEAD_BYTES = 16 * 1024

#: A request body, read and discarded (no path takes one).
MAX_BODY_BYTES = 64 * 1024

#: Bytes read at a time, and written at a time once the response is larger.
IO_BYTES = 64 * 1024

#: The listening socket's accept queue.
BACKLOG = 256

#: Connections accepted per wake-up of the loop, so that a flood of new connections leaves
#: the loop to the ones already accepted in between.
ACCEPT_BATCH = 32

#: At most one warning line about refused and dropped clients per this many seconds.
LOG_INTERVAL = 60.0

#: Distinct clients counted for one such line; beyond, it says ``clients=1000+``.
MAX_CLIENTS_COUNTED = 1000

#: Seconds a refused client's remaining bytes are read and dropped before its connection closes.
LINGER_SECONDS = 1.0

#: Seconds the server stops accepting after running out of file descriptors (``EMFILE``).
ACCEPT_PAUSE = 0.5

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and leaves no TIME_WAIT


@dataclass(frozen=True)
class Request:
    """A request as the application sees it.

    Attributes:
        method: ``GET``, ``HEAD`` …
        target: the request target as sent (``/target/w%C3%A9?x=1``).
        headers: header values by lower-case name (repeated headers joined with ``, ``).
        client: the client's address.
    """

    method: str
    target: str
    headers: Mapping[str, str]
    client: str

    @property
    def path(self) -> str:
        """The target's path, still percent-encoded."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The target's query string, without the ``?``."""
        return self.target.partition("?")[2]


@dataclass(frozen=True)
class Response:
    """A response: its status, its headers (``Content-Length`` among them) and its body's pieces."""

    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes] = ()


App = Callable[[Request], Awaitable[Response]]


def plain(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A short ``text/plain`` response."""
    body = text.encode()
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers],
        [body],
    )


def client_key(host: str) -> str:
    """What the per-client limit counts by: the IPv4 address, or the IPv6 address's /64.

    An IPv6 host usually holds a whole /64 (temporary addresses change within it), so
    counting addresses would let one host open a connection from each.
    """
    if ":" not in host:
        return host  # IPv4, as the socket gives it
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Pace:
    """A token bucket with turns: at most ``rate`` units of work per second, on average.

    The bucket fills at ``rate`` units a second up to ``burst``; each turn first takes out
    the units used since the previous turn (as ``used``, a running total, tells), then
    waits while the bucket is below zero. Turns are given in the order asked for. The
    application paces its requests (units: requests) and its renderings (units: CPU
    seconds) with it (:mod:`probe.daemon.web`), on the serving loop.

    Args:
        rate: units a second.
        burst: units that may be used at once after a quiet while.
        used: the units used so far.
    """

    def __init__(self, rate: float, burst: float, used: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._used = used
        self._tokens = burst
        self._last: tuple[float, float] | None = None  # (loop time, units used) at the previous turn
        self._lock: asyncio.Lock | None = None

    async def turn(self) -> None:
        """Wait until the rate allows another turn (on the serving loop)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            while True:
                now, used = loop.time(), self._used()
                if self._last is not None:
                    earned = (now - self._last[0]) * self._rate
                    self._tokens = min(self._burst, self._tokens + earned - (used - self._last[1]))
                self._last = (now, used)
                if self._tokens >= 0:
                    return
                await asyncio.sleep(-self._tokens / self._rate)


class _Slot:
    """One accepted connection, what the limits count it by, and the task serving it."""

    __slots__ = ("conn", "host", "key", "task")

    def __init__(self, conn: Connection, host: str, key: str) -> None:
        self.conn = conn
        self.host = host
        self.key = key
        self.task: asyncio.Task[None] | None = None


class _Tally:
    """Counts refused and dropped clients; logs them as one warning per :data:`LOG_INTERVAL`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._counts: collections.Counter[str] = collections.Counter()
        self._clients: set[str] = set()
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def note(self, what: str, key: str) -> None:
        """Count one event from client ``key``.

        ``refused_per_client``, ``refused_full`` (closed at once), ``evicted`` (closed for a
        new connection), ``slow`` (a deadline passed while it sent or read).
        """
        self._counts[what] += 1
        if len(self._clients) < MAX_CLIENTS_COUNTED:
            self._clients.add(key)
        now = time.monotonic()
        if now - self._last >= LOG_INTERVAL:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._last + LOG_INTERVAL - now, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._counts:
            return
        clients = len(self._clients)
        log.warning(
            "clients refused or dropped to keep the endpoint serving",
            extra={
                **dict(sorted(self._counts.items())),
                "clients": f"{clients}+" if clients >= MAX_CLIENTS_COUNTED else clients,
            },
        )
        self._counts.clear()
        self._clients.clear()
        self._last = time.monotonic()


class WebServer:
    """The endpoint's server, serving ``app`` from its own thread and event loop until :meth:`stop`.

    Args:
        host: address to listen on (IPv6 without brackets).
        port: port (0 picks one).
        app: answers each request (:func:`probe.daemon.web.make_app`).
        ssl_context: serve HTTPS with this server context (from a web config file);
            :attr:`ssl_context` may be replaced while serving (a reload), for the
            connections that follow.
        client_timeout: seconds for each phase of an exchange (:data:`CLIENT_TIMEOUT`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        app: App,
        ssl_context: ssl.SSLContext | None = None,
        client_timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self._host = host
        self._port = port
        self._app = app
        self.ssl_context = ssl_context
        self.client_timeout = client_timeout
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: set[_Slot] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_client: collections.Counter[str] = collections.Counter()
        # Every connection, by when its current step (head, body, answer, response) began, oldest first.
        self._steps: dict[_Slot, None] = {}
        self._tally: _Tally | None = None

    def start(self) -> tuple[str, int]:
        """Bind and start serving.

        Returns:
            The ``(host, port)`` bound.

        Raises:
            OSError: the address cannot be bound.
        """
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(BACKLOG)
        except BaseException:
            listener.close()
            raise
        listener.setblocking(False)
        fix_mmap_threshold()  # before the first scrape's buffers
        self._listener = listener
        self._loop = asyncio.new_event_loop()
        self._tally = _Tally(self._loop)
        self._thread = threading.Thread(target=self._run, name="probe-web", daemon=True)
        self._thread.start()
        host, port = listener.getsockname()[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop serving: close the socket and every connection (a second call does nothing)."""
        loop, thread, listener = self._loop, self._thread, self._listener
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        if listener is not None:
            listener.close()

    # -- the serving thread

    def _run(self) -> None:
        loop, listener = self._loop, self._listener
        assert loop is not None and listener is not None
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet)
        loop.add_reader(listener.fileno(), self._accept)
        try:
            loop.run_forever()
        finally:
            loop.remove_reader(listener.fileno())
            for slot in list(self._slots):
                slot.conn.close()
            for task in self._tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            if self._tally is not None:
                self._tally.flush()
            loop.close()

    def _accept(self) -> None:
        """The listening socket is readable: accept what is queued, a batch at a time."""
        listener, loop = self._listener, self._loop
        if listener is None or loop is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client went away before it was accepted
                # Out of file descriptors (fd_limit logs which limit), or the like: pause,
                # or the listening socket, still readable, would spin the loop.
                if fd_limit(exc) is None:
                    log.warning("cannot accept a connection", extra={"error": exc.strerror or str(exc)})
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_PAUSE, self._resume, listener)
                return
            self._admit(sock, str(address[0]))

    def _resume(self, listener: socket.socket) -> None:
        if self._loop is not None and listener is self._listener:
            self._loop.add_reader(listener.fileno(), self._accept)

    def _admit(self, sock: socket.socket, host: str) -> None:
        """Serve a new connection, or close it at once when a limit says so."""
        assert self._loop is not None and self._tally is not None
        key = client_key(host)
        if self._per_client[key] >= MAX_PER_CLIENT:
            self._tally.note("refused_per_client", key)
            _reset(sock)
            return
        if len(self._slots) >= MAX_CONNECTIONS and not self._evict():
            self._tally.note("refused_full", key)
            _reset(sock)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot = _Slot(Connection(sock), host, key)
        self._per_client[key] += 1
        self._steps[slot] = None
        self._slots.add(slot)
        task = slot.task = self._loop.create_task(self._serve(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _evict(self) -> bool:
        """Close the connection longest in its current step; whether there was one.

        Whatever the step: a client trickling a body, one whose password waits for its
        check or one that does not read its response holds its slot as long as an idle one.
        A scraper's steps take milliseconds, so it is never the oldest while they wait.
        """
        slot = next(iter(self._steps), None)
        if slot is None:
            return False
        assert self._tally is not None
        self._tally.note("evicted", slot.key)
        slot.conn.close()  # a step waiting on the socket ends with an OSError
        if slot.task is not None:
            slot.task.cancel()  # one waiting for its answer (a password check) ends too
        self._release(slot)
        return True

    def _step(self, slot: _Slot) -> None:
        """``slot`` begins a step: the newest for :meth:`_evict`."""
        if slot in self._slots:
            self._steps.pop(slot, None)
            self._steps[slot] = None

    def _release(self, slot: _Slot) -> None:
        self._steps.pop(slot, None)
        if slot in self._slots:
            self._slots.discard(slot)
            self._per_client[slot.key] -= 1
            if not self._per_client[slot.key]:
                del self._per_client[slot.key]

    async def _serve(self, slot: _Slot) -> None:
        """One connection, exchange after exchange, each phase within its deadline."""
        assert self._loop is not None
        conn = slot.conn
        # A head of MAX_HEAD_BYTES is whole, or h11 refuses it (431): _next_event reads no further.
        protocol = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES - 1)
        try:
            end = self._loop.time() + self.client_timeout
            context = self.ssl_context
            if context is not None:
                await conn.handshake(context, None, end, server_side=True)
            while await self._exchange(slot, protocol, end):
                protocol.start_next_cycle()
                end = self._loop.time() + self.client_timeout
            if protocol.their_state in (h11.SEND_BODY, h11.ERROR):
                await self._linger(slot)
        except TimeoutError:
            if protocol.trailing_data[0] or protocol.their_state is not h11.IDLE:
                assert self._tally is not None
                self._tally.note("slow", slot.key)  # trickled, or did not read the response
        except (OSError, h11.ProtocolError) as exc:  # ssl.SSLError is an OSError
            log.debug("client connection ended", extra={"client": slot.host, "error": str(exc) or repr(exc)})
        except Exception as exc:  # a bug (e.g. in a body's pieces): one line with its traceback
            log.error("the endpoint failed a connection", exc_info=exc, extra={"client": slot.host})
        finally:
            conn.close()
            self._release(slot)

    async def _linger(self, slot: _Slot) -> None:
        """After a refusal the client may still be sending: read and drop it before closing.

        Closing a socket with unread data sends a reset, which can reach the client before
        it has read the refusal. As Apache's lingering close: stop writing, then discard
        what comes for at most :data:`LINGER_SECONDS` (the connection may be evicted
        meanwhile).
        """
        assert self._loop is not None
        end = self._loop.time() + min(LINGER_SECONDS, self.client_timeout)
        self._step(slot)
        with contextlib.suppress(OSError, TimeoutError):
            slot.conn.sock.shutdown(socket.SHUT_WR)  # an SSLSocket reads raw bytes after this
            while await slot.conn.recv(IO_BYTES, end):
                pass

    async def _exchange(self, slot: _Slot, protocol: h11.Connection, end: float) -> bool:
        """Read one request by ``end``, answer it; whether the connection may serve another."""
        assert self._loop is not None
        self._step(slot)
        try:
            event = await _next_event(slot.conn, protocol, end)
        except h11.RemoteProtocolError as exc:
            await self._write(slot, protocol, _refusal(exc, protocol))
            return False
        if not isinstance(event, h11.Request):
            return False  # the client closed the connection
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if "transfer-encoding" in headers and "content-length" in headers:
            # Both framings: a sign of request smuggling (RFC 9112, 6.1: close after answering).
            # Refused, as nginx does, before anything of the body is read as a next request.
            await self._write(slot, protocol, plain(400, "bad request\n", [("Connection", "close")]))
            return False
        request = Request(event.method.decode("latin-1"), event.target.decode("latin-1"), headers, slot.host)
        response = await self._body_then_answer(slot, protocol, request)
        await self._write(slot, protocol, response)
        return protocol.our_state is h11.DONE and protocol.their_state is h11.DONE

    async def _body_then_answer(self, slot: _Slot, protocol: h11.Connection, request: Request) -> Response:
        """Read and discard the request's body (within its deadline), then answer."""
        assert self._loop is not None
        if protocol.they_are_waiting_for_100_continue:
            return await self._answer(
                slot, request
            )  # the body is never asked for; the connection closes after
        self._step(slot)
        end = self._loop.time() + self.client_timeout
        received = 0
        while not isinstance(event := await _next_event(slot.conn, protocol, end), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > MAX_BODY_BYTES:
                    return plain(413, "request body too large\n", [("Connection", "close")])
        return await self._answer(slot, request)

    async def _answer(self, slot: _Slot, request: Request) -> Response:
        """The application's response, or ``503`` when it takes longer than the client timeout."""
        self._step(slot)
        try:
            async with asyncio.timeout(self.client_timeout):
                return await self._app(request)
        except TimeoutError:
            return plain(503, "busy; try again\n", [("Retry-After", "5")])
        except Exception as exc:  # a bug: one log line with its traceback, the server goes on
            log.error("the endpoint failed to answer", exc_info=exc, extra={"path": request.path[:200]})
            return plain(500, "internal error\n")

    async def _write(self, slot: _Slot, protocol: h11.Connection, response: Response) -> None:
        """Send ``response`` within the client timeout, in pieces of about :data:`IO_BYTES`."""
        assert self._loop is not None
        self._step(slot)
        conn = slot.conn
        end = self._loop.time() + self.client_timeout
        headers = [*response.headers, ("Date", email.utils.formatdate(usegmt=True))]
        reason = http.HTTPStatus(response.status).phrase.encode()
        head = h11.Response(status_code=response.status, headers=headers, reason=reason)
        out = [protocol.send(head) or b""]
        size = len(out[0])
        for chunk in response.body:
            out += protocol.send_with_data_passthrough(h11.Data(data=chunk)) or ()
            size += len(chunk)
            if size >= IO_BYTES:
                await conn.send(b"".join(out), end)
                out, size = [], 0
        out.append(protocol.send(h11.EndOfMessage()) or b"")
        await conn.send(b"".join(out), end)


async def _next_event(conn: Connection, protocol: h11.Connection, end: float) -> Any:
    """h11's next event, reading from ``conn`` as needed until loop time ``end``.

    Raises:
        TimeoutError: ``end`` passed first.
        h11.RemoteProtocolError: not HTTP/1.1, or a head larger than :data:`MAX_HEAD_BYTES`.
        OSError: the connection failed or was closed.
    """
    while (event := protocol.next_event()) is h11.NEED_DATA:
        size = IO_BYTES
        if protocol.their_state is h11.IDLE:
            # A head: never read past the cap, for h11 checks its limit (one byte less, see
            # _serve) only on a head still incomplete: one that arrived whole in a read of
            # IO_BYTES was taken at any size up to that.
            size = max(1, MAX_HEAD_BYTES - len(protocol.trailing_data[0]))
        protocol.receive_data(await conn.recv(size, end))
    return event


def _refusal(exc: h11.RemoteProtocolError, protocol: h11.Connection) -> Response:
    """The answer to a request h11 refused: ``400``, ``431``, or ``414`` for a request line too long."""
    status = exc.error_status_hint
    if status == 431 and b"\n" not in protocol.trailing_data[0]:
        status = 414
    return plain(status, f"{http.HTTPStatus(status).phrase.lower()}\n", [("Connection", "close")])


def _reset(sock: socket.socket) -> None:
    """Close a refused connection at once, with a reset (no lingering state on either side)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The serving loop's exception handler: what asyncio would print goes to the debug log."""
    log.debug(str(context.get("message")), extra={"error": repr(context.get("exception"))})


#: glibc's ``M_MMAP_THRESHOLD`` (bytes): its default, but fixed. Left to itself glibc
#: raises the threshold to the largest block freed so far, so after a few scrapes the
#: endpoint's large buffers come from the serving thread's heap instead of ``mmap`` and
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
