"""The text report and the JSON document render results faithfully and safely."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from ipaddress import ip_address
from typing import Any

from probe.model.reasons import Reason
from probe.model.results import (
    CertInfo,
    Failure,
    HttpAttempt,
    OcspResult,
    PhaseTimes,
    TargetResult,
    TlsResult,
)
from probe.report.document import to_json
from probe.report.text import render_text
from probe.stages.certs import format_time
from tests.support.builders import (
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


# --------------------------------------------------------------------------- what happened

A2 = ip_address("10.0.1.18")
A3 = ip_address("10.0.1.19")
LEAF = leaf_cert("www.corp.example")


def two_addresses(**fields: Any) -> TargetResult:
    """Two verified addresses answering 4 requests each; ``fields`` are the target's facts."""
    rows = [
        address_result(ip, tls_result(ip, (LEAF,), (LEAF,)), [http_attempt(b) for b in backends])
        for ip, backends in ((A1, ["web-1", "web-2"] * 2), (A2, [None] * 4))
    ]
    return target_result(addresses=rows, **fields)


def document_of(target: TargetResult) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(to_json([target], NOW)))
    return document


def row_of(text: str, ip: object) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"  {ip} "))


def test_address_row_with_a_warning_shows_warning() -> None:
    warned = Failure(Reason.CERT_EXPIRING_SOON, "leaf 'www.corp.example' expires on …", A1)
    tls = tls_result(A1, (LEAF,), (LEAF,))
    target = target_result(
        addresses=[
            address_result(A1, tls, failures=(warned,)),
            address_result(A2, tls_result(A2, (LEAF,), (LEAF,))),
        ]
    )
    text = text_of(target)
    assert "  warning   www.corp.example" in row_of(text, A1)
    assert "  ok        www.corp.example" in row_of(text, A2)
    assert [a["status"] for a in document_of(target)["targets"][0]["addresses"]] == ["warning", "ok"]


def test_no_backend_rule_says_so_with_the_response_count() -> None:
    target = two_addresses()
    text = text_of(target)
    assert (
        "  backends not identified: no backend rule configured (backend.header or backend.body_regex)"
        "  8 responses\n" in text
    )
    backends = document_of(target)["targets"][0]["backends"]
    assert backends["rule"] is None
    assert (backends["requests"], backends["responses"], backends["identified"]) == (8, 8, 4)


def test_backend_rule_counts_every_response_and_the_unidentified_ones() -> None:
    target = two_addresses(backend_rule=("header", "X-Backend"), expected_backends=("web-1", "web-2"))
    text = text_of(target)
    assert (
        "  backends web-1 2  web-2 2  (4 not identified)  of 8 responses, by header X-Backend"
        "  (expected web-1, web-2)\n" in text
    )
    assert document_of(target)["targets"][0]["backends"]["rule"] == {"header": "X-Backend"}


def test_nothing_identified_still_counts_the_responses() -> None:
    rows = [
        address_result(
            A1, tls_result(A1, (LEAF,), (LEAF,)), [http_attempt(None)] * 3 + [http_attempt(status=None)]
        )
    ]
    target = target_result(addresses=rows, backend_rule=("body_regex", r"served by (\S+)"))
    assert "  backends none identified  of 3 responses to 4 requests, by body_regex\n" in text_of(target)


def test_tls_column_tells_a_refused_certificate_from_a_failed_handshake() -> None:
    refused = Failure(Reason.CERT_HOSTNAME_MISMATCH, "certificate is valid for other.corp.example", A1)
    broken = Failure(Reason.TLS_HANDSHAKE_FAILED, "the server closed the connection during the handshake", A2)
    slow = Failure(Reason.TLS_HANDSHAKE_TIMEOUT, "TLS handshake did not complete within 5s", A2)

    def unfinished(ip: Any, failure: Failure, **fields: Any) -> TlsResult:
        return replace(tls_result(ip, failures=(failure,)), version=None, cipher=None, alpn=None, **fields)

    cases = [
        (unfinished(A1, refused, verify_code=62, chain=(LEAF,)), "not verified", "verify_failed"),
        (unfinished(A2, broken), "failed", "failed"),
        (unfinished(A2, slow), "timed out", "timeout"),
        (tls_result(A1, (LEAF,), (LEAF,)), "TLSv1.3 2 ms", "verified"),
        (tls_result(A1, (LEAF,), verified=False), "TLSv1.3 2 ms", "unverified"),
    ]
    for tls, column, outcome in cases:
        target = target_result(addresses=[address_result(tls.address, tls)])
        row = row_of(text_of(target), tls.address)
        assert row.split("  ok  ")[0].split("  critical  ")[0].rstrip().endswith(column), row
        assert document_of(target)["targets"][0]["addresses"][0]["tls"]["handshake"] == outcome
    refused_row = row_of(text_of(target_result(addresses=[address_result(A1, cases[0][0])])), A1)
    assert refused_row.endswith("NOT verified")


def test_insecure_says_plainly_that_certificates_were_not_verified() -> None:
    target = two_addresses(insecure_skip_verify=True)
    text = text_of(target)
    assert text.startswith("www  https://www.corp.example/  OK, certificates NOT verified  (100 ms)\n")
    assert (
        "  note     certificates were NOT verified (insecure_skip_verify): the verdict says nothing" in text
    )
    assert text.rstrip().endswith(
        "Status: OK (1 ok; certificates NOT verified for www (insecure_skip_verify))"
    )
    document = document_of(target)
    assert document["certificates_verified"] is False
    assert document["targets"][0]["notes"][0].startswith("certificates were NOT verified")
    verified = document_of(two_addresses())
    assert verified["certificates_verified"] is True and verified["targets"][0]["notes"] == []


def test_reused_connections_are_said() -> None:
    target = two_addresses(reuse_connections=True)
    assert (
        "  note     requests to each address shared one connection (reuse_connections): a balancer "
        "that balances per connection sends them all to one backend\n" in text_of(target)
    )
    document = document_of(target)["targets"][0]
    assert document["reuse_connections"] is True and "reuse_connections" in document["notes"][0]


def test_every_distinct_chain_is_shown() -> None:
    other = replace(LEAF, sha256_fingerprint="cd" * 32, serial="2f", not_after_timestamp=NOW + 5 * DAY)
    intermediate = cert("Corp Intermediate CA", NOW + 400 * DAY, issuer="Corp Root CA")
    rows = [
        address_result(A1, tls_result(A1, (LEAF, intermediate), (LEAF, intermediate))),
        address_result(A2, tls_result(A2, (other, intermediate), (other, intermediate))),
        address_result(A3, tls_result(A3, (LEAF, intermediate), (LEAF, intermediate))),
    ]
    text = text_of(target_result(addresses=rows))
    assert f"  chain as sent by {A1} (and {A3}):\n" in text
    assert f"  chain as sent by {A2}:\n" in text
    second = text.split(f"by {A2}:\n")[1]
    assert second.startswith("    0  www.corp.example  ← Corp Intermediate CA  expires 2026-06-02 20:26 UTC")
    assert "chain expires 2026-06-02 20:26 UTC (in 5 days)" in second
    one = text_of(target_result(addresses=rows[:1] + rows[2:]))
    assert f"  chain as sent by {A1}:\n" in one and "(and" not in one


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


def test_pinned_dns_line_and_json() -> None:
    leaf = leaf_cert("www.corp.example")
    plain = result(leaf)
    pinned_dns = replace(
        dns_result([A1], resolver=None, rcode=None),
        answers=(replace(plain.dns.answers[0], ttl=None),),
        pinned_by="--resolve",
    )
    pinned = replace(plain, dns=pinned_dns)
    text = text_of(pinned)
    assert "  DNS      www.corp.example → 10.0.1.17  (pinned with --resolve; no DNS query)\n" in text
    assert "TTL" not in text
    document = to_json([pinned], NOW)["targets"][0]["dns"]
    assert document["pinned"] is True and document["pinned_by"] == "--resolve"
    assert document["answers"] == [{"address": "10.0.1.17", "ttl": None, "expected": True}]


def test_ip_url_dns_line_names_the_server_name_setting() -> None:
    plain = result(leaf_cert("www.corp.example"))
    pinned = replace(plain, dns=replace(plain.dns, pinned_by="server_name"))
    assert "(the URL's address, server name from server_name; no DNS query)" in text_of(pinned)


def test_resolved_dns_is_not_pinned_in_json() -> None:
    document = to_json([result(leaf_cert("www.corp.example"))], NOW)["targets"][0]["dns"]
    assert document["pinned"] is False and document["pinned_by"] is None
    assert document["answers"][0]["ttl"] == 60


def test_retried_requests_and_grpc_answers_are_facts_of_the_address_row_and_the_json() -> None:
    retried = replace(http_attempt("g-1"), retried_after="RST_STREAM REFUSED_STREAM (0x7)")
    serving = replace(retried, grpc_status=0, grpc_serving_status="SERVING")
    failed = replace(http_attempt("g-2"), grpc_status=12, grpc_message="Method not found: /")
    tls = tls_result(A1, (LEAF,), (LEAF,))
    target = target_result(
        addresses=[address_result(A1, tls, [serving, serving, failed])], grpc_health_service="shop.Cart"
    )
    text = text_of(target)
    http_row = text.splitlines()[text.splitlines().index(row_of(text, A1)) + 1]
    assert "2 requests retried on a new connection after RST_STREAM REFUSED_STREAM (0x7)" in http_row
    assert "gRPC: SERVING ×2, grpc-status 12 UNIMPLEMENTED ×1" in http_row
    assert "gRPC health checks instead of GETs: grpc.health.v1.Health/Check of service 'shop.Cart'" in text
    attempts = document_of(target)["targets"][0]["addresses"][0]["http"]
    assert [
        (
            a["retried_after"],
            a["grpc_status"],
            a["grpc_status_name"],
            a["grpc_message"],
            a["grpc_serving_status"],
        )
        for a in attempts
    ] == [
        ("RST_STREAM REFUSED_STREAM (0x7)", 0, "OK", None, "SERVING"),
        ("RST_STREAM REFUSED_STREAM (0x7)", 0, "OK", None, "SERVING"),
        (None, 12, "UNIMPLEMENTED", "Method not found: /", None),
    ]
