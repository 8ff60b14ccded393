"""Render results for people: the text report of ``probe check`` (and of a target's status page).

Renderers only format; the verdict was decided by :mod:`probe.judge`. The JSON document
(:mod:`probe.report.document`) carries two things said here: the overall status
(:func:`overall_status`) and each target's notes on how it was probed (:func:`target_notes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO
from urllib.parse import urlsplit

from probe._text import plural, printable
from probe.judge.baseline import Comparison, Impact
from probe.model.facts import ClientCertificate
from probe.model.reasons import Platform, Reason, Status
from probe.model.results import (
    AddressResult,
    CertInfo,
    DirectBackendResult,
    DnsResult,
    HttpAttempt,
    OcspResult,
    TargetResult,
    TlsResult,
)
from probe.report.hints import failure_hint
from probe.report.protocol_notes import http_notes, target_protocol_notes
from probe.stages.certs import common_name_of, describe_age, format_time, label_of


def overall_status(results: Sequence[TargetResult]) -> Status:
    """The worst status among the targets."""
    return Status.worst(r.status for r in results)


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
    notes.extend(target_protocol_notes(result.target))
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


# --------------------------------------------------------------------------- text

#: ANSI colour of each status: green, yellow, red.
_COLOURS = {Status.OK: "32", Status.WARNING: "33", Status.CRITICAL: "31"}


class _Painter:
    """ANSI colours and weights for a terminal; with ``color`` off, the text as it is."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def status(self, status: Status, text: str | None = None) -> str:
        """``text`` (default: the status in capitals) in the status's colour."""
        text = text or status.value.upper()
        return f"\033[{_COLOURS[status]}m{text}\033[0m" if self.color else text

    def dim(self, text: str) -> str:
        """``text`` faint: timings and other detail."""
        return f"\033[2m{text}\033[0m" if self.color else text

    def bold(self, text: str) -> str:
        """``text`` in bold: names and headings."""
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

    An IP-address URL says ``the URL's address, server name from --server-name``, or
    ``the URL's address`` when the address itself is verified.
    """
    if dns.pinned_by in ("server_name", "--server-name"):
        return f"the URL's address, server name from {dns.pinned_by}"
    if dns.pinned_by == "url":
        return "the URL's address"
    return f"pinned with {dns.pinned_by}"


def _render_target(result: TargetResult, out: IO[str], now: float, paint: _Painter) -> None:
    """One target's block, one function per section, in the order the report shows them."""
    _render_heading(result, out, paint)
    _render_dns(result, out, paint)
    _render_request(result, out)
    _render_client(result.target.client_certificate, out, now, "  client   certificate")
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


def _render_client(client: ClientCertificate | None, out: IO[str], now: float, label: str) -> None:
    """The client certificate presented to a listener that asks for one: subject, issuer, expiry."""
    if client is None:
        return
    leaf = client.leaf
    sent = f", sent with {plural(len(client.chain), 'intermediate')}" if client.chain else ""
    out.write(
        f"{label} {printable(leaf.subject or '(empty subject)')} ← {printable(leaf.issuer)}; "
        f"expires {format_time(leaf.not_after_timestamp)} ({describe_age(leaf.not_after_timestamp, now)}); "
        f"{printable(client.cert_file)}{sent}\n"
    )


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
        also = (
            f" (and {', '.join(str(a.address) for a in group[1:])})"
            if len(group) > 1 and len(shown) > 1
            else ""
        )
        _render_chain(group[0], also, out, now, paint)


def _render_chain(first: AddressResult, also: str, out: IO[str], now: float, paint: _Painter) -> None:
    """One chain as ``first`` sent it: a line per certificate, its notes, how far it verified."""
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
    count = _responses_text(result)
    rule = result.target.identifying_rule
    if result.target.expect_redirect is not None or rule is None:
        if result.request_count:
            out.write(f"  {_backends_unjudged(result)}  {paint.dim(count)}\n")
        return
    kind, value = rule
    by = f"by header {value}" if kind == "header" else "by body_regex"
    seen, expected = _backends_seen(result), _backends_expected(result)
    out.write(f"  backends {seen}  {paint.dim(f'of {count}, {by}')}{expected}\n")
    for address in result.addresses:
        if address.backend_counts:
            per = ", ".join(f"{n} {c}" for n, c in sorted(address.backend_counts.items()))
            out.write(f"    {address.address}: {per}\n")


def _responses_text(result: TargetResult) -> str:
    """``3 responses``, or ``2 responses to 3 requests`` when some request got none."""
    requests, responses = result.request_count, result.response_count
    count = plural(responses, "response")
    if responses != requests:
        count += f" to {plural(requests, 'request')}"
    return count


def _backends_unjudged(result: TargetResult) -> str:
    """Why the backends are not counted: a redirect is expected, or no rule names them."""
    if result.target.expect_redirect is not None:
        return "backends not judged: the listener answers with a redirect (expect_redirect)"
    return "backends not identified: no backend rule configured (backend.header or backend.body_regex)"


def _backends_seen(result: TargetResult) -> str:
    """Each backend identified with its count; how many the load balancer answered itself, and none named."""
    counts = result.backend_counts
    identified = sum(counts.values())
    own = result.load_balancer_count
    seen = "  ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none identified"
    unnamed = result.response_count - identified - own
    if own:
        seen += f"  ({own} from the load balancer itself)"
    if unnamed > 0 and (counts or own):
        seen += f"  ({unnamed} not identified)"
    return seen


def _backends_expected(result: TargetResult) -> str:
    """``  (expected a, b)`` or ``  (expected 3)`` from the target's expectation, else empty."""
    if result.target.expected_backends:
        return f"  (expected {', '.join(result.target.expected_backends)})"
    if result.target.expected_backend_count:
        return f"  (expected {result.target.expected_backend_count})"
    return ""


_TRUST_WORDS = {
    "ca_file": "verified with ca_file",
    "fingerprint_sha256": "pinned by SHA-256",
    "insecure_skip_verify": "NOT verified (insecure_skip_verify)",
}


def _render_direct(result: TargetResult, out: IO[str], now: float, paint: _Painter) -> None:
    """One block per direct backend: where, verdict of the hop, TLS, certificate, the request."""
    for check in result.direct_backends:
        _render_direct_check(check, out, now, paint)


def _render_direct_check(check: DirectBackendResult, out: IO[str], now: float, paint: _Painter) -> None:
    """A direct backend's block: its heading line, then TLS, certificate, request and findings."""
    where = f"{check.address}:{check.tls.port}" if check.address is not None and check.tls else check.url
    verdict = paint.status(check.status, "ok" if check.status is Status.OK else check.status.value)
    out.write(
        f"  direct   {check.name}  {printable(where)}  {verdict}  "
        f"{paint.dim(f'(server name {check.server_name}, {_ms(check.duration_seconds)})')}\n"
    )
    _render_client(check.client_certificate, out, now, "           client certificate")
    tls = check.tls
    if tls is not None and tls.version:
        out.write(f"           tls {tls.version}, {printable(tls.cipher or '-')}\n")
    if tls is not None and tls.leaf is not None:
        _render_direct_certificate(tls.leaf, _direct_trust(check, tls), out, now)
    attempt = check.attempt
    if attempt is not None:
        answered_as = f"; answered as {printable(attempt.backend)}" if attempt.backend else ""
        took = _ms(attempt.duration_seconds)
        out.write(f"           http {_attempt_label(attempt)} in {took}{answered_as}\n")
    for failure in check.failures:
        out.write(
            f"           {paint.status(failure.severity, failure.severity.value)} "
            f"{failure.reason.value}: {printable(failure.detail)}\n"
        )


def _render_direct_certificate(leaf: CertInfo, trust: str, out: IO[str], now: float) -> None:
    """The leaf a direct backend sent: its name, issuer, expiry and trust, then its fingerprint."""
    out.write(
        f"           certificate '{printable(label_of(leaf))}' ← "
        f"{printable(common_name_of(leaf.issuer))}; expires {format_time(leaf.not_after_timestamp)} "
        f"({describe_age(leaf.not_after_timestamp, now)}); {trust}\n"
    )
    out.write(f"           sha256 {leaf.sha256_fingerprint}\n")


def _direct_trust(check: DirectBackendResult, tls: TlsResult) -> str:
    """How a direct backend's certificate was trusted: the pin's outcome, or the trust's words."""
    if check.pin_matches is not None:
        return "pin matches" if check.pin_matches else "pin DOES NOT match"
    if check.trust == "ca_file" and not tls.verified:
        return "NOT verified"
    return _TRUST_WORDS[check.trust]


def _render_address(result: AddressResult, out: IO[str], now: float, paint: _Painter) -> None:
    """An address's row (connect, TLS, verdict, certificate), then its requests and OCSP."""
    tls = result.tls
    connect = _ms(tls.connect_seconds) if tls.connected else "failed"
    cert = "-" if tls.leaf is None else _certificate_column(tls.leaf, tls.handshake_outcome, now)
    verdict = paint.status(result.status, f"{result.status.value:<9}")
    out.write(f"  {result.address!s:<18} {connect:>8} {_handshake_column(tls):>16}  {verdict} {cert}\n")
    if result.attempts:
        statuses = " ".join(_attempt_label(a) for a in result.attempts)
        mean = sum(a.duration_seconds for a in result.attempts) / len(result.attempts)
        notes = [f"mean {_ms(mean)} per request", *http_notes(result.attempts)]
        out.write(f"  {'':<18} {'http':>8} {statuses:>16}  {paint.dim('; '.join(notes))}\n")
    if result.ocsp is not None:
        out.write(f"  {'':<18} {'ocsp':>8} {ocsp_summary(result.ocsp, now)}\n")


def _handshake_column(tls: TlsResult) -> str:
    """The TLS column: version and handshake time, or what became of the handshake."""
    if tls.version:
        return f"{tls.version} {_ms(tls.handshake_seconds)}"
    return _HANDSHAKE_WORDS.get(tls.handshake_outcome, "failed")


def _certificate_column(leaf: CertInfo, outcome: str, now: float) -> str:
    """The certificate column: up to three names, the expiry, and whether it was verified."""
    names = printable(", ".join(leaf.dns_names[:3]) or f"CN={leaf.common_name}")
    more = f" +{len(leaf.dns_names) - 3}" if len(leaf.dns_names) > 3 else ""
    trust = {"verified": "verified", "unverified": "NOT verified (insecure_skip_verify)"}.get(
        outcome, "NOT verified"
    )
    return (
        f"{names}{more}; expires {format_time(leaf.not_after_timestamp)} "
        f"({describe_age(leaf.not_after_timestamp, now)}); {trust}"
    )


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
    """A duration for the report: ``12 ms`` below ten seconds, ``12.3 s`` above, ``-`` unknown."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"
