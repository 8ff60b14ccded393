"""End to end: ``probe check`` as a user runs it, against real dnsmasq and real HAProxy.

dnsmasq answers www.corp.example and the ALB's own name with HAProxy's two addresses;
HAProxy terminates TLS on both (one leaf, sent with its intermediate) and balances
round-robin over two lab backends. The probe runs as a subprocess and the tests read its
JSON report. Everything listens on 127.0.0.0/8; fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from probe.lab.pki import Issued
from tests.e2e.conftest import (
    ALB_NAME,
    DNS_TTL,
    HOSTNAME,
    LB_ADDRESSES,
    LB_NETWORK,
    PKI_LABEL,
    Dnsmasq,
    E2ePki,
    LoadBalancer,
)
from tests.support.helpers import probe_cli

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[3]
LEAF = f"CN={HOSTNAME}"
INTERMEDIATE = f"CN={PKI_LABEL} Intermediate CA"
ROOT = f"CN={PKI_LABEL} Root CA"
# One HAProxy request log line (format "short" + httplog): backend/server, timers, status.
_LOG_LINE = re.compile(
    r" (?P<backend>[\w-]+)/(?P<server>[\w-]+) \S+ (?P<status>\d{3}) \d+ \S+ \S+ (?P<state>\S{4}) "
)


@dataclass
class ProbeRun:
    returncode: int
    stdout: str
    stderr: str
    doc: dict[str, Any]
    context: str

    @property
    def target(self) -> dict[str, Any]:
        [target] = self.doc["targets"]
        return target  # type: ignore[no-any-return]

    def explain(self) -> str:
        return (
            f"exit {self.returncode}\n--- probe stdout ---\n{self.stdout}\n"
            f"--- probe stderr ---\n{self.stderr}\n{self.context}"
        )


def _environment() -> dict[str, str]:
    """The test's environment without proxies, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_probe(lb: LoadBalancer, resolver: Dnsmasq, pki: E2ePki) -> ProbeRun:
    args = [
        "check", lb.url,
        "--resolver", resolver.where,
        "--ca-file", str(pki.ca_file),
        "--expect-network", LB_NETWORK,
        "--expect-same-addresses-as", ALB_NAME,
        "--backend-header", "X-Backend",
        "--expect-backends", "web-1,web-2",
        "--json",
    ]  # fmt: skip
    done = probe_cli(*args, env=_environment())
    context = f"{lb.process.describe()}\n{resolver.process.describe()}"
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"probe did not print a JSON document (exit {done.returncode})\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}\n{context}",
            pytrace=False,
        )
    return ProbeRun(done.returncode, done.stdout, done.stderr, doc, context)


def fingerprint(issued: Issued) -> str:
    return hashlib.sha256(issued.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def served(lb: LoadBalancer, count: int) -> Counter[tuple[str, str, str]]:
    """(server, status, termination state) of HAProxy's logged requests."""
    lines = lb.log_lines(count)
    matches = [_LOG_LINE.search(line) for line in lines]
    assert all(matches), lines
    return Counter((m["server"], m["status"], m["state"]) for m in matches if m)


def check_dns_and_tls(run: ProbeRun, lb: LoadBalancer, resolver: Dnsmasq, pki: E2ePki) -> None:
    """What holds whatever the backends do: DNS from dnsmasq, verified TLS at both addresses."""
    target = run.target
    assert (target["hostname"], target["port"], target["url"]) == (HOSTNAME, lb.port, lb.url)

    dns = target["dns"]
    assert dns["name"] == HOSTNAME
    assert dns["resolver"] == resolver.where
    assert dns["rcode"] == "NOERROR"
    assert dns["cname_chain"] == []
    assert dns["answers"] == [{"address": a, "ttl": DNS_TTL, "expected": True} for a in LB_ADDRESSES]
    assert {(q["qname"], q["qtype"]) for q in dns["queries"]} == {(HOSTNAME, "A"), (ALB_NAME, "A")}
    for query in dns["queries"]:
        assert (query["resolver"], query["rcode"], query["error"], query["tcp"]) == (
            resolver.where, "NOERROR", None, False,
        )  # fmt: skip
    alias = dns["alias"]
    assert (alias["name"], alias["resolved"], alias["matches"]) == (ALB_NAME, True, True)
    # Sorted here: unlike dns.answers, probe keeps the alias's addresses in answer order,
    # and dnsmasq rotates the order of a name's records from one answer to the next.
    assert sorted(alias["addresses"]) == list(LB_ADDRESSES)

    assert [a["address"] for a in target["addresses"]] == list(LB_ADDRESSES)
    for address in target["addresses"]:
        tls = address["tls"]
        assert tls["port"] == lb.port
        assert tls["connected"] is True
        assert tls["verified"] is True
        assert (tls["verify_code"], tls["verify_message"]) == (None, None)
        assert tls["version"] == "TLSv1.3"  # HAProxy 2.6 with OpenSSL 3 and probe's default client
        assert tls["alpn"] == "h2"  # the bind offers h2,http/1.1; the TLS stage offers both, like curl

        leaf = tls["leaf"]
        assert leaf["subject"] == LEAF
        assert leaf["issuer"] == INTERMEDIATE
        assert leaf["dns_names"] == [HOSTNAME]
        assert leaf["common_name"] == HOSTNAME
        assert leaf["is_ca"] is False
        assert leaf["key"] == "EC P-256"
        assert leaf["sha256_fingerprint"] == fingerprint(pki.leaf)

        # As sent by HAProxy: the leaf and the intermediate from the crt file, not the root.
        chain = tls["chain"]
        assert [(c["subject"], c["issuer"]) for c in chain] == [(LEAF, INTERMEDIATE), (INTERMEDIATE, ROOT)]
        assert [c["sha256_fingerprint"] for c in chain] == [
            fingerprint(pki.leaf),
            fingerprint(pki.pki.intermediate),
        ]
        assert [c["is_ca"] for c in chain] == [False, True]

        # As verified by OpenSSL: up to the root of the CA file.
        verified = tls["verified_chain"]
        assert [(c["subject"], c["issuer"]) for c in verified] == [
            (LEAF, INTERMEDIATE),
            (INTERMEDIATE, ROOT),
            (ROOT, ROOT),
        ]
        assert verified[-1]["sha256_fingerprint"] == fingerprint(pki.pki.root)
        assert tls["verified_chain_expiry_timestamp"] == leaf["not_after_timestamp"]
        assert [f for f in address["failures"] if f["stage"] in ("tcp", "tls", "cert")] == []


def test_two_addresses_two_backends_all_ok(
    load_balancer: LoadBalancer, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    run = run_probe(load_balancer, dnsmasq, e2e_pki)

    assert run.returncode == 0, run.explain()
    assert run.doc["schema_version"] == 1
    assert run.doc["status"] == "ok", run.explain()
    target = run.target
    assert target["status"] == "ok"
    assert target["failures"] == []
    check_dns_and_tls(run, load_balancer, dnsmasq, e2e_pki)

    for address in target["addresses"]:
        assert address["status"] == "ok"
        assert address["failures"] == []
        attempts = address["http"]
        assert [a["status_code"] for a in attempts] == [200] * 4
        # HAProxy offers h2,http/1.1; the requests offer what the TLS stage offers, so h2 (as curl).
        assert {a["http_version"] for a in attempts} == {"HTTP/2"}
        assert all(a["failures"] == [] for a in attempts)
        assert {a["backend"] for a in attempts} <= {"web-1", "web-2"}
        # Per address the split is NOT deterministic: HAProxy keeps one round-robin
        # position for the whole backend, shared by both binds, and probe sends to the two
        # addresses concurrently, so the split per address depends on how the requests
        # interleave (usually 4/0 in lockstep; under CPU load also 3/1 or 2/2). Only the sum is fixed.
        assert sum(address["backend_counts"].values()) == 4

    # In total it is: 8 requests, each on a new connection, strictly alternating.
    assert target["backends"] == {
        "counts": {"web-1": 4, "web-2": 4},
        "expected": ["web-1", "web-2"],
        "expected_count": 2,
        "seen_count": 2,
        "rule": {"header": "X-Backend"},
        "requests": 8,
        "responses": 8,
        "identified": 8,
        "from_load_balancer": 0,
    }
    # Cross-checks from the other side: HAProxy's log and the backends' own counters.
    assert served(load_balancer, 8) == {("web-1", "200", "----"): 4, ("web-2", "200", "----"): 4}
    assert {name: b.requests for name, b in load_balancer.backends.items()} == {"web-1": 4, "web-2": 4}
    # dnsmasq answered from its own records and never forwarded a query anywhere.
    dns_log = dnsmasq.process.output(limit=10**6)
    assert f"config {HOSTNAME} is {LB_ADDRESSES[0]}" in dns_log
    assert "forwarded" not in dns_log


def test_dead_backend_without_health_checks_gives_503s_and_backend_missing(
    load_balancer: LoadBalancer, dnsmasq: Dnsmasq, e2e_pki: E2ePki
) -> None:
    # web-2 dies after HAProxy started. HAProxy has no health checks ("check"), so it never
    # marks web-2 down: web-2 keeps every second round-robin turn, each of those connects
    # is refused and HAProxy answers 503 itself (termination state "SC--", no retry, no
    # redispatch) with its own page, without an X-Backend header. So of the 8 requests
    # exactly 4 are 200 from web-1 and 4 are HAProxy's own 503s: the user sees http_status
    # "from the load balancer itself" at the addresses that got one (never also
    # backend_unidentified: no backend answered them), and backend_missing for web-2, which
    # says that 4 responses came from the load balancer. How the four 503s fall on the two
    # addresses depends on the interleaving (see above).
    load_balancer.lab.stop(load_balancer.backends["web-2"])

    run = run_probe(load_balancer, dnsmasq, e2e_pki)

    assert run.returncode == 2, run.explain()
    assert run.doc["status"] == "critical"
    target = run.target
    assert target["status"] == "critical"
    check_dns_and_tls(run, load_balancer, dnsmasq, e2e_pki)

    reasons = {f["reason"] for f in target["failures"]}
    assert reasons == {"http_status", "backend_missing"}
    assert all(f["severity"] == "critical" for f in target["failures"])
    [missing] = [f for f in target["failures"] if f["reason"] == "backend_missing"]
    assert missing["address"] is None
    assert missing["detail"] == (
        "backend web-2 answered none of the 4 identified responses (seen: web-1 4); 4 other responses "
        "came from the load balancer itself (status 503), not from a backend"
    )
    assert target["backends"] == {
        "counts": {"web-1": 4},
        "expected": ["web-1", "web-2"],
        "expected_count": 2,
        "seen_count": 1,
        "rule": {"header": "X-Backend"},
        "requests": 8,
        "responses": 8,  # the 503s are responses too: HAProxy's own
        "identified": 4,
        "from_load_balancer": 4,
    }

    attempts = [a for address in target["addresses"] for a in address["http"]]
    assert Counter((a["status_code"], a["backend"], a["origin"]) for a in attempts) == {
        (200, "web-1", "backend"): 4,
        (503, None, "load_balancer"): 4,
    }
    for attempt in attempts:
        found = [f["reason"] for f in attempt["failures"]]
        assert found == ([] if attempt["status_code"] == 200 else ["http_status"])
        if attempt["status_code"] == 503:
            assert attempt["load_balancer"] == {
                "kind": "no_healthy_target",
                "balancer": "HAProxy",
                "what": "no server was available for the request",
                "evidence": "HAProxy's own 503 page: 'No server is available to handle this request.'",
            }

    # Per address, the findings summarise that address's 503s ("N of 4 requests: …").
    summed = Counter[str]()
    for address in target["addresses"]:
        dead_turns = sum(a["status_code"] == 503 for a in address["http"])
        expected = []
        if dead_turns:
            expected = [
                (
                    "http_status",
                    f"{dead_turns} of 4 requests: status 503 (expected 200-299) from the load balancer "
                    "itself, not a backend: no server was available for the request (HAProxy's own 503 "
                    "page: 'No server is available to handle this request.')",
                ),
            ]
        assert [(f["reason"], f["detail"]) for f in address["failures"]] == expected
        assert address["status"] == ("critical" if dead_turns else "ok")
        summed.update(address["backend_counts"])
    assert summed == {"web-1": 4}

    assert served(load_balancer, 8) == {("web-1", "200", "----"): 4, ("web-2", "503", "SC--"): 4}
    assert load_balancer.backends["web-1"].requests == 4
