"""The embedded loopback lab, shared by ``probe demo`` and the tests.

:class:`Lab` runs servers on its own asyncio loop in a daemon thread, so a probe can run
on the caller's loop against them. :class:`DemoLab` builds the standard scene: a DNS
responder, two TLS "load-balancer nodes" (127.0.10.1 and 127.0.10.2) with a fresh
root → intermediate → leaf chain, each balancing round-robin over two identifying
backends. Everything listens on 127.0.0.0/8 only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from probe.lab.dns_server import Behaviour, DnsServer
from probe.lab.pki import Issued, Pki
from probe.lab.servers import Backend, Handler, TlsBackend, TlsNode

__all__ = ["Backend", "Behaviour", "DemoLab", "DnsServer", "Lab", "Pki", "TlsBackend", "TlsNode"]

T = TypeVar("T")


def _require_loopback(address: str) -> None:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"the lab listens on loopback only, not {address}")


class Lab:
    """Servers on a private event loop in a daemon thread; a context manager."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="probe-lab", daemon=True)
        self._servers: list[DnsServer | Backend | TlsNode] = []  # TlsBackend is a Backend

    def __enter__(self) -> Lab:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the lab loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop every server and the loop."""
        if not self._thread.is_alive():
            return
        for server in reversed(self._servers):
            try:
                self.run(server.stop(), timeout=5)
            except Exception:
                continue
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()

    def stop(self, server: DnsServer | Backend | TlsNode) -> None:
        """Stop one server."""
        self.run(server.stop())
        if server in self._servers:
            self._servers.remove(server)

    def _start(self, server: T) -> T:
        self.run(server.start())  # type: ignore[attr-defined]
        self._servers.append(server)  # type: ignore[arg-type]
        return server

    def start_dns(self, address: str = "127.0.53.1", port: int = 0) -> DnsServer:
        """Start a DNS responder."""
        _require_loopback(address)
        return self._start(DnsServer(address, port))

    def start_backend(self, name: str, address: str, port: int = 0, status: int = 200) -> Backend:
        """Start an identifying HTTP backend."""
        _require_loopback(address)
        return self._start(Backend(name, address, port, status))

    def start_tls_backend(
        self,
        name: str,
        address: str,
        cert: Issued,
        port: int = 0,
        status: int = 200,
        workdir: Path | None = None,
    ) -> TlsBackend:
        """Start a backend that serves HTTPS with ``cert`` (e.g. self-signed, as on an instance)."""
        _require_loopback(address)
        directory = workdir or Path(tempfile.mkdtemp(prefix="probe-lab-"))
        cert_file, key_file = cert.write(directory, f"backend-{name}-{address}-{port}")
        return self._start(TlsBackend(name, address, port, cert_file, key_file, status))

    def start_node(
        self,
        address: str,
        port: int = 0,
        *,
        cert: Issued | None = None,
        chain_pem: bytes | None = None,
        backends: Sequence[Backend] = (),
        handler: Handler | None = None,
        min_version: str | None = None,
        max_version: str | None = None,
        tls: bool = True,
        workdir: Path | None = None,
        client_ca: Path | None = None,
        alpn: Sequence[str] = ("http/1.1",),
        sticky_cookie: str | None = None,
        post_handshake_auth: bool = False,
    ) -> TlsNode:
        """Start a TLS node sending ``cert`` (its chain without root, or ``chain_pem``)."""
        _require_loopback(address)
        cert_file = key_file = None
        if tls:
            assert cert is not None
            directory = workdir or Path(tempfile.mkdtemp(prefix="probe-lab-"))
            cert_file, key_file = cert.write(directory, f"{address}-{port}", chain=chain_pem)
        node = TlsNode(
            address,
            port,
            cert_file,
            key_file,
            backends=backends,
            handler=handler,
            min_version=min_version,
            max_version=max_version,
            tls=tls,
            client_ca=client_ca,
            alpn=alpn,
            sticky_cookie=sticky_cookie,
            post_handshake_auth=post_handshake_auth,
        )
        return self._start(node)

    def start_nodes(self, addresses: Sequence[str], **kwargs: Any) -> list[TlsNode]:
        """Start one node per address, all on the same port (as behind one DNS name)."""
        for _ in range(20):
            first = self.start_node(addresses[0], 0, **kwargs)
            started = [first]
            try:
                for address in addresses[1:]:
                    started.append(self.start_node(address, first.port, **kwargs))
            except OSError:
                for node in started:
                    self.stop(node)
                continue
            return started
        raise OSError("no port free on all of " + ", ".join(addresses))


class DemoLab(Lab):
    """The standard scene of the demo and of the happy-path tests.

    Attributes after entering: ``hostname``, ``alias`` (the "ALB's own DNS name"),
    ``node_addresses``, ``port``, ``url``, ``dns_server``, ``backends``, ``nodes``,
    ``pki``, ``ca_file``.
    """

    hostname = "www.corp.example"
    alias = "internal-demo-alb-1234567890.eu-west-1.elb.example"
    node_addresses = ("127.0.10.1", "127.0.10.2")
    backend_addresses = (("web-1", "127.0.20.1"), ("web-2", "127.0.20.2"))
    dns_address = "127.0.53.1"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="probe-demo-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.pki = Pki.create("probe demo")
        self.ca_file = self.pki.write_ca(self.workdir / "ca.pem")
        self.leaf = self.pki.leaf(self.hostname)

    def __enter__(self) -> DemoLab:
        super().__enter__()
        try:
            self.dns_server = self.start_dns(self.dns_address)
            self.backends = [self.start_backend(name, address) for name, address in self.backend_addresses]
            self.nodes = self.start_nodes(
                self.node_addresses, cert=self.leaf, backends=self.backends, workdir=self.workdir
            )
        except BaseException:
            self.close()
            raise
        self.port = self.nodes[0].port
        for address in self.node_addresses:
            self.dns_server.add(self.hostname, "A", address)
            self.dns_server.add(self.alias, "A", address)
        return self

    def close(self) -> None:
        """Stop the servers and remove the generated files."""
        super().close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def url(self) -> str:
        """The URL to probe."""
        return f"https://{self.hostname}:{self.port}/health"

    def target(self, **overrides: Any) -> dict[str, Any]:
        """A target config mapping for the demo scene (loopback as the expected network)."""
        target: dict[str, Any] = {
            "name": "demo",
            "url": self.url,
            "resolvers": [self.dns_server.where],
            "expect_networks": ["127.0.10.0/24"],
            "expect_same_addresses_as": self.alias,
            "ca_file": str(self.ca_file),
            "backend": {"header": "X-Backend"},
            "expect_backends": [name for name, _ in self.backend_addresses],
            "timeouts": {"dns": 1, "connect": 1, "tls": 2, "http": 2, "deadline": 10},
        }
        target.update(overrides)
        return target

    def adhoc_args(self, *extra: str) -> list[str]:
        """``probe check`` arguments for the demo target: URL, resolver, CA, network, then ``extra``."""
        return [
            self.url,
            "--resolver",
            self.dns_server.where,
            "--ca-file",
            str(self.ca_file),
            "--expect-network",
            "127.0.10.0/24",
            *extra,
        ]

    def config_data(self, **overrides: Any) -> dict[str, Any]:
        """A whole config mapping with the demo target."""
        return {"targets": [self.target(**overrides)]}
