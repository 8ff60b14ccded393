"""Verdict logic on hand-built stage results: expiry, certificate differences, backends."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest

from probe.engine.plan import facts_of
from probe.judge.verdict import (
    DAY,
    backend_findings,
    certificate_differences,
    evaluate,
    expiry_warnings,
    with_cycle_findings,
)
from probe.model.facts import TargetFacts
from probe.model.reasons import Reason, Status
from probe.model.results import AddressResult, CertInfo, DnsResult, Failure, IPAddress, TlsResult, status_of
from tests.support import builders
from tests.support.helpers import make_target

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
A1 = ipaddress.ip_address("10.0.0.1")
A2 = ipaddress.ip_address("10.0.0.2")
A3 = ipaddress.ip_address("10.0.0.3")
URL = "https://www.corp.example/"


def cert(cn: str, not_after: float, **fields: Any) -> CertInfo:
    """A certificate issued 100 days before this module's ``NOW``."""
    return builders.cert(cn, not_after, not_before=NOW - 100 * DAY, **fields)


LEAF = cert("www.corp.example", NOW + 60 * DAY)
INTERMEDIATE = cert("Corp Intermediate CA", NOW + 400 * DAY, issuer="Corp Root CA")
ROOT = cert("Corp Root CA", NOW + 3000 * DAY, issuer="Corp Root CA")


def tls(
    address: IPAddress,
    chain: tuple[CertInfo, ...] = (LEAF, INTERMEDIATE),
    verified_chain: tuple[CertInfo, ...] | None = None,
    failures: tuple[Failure, ...] = (),
) -> TlsResult:
    """Verified up to ROOT unless there are failures or ``verified_chain`` says otherwise."""
    if verified_chain is None:
        verified_chain = (*chain, ROOT) if not failures else ()
    return builders.tls_result(address, chain, verified_chain, failures=failures)


def address(
    ip: IPAddress,
    backends: list[str | None] | None = None,
    *,
    tls_result: TlsResult | None = None,
    failures: tuple[Failure, ...] = (),
) -> AddressResult:
    attempts = [builders.http_attempt(b) for b in backends or []]
    return builders.address_result(ip, tls_result or tls(ip), attempts, failures=failures)


def served(**counts: int) -> list[str | None]:
    """Backend names as answered, e.g. ``served(web_1=3)`` → three times ``web-1``."""
    return [name.replace("_", "-") for name, count in counts.items() for _ in range(count)]


def dns_result(failures: tuple[Failure, ...] = ()) -> DnsResult:
    return builders.dns_result((A1, A2), failures=failures)


def facts(**fields: Any) -> TargetFacts:
    """The facts of a target built from config fields, as the engine builds them."""
    return facts_of(make_target(**fields))


def backend_target(**fields: Any) -> TargetFacts:
    return facts(url=URL, backend={"header": "X-Backend"}, **fields)


def summary(findings: list[Failure]) -> list[tuple[str, str]]:
    return [(f.reason.value, f.detail) for f in findings]


# --------------------------------------------------------------------------- backends


def test_no_backend_rule_judges_nothing() -> None:
    target = facts(url=URL)
    assert backend_findings((address(A1, served(web_1=4)),), target) == []


def test_nothing_identified_judges_nothing() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    assert backend_findings((address(A1, [None, None]), address(A2)), target) == []


def test_missing_by_name() -> None:
    target = backend_target(expect_backends=["web-1", "web-2", "web-3"])
    results = (address(A1, served(web_1=2, web_2=2)), address(A2, served(web_1=2, web_2=2)))
    assert summary(backend_findings(results, target)) == [
        (
            "backend_missing",
            "backend web-3 answered none of the 8 identified responses (seen: web-1 4, web-2 4)",
        ),
    ]


def test_missing_by_count() -> None:
    target = backend_target(expect_backends=3)
    results = (address(A1, served(web_1=2, web_2=2)), address(A2, served(web_2=2, web_1=2)))
    assert summary(backend_findings(results, target)) == [
        ("backend_missing", "3 backends expected, 2 answered (seen: web-1 4, web-2 4)"),
    ]


def test_all_expected_backends_balanced() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=2, web_2=2)), address(A2, served(web_1=2, web_2=2)))
    assert backend_findings(results, target) == []


def test_unexpected_backend() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=4, web_2=3, web_9=2)),)
    assert summary(backend_findings(results, target)) == [
        (
            "backend_unexpected",
            "backend web-9 answered 2 requests but is not in expect_backends (web-1, web-2)",
        ),
    ]


def test_unexpected_backend_answering_once_is_singular() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=4, web_2=3, web_9=1)),)
    assert summary(backend_findings(results, target)) == [
        (
            "backend_unexpected",
            "backend web-9 answered 1 request but is not in expect_backends (web-1, web-2)",
        ),
    ]


def test_more_backends_than_counted_is_not_a_finding() -> None:
    target = backend_target(expect_backends=2)
    assert backend_findings((address(A1, served(web_1=3, web_2=3, web_3=2)),), target) == []


def test_imbalance_just_below_half_the_fair_share() -> None:
    # 8 responses over 2 expected backends: fair share 4, half of it 2; 1 is below.
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=4, web_2=1)), address(A2, served(web_1=3)))
    findings = backend_findings(results, target)
    assert summary(findings) == [
        (
            "backend_imbalance",
            "backend web-2 answered 1 of 8 requests; its fair share is 4 (seen: web-1 7, web-2 1)",
        ),
    ]
    assert findings[0].severity is Status.WARNING and findings[0].address is None


def test_no_imbalance_at_exactly_half_the_fair_share() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=3, web_2=1)), address(A2, served(web_1=3, web_2=1)))
    assert backend_findings(results, target) == []


def test_imbalance_boundary_with_a_fractional_fair_share() -> None:
    # 10 responses over 3 backends: fair share 3.33…, half 1.67: 2 is fine, 1 is not.
    target = backend_target(expect_backends=3)
    fine = (address(A1, served(web_1=4, web_2=4, web_3=2)),)
    assert backend_findings(fine, target) == []
    low = (address(A1, served(web_1=5, web_2=4, web_3=1)),)
    assert summary(backend_findings(low, target)) == [
        (
            "backend_imbalance",
            "backend web-3 answered 1 of 10 requests; its fair share is 3.33333 "
            "(seen: web-1 5, web-2 4, web-3 1)",
        ),
    ]


def test_imbalance_without_expectations_uses_the_backends_seen() -> None:
    target = backend_target()
    assert backend_findings((address(A1, served(web_1=6, web_2=2)),), target) == []
    assert summary(backend_findings((address(A1, served(web_1=7, web_2=1)),), target)) == [
        (
            "backend_imbalance",
            "backend web-2 answered 1 of 8 requests; its fair share is 4 (seen: web-1 7, web-2 1)",
        ),
    ]


def test_an_unexpected_backend_is_not_also_reported_as_imbalanced() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=4, web_2=4, web_9=1)),)
    assert [f.reason for f in backend_findings(results, target)] == [Reason.BACKEND_UNEXPECTED]


# --------------------------------------------------------------------------- expiry


def test_no_warning_when_far_from_expiry() -> None:
    assert expiry_warnings((address(A1),), 30, NOW) == []


def test_warning_from_the_verified_chain_leaf() -> None:
    leaf = cert("www.corp.example", NOW + 10 * DAY)
    result = address(A1, tls_result=tls(A1, chain=(leaf, INTERMEDIATE)))
    warnings = expiry_warnings((result,), 30, NOW)
    assert summary(warnings) == [
        (
            "cert_expiring_soon",
            "leaf 'www.corp.example' expires on 2026-06-11 12:00 UTC (in 10 days; warning at 30 days)",
        ),
    ]
    assert warnings[0].address == A1


def test_warning_names_a_non_leaf_certificate() -> None:
    intermediate = cert("Corp Intermediate CA", NOW + 5 * DAY, issuer="Corp Root CA")
    result = address(A1, tls_result=tls(A1, chain=(LEAF, intermediate)))
    assert summary(expiry_warnings((result,), 7.5, NOW)) == [
        (
            "cert_expiring_soon",
            "certificate 'Corp Intermediate CA' expires on 2026-06-06 12:00 UTC "
            "(in 5 days; warning at 7.5 days)",
        ),
    ]


@pytest.mark.parametrize(
    ("left", "warned"),
    # Negative: only an unverified chain (insecure_skip_verify) can be in use when expired.
    [(30 * DAY, False), (30 * DAY - 1, True), (1, True), (0, True), (-1, True)],
)
def test_warning_boundary(left: float, warned: bool) -> None:
    leaf = cert("www.corp.example", NOW + left)
    result = address(A1, tls_result=tls(A1, chain=(leaf, INTERMEDIATE)))
    assert bool(expiry_warnings((result,), 30, NOW)) is warned


def test_expired_chain_without_verification_still_warns() -> None:
    leaf = cert("www.corp.example", NOW - 2 * DAY)
    warnings = expiry_warnings((address(A1, tls_result=tls(A1, chain=(leaf,))),), 30, NOW)
    assert [w.detail for w in warnings] == [
        "leaf 'www.corp.example' expired on 2026-05-30 12:00 UTC "
        "(2 days ago; verification is off; warning at 30 days)"
    ]


def test_zero_warning_days_never_warns() -> None:
    leaf = cert("www.corp.example", NOW + 1)
    assert expiry_warnings((address(A1, tls_result=tls(A1, chain=(leaf,))),), 0, NOW) == []


def test_extra_expired_certificate_outside_the_verified_chain_does_not_warn() -> None:
    old_cross_sign = cert("Corp Root CA", NOW - 5 * DAY, issuer="Old Corp Root CA")
    result = address(
        A1,
        tls_result=tls(
            A1, chain=(LEAF, INTERMEDIATE, old_cross_sign), verified_chain=(LEAF, INTERMEDIATE, ROOT)
        ),
    )
    assert expiry_warnings((result,), 30, NOW) == []


def test_extra_expiring_certificate_outside_the_verified_chain_does_not_warn() -> None:
    cross_sign = cert("Corp Root CA", NOW + 3 * DAY, issuer="Old Corp Root CA")
    result = address(
        A1,
        tls_result=tls(A1, chain=(LEAF, INTERMEDIATE, cross_sign), verified_chain=(LEAF, INTERMEDIATE, ROOT)),
    )
    assert expiry_warnings((result,), 30, NOW) == []


def test_without_verification_the_chain_as_sent_counts() -> None:
    leaf = cert("www.corp.example", NOW + 2 * DAY)
    result = address(A1, tls_result=tls(A1, chain=(leaf,), verified_chain=()))
    assert summary(expiry_warnings((result,), 30, NOW)) == [
        (
            "cert_expiring_soon",
            "leaf 'www.corp.example' expires on 2026-06-03 12:00 UTC (in 2 days; warning at 30 days)",
        ),
    ]


def test_failed_verification_does_not_warn() -> None:
    leaf = cert("www.corp.example", NOW + 2 * DAY)
    failure = Failure(Reason.CERT_UNTRUSTED, "untrusted", A1)
    result = address(A1, tls_result=tls(A1, chain=(leaf,), failures=(failure,)), failures=(failure,))
    assert expiry_warnings((result,), 30, NOW) == []


def test_each_address_warns_for_itself() -> None:
    soon = cert("www.corp.example", NOW + 3 * DAY)
    results = (
        address(A1, tls_result=tls(A1, chain=(soon,))),
        address(A2),
        address(A3, tls_result=tls(A3, chain=(soon,))),
    )
    assert [w.address for w in expiry_warnings(results, 30, NOW)] == [A1, A3]


# --------------------------------------------------------------------------- certificates


def test_same_leaf_everywhere_is_no_difference() -> None:
    assert certificate_differences((address(A1), address(A2))) == []


def test_different_leaves() -> None:
    renewed = cert("www.corp.example", NOW + 90 * DAY, fingerprint="ab" * 32)
    old = cert("www.corp.example", NOW + 10 * DAY, fingerprint="cd" * 32)
    results = (
        address(A1, tls_result=tls(A1, chain=(renewed, INTERMEDIATE))),
        address(A2, tls_result=tls(A2, chain=(old, INTERMEDIATE))),
        address(A3, tls_result=tls(A3, chain=(renewed, INTERMEDIATE))),
    )
    findings = certificate_differences(results)
    assert summary(findings) == [
        (
            "cert_differs_between_addresses",
            "2 different leaf certificates: "
            "10.0.0.1: 'www.corp.example' sha256 abababababab…, expires 2026-08-30 12:00 UTC; "
            "10.0.0.2: 'www.corp.example' sha256 cdcdcdcdcdcd…, expires 2026-06-11 12:00 UTC; "
            "10.0.0.3: 'www.corp.example' sha256 abababababab…, expires 2026-08-30 12:00 UTC",
        ),
    ]
    assert findings[0].severity is Status.WARNING


def test_addresses_without_a_certificate_are_not_compared() -> None:
    refused = Failure(Reason.TCP_REFUSED, "connection refused (port 443)", A2)
    no_tls = builders.unconnected_tls(A2, refused)
    assert certificate_differences((address(A1), address(A2, tls_result=no_tls, failures=(refused,)))) == []


# --------------------------------------------------------------------------- evaluate


def test_evaluate_all_ok() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=2, web_2=2)), address(A2, served(web_1=2, web_2=2)))
    assert evaluate(dns_result(), results, target, NOW) == ()


def test_evaluate_collects_in_stage_order_and_takes_the_worst() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"], cert_expiry_warning_days=30)
    failover = Failure(
        Reason.DNS_RESOLVER_FAILOVER,
        "resolver 10.0.0.53:53 failed (timeout); the answer came from 10.0.1.53:53",
    )
    status = Failure(Reason.HTTP_STATUS, "4 of 4 requests: status 503 (expected 200-299)", A2)
    soon = cert("www.corp.example", NOW + 3 * DAY, fingerprint="ef" * 32)
    results = (
        address(A1, served(web_1=4), tls_result=tls(A1, chain=(soon, INTERMEDIATE))),
        address(A2, [None] * 4, failures=(status,)),
    )
    failures = evaluate(dns_result((failover,)), results, target, NOW)
    verdict = status_of(failures)
    assert [f.reason for f in failures] == [
        Reason.DNS_RESOLVER_FAILOVER,
        Reason.HTTP_STATUS,
        Reason.CERT_EXPIRING_SOON,
        Reason.CERT_DIFFERS_BETWEEN_ADDRESSES,
        Reason.BACKEND_MISSING,
    ]
    assert verdict is Status.CRITICAL


def test_evaluate_warnings_only_is_a_warning() -> None:
    target = backend_target(expect_backends=["web-1", "web-2"])
    results = (address(A1, served(web_1=2, web_2=2, web_3=1)),)
    failures = evaluate(dns_result(), results, target, NOW)
    verdict = status_of(failures)
    assert [f.reason for f in failures] == [Reason.BACKEND_UNEXPECTED]
    assert verdict is Status.WARNING


def test_status_of() -> None:
    assert status_of([]) is Status.OK
    warning = Failure(Reason.CERT_EXPIRING_SOON, "soon")
    critical = Failure(Reason.TCP_REFUSED, "refused", A1)
    assert status_of([warning]) is Status.WARNING
    assert status_of([warning, critical, warning]) is Status.CRITICAL


def test_address_rows_carry_the_cross_address_warnings() -> None:
    soon = cert("www.corp.example", NOW + 5 * DAY)
    addresses = (address(A1, tls_result=tls(A1, (soon, INTERMEDIATE))), address(A2))
    failures = evaluate(dns_result(), addresses, facts(url=URL), NOW)
    status = status_of(failures)
    assert status is Status.WARNING
    assert [a.status for a in addresses] == [Status.OK, Status.OK]  # as the stages returned them

    rows = with_cycle_findings(addresses, failures)

    assert [r.status for r in rows] == [Status.WARNING, Status.OK]
    assert [f.reason for f in rows[0].failures] == [Reason.CERT_EXPIRING_SOON]
    assert rows[0].failures[0].address == A1
    assert rows[1] is addresses[1]


def test_differing_leaves_mark_every_address_that_sent_one() -> None:
    other = cert("www.corp.example", NOW + 90 * DAY, fingerprint="cd" * 32)
    silent = builders.address_result(
        A3, builders.unconnected_tls(A3, Failure(Reason.TCP_REFUSED, "refused", A3))
    )
    addresses = (address(A1), address(A2, tls_result=tls(A2, (other, INTERMEDIATE))), silent)
    failures = evaluate(dns_result(), addresses, facts(url=URL), NOW)

    rows = with_cycle_findings(addresses, failures)

    assert [r.status for r in rows] == [Status.WARNING, Status.WARNING, Status.CRITICAL]
    for row in rows[:2]:
        differs = [f for f in row.failures if f.reason is Reason.CERT_DIFFERS_BETWEEN_ADDRESSES]
        assert len(differs) == 1 and differs[0].address == row.address
        assert differs[0].detail.startswith("2 different leaf certificates")
    assert [f.reason for f in rows[2].failures] == [Reason.TCP_REFUSED]


def test_target_wide_findings_stay_with_the_target() -> None:
    addresses = (address(A1, served(web_1=4)), address(A2, served(web_1=4)))
    target = backend_target(expect_backends=["web-1", "web-2"])
    failures = evaluate(dns_result(), addresses, target, NOW)
    status = status_of(failures)
    assert status is Status.CRITICAL and [f.reason for f in failures] == [Reason.BACKEND_MISSING]
    assert with_cycle_findings(addresses, failures) == addresses


# --------------------------------------------------------------------------- certificate facts


def test_a_completed_handshake_without_a_leaf_is_never_ok() -> None:
    lost = builders.tls_result(A1, (), (ROOT,), verified=True)  # the leaf vanished
    findings = evaluate(dns_result(), (address(A1, tls_result=lost),), facts(url=URL), NOW)
    status = status_of(findings)
    assert status is Status.CRITICAL
    assert [(f.reason, f.address) for f in findings] == [(Reason.INTERNAL_ERROR, A1)]
    assert "no leaf certificate or expiry" in findings[0].detail and "TLSv1.3" in findings[0].detail


def test_a_verified_handshake_without_a_verified_chain_is_never_ok() -> None:
    lost = builders.tls_result(A1, (LEAF, INTERMEDIATE), (), verified=True)
    findings = evaluate(dns_result(), (address(A1, tls_result=lost),), facts(url=URL), NOW)
    status = status_of(findings)
    assert status is Status.CRITICAL
    assert [f.reason for f in findings] == [Reason.INTERNAL_ERROR]
    assert "no verified chain expiry" in findings[0].detail


@pytest.mark.parametrize(
    "tls_result",
    [
        builders.tls_result(A1, (LEAF, INTERMEDIATE), (LEAF, INTERMEDIATE, ROOT)),  # verified
        builders.tls_result(A1, (LEAF,), (), verified=False),  # insecure_skip_verify
        builders.unconnected_tls(A1, Failure(Reason.TCP_REFUSED, "connection refused", A1)),
        builders.tls_result(
            A1, (), (), verified=False, version="TLSv1.2", failures=(Failure(Reason.CERT_UNTRUSTED, "x", A1),)
        ),
    ],
    ids=["verified", "skip-verify", "refused", "failed"],
)
def test_complete_facts_or_a_failure_that_says_why_are_not_flagged(tls_result: TlsResult) -> None:
    findings = evaluate(dns_result(), (address(A1, tls_result=tls_result),), facts(url=URL), NOW)
    assert Reason.INTERNAL_ERROR not in {f.reason for f in findings}


def test_warnings_at_the_tls_stage_do_not_hide_the_expiry_without_verification() -> None:
    leaf = cert("www.corp.example", NOW + 2 * DAY)
    weak = Failure(Reason.TLS_WEAK_CIPHER, "negotiated AES128-GCM-SHA256", A1)
    result = address(A1, tls_result=builders.tls_result(A1, (leaf,), (), verified=False, failures=(weak,)))
    assert [w.reason for w in expiry_warnings((result,), 30, NOW)] == [Reason.CERT_EXPIRING_SOON]
