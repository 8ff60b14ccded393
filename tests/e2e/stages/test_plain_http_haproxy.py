"""End to end: ``probe check http://…`` against a real HAProxy plain HTTP listener.

One HAProxy binds 127.0.80.1 and 127.0.80.2 (one port, plain HTTP, no TLS) and serves
three names, told apart by Host as an ALB listener's rules would:

* ``www.plain.example``: round robin over two lab backends (web-1, web-2);
* ``redirect.plain.example``: ``http-request redirect scheme https code 301``, the HTTP:80
  listener's usual default action (HAProxy keeps a port that is not the default one in
  the Location, so the rule drops the Host's port first, as an HTTP:80 listener's Host
  has none);
* ``elsewhere.plain.example``: a redirect to another host, a wrong one.

Names come from the lab DNS server on loopback; probe runs as a subprocess with
``--resolver`` pointing at it. Everything listens on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probe.lab import Backend, DnsServer, Lab
from tests.e2e._procs import Process, haproxy_head, start_haproxy
from tests.e2e.conftest import Binaries
from tests.support.helpers import probe_cli

pytestmark = pytest.mark.e2e

ADDRESSES = ("127.0.80.1", "127.0.80.2")
BACKENDS = (("web-1", "127.0.81.1"), ("web-2", "127.0.81.2"))
WWW, REDIRECT, ELSEWHERE = "www.plain.example", "redirect.plain.example", "elsewhere.plain.example"
#: Bound on one whole ``probe check`` of these tests (the deadline is --timeout 5s).
BOUND = 15.0


def haproxy_config(port: int, backends: dict[str, Backend]) -> str:
    binds = "\n".join(f"    bind {address}:{port}" for address in ADDRESSES)
    servers = "\n".join(f"    server {name} {b.address}:{b.port}" for name, b in backends.items())
    return f"""{haproxy_head()}
frontend plain
{binds}
    acl to_redirect hdr(host),field(1,:) -i {REDIRECT}
    acl to_elsewhere hdr(host),field(1,:) -i {ELSEWHERE}
    http-request set-header Host %[req.hdr(host),field(1,:)] if to_redirect
    http-request redirect scheme https code 301 if to_redirect
    http-request redirect location https://www.other.example%[capture.req.uri] code 302 if to_elsewhere
    default_backend web

backend web
    balance roundrobin
{servers}
"""


@dataclass
class PlainListener:
    port: int
    dns: DnsServer
    process: Process


@pytest.fixture
def listener(binaries: Binaries, tmp_path: Path) -> Iterator[PlainListener]:
    with Lab() as lab:
        backends = {name: lab.start_backend(name, address) for name, address in BACKENDS}
        dns = lab.start_dns("127.0.53.80")
        for name in (WWW, REDIRECT, ELSEWHERE):
            dns.set(name, *[("A", address) for address in ADDRESSES])

        process, port = start_haproxy(
            binaries.haproxy, lambda port: haproxy_config(port, backends), ADDRESSES, tmp_path
        )
        try:
            yield PlainListener(port, dns, process)
        finally:
            process.stop()


def check(listener: PlainListener, name: str, *args: str) -> tuple[int, dict[str, Any], float]:
    start = time.monotonic()
    done = probe_cli(
        "check",
        f"http://{name}:{listener.port}/health?full=1",
        "--resolver",
        listener.dns.where,
        "--expect-network",
        "127.0.0.0/8",
        "--timeout",
        "5s",
        "--json",
        *args,
    )
    took = time.monotonic() - start
    assert done.stderr == "", done.stderr
    return done.returncode, json.loads(done.stdout), took


def test_plain_http_rotation_through_haproxy(listener: PlainListener) -> None:
    code, doc, took = check(
        listener, WWW, "--backend-header", "X-Backend", "--expect-backends", "web-1,web-2"
    )

    [target] = doc["targets"]
    assert (code, target["status"], target["failures"]) == (0, "ok", [])
    assert took < BOUND
    assert target["scheme"] == "http" and doc["certificates_verified"] is None
    assert target["backends"]["counts"] == {"web-1": 4, "web-2": 4}
    for address in target["addresses"]:
        assert address["tls"]["handshake"] == "plain" and address["tls"]["leaf"] is None
        assert sum(address["backend_counts"].values()) == 4  # one rotation over both binds
        assert {a["http_version"] for a in address["http"]} == {"HTTP/1.1"}


def test_haproxy_redirect_scheme_https_is_the_expected_redirect(listener: PlainListener) -> None:
    code, doc, took = check(listener, REDIRECT, "--expect-redirect", "https")

    [target] = doc["targets"]
    assert (code, target["status"], target["failures"]) == (0, "ok", [])
    assert took < BOUND
    for address in target["addresses"]:
        assert {(a["status_code"], a["location"]) for a in address["http"]} == {
            (301, f"https://{REDIRECT}/health?full=1")
        }


def test_haproxy_redirect_to_another_host_is_wrong(listener: PlainListener) -> None:
    code, doc, took = check(listener, ELSEWHERE, "--expect-redirect", "https")

    [target] = doc["targets"]
    assert code == 2 and target["status"] == "critical"
    assert took < BOUND
    wrong = [f for f in target["failures"] if f["reason"] == "http_redirect_wrong"]
    assert sorted(f["address"] for f in wrong) == list(ADDRESSES)
    assert wrong[0]["detail"] == (
        "4 of 4 requests: 302 to https://www.other.example/health?full=1: another host "
        f"(www.other.example) (expected 301 or 302 to https://{ELSEWHERE}/health?full=1)"
    )


def test_a_listener_that_forwards_instead_of_redirecting(listener: PlainListener) -> None:
    code, doc, took = check(listener, WWW, "--expect-redirect", "https")

    [target] = doc["targets"]
    assert code == 2 and {f["reason"] for f in target["failures"]} == {"http_redirect_missing"}
    assert took < BOUND
    assert target["failures"][0]["detail"].startswith("4 of 4 requests: status 200, not a redirect")
