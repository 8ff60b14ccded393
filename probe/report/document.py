"""The JSON document of ``probe check --json`` (and of a target's ``.json`` status page).

Renderers only format; the verdict was decided by :mod:`probe.judge`. The schema is public
and versioned (``schema_version``; see docs/json-document.md). The document carries the same
words as the text report, taken from it: the overall status (:func:`probe.report.text.overall_status`)
and each target's notes (:func:`probe.report.text.target_notes`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

from probe.judge.baseline import Comparison, Impact
from probe.model.facts import ClientCertificate
from probe.model.results import (
    AddressResult,
    CertInfo,
    DirectBackendResult,
    DnsResult,
    Failure,
    HttpAttempt,
    LoadBalancerAnswer,
    OcspResult,
    TargetResult,
    TlsResult,
)
from probe.report.hints import failure_hint
from probe.report.text import overall_status, target_notes
from probe.stages.grpc_rules import status_name as grpc_status_name

SCHEMA_VERSION = 1


def to_json(
    results: Sequence[TargetResult], now: float, *, baseline: Comparison | None = None
) -> dict[str, Any]:
    """The JSON document of a check (a plain dict, ready for ``json.dumps``).

    Args:
        results: one result per target.
        now: Unix time of the report.
        baseline: the comparison with a baseline file (``--baseline``); the ``baseline``
            member is ``null`` without one.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "status": overall_status(results).value,
        "generated_timestamp": round(now, 3),
        "certificates_verified": certificates_verified(results),
        "targets": [_target(r) for r in results],
        "baseline": None if baseline is None else baseline_json(baseline),
    }


def certificates_verified(results: Sequence[TargetResult]) -> bool | None:
    """Whether certificates were verified: the JSON's ``certificates_verified``.

    ``False`` when a target had verification off; ``None`` when no target spoke TLS
    (``http://`` targets only: no certificate was checked); else ``True``.
    """
    if any(r.target.insecure_skip_verify for r in results):
        return False
    if results and all(r.target.plain for r in results):
        return None
    return True


def render_json(
    results: Sequence[TargetResult], stream: IO[str], now: float, *, baseline: Comparison | None = None
) -> None:
    """Write the JSON document, indented, followed by a newline."""
    json.dump(to_json(results, now, baseline=baseline), stream, indent=2)
    stream.write("\n")


def baseline_json(comparison: Comparison) -> dict[str, Any]:
    """The ``baseline`` member of the JSON document: the file, when it was saved, counts, changes."""
    return {
        "file": comparison.path,
        "saved_timestamp": comparison.saved_timestamp,
        "regressions": comparison.count(Impact.REGRESSION),
        "improvements": comparison.count(Impact.IMPROVEMENT),
        "neutral": comparison.count(Impact.NEUTRAL),
        "changes": [
            {
                "target": c.target,
                "address": None if c.address is None else str(c.address),
                "aspect": c.aspect.value,
                "impact": c.impact.value,
                "before": c.before,
                "after": c.after,
                "detail": c.detail,
            }
            for c in comparison.changes
        ],
    }


def _target(result: TargetResult) -> dict[str, Any]:
    return {
        "name": result.target.name,
        "url": result.target.url,
        "hostname": result.target.hostname,
        "port": result.target.port,
        "status": result.status.value,
        "insecure_skip_verify": result.target.insecure_skip_verify,
        "reuse_connections": result.target.reuse_connections,
        "notes": target_notes(result),
        "request_headers": dict(result.target.request_headers),
        "started_timestamp": round(result.started_timestamp, 3),
        "duration_seconds": _sec(result.duration_seconds),
        "timeouts_seconds": dict(result.target.timeouts_seconds),
        "failures": [_failure(f, result) for f in result.failures],
        "dns": _dns(result.dns),
        "addresses": [_address(a, result) for a in result.addresses],
        "backends": {
            "counts": result.backend_counts,
            "expected": list(result.target.expected_backends),
            "expected_count": result.target.expected_backend_count,
            "seen_count": len(result.backend_counts),
            "rule": None
            if result.target.identifying_rule is None
            else dict([result.target.identifying_rule]),
            "requests": result.request_count,
            "responses": result.response_count,
            "identified": sum(result.backend_counts.values()),
            "from_load_balancer": result.load_balancer_count,
        },
        "cookies": {"set": list(result.cookies_set), "note": result.cookie_note},
        "platform": result.target.platform.value,
        "direct_backends": [_direct(d, result) for d in result.direct_backends],
        "balancing": _balancing(result),
        "scheme": result.target.scheme,
        "expect_redirect": result.target.expect_redirect,
        "client_certificate": _client(result.target.client_certificate),
    }


def _direct(check: DirectBackendResult, target: TargetResult) -> dict[str, Any]:
    return {
        "name": check.name,
        "url": check.url,
        "server_name": check.server_name,
        "trust": check.trust,
        "pinned_fingerprint": check.pinned_fingerprint,
        "pin_matches": check.pin_matches,
        "status": check.status.value,
        "answered": check.answered,
        "duration_seconds": _sec(check.duration_seconds),
        "address": None if check.address is None else str(check.address),
        "tls": None if check.tls is None else _tls(check.tls),
        "http": None if check.attempt is None else _attempt(check.attempt, target),
        "failures": [_failure(f, target) for f in check.failures],
        "client_certificate": _client(check.client_certificate),
    }


def _client(client: ClientCertificate | None) -> dict[str, Any] | None:
    """The client certificate presented (``tls_client``): its file, its facts, the intermediates sent."""
    if client is None:
        return None
    return {
        "cert_file": client.cert_file,
        "certificate": _cert(client.leaf),
        "chain": [_cert(c) for c in client.chain],
    }


def _balancing(result: TargetResult) -> dict[str, Any]:
    """How rotation was judged, and for the counted settings what was counted so far."""
    memory = result.rotation
    return {
        "algorithm": result.target.balancing,
        "cross_zone": result.target.cross_zone,
        "counted": None
        if memory is None
        else {
            "scopes": [
                {
                    "address": s.name or None,
                    "identified": s.responses,
                    "cycles": s.evaluations,
                    "missing_after": s.threshold,
                    "requests_to_decide": s.decide_requests,
                }
                for s in memory.scopes
            ],
            "unseen": [
                {"address": u.scope or None, "backend": u.backend, "identified": u.responses}
                for u in memory.unseen
                if u.responses
            ],
            "missing": list(memory.missing),
        },
    }


def _failure(failure: Failure, result: TargetResult, attempt: HttpAttempt | None = None) -> dict[str, Any]:
    return {
        "stage": failure.stage.value,
        "address": str(failure.address) if failure.address is not None else None,
        "reason": failure.reason.value,
        "severity": failure.severity.value,
        "detail": failure.detail,
        "hint": failure_hint(result, failure, attempt),
    }


def _dns(dns: DnsResult) -> dict[str, Any]:
    return {
        "name": dns.name,
        "resolver": dns.resolver,
        "rcode": dns.rcode,
        "lookup_seconds": _sec(dns.lookup_seconds),
        "cname_chain": list(dns.cname_chain),
        "answers": [{"address": str(a.address), "ttl": a.ttl, "expected": a.expected} for a in dns.answers],
        "pinned": dns.pinned,
        "pinned_by": dns.pinned_by,
        "queries": [
            {
                "resolver": q.resolver,
                "qname": q.qname,
                "qtype": q.qtype,
                "rcode": q.rcode,
                "tcp": q.tcp,
                "duration_seconds": _sec(q.duration_seconds),
                "error": q.error.value if q.error else None,
                "detail": q.detail,
            }
            for q in dns.queries
        ],
        "alias": None
        if dns.alias is None
        else {
            "name": dns.alias.name,
            "addresses": [str(a) for a in dns.alias.addresses],
            "resolved": dns.alias.resolved,
            "matches": dns.alias.matches,
        },
    }


def _address(result: AddressResult, target: TargetResult) -> dict[str, Any]:
    return {
        "address": str(result.address),
        "status": result.status.value,
        "tls": _tls(result.tls),
        "http": [_attempt(a, target) for a in result.attempts],
        "backend_counts": result.backend_counts,
        "failures": [_failure(f, target) for f in result.failures],
        "ocsp": _ocsp(result.ocsp) if result.ocsp is not None else None,
    }


def _ocsp(ocsp: OcspResult) -> dict[str, Any]:
    return {
        "stapled": ocsp.stapled,
        "handshake_seconds": _sec(ocsp.handshake_seconds),
        "response_status": ocsp.response_status,
        "cert_status": ocsp.cert_status,
        "serial": ocsp.serial,
        "responder": ocsp.responder,
        "produced_at_timestamp": ocsp.produced_at_timestamp,
        "this_update_timestamp": ocsp.this_update_timestamp,
        "next_update_timestamp": ocsp.next_update_timestamp,
        "revocation_timestamp": ocsp.revocation_timestamp,
        "revocation_reason": ocsp.revocation_reason,
        "signature_valid": ocsp.signature_valid,
        "error": ocsp.error,
    }


def _tls(tls: TlsResult) -> dict[str, Any]:
    return {
        "port": tls.port,
        "connected": tls.connected,
        "handshake": tls.handshake_outcome,
        "connect_seconds": _sec(tls.connect_seconds),
        "handshake_seconds": _sec(tls.handshake_seconds),
        "version": tls.version,
        "cipher": tls.cipher,
        "alpn": tls.alpn,
        "verified": None if tls.plain else tls.verified,
        "verify_code": tls.verify_code,
        "verify_message": tls.verify_message,
        "earliest_expiry_timestamp": tls.earliest_expiry_timestamp,
        "verified_chain_expiry_timestamp": tls.verified_chain_expiry_timestamp,
        "leaf": _cert(tls.leaf) if tls.leaf else None,
        "chain": [_cert(c) for c in tls.chain],
        "verified_chain": [_cert(c) for c in tls.verified_chain],
    }


def _cert(cert: CertInfo) -> dict[str, Any]:
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "not_before_timestamp": cert.not_before_timestamp,
        "not_after_timestamp": cert.not_after_timestamp,
        "sha256_fingerprint": cert.sha256_fingerprint,
        "dns_names": list(cert.dns_names),
        "ip_addresses": list(cert.ip_addresses),
        "common_name": cert.common_name,
        "is_ca": cert.is_ca,
        "key": cert.key,
        "signature_algorithm": cert.signature_algorithm,
        "notes": list(cert.notes),
        "parse_error": cert.parse_error,
    }


def _attempt(attempt: HttpAttempt, target: TargetResult) -> dict[str, Any]:
    return {
        "status_code": attempt.status_code,
        "http_version": attempt.http_version,
        "backend": attempt.backend,
        "body_bytes": attempt.body_bytes,
        "body_truncated": attempt.body_truncated,
        "duration_seconds": _sec(attempt.duration_seconds),
        "phases": {
            "connect": _sec(attempt.phases.connect),
            "tls": _sec(attempt.phases.tls),
            "processing": _sec(attempt.phases.processing),
            "transfer": _sec(attempt.phases.transfer),
        },
        "failures": [_failure(f, target, attempt) for f in attempt.failures],
        "cookies_set": list(attempt.cookies_set),
        "location": attempt.location,
        "location_length": attempt.location_length,
        "content_encoding": attempt.content_encoding,
        "date_timestamp": attempt.date_timestamp,
        "received_timestamp": attempt.received_timestamp,
        "retried_after": attempt.retried_after,
        "grpc_status": attempt.grpc_status,
        "grpc_status_name": None if attempt.grpc_status is None else grpc_status_name(attempt.grpc_status),
        "grpc_message": attempt.grpc_message,
        "grpc_serving_status": attempt.grpc_serving_status,
        "origin": attempt.origin,
        "load_balancer": _load_balancer(attempt.load_balancer),
    }


def _load_balancer(answer: LoadBalancerAnswer | None) -> dict[str, str] | None:
    if answer is None:
        return None
    return {
        "kind": answer.kind,
        "balancer": answer.balancer,
        "what": answer.what,
        "evidence": answer.evidence,
    }


def _sec(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
