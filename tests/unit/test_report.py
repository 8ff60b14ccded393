"""The text report and the JSON document render results faithfully and safely."""

from __future__ import annotations

import io
import json
from ipaddress import ip_address

from probe.reasons import Reason, Status
from probe.report import render_text, to_json
from probe.results import (
    AddressResult,
    CertInfo,
    DnsAnswer,
    DnsResult,
    Failure,
    HttpAttempt,
    PhaseTimes,
    TargetResult,
    TlsResult,
)

NOW = 1_780_000_000.0
A1 = ip_address("10.0.1.17")


def cert(cn: str) -> CertInfo:
    return CertInfo(
        subject=f"CN={cn}",
        issuer="CN=Corp Intermediate CA",
        serial="1f",
        not_before_timestamp=NOW - 86400,
        not_after_timestamp=NOW + 40 * 86400,
        sha256_fingerprint="ab" * 32,
        dns_names=(cn,),
        ip_addresses=(),
        common_name=cn,
        is_ca=False,
        key="EC P-256",
        signature_algorithm="ecdsa-with-SHA256",
    )


def result(
    leaf: CertInfo, attempts: tuple[HttpAttempt, ...] = (), failures: tuple[Failure, ...] = ()
) -> TargetResult:
    tls = TlsResult(
        A1,
        443,
        0.001,
        0.002,
        "TLSv1.3",
        "TLS_AES_128_GCM_SHA256",
        "h2",
        True,
        None,
        None,
        (leaf,),
        (leaf,),
        (),
    )
    status = Status.worst(f.severity for f in failures)
    dns = DnsResult(
        "www.corp.example", (DnsAnswer(A1, 60, True),), (), "10.0.0.2:53", "NOERROR", (), 0.003, None, ()
    )
    return TargetResult(
        name="www",
        url="https://www.corp.example/",
        hostname="www.corp.example",
        port=443,
        started_timestamp=NOW,
        duration_seconds=0.1,
        dns=dns,
        addresses=(AddressResult(A1, tls, attempts, failures, status),),
        failures=failures,
        status=status,
        request_headers=(("X-Probe", "1"), ("Authorization", "(secret)")),
    )


def text_of(results: TargetResult) -> str:
    out = io.StringIO()
    render_text([results], out, NOW, color=False)
    return out.getvalue()


def test_control_characters_from_a_certificate_are_escaped() -> None:
    hostile = cert("\x1b[2J\x1b[31mPWNED")
    failure = Failure(Reason.CERT_HOSTNAME_MISMATCH, "certificate is valid for \x1b[2J, not www", A1)
    text = text_of(result(hostile, failures=(failure,)))
    assert "\x1b" not in text
    assert "\\x1b[2J\\x1b[31mPWNED" in text
    assert "certificate is valid for \\x1b[2J, not www" in text


def test_request_headers_are_shown_with_secrets_hidden() -> None:
    text = text_of(result(cert("www.corp.example")))
    assert "  request  X-Probe: 1, Authorization: (secret)\n" in text
    document = to_json([result(cert("www.corp.example"))], NOW)
    assert document["targets"][0]["request_headers"] == {"X-Probe": "1", "Authorization": "(secret)"}


def test_attempt_that_broke_mid_body_shows_err_and_every_phase_key_in_json() -> None:
    broken = HttpAttempt(
        200,
        "HTTP/1.1",
        None,
        10,
        False,
        PhaseTimes(connect=0.001, tls=0.002),
        0.01,
        (Failure(Reason.HTTP_PROTOCOL_ERROR, "invalid HTTP response", A1),),
    )
    fine = HttpAttempt(200, "HTTP/1.1", "web-1", 2, False, PhaseTimes(0.001, 0.002, 0.003, 0.0), 0.01, ())
    target = result(cert("www.corp.example"), attempts=(broken, fine))
    assert "ERR 200" in text_of(target)
    phases = json.loads(json.dumps(to_json([target], NOW)))["targets"][0]["addresses"][0]["http"][0]["phases"]
    assert phases == {"connect": 0.001, "tls": 0.002, "processing": None, "transfer": None}
