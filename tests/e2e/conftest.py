"""Fixtures of the end-to-end tests: real dnsmasq and HAProxy in front of lab backends.

The scene, on loopback only (127.0.0.0/8):

* dnsmasq on 127.0.53.30 (session): ``www.corp.example`` and the "ALB's own name" both
  resolve to 127.0.30.1 and 127.0.30.2; authoritative for those zones, no upstream.
* HAProxy (one per test): TLS termination with a fresh root → intermediate → leaf chain,
  ``bind`` on 127.0.30.1 and 127.0.30.2 (same port), ``balance roundrobin`` over two lab
  backends web-1 (127.0.31.1) and web-2 (127.0.31.2) that name themselves in
  ``X-Backend``.

Without haproxy or dnsmasq the tests are skipped, unless ``PROBE_REQUIRE_E2E=1`` (CI),
which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from probe.lab import Backend, Lab, Pki
from probe.lab.pki import Issued
from tests.e2e._procs import Process, haproxy_head, require_programs, start_haproxy, start_server

HOSTNAME = "www.corp.example"
ALB_NAME = "internal-e2e-alb-1.eu-west-1.elb.example"
LB_ADDRESSES = ("127.0.30.1", "127.0.30.2")
LB_NETWORK = "127.0.30.0/24"
BACKENDS = (("web-1", "127.0.31.1"), ("web-2", "127.0.31.2"))
DNS_ADDRESS = "127.0.53.30"
DNS_TTL = 60
PKI_LABEL = "probe e2e"

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # not on PATH for non-root users on Debian


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Binaries:
    haproxy: str
    dnsmasq: str


def _find(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which(name, path=search)


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    """The haproxy and dnsmasq executables; skip (or fail with PROBE_REQUIRE_E2E=1) without them."""
    message = (
        f"end-to-end tests need {{missing}} (not on PATH nor in {', '.join(_SBIN)}); "
        "on Debian/Ubuntu: apt-get install haproxy dnsmasq-base"
    )
    found = require_programs(("haproxy", "dnsmasq"), message, find=_find)
    return Binaries(haproxy=found["haproxy"], dnsmasq=found["dnsmasq"])


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class E2ePki:
    pki: Pki
    leaf: Issued
    ca_file: Path
    haproxy_pem: Path


@pytest.fixture(scope="session")
def e2e_pki(tmp_path_factory: pytest.TempPathFactory) -> E2ePki:
    """Root → intermediate → leaf for www.corp.example; the CA file and HAProxy's ``crt`` PEM."""
    directory = tmp_path_factory.mktemp("e2e-pki")
    pki = Pki.create(PKI_LABEL)
    leaf = pki.leaf(HOSTNAME)
    ca_file = pki.write_ca(directory / "root.pem")
    # HAProxy's crt format: the leaf, the chain above it (without the root), the key.
    haproxy_pem = directory / "www.corp.example.pem"
    haproxy_pem.write_bytes(leaf.chain_pem() + leaf.key_pem)
    haproxy_pem.chmod(0o600)
    return E2ePki(pki=pki, leaf=leaf, ca_file=ca_file, haproxy_pem=haproxy_pem)


# --------------------------------------------------------------------------- dnsmasq


@dataclass(frozen=True)
class Dnsmasq:
    address: str
    port: int
    process: Process

    @property
    def where(self) -> str:
        """``IP:port``, as probe reports a resolver."""
        return f"{self.address}:{self.port}"


def _dnsmasq_argv(binary: str, port: int) -> list[str]:
    records = [f"--host-record={name},{address}" for name in (HOSTNAME, ALB_NAME) for address in LB_ADDRESSES]
    return [
        binary,
        "--keep-in-foreground",
        "--conf-file=/dev/null",  # ignore /etc/dnsmasq.conf and /etc/dnsmasq.d
        "--no-resolv",  # no upstream from /etc/resolv.conf; and no --server: never forwards
        "--no-hosts",
        "--bind-interfaces",
        f"--listen-address={DNS_ADDRESS}",
        f"--port={port}",
        # As root dnsmasq would drop to "nobody"; "root" means "stay who you are". A non-root
        # dnsmasq never changes user, so the option is harmless there.
        "--user=root",
        "--pid-file=",  # no pid file
        "--log-facility=-",  # log to stderr
        "--log-queries",
        # Authoritative for these zones like a private hosted zone: NXDOMAIN for unknown
        # names and NOERROR/empty for AAAA (without --local dnsmasq answers REFUSED).
        "--local=/corp.example/",
        "--local=/elb.example/",
        f"--local-ttl={DNS_TTL}",
        *records,
    ]


def _answers(address: str, port: int) -> set[str] | None:
    query = dns.message.make_query(HOSTNAME, "A")
    try:
        response = dns.query.udp(query, address, port=port, timeout=0.2)
    except (dns.exception.Timeout, OSError):
        return None
    if response.rcode() != dns.rcode.NOERROR:
        return None
    return {item.to_text() for rrset in response.answer for item in rrset}


@pytest.fixture(scope="session")
def dnsmasq(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    """A real dnsmasq on 127.0.53.30 answering www.corp.example and the ALB name."""
    directory = tmp_path_factory.mktemp("e2e-dnsmasq")

    def launch(port: int, attempt: int) -> Process:
        return Process("dnsmasq", _dnsmasq_argv(binaries.dnsmasq, port), directory / f"dnsmasq-{attempt}.log")

    def ready(port: int) -> bool:
        return _answers(DNS_ADDRESS, port) == set(LB_ADDRESSES)

    process, port = start_server(
        "dnsmasq", launch, ready, (DNS_ADDRESS,), (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    )
    try:
        yield Dnsmasq(DNS_ADDRESS, port, process)
    finally:
        process.stop()


# --------------------------------------------------------------------------- HAProxy


@dataclass
class LoadBalancer:
    """One HAProxy with its two lab backends."""

    lab: Lab
    backends: dict[str, Backend]
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"https://{HOSTNAME}:{self.port}/"

    def log_lines(self, count: int, timeout: float = 5.0) -> list[str]:
        """HAProxy's request log lines, once ``count`` of them are written (bounded wait)."""
        limit = time.monotonic() + timeout
        while True:
            output = self.process.output(limit=10**6)
            lines = [line for line in output.splitlines() if " web/" in line]  # "backend web"
            if len(lines) >= count or time.monotonic() > limit:
                return lines
            time.sleep(0.02)


def haproxy_config(port: int, pem: Path, backends: dict[str, Backend]) -> str:
    binds = "\n".join(f"    bind {address}:{port} ssl crt {pem} alpn h2,http/1.1" for address in LB_ADDRESSES)
    servers = "\n".join(f"    server {name} {b.address}:{b.port}" for name, b in backends.items())
    # No "check" on the servers: HAProxy never marks one down, so a dead backend keeps its
    # round-robin turns and each of them becomes a 503. "retries 0": with the default of 3,
    # HAProxy waits min(timeout connect, 1s) before each retry of a refused connection,
    # which turns every 503 into a 3-second wait (retries would go to the same dead server
    # anyway, as there is no "option redispatch").
    return f"""{haproxy_head(extra=("option dontlognull",))}
frontend www
{binds}
    default_backend web

backend web
    balance roundrobin
{servers}
"""


@contextlib.contextmanager
def haproxy_over_lab(
    binaries: Binaries, tmp_path: Path, render: Callable[[int, dict[str, Backend]], str]
) -> Iterator[LoadBalancer]:
    """Fresh lab backends web-1 and web-2 behind a fresh HAProxy configured by ``render(port, backends)``."""
    with Lab() as lab:
        backends = {name: lab.start_backend(name, address) for name, address in BACKENDS}
        process, port = start_haproxy(
            binaries.haproxy, lambda port: render(port, backends), LB_ADDRESSES, tmp_path
        )
        try:
            yield LoadBalancer(lab=lab, backends=backends, port=port, process=process)
        finally:
            process.stop()


@pytest.fixture
def load_balancer(binaries: Binaries, e2e_pki: E2ePki, tmp_path: Path) -> Iterator[LoadBalancer]:
    """Fresh lab backends web-1 and web-2 behind a fresh HAProxy on 127.0.30.1-2."""
    with haproxy_over_lab(
        binaries, tmp_path, lambda port, backends: haproxy_config(port, e2e_pki.haproxy_pem, backends)
    ) as balancer:
        yield balancer
