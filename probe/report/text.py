"""Render results for people: the text report of ``probe check`` and its JSON document.

Renderers only format; the verdict was decided by :mod:`probe.judge.verdict`. The JSON schema
is public and versioned (``schema_version``); see the README.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any
from urllib.parse import urlsplit

from probe._text import plural, printable
from probe.judge.baseline import Comparison, Impact
from probe.model.reasons import Platform, Reason, Status
from probe.model.results import (
    AddressResult,
    CertInfo,
    DirectBackendResult,
    DnsResult,
    Failure,
    HttpAttempt,
    OcspResult,
    TargetResult,
    TlsResult,
)
from probe.report.hints import failure_hint
from probe.stages.certs import common_name_of, describe_age, format_time, label_of
from probe.stages.grpc_rules import status_name as grpc_status_name

SCHEMA_VERSION = 1


def overall_status(results: Sequence[TargetResult]) -> Status:
    """The worst status among the targets."""
    return Status.worst(r.status for r in results)


# --------------------------------------------------------------------------- JSON


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
        },
        "cookies": {"set": list(result.cookies_set), "note": result.cookie_note},
        "platform": result.target.platform.value,
        "direct_backends": [_direct(d, result) for d in result.direct_backends],
        "balancing": _balancing(result),
        "scheme": result.target.scheme,
        "expect_redirect": result.target.expect_redirect,
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


def target_notes(result: TargetResult) -> list[str]:
    """Plain sentences about how a target was probed that change what its verdict means.

    Shown under the target in the text report and as ``notes`` in the JSON document:
    verification turned off (``insecure_skip_verify``), requests that shared a
    connection (``reuse_connections``), a ``balancing`` other than round robin,
    ``cross_zone: false``, plain HTTP (no TLS stage), ``expect_redirect`` and gRPC health
    checks (``grpc_health``).
    """
    notes = []
    if result.target.plain:
        notes.append("plain HTTP (http://): no TLS stage and no certificate checked; HTTP/1.1 only (no h2c)")
    if result.target.expect_redirect is not None:
        notes.append(
            f"expect_redirect: every address must answer with a 301 or 302 to "
            f"https://{result.target.hostname}{_path_of(result.target.url)} (not followed); backends and "
            "rotation are not judged"
        )
    if result.target.grpc_health_service is not None:
        service = result.target.grpc_health_service
        notes.append(
            "gRPC health checks instead of GETs: grpc.health.v1.Health/Check of "
            + (f"service '{printable(service)}'" if service else "the server as a whole")
            + ", over HTTP/2"
        )
    if result.target.insecure_skip_verify:
        notes.append(
            "certificates were NOT verified (insecure_skip_verify): the verdict says nothing "
            "about whether a client would trust them"
        )
    if result.target.reuse_connections:
        notes.append(
            "requests to each address shared one connection (reuse_connections): a balancer "
            "that balances per connection sends them all to one backend"
        )
    if result.target.balancing != "round_robin" and result.target.identifying_rule is not None:
        notes.append(_BALANCING_NOTES[result.target.balancing])
    if not result.target.cross_zone and result.target.identifying_rule is not None:
        notes.append(
            "cross_zone: false: each address reaches only its own zone's backends, so a backend "
            "missing from one address's set is expected; one missing at every address is not"
        )
    return notes


_BALANCING_NOTES = {
    "weighted_random": "balancing: weighted_random: a backend unseen in these requests may be "
    "chance; it is called missing only after enough identified responses (see backend_undecided)",
    "least_outstanding_requests": "balancing: least_outstanding_requests: sequential requests may "
    "all go to one idle backend; a backend is called missing only after enough identified "
    "responses (each backend assumed to get at least half its fair share)",
    "any": "balancing: any: no assumption about how requests are spread; expected backends that "
    "did not answer are not reported",
}


def _path_of(url: str) -> str:
    """The path and query of a URL, ``/`` when it has none."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


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
        "content_encoding": attempt.content_encoding,
        "date_timestamp": attempt.date_timestamp,
        "received_timestamp": attempt.received_timestamp,
        "retried_after": attempt.retried_after,
        "grpc_status": attempt.grpc_status,
        "grpc_status_name": None if attempt.grpc_status is None else grpc_status_name(attempt.grpc_status),
        "grpc_message": attempt.grpc_message,
        "grpc_serving_status": attempt.grpc_serving_status,
    }


def _sec(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# --------------------------------------------------------------------------- text

_COLOURS = {Status.OK: "32", Status.WARNING: "33", Status.CRITICAL: "31"}


class _Painter:
    def __init__(self, color: bool) -> None:
        self.color = color

    def status(self, status: Status, text: str | None = None) -> str:
        text = text or status.value.upper()
        return f"\033[{_COLOURS[status]}m{text}\033[0m" if self.color else text

    def dim(self, text: str) -> str:
        return f"\033[2m{text}\033[0m" if self.color else text

    def bold(self, text: str) -> str:
        return f"\033[1m{text}\033[0m" if self.color else text


def render_text(results: Sequence[TargetResult], stream: IO[str], now: float, *, color: bool = False) -> None:
    """Write the human report: per target DNS, a row per address, backends, failures.

    Args:
        results: one result per target.
        stream: where to write.
        now: Unix time, for "expires in N days".
        color: use ANSI colours (only when writing to a terminal).
    """
    paint = _Painter(color)
    for result in results:
        _render_target(result, stream, now, paint)
        stream.write("\n")
    _render_summary(results, stream, paint)


def _render_summary(results: Sequence[TargetResult], out: IO[str], paint: _Painter) -> None:
    """The last line: the overall status, the count per status, unverified targets."""
    status = overall_status(results)
    counts = {s: sum(r.status is s for r in results) for s in Status}
    summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    unverified = [r.target.name for r in results if r.target.insecure_skip_verify]
    caveat = ""
    if unverified:
        caveat = f"; certificates NOT verified for {', '.join(unverified)} (insecure_skip_verify)"
    out.write(f"{paint.bold('Status:')} {paint.status(status)} ({summary}{caveat})\n")


_IMPACT_STATUS = {Impact.NEUTRAL: None, Impact.IMPROVEMENT: Status.OK, Impact.REGRESSION: Status.WARNING}


def render_baseline(comparison: Comparison, stream: IO[str], *, color: bool = False) -> None:
    """Write what changed since a baseline: a heading with the counts, then one line per change.

    Example::

        Baseline before.json (saved 2026-06-01 10:41 UTC): 1 regression, 1 neutral
          regression   www 10.0.2.31  status ok → critical (tcp_timeout)
          neutral      www 10.0.3.31  certificate renewed by the same issuer (…); expires …

    Args:
        comparison: the comparison with the baseline file.
        stream: where to write.
        color: use ANSI colours (only when writing to a terminal).
    """
    paint = _Painter(color)
    counts = [
        plural(comparison.count(impact), impact.value, "neutral" if impact is Impact.NEUTRAL else None)
        for impact in (Impact.REGRESSION, Impact.IMPROVEMENT, Impact.NEUTRAL)
        if comparison.count(impact)
    ]
    saved = format_time(comparison.saved_timestamp)
    heading = f"Baseline {printable(comparison.path)} (saved {saved}):"
    stream.write(f"{paint.bold(heading)} {', '.join(counts) or 'no changes'}\n")
    for change in comparison.changes:
        status = _IMPACT_STATUS[change.impact]
        label = f"{change.impact.value:<12}"
        label = paint.status(status, label) if status is not None else label
        where = change.target + (f" {change.address}" if change.address is not None else "")
        stream.write(f"  {label} {printable(where)}  {printable(change.detail)}\n")
    if comparison.regressed:
        stream.write("  a regression since the baseline makes the exit code at least 1\n")


def pinned_text(dns: DnsResult) -> str:
    """How the addresses of a pinned name were given, e.g. ``pinned with --resolve``.

    An IP-address URL says ``the URL's address, server name from --server-name``.
    """
    if dns.pinned_by in ("server_name", "--server-name"):
        return f"the URL's address, server name from {dns.pinned_by}"
    return f"pinned with {dns.pinned_by}"


def _render_target(result: TargetResult, out: IO[str], now: float, paint: _Painter) -> None:
    """One target's block, one function per section, in the order the report shows them."""
    _render_heading(result, out, paint)
    _render_dns(result, out, paint)
    _render_request(result, out)
    _render_alias(result, out)
    _render_addresses(result, out, now, paint)
    _render_backends(result, out, paint)
    _render_direct(result, out, now, paint)
    _render_cookies(result, out)
    _render_failures(result, out, paint)


def _render_heading(result: TargetResult, out: IO[str], paint: _Painter) -> None:
    """Name, URL, verdict and duration, then the notes on how the target was probed."""
    w = out.write
    caveat = ", certificates NOT verified" if result.target.insecure_skip_verify else ""
    w(
        f"{paint.bold(result.target.name)}  {result.target.url}  {paint.status(result.status)}{caveat}  "
        f"{paint.dim(f'({_ms(result.duration_seconds)})')}\n"
    )
    for note in target_notes(result):
        w(f"  note     {note}\n")


def _render_dns(result: TargetResult, out: IO[str], paint: _Painter) -> None:
    """The DNS line: name, CNAME chain, answers, where the answer came from and how fast."""
    w = out.write
    dns = result.dns
    answers = ", ".join(
        str(a.address) + ("" if a.expected else " (unexpected, not probed)") for a in dns.answers
    )
    via = f" via {' → '.join(dns.cname_chain)}" if dns.cname_chain else ""
    if dns.pinned:
        timing = paint.dim(f"({pinned_text(dns)}; no DNS query)")
    else:
        source = f"{dns.rcode} from {dns.resolver}" if dns.resolver else "no answer"
        ttl = min((a.ttl for a in dns.answers if a.ttl is not None), default=None)
        ttl_text = f", TTL {ttl}s" if ttl is not None else ""
        timing = paint.dim(f"({source}{ttl_text}, {_ms(dns.lookup_seconds)})")
    w(f"  DNS      {dns.name}{via} → {answers or '(none)'}  {timing}\n")


def _render_request(result: TargetResult, out: IO[str]) -> None:
    """The configured request headers (secret values already shown as ``(secret)``)."""
    if result.target.request_headers:
        sent = ", ".join(f"{name}: {printable(value)}" for name, value in result.target.request_headers)
        out.write(f"  request  {sent}\n")


def _render_alias(result: TargetResult, out: IO[str]) -> None:
    """The ``expect_same_addresses_as`` check, when configured."""
    if result.dns.alias is not None:
        alias = result.dns.alias
        if alias.matches:
            verdict = "same addresses"
        elif alias.resolved:
            verdict = "DIFFERENT: " + ", ".join(map(str, alias.addresses))
        else:
            verdict = "did not resolve"
        out.write(f"  alias    {alias.name}: {verdict}\n")


def _render_addresses(result: TargetResult, out: IO[str], now: float, paint: _Painter) -> None:
    """The address table (a row per address, its requests and OCSP), then the chains sent."""
    if result.addresses:
        out.write(f"  {'ADDRESS':<18} {'CONNECT':>8} {'TLS':>16}  {'VERDICT':<9} CERTIFICATE\n")
        for address in result.addresses:
            _render_address(address, out, now, paint)
        _render_chains(result.addresses, out, now, paint)


def _render_cookies(result: TargetResult, out: IO[str]) -> None:
    """Which cookies the responses set (stickiness cookies named as such)."""
    if result.cookie_note:
        out.write(f"  cookies  {printable(result.cookie_note)}\n")


def _render_failures(result: TargetResult, out: IO[str], paint: _Painter) -> None:
    """Every finding of the cycle: severity, reason code, address, detail."""
    w = out.write
    if result.failures:
        w("  failures\n")
        for failure in result.failures:
            where = f" {failure.address}" if failure.address is not None else ""
            w(
                f"    {paint.status(failure.severity, failure.severity.value):<8} "
                f"{failure.reason.value}{where}: {printable(failure.detail)}\n"
            )
            hint = failure_hint(result, failure)
            if hint is not None:
                w(f"    {'':<8} {paint.dim(_hint_label(result.target.platform))} {hint}\n")


def _render_chains(addresses: Sequence[AddressResult], out: IO[str], now: float, paint: _Painter) -> None:
    """The chain as sent, once per distinct chain: addresses that send the same one share it."""
    shown: dict[tuple[str, ...], list[AddressResult]] = {}
    for address in addresses:
        if address.tls.chain:
            shown.setdefault(tuple(c.sha256_fingerprint for c in address.tls.chain), []).append(address)
    for group in shown.values():
        first = group[0]
        also = (
            f" (and {', '.join(str(a.address) for a in group[1:])})"
            if len(group) > 1 and len(shown) > 1
            else ""
        )
        out.write(f"  chain as sent by {first.address}{also}:\n")
        for depth, cert in enumerate(first.tls.chain):
            out.write(
                f"    {depth}  {printable(label_of(cert))}  ← {printable(common_name_of(cert.issuer))}  "
                f"{paint.dim(f'expires {format_time(cert.not_after_timestamp)}, {cert.key}')}\n"
            )
            if cert.parse_error is not None:
                refused = printable(cert.parse_error)
                out.write(f"       facts from OpenSSL's decode (cryptography refused it: {refused})\n")
            for note in cert.notes:
                out.write(f"       note: {printable(note)}\n")
        if first.tls.verified_chain:
            expiry = first.tls.verified_chain_expiry_timestamp
            assert expiry is not None
            anchor = printable(label_of(first.tls.verified_chain[-1]))
            out.write(
                f"    verified up to {anchor}; chain expires "
                f"{format_time(expiry)} ({describe_age(expiry, now)})\n"
            )


def _render_backends(result: TargetResult, out: IO[str], paint: _Painter) -> None:
    """Which backends answered, out of how many responses, and by which rule."""
    requests, responses = result.request_count, result.response_count
    count = plural(responses, "response")
    if responses != requests:
        count += f" to {plural(requests, 'request')}"
    if result.target.expect_redirect is not None:
        if requests:
            out.write(
                "  backends not judged: the listener answers with a redirect (expect_redirect)  "
                f"{paint.dim(count)}\n"
            )
        return
    if result.target.identifying_rule is None:
        if requests:
            out.write(
                "  backends not identified: no backend rule configured (backend.header or "
                f"backend.body_regex)  {paint.dim(count)}\n"
            )
        return
    counts = result.backend_counts
    identified = sum(counts.values())
    seen = "  ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none identified"
    if counts and identified < responses:
        seen += f"  ({responses - identified} not identified)"
    kind, value = result.target.identifying_rule
    rule = f"by header {value}" if kind == "header" else "by body_regex"
    expected = ""
    if result.target.expected_backends:
        expected = f"  (expected {', '.join(result.target.expected_backends)})"
    elif result.target.expected_backend_count:
        expected = f"  (expected {result.target.expected_backend_count})"
    out.write(f"  backends {seen}  {paint.dim(f'of {count}, {rule}')}{expected}\n")
    for address in result.addresses:
        if address.backend_counts:
            per = ", ".join(f"{n} {c}" for n, c in sorted(address.backend_counts.items()))
            out.write(f"    {address.address}: {per}\n")


_TRUST_WORDS = {
    "ca_file": "verified with ca_file",
    "fingerprint_sha256": "pinned by SHA-256",
    "insecure_skip_verify": "NOT verified (insecure_skip_verify)",
}


def _render_direct(result: TargetResult, out: IO[str], now: float, paint: _Painter) -> None:
    """One block per direct backend: where, verdict of the hop, TLS, certificate, the request."""
    for check in result.direct_backends:
        where = f"{check.address}:{check.tls.port}" if check.address is not None and check.tls else check.url
        verdict = paint.status(check.status, "ok" if check.status is Status.OK else check.status.value)
        out.write(
            f"  direct   {check.name}  {printable(where)}  {verdict}  "
            f"{paint.dim(f'(server name {check.server_name}, {_ms(check.duration_seconds)})')}\n"
        )
        tls = check.tls
        if tls is not None and tls.version:
            out.write(f"           tls {tls.version}, {printable(tls.cipher or '-')}\n")
        leaf = tls.leaf if tls is not None else None
        if leaf is not None:
            trust = _TRUST_WORDS[check.trust]
            if check.pin_matches is not None:
                trust = "pin matches" if check.pin_matches else "pin DOES NOT match"
            elif check.trust == "ca_file" and not tls.verified:  # type: ignore[union-attr]
                trust = "NOT verified"
            out.write(
                f"           certificate '{printable(label_of(leaf))}' ← "
                f"{printable(common_name_of(leaf.issuer))}; expires {format_time(leaf.not_after_timestamp)} "
                f"({describe_age(leaf.not_after_timestamp, now)}); {trust}\n"
            )
            out.write(f"           sha256 {leaf.sha256_fingerprint}\n")
        attempt = check.attempt
        if attempt is not None:
            answered_as = f"; answered as {printable(attempt.backend)}" if attempt.backend else ""
            out.write(
                f"           http {_attempt_label(attempt)} in {_ms(attempt.duration_seconds)}{answered_as}\n"
            )
        for failure in check.failures:
            out.write(
                f"           {paint.status(failure.severity, failure.severity.value)} "
                f"{failure.reason.value}: {printable(failure.detail)}\n"
            )


def _render_address(result: AddressResult, out: IO[str], now: float, paint: _Painter) -> None:
    tls = result.tls
    connect = _ms(tls.connect_seconds) if tls.connected else "failed"
    outcome = tls.handshake_outcome
    if tls.version:
        handshake = f"{tls.version} {_ms(tls.handshake_seconds)}"
    else:
        handshake = _HANDSHAKE_WORDS.get(outcome, "failed")
    leaf = tls.leaf
    if leaf is not None:
        names = printable(", ".join(leaf.dns_names[:3]) or f"CN={leaf.common_name}")
        more = f" +{len(leaf.dns_names) - 3}" if len(leaf.dns_names) > 3 else ""
        trust = {"verified": "verified", "unverified": "NOT verified (insecure_skip_verify)"}.get(
            outcome, "NOT verified"
        )
        cert = (
            f"{names}{more}; expires {format_time(leaf.not_after_timestamp)} "
            f"({describe_age(leaf.not_after_timestamp, now)}); {trust}"
        )
    else:
        cert = "-"
    verdict = paint.status(result.status, f"{result.status.value:<9}")
    out.write(f"  {result.address!s:<18} {connect:>8} {handshake:>16}  {verdict} {cert}\n")
    if result.attempts:
        statuses = " ".join(_attempt_label(a) for a in result.attempts)
        mean = sum(a.duration_seconds for a in result.attempts) / len(result.attempts)
        notes = [f"mean {_ms(mean)} per request", *_http_notes(result.attempts)]
        out.write(f"  {'':<18} {'http':>8} {statuses:>16}  {paint.dim('; '.join(notes))}\n")
    if result.ocsp is not None:
        out.write(f"  {'':<18} {'ocsp':>8} {ocsp_summary(result.ocsp, now)}\n")


def ocsp_summary(ocsp: OcspResult, now: float) -> str:
    """One line about a stapled OCSP response: its status and dates, or why there is none."""
    if ocsp.error is not None:
        return f"not checked: {printable(ocsp.error)}"
    if not ocsp.stapled:
        return "no staple (the server sent no OCSP response)"
    if ocsp.cert_status is None:
        return f"unusable staple ({ocsp.response_status or 'not parsable'})"
    parts = [ocsp.cert_status]
    if ocsp.revocation_timestamp is not None:
        reason = f" ({ocsp.revocation_reason})" if ocsp.revocation_reason else ""
        parts = [f"revoked on {format_time(ocsp.revocation_timestamp)}{reason}"]
    if ocsp.next_update_timestamp is not None:
        ts = ocsp.next_update_timestamp
        parts.append(f"next update {format_time(ts)} ({describe_age(ts, now)})")
    else:
        parts.append("no next update")
    if ocsp.signature_valid is None:
        parts.append("signature not checked (issuer unknown)")
    elif not ocsp.signature_valid:
        parts.append("signature NOT valid")
    return "; ".join(parts)


#: The TLS column when no handshake completed: a certificate refused after the server
#: spoke TLS is not the same fault as a handshake that failed or timed out.
_HANDSHAKE_WORDS = {
    "verify_failed": "not verified",
    "timeout": "timed out",
    "failed": "failed",
    "not_attempted": "-",
    "plain": "plain HTTP",
}


def _http_notes(attempts: Sequence[HttpAttempt]) -> list[str]:
    """Facts about an address's responses worth a word.

    The HTTP version, cut or encoded bodies, and where accepted redirects pointed (a
    refused one is in its ``http_status`` finding).
    """
    notes: list[str] = []
    versions = sorted({a.http_version for a in attempts if a.http_version and a.http_version != "HTTP/1.1"})
    notes.extend(printable(v) for v in versions)
    cut = [a.body_bytes for a in attempts if a.body_truncated]
    if cut:
        notes.append(f"{'bodies' if len(cut) > 1 else 'body'} cut at {max(cut)} bytes")
    encodings = sorted({a.content_encoding for a in attempts if a.content_encoding})
    if encodings:
        notes.append(f"{printable(', '.join(encodings))}-encoded though identity was asked for")
    accepted = sorted({a.location for a in attempts if a.location and not a.failures})
    if accepted:
        notes.append(f"redirects to {printable(', '.join(accepted))}")
    notes.extend(_retry_notes(attempts))
    notes.extend(_grpc_notes(attempts))
    return notes


def _grpc_notes(attempts: Sequence[HttpAttempt]) -> list[str]:
    """What the gRPC responses said: "gRPC: SERVING ×4", "gRPC: grpc-status 12 UNIMPLEMENTED ×2"."""
    said = Counter(
        attempt.grpc_serving_status
        or f"grpc-status {attempt.grpc_status} {grpc_status_name(attempt.grpc_status)}"
        for attempt in attempts
        if attempt.grpc_status is not None
    )
    if not said:
        return []
    return ["gRPC: " + ", ".join(f"{printable(what)} ×{count}" for what, count in sorted(said.items()))]


def _retry_notes(attempts: Sequence[HttpAttempt]) -> list[str]:
    """One note per refusal that made requests retry: "2 requests retried on a new connection after …"."""
    causes = Counter(a.retried_after for a in attempts if a.retried_after is not None)
    return [
        f"{plural(count, 'request')} retried on a new connection after {printable(cause)}"
        for cause, count in sorted(causes.items())
    ]


def _attempt_label(attempt: HttpAttempt) -> str:
    """The status code, or ``ERR`` when the response did not arrive whole."""
    broken = {Reason.HTTP_PROTOCOL_ERROR, Reason.HTTP_TIMEOUT}
    if attempt.status_code is None or any(f.reason in broken for f in attempt.failures):
        return "ERR"
    return str(attempt.status_code)


def _hint_label(platform: Platform) -> str:
    """``hint:`` for the generic words, ``hint (aws):`` when a platform's are used."""
    return "hint:" if platform is Platform.GENERIC else f"hint ({platform.value}):"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"
