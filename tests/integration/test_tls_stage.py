"""TLS stage against real loopback TLS servers: TCP, handshake and certificate reasons."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from probe.lab import Pki
from probe.lab.pki import issue
from probe.reasons import Reason, Status
from tests.helpers import reasons, run

NOW = dt.datetime.now(dt.UTC)
DER = Encoding.DER
_N = itertools.count(1)


def only(result: Any) -> Any:
    assert len(result.addresses) == 1
    return result.addresses[0]


def test_verified_handshake_records_version_cipher_alpn_and_chain(scene: Any) -> None:
    s = scene()
    address = only(run(s.target))
    tls = address.tls

    assert address.status is Status.OK
    assert tls.verified and tls.version == "TLSv1.3" and tls.alpn == "http/1.1"
    assert tls.cipher and tls.connect_seconds is not None and tls.handshake_seconds is not None
    assert [c.common_name for c in tls.chain] == [s.hostname, "probe test Intermediate CA"]
    assert [c.common_name for c in tls.verified_chain] == [
        s.hostname,
        "probe test Intermediate CA",
        "probe test Root CA",
    ]
    assert tls.verified_chain_expiry_timestamp == tls.chain[0].not_after_timestamp
    assert tls.earliest_expiry_timestamp == tls.chain[0].not_after_timestamp
    leaf = tls.chain[0]
    assert leaf.dns_names == (s.hostname,) and leaf.key == "EC P-256" and len(leaf.sha256_fingerprint) == 64


def test_refused(new_ip: Any, dns: Any) -> None:
    address = new_ip()
    dns.set("refused.corp.example", ("A", address))
    result = run(
        {
            "url": "https://refused.corp.example:9/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
        }
    )
    assert reasons(result) == {Reason.TCP_REFUSED.value}
    assert only(result).tls.connected is False


@pytest.fixture
def full_backlog(new_ip: Any) -> Iterator[tuple[str, int]]:
    """A listener whose accept queue is full: the kernel drops further SYNs."""
    address = new_ip()
    listener = socket.socket()
    listener.bind((address, 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield listener.getsockname()
    filler.close()
    listener.close()


def test_connect_timeout(full_backlog: tuple[str, int], dns: Any) -> None:
    address, port = full_backlog
    dns.set("blackhole.corp.example", ("A", address))
    result = run(
        {
            "url": f"https://blackhole.corp.example:{port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "timeouts": {"dns": 1, "connect": 0.3, "tls": 1, "http": 1, "deadline": 5},
        }
    )
    assert reasons(result) == {Reason.TCP_TIMEOUT.value}
    assert result.duration_seconds < 1.5


def test_version_below_minimum(scene: Any) -> None:
    s = scene(max_version="1.2")
    result = run({**s.target, "min_tls_version": "1.3"})
    assert reasons(result) == {Reason.TLS_VERSION_BELOW_MINIMUM.value}
    assert "TLSv1.2" in result.failures[0].detail


@pytest.mark.parametrize(
    ("make_cert", "reason", "words"),
    [
        (
            lambda pki, host: pki.leaf(
                host, not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=1)
            ),
            Reason.CERT_EXPIRED,
            "leaf",
        ),
        (
            lambda pki, host: pki.leaf(host, not_before=NOW + dt.timedelta(days=3)),
            Reason.CERT_NOT_YET_VALID,
            "valid only from",
        ),
        (
            lambda pki, host: pki.leaf("other.corp.example"),
            Reason.CERT_HOSTNAME_MISMATCH,
            "valid for other.corp.example, not",
        ),
        (
            lambda pki, host: issue(host, pki.intermediate),  # CN only, no SAN
            Reason.CERT_HOSTNAME_MISMATCH,
            "only in its subject CN",
        ),
        (
            lambda pki, host: issue(host, None, dns_names=(host,)),
            Reason.CERT_SELF_SIGNED,
            "self-signed",
        ),
        (
            lambda pki, host: Pki.create("stranger").leaf(host),
            Reason.CERT_UNTRUSTED,
            "'stranger Root CA' is not in the trust store",
        ),
    ],
    ids=["expired", "not-yet-valid", "wrong-name", "cn-only", "self-signed", "unknown-root"],
)
def test_certificate_failures_keep_the_certificate_facts(
    scene: Any, pki: Pki, make_cert: Any, reason: Reason, words: str
) -> None:
    host = f"cert-{next(_N)}.corp.example"
    cert = make_cert(pki, host)
    s = scene(hostname=host, cert=cert)
    result = run(s.target)
    address = only(result)

    assert reasons(result) == {reason.value}
    assert words in result.failures[0].detail
    assert address.tls.verified is False and address.tls.verify_code is not None
    leaf = address.tls.leaf
    assert leaf is not None
    assert leaf.sha256_fingerprint == hashlib.sha256(cert.cert.public_bytes(DER)).hexdigest()
    assert leaf.not_after_timestamp == cert.cert.not_valid_after_utc.timestamp()
    assert address.attempts == ()


def test_missing_intermediate_is_an_incomplete_chain(scene: Any, pki: Pki) -> None:
    host = f"cert-{next(_N)}.corp.example"
    leaf = pki.leaf(host)
    s = scene(hostname=host, cert=leaf, chain_pem=leaf.cert_pem)  # leaf alone, no intermediate
    result = run(s.target)
    assert reasons(result) == {Reason.CERT_CHAIN_INCOMPLETE.value}
    assert "issuer 'probe test Intermediate CA'" in result.failures[0].detail
    assert "was not sent" in result.failures[0].detail


def test_root_sent_but_not_trusted_is_untrusted(scene: Any) -> None:
    host = f"cert-{next(_N)}.corp.example"
    stranger = Pki.create("stranger").leaf(host)
    s = scene(hostname=host, cert=stranger, chain_pem=stranger.chain_pem(include_root=True))
    result = run(s.target)
    assert reasons(result) == {Reason.CERT_UNTRUSTED.value}
    assert "ends at root 'stranger Root CA'" in result.failures[0].detail
    assert len(only(result).tls.chain) == 3


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
@pytest.mark.parametrize("case", ["ok", "wrong-name", "incomplete", "expired"])
def test_verdict_equals_curl(scene: Any, pki: Pki, ca_file: Path, case: str) -> None:
    host = f"cert-{next(_N)}.corp.example"
    leaf = {
        "ok": pki.leaf(host),
        "wrong-name": pki.leaf("other.corp.example"),
        "incomplete": pki.leaf(host),
        "expired": pki.leaf(
            host, not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
        ),
    }[case]
    s = scene(hostname=host, cert=leaf, chain_pem=leaf.cert_pem if case == "incomplete" else None)
    result = run(s.target)
    node = s.nodes[0]
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            "--cacert",
            str(ca_file),
            "--resolve",
            f"{host}:{node.port}:{node.address}",
            f"https://{host}:{node.port}/",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert only(result).tls.verified is (curl.returncode == 0), curl.stderr


def test_pinned_self_signed_leaf_in_ca_file_verifies_as_with_curl(scene: Any, tmp_path: Path) -> None:
    host = f"cert-{next(_N)}.corp.example"
    pinned = issue(host, None, dns_names=(host,))
    pin = tmp_path / "pin.pem"
    pin.write_bytes(pinned.cert_pem)
    s = scene(hostname=host, cert=pinned)
    result = run({**s.target, "ca_file": str(pin)})
    assert result.status is Status.OK, result.failures
    assert only(result).tls.verified
