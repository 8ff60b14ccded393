"""Socket-level I/O on the running event loop: a non-blocking socket, plain or TLS.

The TLS stage and the HTTP requests use it instead of asyncio's streams and its TLS
transport (``sslproto``): the loop only says when the socket is readable or writable
(``add_reader``/``add_writer``), and ``ssl.SSLSocket`` does the TLS in OpenSSL, its
records read and written by OpenSSL itself, not copied through memory BIOs in Python.
That is the same handshake, the same verification and the same errors, for less CPU.
The DNS stage's UDP queries wait on their sockets with the same loop callbacks
(:func:`wake`, :func:`expire`).

Errors are the socket's and ``ssl``'s own (``OSError``, ``ssl.SSLError`` and its
subclasses such as ``ssl.SSLCertVerificationError``), and ``TimeoutError`` when a time
bound passes; callers classify them. Every function that fails closes what it opened.
:func:`fd_limit` tells, for every stage that opens sockets, a socket this host could
not open (out of file descriptors) from a fault of the network or the peer.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import select
import socket
import ssl
from time import monotonic

_WAIT_ERRORS = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)

log = logging.getLogger("probe.sockets")

#: At most one log line per limit in this many seconds (the findings name it every time).
FD_LIMIT_LOG_INTERVAL = 60.0

_NO_FD = "no file descriptor left for a socket"

#: When each limit was last logged (``time.monotonic()``), and how often it was met since.
_logged: dict[int, tuple[float, int]] = {}


def fd_limit(exc: BaseException) -> str | None:
    """The sentence for a socket this host could not open for lack of file descriptors, else ``None``.

    ``EMFILE``: the process is at its limit of open files (``RLIMIT_NOFILE``, whose soft and
    hard values the sentence gives); ``ENFILE``: the system's file table is full
    (``fs.file-max``). Neither says anything about the network or the peer, so the stages
    report ``cycle_fd_limit`` instead of a DNS or TCP failure. Each is logged as a
    warning naming the limit, at most once every :data:`FD_LIMIT_LOG_INTERVAL` seconds
    (with the number of times it was met since the previous line).
    """
    code = exc.errno if isinstance(exc, OSError) else None
    if code == errno.EMFILE:
        soft, hard = (_limit_text(n) for n in resource.getrlimit(resource.RLIMIT_NOFILE))
        sentence = (
            f"{_NO_FD}: this process is at its limit of open files (RLIMIT_NOFILE, soft {soft}, hard {hard})"
        )
        _log_limit(code, sentence, limit="RLIMIT_NOFILE", soft=soft, hard=hard)
        return sentence
    if code == errno.ENFILE:
        sentence = f"{_NO_FD}: the system's file table is full (fs.file-max)"
        _log_limit(code, sentence, limit="fs.file-max")
        return sentence
    return None


def _limit_text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _log_limit(code: int, sentence: str, **fields: str) -> None:
    """Log that a limit was met: the first time, then at most once per interval."""
    now = monotonic()
    last, since = _logged.get(code, (float("-inf"), 0))
    if now - last < FD_LIMIT_LOG_INTERVAL:
        _logged[code] = (last, since + 1)
        return
    _logged[code] = (now, 0)
    log.warning(sentence, extra={**fields, "errno": errno.errorcode[code], "times_since_last_line": since})


def wake(waiter: asyncio.Future[float]) -> None:
    """The loop's reader or writer callback: resolve ``waiter`` with ``time.monotonic()``.

    That is when the loop saw the socket ready, before any other task's work in this turn
    (the time phase times end at). A waiter already done is left as it is.
    """
    if not waiter.done():
        waiter.set_result(monotonic())


def expire(waiter: asyncio.Future[float]) -> None:
    """The loop's timer callback: fail ``waiter`` with ``TimeoutError`` unless it is done."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection:
    """One non-blocking TCP connection, TLS once :meth:`handshake` completed.

    Args:
        sock: a connected non-blocking socket (this object owns it from now on).

    Attributes:
        sock: the socket; an ``ssl.SSLSocket`` after the handshake.
        read_at: when the latest :meth:`recv` returned data or the end of the stream
            (``time.monotonic()``), for phase times: when the loop saw the socket readable,
            if the read waited, so that other tasks' work in the same turn of the loop (the
            other addresses of a cycle) does not count; else when the data was read.
        connected_at: when the loop saw the TCP connect complete (``time.monotonic()``).
    """

    __slots__ = ("_loop", "_waiter", "connected_at", "fd", "read_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[float] | None = None
        self.read_at: float | None = None
        self.connected_at: float | None = None

    @property
    def ssl_object(self) -> ssl.SSLSocket | None:
        """The TLS socket after the handshake, else ``None``."""
        return self.sock if isinstance(self.sock, ssl.SSLSocket) else None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self.fd < 0

    def deadline(self, timeout: float | None) -> float | None:
        """The loop time ``timeout`` seconds from now (``None`` for no bound)."""
        return None if timeout is None else self._loop.time() + timeout

    async def _wait(self, writable: bool, end: float | None) -> float:
        """Wait until the socket is readable (or writable), at most until loop time ``end``.

        Returns:
            When the loop saw it ready (``time.monotonic()``).

        Raises:
            TimeoutError: ``end`` passed.
            OSError: the connection was closed meanwhile (``EBADF``).
        """
        if self.fd < 0:
            raise OSError(errno.EBADF, "the connection is closed")
        loop = self._loop
        waiter: asyncio.Future[float] = loop.create_future()
        if writable:
            loop.add_writer(self.fd, wake, waiter)
        else:
            loop.add_reader(self.fd, wake, waiter)
        timer = loop.call_at(end, expire, waiter) if end is not None else None
        self._waiter = waiter
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
            if self.fd >= 0:
                if writable:
                    loop.remove_writer(self.fd)
                else:
                    loop.remove_reader(self.fd)

    async def handshake(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        end: float | None,
        server_side: bool = False,
    ) -> None:
        """Wrap the socket in TLS with ``context`` and complete the handshake by loop time ``end``.

        ``server_side`` for the daemon's endpoint (:mod:`probe.daemon.httpserver`): OpenSSL
        then writes its alert (``certificate_required``, ``unknown_ca`` …) to the client
        itself before the handshake fails.

        Raises:
            ssl.SSLCertVerificationError: verification failed.
            ssl.SSLError: the handshake failed otherwise (an alert, not TLS …).
            OSError: reset, or closed.
            TimeoutError: ``end`` passed.
            All of them after closing the connection.
        """
        try:
            tls = context.wrap_socket(
                self.sock,
                server_side=server_side,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
            )
            self.sock = tls
            while True:
                try:
                    tls.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    await self._wait(False, end)
                except ssl.SSLWantWriteError:
                    await self._wait(True, end)
        except BaseException:
            self.close()
            raise

    async def recv(self, max_bytes: int, end: float | None) -> bytes:
        """Up to ``max_bytes`` bytes, ``b""`` at the end of the stream, by loop time ``end``.

        A TLS connection that ends without close_notify also reads as the end (as
        curl and asyncio's streams take it); HTTP framing tells a cut response.

        Raises:
            ssl.SSLError: a TLS alert (e.g. TLS 1.3's certificate_required after the handshake).
            OSError: reset, or closed.
            TimeoutError: ``end`` passed.
        """
        ready: float | None = None
        while True:
            try:
                data = self.sock.recv(max_bytes)
            except _WAIT_ERRORS:
                ready = await self._wait(False, end)
                continue
            except ssl.SSLWantWriteError:
                await self._wait(True, end)
                continue
            self.read_at = ready if ready is not None else monotonic()
            return data

    def recv_now(self, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` bytes already received, without waiting; ``None`` when none are.

        ``b""`` at the end of the stream, as :meth:`recv`.

        Raises:
            ssl.SSLError: a TLS alert.
            OSError: reset, or closed.
        """
        try:
            data = self.sock.recv(max_bytes)
        except (*_WAIT_ERRORS, ssl.SSLWantWriteError):
            return None
        self.read_at = monotonic()
        return data

    async def send(self, data: bytes, end: float | None) -> None:
        """Send all of ``data`` by loop time ``end``.

        Raises:
            OSError: reset, broken pipe, or closed.
            ssl.SSLError: a TLS failure.
            TimeoutError: ``end`` passed.
        """
        view = memoryview(data)
        while view:
            try:
                # After a TLS want-write, OpenSSL needs the same bytes again: only what
                # send() reports as sent is dropped.
                view = view[self.sock.send(view) :]
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                await self._wait(True, end)
            except ssl.SSLWantReadError:
                await self._wait(False, end)

    def readable(self) -> bool:
        """Whether a read would return at once: buffered TLS data, data, the end, or closed."""
        if self.fd < 0:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        return bool(poll.poll(0))

    def close(self) -> None:
        """Close at once (no TLS close_notify, as for an abandoned probe); a waiting read fails."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(OSError(errno.EBADF, "the connection is closed"))
        self.sock.close()


async def connect(
    host: str, port: int, timeout: float | None, local_address: str | None = None
) -> Connection:
    """A new TCP connection to ``host``:``port`` (an IP literal, or a name asyncio resolves).

    ``TCP_NODELAY`` is set, as asyncio sets it on its transports.

    Raises:
        OSError: refused, unreachable … (asyncio's ``ConnectionRefusedError`` and friends).
        TimeoutError: no connection within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        where: tuple[str, int] = (host, port)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, where = infos[0][0], (str(infos[0][4][0]), int(infos[0][4][1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_address:
            sock.bind((local_address, 0))
        connection = Connection(sock)
        code = sock.connect_ex(where)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            end = connection.deadline(timeout)
            connection.connected_at = await connection._wait(True, end)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        else:
            connection.connected_at = monotonic()
        if code:
            raise OSError(code, f"Connect call failed {where}")
    except BaseException:
        sock.close()
        raise
    return connection
