"""Pure verdict logic: findings across addresses (certificates, backends, rotation).

Called by :func:`probe.judge.judgement.judge_cycle`. Takes the stage results, the target's
facts and ``now``; reads no clock and opens no socket.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from probe._text import plural
from probe.judge import balancing as rotation
from probe.model.facts import ClientCertificate, TargetFacts
from probe.model.reasons import Reason, Status
from probe.model.results import AddressResult, DnsResult, Failure, Rotation
from probe.stages.certs import describe_age, format_time, label_of

DAY = 86400.0


def evaluate(
    dns: DnsResult,
    addresses: tuple[AddressResult, ...],
    target: TargetFacts,
    now: float,
    memory: Rotation | None = None,
) -> tuple[Failure, ...]:
    """All findings of a cycle.

    Adds to the stage findings: ``internal_error`` for a handshake that completed without
    certificate facts (see :func:`missing_certificate_facts`),
    ``cert_differs_between_addresses``, ``cert_expiring_soon``
    (from the verified chain's earliest expiry, as blackbox_exporter's
    ``probe_ssl_last_chain_expiry_timestamp_seconds``), ``tls_client_cert_expiring_soon``
    (the client certificate of ``tls_client``), and the backend checks
    ``backend_missing``, ``backend_unexpected`` and ``backend_imbalance``.

    Args:
        dns: the DNS result.
        addresses: the per-address results.
        target: the target's facts (cert_expiry_warning_days, backend rule, expected backends).
        now: the current Unix time.
        memory: the rotation memory after this cycle (:func:`probe.judge.balancing.fold`), for
            ``balancing: weighted_random`` or ``least_outstanding_requests``.

    Returns:
        The findings in stage order.
    """
    failures = [*dns.failures]
    for address in addresses:
        failures.extend(address.failures)
    failures.extend(missing_certificate_facts(addresses))
    failures.extend(expiry_warnings(addresses, target.cert_expiry_warning_days, now))
    failures.extend(client_expiry_warnings(target.client_certificate, target.cert_expiry_warning_days, now))
    failures.extend(certificate_differences(addresses))
    failures.extend(backend_findings(addresses, target, memory))
    return tuple(failures)


def with_cycle_findings(
    addresses: tuple[AddressResult, ...], failures: tuple[Failure, ...]
) -> tuple[AddressResult, ...]:
    """The addresses with the cycle's cross-address findings about them, and their status again.

    :func:`evaluate` finds some things only by looking at every address (an expiring chain,
    leaves that differ); an address row must carry them too, so that its status is
    ``warning`` and not ``ok``. A finding with that address is added to it; a
    ``cert_differs_between_addresses`` finding (about no single address) is added to every
    address that sent a leaf, naming the address. Backend and cycle findings concern the
    target as a whole and stay there.

    Args:
        addresses: the per-address results as the stages returned them.
        failures: every finding of the cycle (from :func:`evaluate`).

    Returns:
        The addresses in the same order; unchanged ones are the same objects.
    """
    differs = [f for f in failures if f.reason is Reason.CERT_DIFFERS_BETWEEN_ADDRESSES and f.address is None]
    updated = []
    for result in addresses:
        extra = [f for f in failures if f.address == result.address and f not in result.failures]
        if result.tls.leaf is not None:
            extra.extend(Failure(f.reason, f.detail, result.address) for f in differs)
        if extra:
            result = replace(result, failures=(*result.failures, *extra))
        updated.append(result)
    return tuple(updated)


def missing_certificate_facts(addresses: tuple[AddressResult, ...]) -> list[Failure]:
    """The invariant that makes "OK with no certificate facts" impossible.

    A handshake that completed and verified must have yielded a leaf, a leaf expiry and
    (unless verification is off) a verified chain with its expiry; so must one that
    completed without verification (``insecure_skip_verify``). When it did not, facts were
    lost (a bug in probe, or a Python that hides OpenSSL's decode), and that is reported
    as ``internal_error`` rather than letting the address pass.
    """
    findings = []
    for result in addresses:
        tls = result.tls
        if tls.version is None or tls.status is Status.CRITICAL:
            continue  # no completed handshake: the failure already says why
        lost = []
        if tls.leaf is None or tls.earliest_expiry_timestamp is None:
            lost.append("no leaf certificate or expiry")
        if tls.verified and tls.verified_chain_expiry_timestamp is None:
            lost.append("no verified chain expiry")
        if lost:
            findings.append(
                Failure(
                    Reason.INTERNAL_ERROR,
                    f"the handshake completed ({tls.version}) but probe obtained {' and '.join(lost)}; "
                    "certificate facts were lost (a bug in probe)",
                    result.address,
                )
            )
    return findings


def expiry_warnings(addresses: tuple[AddressResult, ...], warning_days: float, now: float) -> list[Failure]:
    """``cert_expiring_soon`` for each address whose chain expires within ``warning_days``.

    The verified chain's earliest not-after counts (an extra expired cross-signed
    certificate sent alongside does not); without verification (``insecure_skip_verify``)
    the earliest among the certificates as sent.
    """
    warnings = []
    for result in addresses:
        tls = result.tls
        if tls.verified_chain:
            chain = tls.verified_chain
        elif tls.status is not Status.CRITICAL and tls.chain:
            chain = tls.chain
        else:
            continue
        soonest = min(chain, key=lambda c: c.not_after_timestamp)
        left = soonest.not_after_timestamp - now
        if left < warning_days * DAY:
            role = "leaf" if soonest is chain[0] else "certificate"
            # Only without verification can a chain in use have expired already.
            verb, off = ("expires", "") if left >= 0 else ("expired", "verification is off; ")
            warnings.append(
                Failure(
                    Reason.CERT_EXPIRING_SOON,
                    f"{role} '{label_of(soonest)}' {verb} on {format_time(soonest.not_after_timestamp)} "
                    f"({describe_age(soonest.not_after_timestamp, now)}; {off}"
                    f"warning at {warning_days:g} days)",
                    result.address,
                )
            )
    return warnings


def client_expiry_warnings(
    client: ClientCertificate | None, warning_days: float, now: float, backend: str | None = None
) -> list[Failure]:
    """``tls_client_cert_expiring_soon`` when the client certificate expires within ``warning_days``.

    An expired one too: a listener that verifies it refuses it (``tls_client_cert_refused``,
    alert ``certificate_expired``) and this says why; one that does not verify accepts it.
    The intermediates sent with it count as well. 0 days turns the warning off.

    Args:
        client: the client certificate's facts, ``None`` without one.
        warning_days: the window (``cert_expiry_warning_days``).
        now: the current Unix time.
        backend: the direct backend whose own certificate it is (named in the detail).
    """
    if client is None or warning_days <= 0:
        return []
    soonest = min((client.leaf, *client.chain), key=lambda c: c.not_after_timestamp)
    left = soonest.not_after_timestamp - now
    if left >= warning_days * DAY:
        return []
    role = "client certificate" if soonest is client.leaf else "intermediate sent with the client certificate"
    verb = "expires" if left >= 0 else "expired"
    owner = f"{backend}: " if backend is not None else ""
    return [
        Failure(
            Reason.TLS_CLIENT_CERT_EXPIRING_SOON,
            f"{owner}{role} '{label_of(soonest)}' ({client.cert_file}) {verb} on "
            f"{format_time(soonest.not_after_timestamp)} ({describe_age(soonest.not_after_timestamp, now)}; "
            f"warning at {warning_days:g} days)",
            backend=backend,
        )
    ]


def certificate_differences(addresses: tuple[AddressResult, ...]) -> list[Failure]:
    """``cert_differs_between_addresses`` when addresses present different leaves."""
    leaves = {r.address: r.tls.leaf for r in addresses if r.tls.leaf is not None}
    fingerprints = {leaf.sha256_fingerprint for leaf in leaves.values()}
    if len(fingerprints) < 2:
        return []
    described = "; ".join(
        f"{address}: '{label_of(leaf)}' sha256 {leaf.sha256_fingerprint[:12]}…, "
        f"expires {format_time(leaf.not_after_timestamp)}"
        for address, leaf in leaves.items()
    )
    return [
        Failure(
            Reason.CERT_DIFFERS_BETWEEN_ADDRESSES,
            f"{len(fingerprints)} different leaf certificates: {described}",
        )
    ]


def backend_findings(
    addresses: tuple[AddressResult, ...], target: TargetFacts, memory: Rotation | None = None
) -> list[Failure]:
    """Backend checks over all responses of the cycle.

    ``backend_missing``: an expected backend (by name, or by count) answered no request;
    with ``balancing: weighted_random`` or ``least_outstanding_requests``, none of so many
    identified responses counted across cycles (``memory``) that a healthy backend would
    have answered (``backend_undecided`` before that; :mod:`probe.judge.balancing`); never with
    ``any``.
    ``backend_unexpected``: a backend outside the expected names answered (warning).
    ``backend_imbalance``: a backend that answered got less than half of its fair share,
    the share being the identified responses divided by the expected (or seen) backends;
    per address with ``cross_zone: false``; for the random settings only when the split
    is also that unlikely by chance; never with ``any``.
    Nothing is judged when no response was identified: the cause is already reported.
    Nothing is judged with ``expect_redirect`` either: the listener answers itself.

    A response the load balancer gave itself (``HttpAttempt.load_balancer``) is evidence
    neither for nor against a backend: it is not an identified response, so it counts in
    no backend's share and no unseen run. A round-robin ``backend_missing`` says how many
    there were, as a failing target's turns come back as the balancer's own 502 or 503.
    """
    if target.identifying_rule is None:
        return []
    counts: dict[str, int] = {}
    for result in addresses:
        for name, count in result.backend_counts.items():
            counts[name] = counts.get(name, 0) + count
    identified = sum(counts.values())
    if identified == 0:
        return []
    findings = []
    names = target.expected_backends
    if target.balancing == "round_robin":
        findings.extend(_round_robin_missing(counts, identified, target, _own_answers(addresses)))
    elif memory is not None:
        findings.extend(rotation.findings(memory, addresses))
    for name in counts:
        if names and name not in names:
            findings.append(
                Failure(
                    Reason.BACKEND_UNEXPECTED,
                    f"backend {name} answered {plural(counts[name], 'request')} but is not in "
                    f"expect_backends ({', '.join(names)})",
                )
            )
    if target.balancing == "round_robin":
        findings.extend(_round_robin_imbalance(addresses, counts, target))
    elif target.balancing in rotation.COUNTED:
        findings.extend(
            rotation.imbalance(
                target.balancing, target.cross_zone, names, target.expected_backend_count, addresses
            )
        )
    return findings


def _round_robin_missing(
    counts: dict[str, int], identified: int, target: TargetFacts, own: str
) -> list[Failure]:
    """Every expected backend must answer within the cycle (at some address).

    ``own``: the load balancer's own answers in words (see :func:`_own_answers`), added to
    the detail.
    """
    names = target.expected_backends
    if names:
        return [
            Failure(
                Reason.BACKEND_MISSING,
                f"backend {name} answered none of the {identified} identified responses "
                f"(seen: {_seen(counts)}){own}",
                backend=name,
            )
            for name in names
            if name not in counts
        ]
    if target.expected_backend_count is not None and len(counts) < target.expected_backend_count:
        return [
            Failure(
                Reason.BACKEND_MISSING,
                f"{target.expected_backend_count} backends expected, {len(counts)} answered "
                f"(seen: {_seen(counts)}){own}",
            )
        ]
    return []


def _own_answers(addresses: tuple[AddressResult, ...]) -> str:
    """The load balancer's own answers among the responses, for a detail; ``""`` when none.

    ``"; 4 other responses came from the load balancer itself (status 503), not from a backend"``.
    """
    statuses = Counter(
        attempt.status_code
        for result in addresses
        for attempt in result.attempts
        if attempt.load_balancer is not None
    )
    if not statuses:
        return ""
    total = sum(statuses.values())
    codes = ", ".join(str(code) for code in sorted(c for c in statuses if c is not None))
    return (
        f"; {plural(total, 'other response')} came from the load balancer itself "
        f"(status {codes}), not from a backend"
    )


def _round_robin_imbalance(
    addresses: tuple[AddressResult, ...], counts: dict[str, int], target: TargetFacts
) -> list[Failure]:
    """Less than half the fair share: over all addresses, or per address with ``cross_zone: false``.

    Without cross-zone balancing an address reaches only its zone's backends, so its fair
    share is its identified responses divided by the backends it reached.
    """
    names = target.expected_backends
    if target.cross_zone:
        scopes = [("", counts, target.expected_backend_count or len(counts))]
    else:
        scopes = [(f"at {a.address}, ", a.backend_counts, len(a.backend_counts)) for a in addresses]
    findings = []
    for where, seen, expected in scopes:
        identified = sum(seen.values())
        if not identified:
            continue
        fair = identified / expected
        for name, count in seen.items():
            if names and name not in names:
                continue
            if count < fair / 2:
                findings.append(
                    Failure(
                        Reason.BACKEND_IMBALANCE,
                        f"{where}backend {name} answered {count} of {identified} requests; its fair "
                        f"share is {fair:g} (seen: {_seen(seen)})",
                    )
                )
    return findings


def _seen(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"
