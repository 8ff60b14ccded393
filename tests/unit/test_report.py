"""The text report and the JSON document render results faithfully and safely."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from ipaddress import ip_address

from probe.certs import format_time
from probe.reasons import Reason
from probe.report import render_text, to_json
from probe.results import CertInfo, Failure, HttpAttempt, OcspResult, PhaseTimes, TargetResult
from tests.builders import (
    DAY,
    NOW,
    address_result,
    cert,
    dns_result,
    http_attempt,
    target_result,
    tls_result,
)

A1 = ip_address("10.0.1.17")


def leaf_cert(cn: str) -> CertInfo:
    """A leaf for ``cn`` (even when it is not a DNS name), valid from a day before NOW to 40 days after."""
    return cert(
        cn,
        NOW + 40 * DAY,
        serial="1f",
        not_before=NOW - DAY,
        fingerprint="ab" * 32,
        dns_names=(cn,),
        is_ca=False,
    )


def result(
    leaf: CertInfo, attempts: tuple[HttpAttempt, ...] = (), failures: tuple[Failure, ...] = ()
) -> TargetResult:
    tls = tls_result(A1, (leaf,), (leaf,), alpn="h2")
    address = address_result(A1, tls, attempts, failures=failures)
    dns = dns_result([A1], resolver="10.0.0.2:53", lookup_seconds=0.003)
    return target_result(
        addresses=[address],
        dns=dns,
        failures=failures,
        request_headers=(("X-Probe", "1"), ("Authorization", "(secret)")),
    )


def text_of(results: TargetResult) -> str:
    out = io.StringIO()
    render_text([results], out, NOW, color=False)
    return out.getvalue()


def test_control_characters_from_a_certificate_are_escaped() -> None:
    hostile = leaf_cert("\x1b[2J\x1b[31mPWNED")
    failure = Failure(Reason.CERT_HOSTNAME_MISMATCH, "certificate is valid for \x1b[2J, not www", A1)
    text = text_of(result(hostile, failures=(failure,)))
    assert "\x1b" not in text
    assert "\\x1b[2J\\x1b[31mPWNED" in text
    assert "certificate is valid for \\x1b[2J, not www" in text


def test_request_headers_are_shown_with_secrets_hidden() -> None:
    text = text_of(result(leaf_cert("www.corp.example")))
    assert "  request  X-Probe: 1, Authorization: (secret)\n" in text
    document = to_json([result(leaf_cert("www.corp.example"))], NOW)
    assert document["targets"][0]["request_headers"] == {"X-Probe": "1", "Authorization": "(secret)"}


def test_attempt_that_broke_mid_body_shows_err_and_every_phase_key_in_json() -> None:
    broken = http_attempt(
        body_bytes=10,
        phases=PhaseTimes(connect=0.001, tls=0.002),
        failures=(Failure(Reason.HTTP_PROTOCOL_ERROR, "invalid HTTP response", A1),),
    )
    fine = http_attempt("web-1", phases=PhaseTimes(0.001, 0.002, 0.003, 0.0))
    target = result(leaf_cert("www.corp.example"), attempts=(broken, fine))
    assert "ERR 200" in text_of(target)
    phases = json.loads(json.dumps(to_json([target], NOW)))["targets"][0]["addresses"][0]["http"][0]["phases"]
    assert phases == {"connect": 0.001, "tls": 0.002, "processing": None, "transfer": None}


# --------------------------------------------------------------------------- OCSP stapling


def stapled(ocsp: OcspResult | None) -> TargetResult:
    target = result(leaf_cert("www.corp.example"))
    return replace(target, addresses=tuple(replace(a, ocsp=ocsp) for a in target.addresses))


GOOD = OcspResult(
    stapled=True,
    handshake_seconds=0.0016,
    response_status="successful",
    cert_status="good",
    serial="1f",
    responder="CN=Corp Intermediate CA",
    produced_at_timestamp=NOW - 3600,
    this_update_timestamp=NOW - 3600,
    next_update_timestamp=NOW + 3 * DAY,
    signature_valid=True,
)


def ocsp_line(target: TargetResult) -> str:
    [line] = [line for line in text_of(target).splitlines() if line.split()[:1] == ["ocsp"]]
    return " ".join(line.split()[1:])


def test_ocsp_lines_say_status_dates_or_why_there_is_none() -> None:
    revoked = replace(
        GOOD, cert_status="revoked", revocation_timestamp=NOW - 20 * DAY, revocation_reason="superseded"
    )
    next_update = format_time(NOW + 3 * DAY)
    assert ocsp_line(stapled(GOOD)) == f"good; next update {next_update} (in 3 days)"
    assert ocsp_line(stapled(revoked)).startswith(f"revoked on {format_time(NOW - 20 * DAY)} (superseded); ")
    assert ocsp_line(stapled(OcspResult(stapled=False))) == "no staple (the server sent no OCSP response)"
    assert ocsp_line(stapled(replace(GOOD, next_update_timestamp=None, signature_valid=None))) == (
        "good; no next update; signature not checked (issuer unknown)"
    )
    assert ocsp_line(stapled(replace(GOOD, signature_valid=False))).endswith("; signature NOT valid")
    unusable = OcspResult(stapled=True, response_status="tryLater")
    assert ocsp_line(stapled(unusable)) == "unusable staple (tryLater)"
    failed = OcspResult(stapled=False, error="the stapling handshake did not complete within 5s")
    assert ocsp_line(stapled(failed)) == "not checked: the stapling handshake did not complete within 5s"


def test_no_ocsp_line_or_object_when_off() -> None:
    target = stapled(None)
    assert not [line for line in text_of(target).splitlines() if line.split()[:1] == ["ocsp"]]
    assert to_json([target], NOW)["targets"][0]["addresses"][0]["ocsp"] is None


def test_ocsp_json_fields() -> None:
    document = json.loads(json.dumps(to_json([stapled(GOOD)], NOW)))
    assert document["targets"][0]["addresses"][0]["ocsp"] == {
        "stapled": True,
        "handshake_seconds": 0.0016,
        "response_status": "successful",
        "cert_status": "good",
        "serial": "1f",
        "responder": "CN=Corp Intermediate CA",
        "produced_at_timestamp": NOW - 3600,
        "this_update_timestamp": NOW - 3600,
        "next_update_timestamp": NOW + 3 * DAY,
        "revocation_timestamp": None,
        "revocation_reason": None,
        "signature_valid": True,
        "error": None,
    }
