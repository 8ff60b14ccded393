"""direct_backends end to end: HAProxy speaking HTTPS to lab backends with self-signed
certificates and ``ssl verify none`` (as an ALB talks to its targets), dnsmasq for the name,
``probe check --config`` with each backend pinned by its fingerprint.

HAProxy health-checks the backends (``check``, TLS without verification), so a dead
backend is taken out of rotation as an ALB's target group does, and a ``disabled`` server
plays a target that is not registered."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.lab import Lab, TlsBackend
from probe.lab.pki import Issued, issue
from tests.e2e._procs import Process, accepts, haproxy_head, start_server
from tests.e2e.cli.test_haproxy_dnsmasq import fingerprint
from tests.e2e.conftest import HOSTNAME, LB_ADDRESSES, LB_NETWORK, Binaries, Dnsmasq, E2ePki
from tests.support.helpers import environment_without_proxies, probe_cli

BACKENDS = (("web-1", "127.0.32.1"), ("web-2", "127.0.32.2"))


@dataclass
class HttpsTargets:
    lab: Lab
    backends: dict[str, TlsBackend]
    certs: dict[str, Issued]
    port: int
    process: Process


def _config(port: int, pem: Path, backends: dict[str, TlsBackend], disabled: set[str]) -> str:
    binds = "\n".join(f"    bind {address}:{port} ssl crt {pem} alpn http/1.1" for address in LB_ADDRESSES)
    servers = "\n".join(
        f"    server {name} {b.address}:{b.port} ssl verify none check inter 100ms fall 1 rise 1"
        + (" disabled" if name in disabled else "")
        for name, b in backends.items()
    )
    return f"""{haproxy_head(connect="1s")}    timeout check 1s

frontend www
{binds}
    default_backend web

backend web
    balance roundrobin
{servers}
"""


@pytest.fixture
def https_targets(
    binaries: Binaries, e2e_pki: E2ePki, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """``start(disabled=set())``: HAProxy on 127.0.30.1-2 over HTTPS backends web-1 and web-2."""
    started: list[tuple[Lab, Process]] = []

    def start(disabled: frozenset[str] = frozenset()) -> HttpsTargets:
        lab = Lab().__enter__()
        certs = {name: issue(f"{name}.internal", dns_names=(f"{name}.internal",)) for name, _ in BACKENDS}
        backends = {
            name: lab.start_tls_backend(name, address, certs[name], workdir=tmp_path)
            for name, address in BACKENDS
        }

        def launch(port: int, attempt: int) -> Process:
            config = _config(port, e2e_pki.haproxy_pem, backends, set(disabled))
            path = tmp_path / f"haproxy-{attempt}.cfg"
            path.write_text(config)
            return Process(
                "HAProxy",
                [binaries.haproxy, "-db", "-f", str(path)],
                tmp_path / f"haproxy-{attempt}.log",
                config,
            )

        try:
            process, port = start_server(
                "HAProxy",
                launch,
                lambda port: all(accepts(a, port) for a in LB_ADDRESSES),
                LB_ADDRESSES,
                (socket.SOCK_STREAM,),
            )
        except BaseException:
            lab.close()
            raise
        started.append((lab, process))
        return HttpsTargets(lab, backends, certs, port, process)

    yield start
    for lab, process in started:
        process.stop()
        lab.close()


def check(targets: HttpsTargets, dnsmasq: Dnsmasq, pki: E2ePki, tmp_path: Path) -> dict[str, Any]:
    config = {
        "targets": [
            {
                "name": "www",
                "url": f"https://{HOSTNAME}:{targets.port}/",
                "resolvers": [dnsmasq.where],
                "ca_file": str(pki.ca_file),
                "expect_networks": [LB_NETWORK, "127.0.32.0/24"],
                "backend": {"header": "X-Backend"},
                "expect_backends": ["web-1", "web-2"],
                "timeouts": {"dns": 1, "connect": 1, "tls": 2, "http": 2, "deadline": 8},
                "direct_backends": [
                    {
                        "name": name,
                        "url": f"https://{b.address}:{b.port}/health",
                        "fingerprint_sha256": fingerprint(targets.certs[name]).upper(),
                    }
                    for name, b in targets.backends.items()
                ],
            }
        ]
    }
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(config))
    done = probe_cli("check", "--config", str(path), "--json", env=environment_without_proxies())
    try:
        doc: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"no JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}\n{targets.process.describe()}"
        )
    assert done.stderr == ""
    doc["exit"] = done.returncode
    return doc


def test_healthy_https_targets_behind_haproxy_verify_none(
    https_targets: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki, tmp_path: Path
) -> None:
    targets = https_targets()
    doc = check(targets, dnsmasq, e2e_pki, tmp_path)
    target = doc["targets"][0]
    assert doc["exit"] == 0, target["failures"]
    assert target["status"] == "ok" and target["failures"] == []
    assert target["backends"]["counts"] == {"web-1": 4, "web-2": 4}
    assert target["duration_seconds"] < 8
    for member in target["direct_backends"]:
        assert member["status"] == "ok" and member["pin_matches"] is True
        assert member["trust"] == "fingerprint_sha256"
        assert member["http"]["status_code"] == 200 and member["http"]["backend"] == member["name"]
        leaf = member["tls"]["leaf"]
        assert leaf["subject"] == leaf["issuer"] == f"CN={member['name']}.internal"  # self-signed
        assert leaf["sha256_fingerprint"] == fingerprint(targets.certs[member["name"]])


def test_dead_backend_taken_out_by_haproxy_is_backend_down(
    https_targets: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki, tmp_path: Path
) -> None:
    targets = https_targets()
    targets.lab.stop(targets.backends["web-2"])
    time.sleep(0.5)  # HAProxy's health check (every 100 ms, fall 1) marks web-2 down
    doc = check(targets, dnsmasq, e2e_pki, tmp_path)
    target = doc["targets"][0]
    assert doc["exit"] == 2
    assert {f["reason"] for f in target["failures"]} == {"backend_down"}  # not backend_missing too
    [down] = target["failures"]
    assert down["severity"] == "critical"
    assert down["detail"].startswith("web-2 does not answer directly either (tcp_refused at 127.0.32.2:")
    assert down["detail"].endswith("the instance or its service is down")
    assert down["hint"]


def test_backend_not_registered_but_answering_is_not_in_rotation(
    https_targets: Any, dnsmasq: Dnsmasq, e2e_pki: E2ePki, tmp_path: Path
) -> None:
    targets = https_targets(disabled=frozenset({"web-2"}))
    doc = check(targets, dnsmasq, e2e_pki, tmp_path)
    target = doc["targets"][0]
    assert doc["exit"] == 2
    assert {f["reason"] for f in target["failures"]} == {"backend_not_in_rotation"}
    [rotation] = target["failures"]
    assert rotation["detail"].startswith("web-2 answers directly (status 200 at 127.0.32.2:")
    assert "the load balancer does not send to it" in rotation["detail"]
    assert target["backends"]["counts"] == {"web-1": 8}
    web2 = next(m for m in target["direct_backends"] if m["name"] == "web-2")
    assert web2["status"] == "ok" and web2["pin_matches"] is True
