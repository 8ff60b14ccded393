"""TLS stage against real loopback TLS servers: TCP, handshake and certificate reasons."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from probe.lab import Pki
from probe.lab.pki import issue
from probe.model.reasons import Reason, Status
from tests.support.curl import CERTIFICATE_REFUSED, HANDSHAKE_FAILED, curl_get
from tests.support.helpers import reasons, run

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
    curl = curl_get(ca_file, host, node.address, node.port)
    # The same verdict: both accept, or curl too refuses the certificate (not, say, the connection).
    assert curl.returncode == (0 if only(result).tls.verified else CERTIFICATE_REFUSED), curl.stderr


def test_pinned_self_signed_leaf_in_ca_file_verifies_as_with_curl(scene: Any, tmp_path: Path) -> None:
    host = f"cert-{next(_N)}.corp.example"
    pinned = issue(host, None, dns_names=(host,))
    pin = tmp_path / "pin.pem"
    pin.write_bytes(pinned.cert_pem)
    s = scene(hostname=host, cert=pinned)
    result = run({**s.target, "ca_file": str(pin)})
    assert result.status is Status.OK, result.failures
    assert only(result).tls.verified


# --------------------------------------------------------------------------- openssl s_server
# Servers Python's ssl cannot play: RSA key exchange only, TLS 1.0/1.1 only. Each is a real
# `openssl s_server -www` on its own 127.x address, sending the session PKI's chain.


@pytest.fixture
def openssl_server(new_ip: Any, pki: Pki, dns: Any, ca_file: Path, tmp_path: Path) -> Iterator[Any]:
    """``openssl_server(*s_server_args, key_type=...)`` → ``(target fields, address, port, host)``."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, key_type: str = "ec-p256") -> tuple[dict[str, Any], str, int, str]:
        host = f"ossl-{next(_N)}.corp.example"
        address = new_ip()
        leaf = pki.leaf(host, key_type=key_type)
        cert, key = leaf.write(tmp_path, host, chain=leaf.cert_pem)
        chain = tmp_path / f"{host}.chain.pem"
        chain.write_bytes(pki.intermediate.cert_pem)
        with socket.socket() as probe_port:
            probe_port.bind((address, 0))
            port = probe_port.getsockname()[1]
        process = subprocess.Popen(
            [
                "openssl",
                "s_server",
                "-accept",
                f"{address}:{port}",
                "-cert",
                str(cert),
                "-key",
                str(key),
                "-cert_chain",
                str(chain),
                "-www",
                "-quiet",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"openssl s_server {' '.join(args)} did not start")
                time.sleep(0.05)
        dns.set(host, ("A", address))
        target = {
            "url": f"https://{host}:{port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(ca_file),
        }
        return target, address, port, host

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=5)


@pytest.mark.parametrize(
    ("cipher", "weakness"),
    [
        ("AES128-GCM-SHA256", "no forward secrecy (RSA key exchange"),  # older ALB/ELB policies
        ("AES256-SHA", "no forward secrecy (RSA key exchange"),  # and CBC with SHA-1
        ("ECDHE-RSA-AES128-SHA", "CBC with HMAC-SHA1"),  # forward secret, but not AEAD
    ],
)
def test_rsa_and_cbc_only_servers_succeed_like_curl_with_a_weak_cipher_warning(
    openssl_server: Any, ca_file: Path, cipher: str, weakness: str
) -> None:
    target, address, port, host = openssl_server("-tls1_2", "-cipher", cipher, key_type="rsa-2048")
    result = run(target)
    tls = only(result).tls

    assert curl_get(ca_file, host, address, port).ok  # what a real client concludes
    assert result.status is Status.WARNING, result.failures
    assert reasons(result) == {Reason.TLS_WEAK_CIPHER.value}
    detail = result.failures[0].detail
    assert cipher in detail and weakness in detail and "TLSv1.2" in detail
    assert tls.verified and tls.version == "TLSv1.2" and tls.cipher == cipher
    assert tls.leaf is not None and tls.leaf.common_name == host
    assert [a.status_code for a in only(result).attempts] == [200, 200, 200, 200]
    assert result.duration_seconds < 3


def test_modern_tls12_suite_gives_no_warning(openssl_server: Any) -> None:
    target, *_ = openssl_server("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", key_type="rsa-2048")
    result = run(target)
    assert result.status is Status.OK, result.failures
    assert only(result).tls.cipher == "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.mark.parametrize(
    ("flag", "version", "floor"), [("-tls1", "TLSv1", "1.0"), ("-tls1_1", "TLSv1.1", "1.1")]
)
def test_old_tls_spoken_on_purpose_is_a_deprecation_warning(
    openssl_server: Any, ca_file: Path, flag: str, version: str, floor: str
) -> None:
    target, address, port, host = openssl_server(flag, "-cipher", "DEFAULT:@SECLEVEL=0")
    result = run({**target, "min_tls_version": floor})
    tls = only(result).tls

    assert result.status is Status.WARNING, result.failures
    assert Reason.TLS_VERSION_DEPRECATED.value in reasons(result)
    assert reasons(result) <= {Reason.TLS_VERSION_DEPRECATED.value, Reason.TLS_WEAK_CIPHER.value}
    deprecated = next(f for f in result.failures if f.reason is Reason.TLS_VERSION_DEPRECATED)
    assert f"negotiated {version}" in deprecated.detail and "RFC 8996" in deprecated.detail
    assert f"min_tls_version is {floor}" in deprecated.detail
    assert tls.verified and tls.version == version and tls.leaf is not None
    assert [a.status_code for a in only(result).attempts] == [200, 200, 200, 200]  # HTTP speaks it too
    assert result.duration_seconds < 3
    # curl needs the same lowered security level to speak it; at its defaults it refuses.
    refused = curl_get(ca_file, host, address, port, f"--tlsv{floor}")
    assert refused.returncode == HANDSHAKE_FAILED, refused.stderr
    assert curl_get(ca_file, host, address, port, f"--tlsv{floor}", "--ciphers", "DEFAULT@SECLEVEL=0").ok


@pytest.mark.parametrize(("flag", "version"), [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")])
def test_old_tls_at_the_default_floor_names_the_version(openssl_server: Any, flag: str, version: str) -> None:
    target, *_ = openssl_server(flag, "-cipher", "DEFAULT:@SECLEVEL=0")
    result = run(target)
    assert result.status is Status.CRITICAL
    assert reasons(result) == {Reason.TLS_VERSION_BELOW_MINIMUM.value}
    assert f"speaks only {version}," in result.failures[0].detail
    assert "below the minimum TLSv1.2" in result.failures[0].detail
    assert only(result).attempts == ()
    assert result.duration_seconds < 3
