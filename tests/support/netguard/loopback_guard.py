"""The network rule of the tests: connect and send to 127.0.0.0/8 and ::1 only.

Installed in the pytest process by ``tests/conftest.py`` and, through the
``sitecustomize.py`` beside this file (on ``PYTHONPATH`` for every Python subprocess a
test starts), in ``python -m probe`` processes too: a subprocess is no way around it. A
violation raises before a packet leaves and is appended to the file named by
``PROBE_NETGUARD_LOG``, which the test session checks at its end.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any


class NonLoopbackConnect(AssertionError):
    """A test tried to reach an address outside 127.0.0.0/8 and ::1."""


def check_address(address: Any) -> None:
    """Raise :class:`NonLoopbackConnect` unless ``address`` is a loopback IP literal."""
    if not isinstance(address, tuple):
        return  # AF_UNIX path or abstract socket
    host = str(address[0]).split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        _violation(f"tests must use IP literals, not {host!r}")
        return
    if not ip.is_loopback and not (
        isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback
    ):
        _violation(f"test tried to reach {host}: only loopback is allowed")


def _violation(message: str) -> None:
    log = os.environ.get("PROBE_NETGUARD_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"pid {os.getpid()}: {message}\n")
    raise NonLoopbackConnect(message)


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _guarded_connect(self: socket.socket, address: Any) -> None:
    check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    check_address(address)
    return _real_connect_ex(self, address)


def _guarded_sendto(self: socket.socket, data: bytes, *args: Any) -> int:
    check_address(args[-1])
    return _real_sendto(self, data, *args)  # type: ignore[call-overload,no-any-return]


def install() -> None:
    """Guard ``connect``, ``connect_ex`` and ``sendto`` of every socket in this process."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign,assignment]
