"""A factory for small loopback scenes: a name in the lab DNS, TLS nodes, backends."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Backend, DnsServer, Lab, Pki, TlsNode
from probe.lab.pki import Issued

_NAMES = itertools.count(1)


@dataclass
class Scene:
    """What a scene started, and the target fields that probe it."""

    hostname: str
    nodes: list[TlsNode]
    backends: list[Backend]
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.nodes[0].port if self.nodes else 443


@pytest.fixture
def scene(lab: Lab, dns: DnsServer, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path) -> Iterator[Any]:
    """``scene(nodes=2, backends=("web-1", "web-2"), cert=..., weights=(3, 1), **node_options)``.

    Each node balances round-robin over the backends, each repeated by its weight.
    """
    started: list[Any] = []

    def make(
        *,
        nodes: int = 1,
        backends: Sequence[str] = ("web-1", "web-2"),
        cert: Issued | None = None,
        hostname: str | None = None,
        weights: Sequence[int] | None = None,
        **node_options: Any,
    ) -> Scene:
        name = hostname or f"t{next(_NAMES)}.corp.example"
        backend_servers = [lab.start_backend(b, new_ip()) for b in backends]
        node_servers = lab.start_nodes(
            [new_ip() for _ in range(nodes)],
            cert=cert or pki.leaf(name),
            backends=[
                b
                for b, w in zip(backend_servers, weights or [1] * len(backend_servers), strict=True)
                for _ in range(w)
            ],
            workdir=tmp_path,
            **node_options,
        )
        started.extend(backend_servers + node_servers)
        dns.set(name, *[("A", n.address) for n in node_servers])
        target = {
            "url": f"https://{name}:{node_servers[0].port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(ca_file),
            "backend": {"header": "X-Backend"},
        }
        return Scene(name, node_servers, backend_servers, target)

    yield make
    for server in started:
        try:
            lab.stop(server)
        except Exception:
            continue
