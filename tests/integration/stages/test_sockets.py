"""Socket-level I/O (probe/netio.py): IPv6, bounds, closing, and no descriptor left behind."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Lab, Pki
from probe.model.reasons import Reason, Status
from probe.stages import _sockets as netio
from tests.support.helpers import reasons, run

LIMITS = {"dns": 1.0, "connect": 1.0, "tls": 0.5, "http": 1.0, "deadline": 5.0}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener that accepts (in the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def test_an_ipv6_loopback_address_is_probed_end_to_end(
    lab: Lab, pki: Pki, ca_file: Path, tmp_path: Path
) -> None:
    name = "v6.corp.example"
    backend = lab.start_backend("web-1", "127.0.0.1")
    (node,) = lab.start_nodes(["::1"], cert=pki.leaf(name), backends=[backend], workdir=tmp_path)
    try:
        start = time.monotonic()
        result = run(
            {
                "url": f"https://{name}:{node.port}/",
                "addresses": ["::1"],
                "expect_networks": ["::1/128"],
                "ca_file": str(ca_file),
                "backend": {"header": "X-Backend"},
                "requests_per_address": 2,
                "timeouts": LIMITS,
            }
        )
        elapsed = time.monotonic() - start
    finally:
        lab.stop(node)
        lab.stop(backend)

    assert result.status is Status.OK, result.failures
    (address,) = result.addresses
    assert str(address.address) == "::1" and address.tls.verified and address.tls.version is not None
    assert [a.status_code for a in address.attempts] == [200, 200]
    assert {a.backend for a in address.attempts} == {"web-1"}
    assert node.connections == 2 and node.sni_names == [name, name]
    assert elapsed < 5


def test_a_read_is_bounded_and_a_close_fails_a_waiting_read(listener: socket.socket) -> None:
    host, port = listener.getsockname()

    async def scenario() -> tuple[float, str]:
        connection = await netio.connect(host, port, 1.0)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await connection.recv(100, connection.deadline(0.2))
        timed_out = time.monotonic() - start
        reading = asyncio.create_task(connection.recv(100, None))
        await asyncio.sleep(0.05)
        connection.close()
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(reading, 1)
        assert connection.closed and connection.readable()
        return timed_out, str(caught.value)

    before = open_fds()
    timed_out, error = asyncio.run(scenario())
    assert 0.19 <= timed_out < 0.6
    assert "closed" in error
    assert open_fds() == before


def test_a_handshake_bounded_by_its_timeout_closes_its_socket(listener: socket.socket) -> None:
    host, port = listener.getsockname()

    async def scenario() -> netio.Connection:
        import ssl

        connection = await netio.connect(host, port, 1.0)
        with pytest.raises(TimeoutError):
            await connection.handshake(ssl.create_default_context(), "x.example", connection.deadline(0.2))
        return connection

    before = open_fds()
    connection = asyncio.run(scenario())
    assert connection.closed
    assert open_fds() == before


def test_failing_and_passing_probes_leave_no_descriptor_open(scene: Any, pki: Pki, lab: Lab) -> None:
    async def silent(reader: asyncio.StreamReader, writer: Any) -> None:
        await asyncio.sleep(30)

    async def hang_up(reader: asyncio.StreamReader, writer: Any) -> None:
        return

    ok = scene()
    wrong_name = scene(cert=pki.leaf("other.example"))
    closes = scene(handler=hang_up, tls=False, backends=())
    mute = scene(handler=silent, tls=False, backends=())
    cases = [
        (ok, set()),
        (wrong_name, {Reason.CERT_HOSTNAME_MISMATCH.value}),
        (closes, {Reason.TLS_HANDSHAKE_FAILED.value}),
        (mute, {Reason.TLS_HANDSHAKE_TIMEOUT.value}),
    ]
    run({**ok.target, "timeouts": LIMITS})  # the first run imports and caches what it needs
    before = open_fds()
    start = time.monotonic()
    for s, expected in cases:
        result = run({**s.target, "requests_per_address": 2, "timeouts": LIMITS})
        assert reasons(result) == expected, result.failures
    elapsed = time.monotonic() - start
    lab.stop(mute.nodes[0])  # its handler holds the lab's side of the connection
    # The lab's side of each connection closes in its own thread; give it a moment.
    for _ in range(50):
        if open_fds() <= before:
            break
        time.sleep(0.05)
    assert open_fds() <= before
    assert elapsed < 4 * 3
