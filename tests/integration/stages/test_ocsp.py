"""OCSP stapling (``ocsp: staple``) against real ``openssl s_server -status_file`` servers on 127.x.

The staples are made by ``openssl ocsp`` from an index file, signed by the session's test
intermediate (the leaf's issuer); the expired one is built with cryptography's
OCSPResponseBuilder because ``openssl ocsp`` cannot date a response in the past.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from probe.lab import Pki
from probe.lab.pki import Issued, issue
from probe.model.deadline import Deadline
from probe.model.reasons import Reason, Status
from probe.stages import ocsp as ocsp_stage
from tests.support.helpers import FAST, make_plan, probe_cli, reasons, run
from tests.support.s_server import SServer

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")

_N = itertools.count(1)
#: A cycle against one loopback s_server: one connect, two handshakes, one request (seconds).
BOUND = 3.0
REVOKED_AT = "250101120000Z"  # 2025-01-01 12:00 UTC, as openssl's index.txt writes it


def _index_line(leaf: Issued, revoked: str | None) -> str:
    expiry = leaf.cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = format(leaf.cert.serial_number, "X")
    subject = "/CN=" + leaf.cert.subject.rfc4514_string().removeprefix("CN=")
    if revoked is None:
        return f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
    return f"R\t{expiry}\t{revoked}\t{serial}\tunknown\t{subject}\n"


def openssl_ocsp(
    workdir: Path, leaf: Issued, issuer: Issued, *, signer: Issued | None = None, revoked: str | None = None
) -> Path:
    """A DER OCSP response for ``leaf`` made by ``openssl ocsp`` as a responder (valid one day)."""
    signer = signer or issuer
    n = next(_N)
    paths = {}
    for name, data in (
        ("leaf.pem", leaf.cert_pem),
        ("issuer.pem", issuer.cert_pem),
        ("signer.pem", signer.cert_pem),
        ("signer.key", signer.key_pem),
        ("index.txt", _index_line(leaf, revoked).encode()),
    ):
        paths[name] = workdir / f"ocsp{n}-{name}"
        paths[name].write_bytes(data)
    out = workdir / f"ocsp{n}.der"
    subprocess.run(
        [
            OPENSSL or "openssl",
            "ocsp",
            "-index",
            str(paths["index.txt"]),
            "-CA",
            str(paths["issuer.pem"]),
            "-issuer",
            str(paths["issuer.pem"]),
            "-cert",
            str(paths["leaf.pem"]),
            "-rsigner",
            str(paths["signer.pem"]),
            "-rkey",
            str(paths["signer.key"]),
            "-no_nonce",
            "-ndays",
            "1",
            "-respout",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out


def built_ocsp(
    workdir: Path, leaf: Issued, issuer: Issued, this_update: dt.datetime, next_update: dt.datetime
) -> Path:
    """A 'good' response with the given validity, signed by ``issuer`` (cryptography's builder)."""
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf.cert,
            issuer=issuer.cert,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=this_update,
            next_update=next_update,
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
        .sign(issuer.key, hashes.SHA256())
    )
    out = workdir / f"built{next(_N)}.der"
    out.write_bytes(response.public_bytes(serialization.Encoding.DER))
    return out


@pytest.fixture
def stapling(
    dns: Any, new_ip: Any, pki: Pki, ca_file: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[dict[str, Any], Issued]]]:
    """``stapling(staple=...)``: a name, a leaf and an s_server stapling what ``staple(leaf)`` returns.

    Returns the target fields (``ocsp: staple``) and the leaf.
    """
    servers: list[SServer] = []

    def make(
        staple: Callable[[Issued], Path | None] | None = None, **fields: Any
    ) -> tuple[dict[str, Any], Issued]:
        name = f"ocsp{next(_N)}.corp.example"
        leaf = pki.leaf(name)
        status_file = staple(leaf) if staple else None
        server = SServer(
            tmp_path, new_ip(), leaf, *(["-status_file", str(status_file)] if status_file else [])
        )
        servers.append(server)
        dns.set(name, ("A", server.address))
        target = {
            "url": f"https://{name}:{server.port}/",
            "resolvers": [dns.where],
            "expect_networks": ["127.0.0.0/8"],
            "ca_file": str(ca_file),
            "requests_per_address": 1,
            "ocsp": "staple",
            "timeouts": {"dns": 1, "connect": 1, "tls": 1, "http": 1, "deadline": 5},
            **fields,
        }
        return target, leaf

    yield make
    for server in servers:
        server.stop()


def timed_run(target: dict[str, Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = run(target)
    return result, time.monotonic() - start


# --------------------------------------------------------------------------- the issue's inputs


def test_good_staple_is_ok_with_its_dates(stapling: Any, pki: Pki, tmp_path: Path) -> None:
    target, leaf = stapling(lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate))
    result, elapsed = timed_run(target)
    staple = result.addresses[0].ocsp

    assert result.status is Status.OK and result.failures == ()
    assert staple.stapled and staple.response_status == "successful" and staple.cert_status == "good"
    assert staple.serial == format(leaf.cert.serial_number, "x") and staple.signature_valid is True
    assert staple.responder == "CN=probe test Intermediate CA"
    assert staple.this_update_timestamp <= time.time() + 300
    assert staple.next_update_timestamp == pytest.approx(staple.this_update_timestamp + 86400, abs=5)
    assert staple.revocation_timestamp is None and staple.error is None
    assert 0 < staple.handshake_seconds < BOUND and elapsed < BOUND


def test_revoked_staple_is_critical_with_serial_time_and_reason(
    stapling: Any, pki: Pki, tmp_path: Path
) -> None:
    target, leaf = stapling(
        lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate, revoked=f"{REVOKED_AT},keyCompromise")
    )
    result, elapsed = timed_run(target)
    staple = result.addresses[0].ocsp

    assert result.status is Status.CRITICAL and reasons(result) == {"ocsp_revoked"}
    [failure] = result.failures
    serial = format(leaf.cert.serial_number, "x")
    assert failure.reason is Reason.OCSP_REVOKED and str(failure.address) == target_address(result)
    assert f"serial {serial} was revoked on 2025-01-01 12:00 UTC (keyCompromise)" in failure.detail
    assert "Firefox refuses" in failure.detail and "curl" in failure.detail
    assert staple.cert_status == "revoked" and staple.revocation_reason == "keyCompromise"
    assert staple.revocation_timestamp == dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC).timestamp()
    assert result.addresses[0].status is Status.CRITICAL and elapsed < BOUND


def test_expired_staple_is_a_warning_with_its_next_update(stapling: Any, pki: Pki, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    target, _ = stapling(
        lambda leaf: built_ocsp(
            tmp_path, leaf, pki.intermediate, now - dt.timedelta(days=3), now - dt.timedelta(days=2)
        )
    )
    result, elapsed = timed_run(target)

    assert result.status is Status.WARNING and reasons(result) == {"ocsp_stale"}
    [failure] = result.failures
    assert "has expired: nextUpdate" in failure.detail and "2 days ago" in failure.detail
    assert result.addresses[0].ocsp.cert_status == "good" and elapsed < BOUND


def test_no_staple_is_a_fact_and_ok(stapling: Any) -> None:
    target, _ = stapling(None)
    result, elapsed = timed_run(target)
    staple = result.addresses[0].ocsp

    assert result.status is Status.OK and result.failures == ()
    assert (
        staple is not None and staple.stapled is False and staple.cert_status is None and staple.error is None
    )
    assert elapsed < BOUND


# --------------------------------------------------------------------------- siblings


def test_not_yet_valid_staple_is_a_warning_that_shows_the_clock(
    stapling: Any, pki: Pki, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    target, _ = stapling(
        lambda leaf: built_ocsp(
            tmp_path, leaf, pki.intermediate, now + dt.timedelta(hours=5), now + dt.timedelta(days=2)
        )
    )
    result, elapsed = timed_run(target)

    assert result.status is Status.WARNING and reasons(result) == {"ocsp_stale"}
    assert "is not valid yet: thisUpdate" in result.failures[0].detail
    assert "probe's clock says" in result.failures[0].detail and elapsed < BOUND


def test_staple_for_another_certificate_is_invalid(stapling: Any, pki: Pki, tmp_path: Path) -> None:
    """The usual cause: a staple file left over from the certificate before a renewal."""
    old = pki.leaf("old.corp.example")
    target, leaf = stapling(lambda leaf: openssl_ocsp(tmp_path, old, pki.intermediate))
    result, elapsed = timed_run(target)

    assert result.status is Status.CRITICAL and reasons(result) == {"ocsp_invalid"}
    detail = result.failures[0].detail
    assert f"serial {old.cert.serial_number:x}, not the server's {leaf.cert.serial_number:x}" in detail
    assert elapsed < BOUND


def test_staple_signed_by_a_stranger_is_invalid(stapling: Any, pki: Pki, tmp_path: Path) -> None:
    rogue = issue("rogue responder", ca=True)
    target, _ = stapling(
        lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate, signer=rogue, revoked=REVOKED_AT)
    )
    result, elapsed = timed_run(target)

    assert result.status is Status.CRITICAL and reasons(result) == {"ocsp_invalid"}
    assert "signed by CN=rogue responder, a responder the issuer did not certify" in result.failures[0].detail
    assert result.addresses[0].ocsp.signature_valid is False and elapsed < BOUND


def test_insecure_skip_verify_still_judges_the_staple_with_the_issuer_as_sent(
    stapling: Any, pki: Pki, tmp_path: Path
) -> None:
    """No trust store knows the test CA: the issuer comes from the chain the server sent."""
    target, _ = stapling(
        lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate, revoked=REVOKED_AT),
        ca_file=None,
        insecure_skip_verify=True,
    )
    result, elapsed = timed_run(target)

    assert reasons(result) == {"ocsp_revoked"} and result.target.insecure_skip_verify
    assert result.addresses[0].ocsp.signature_valid is True and elapsed < BOUND


def test_ocsp_off_asks_for_nothing(stapling: Any, pki: Pki, tmp_path: Path) -> None:
    target, _ = stapling(
        lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate, revoked=REVOKED_AT), ocsp="off"
    )
    result = run(target)

    assert result.status is Status.OK and result.addresses[0].ocsp is None


def test_stapling_handshake_is_bounded_by_the_tls_timeout(new_ip: Any, ca_file: Path) -> None:
    """A server that accepts and then says nothing: the hop ends at timeouts.tls with a fact."""
    address = new_ip()
    listener = socket.create_server((address, 8443))
    try:
        plan = make_plan(
            url="https://silent.corp.example:8443/",
            ca_file=str(ca_file),
            ocsp="staple",
            timeouts={**FAST, "tls": 0.3},
        )
        start = time.monotonic()
        result = asyncio.run(ocsp_stage.staple(plan, ipaddress.ip_address(address), Deadline.after(5)))
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert result.stapled is False and result.failures == ()
    assert result.error == "the stapling handshake did not complete within 0.3s"
    assert 0.3 <= elapsed < 1.0


def test_cli_reports_the_staple_in_text_and_json(
    stapling: Any, pki: Pki, tmp_path: Path, dns: Any, ca_file: Path
) -> None:
    target, leaf = stapling(
        lambda leaf: openssl_ocsp(tmp_path, leaf, pki.intermediate, revoked=f"{REVOKED_AT},superseded")
    )
    common = [target["url"], "--resolver", dns.where, "--ca-file", str(ca_file)]
    common += ["--expect-network", "127.0.0.0/8", "--requests", "1", "--ocsp", "staple"]

    text = probe_cli("check", *common)
    assert text.returncode == 2 and text.stderr == ""
    words = " ".join(text.stdout.split())
    assert "ocsp revoked on 2025-01-01 12:00 UTC (superseded); next update" in words
    assert re.search(r"ocsp_revoked 127\.[0-9.]+: the stapled OCSP response says certificate serial", words)

    document = json.loads(probe_cli("check", *common, "--json").stdout)
    staple = document["targets"][0]["addresses"][0]["ocsp"]
    assert staple["stapled"] is True and staple["cert_status"] == "revoked"
    assert staple["serial"] == format(leaf.cert.serial_number, "x")
    assert staple["revocation_reason"] == "superseded" and staple["next_update_timestamp"] > time.time()


def target_address(result: Any) -> str:
    return str(result.addresses[0].address)
