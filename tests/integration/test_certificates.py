"""Certificate cases from the field: odd chains, wildcards, name forms, expiry during a run."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

import pytest

from probe.lab import Pki
from probe.lab.pki import issue
from probe.reasons import Reason, Status
from tests.helpers import make_plan, reasons, run

NOW = dt.datetime.now(dt.UTC)
_N = itertools.count(1)


def fresh_name() -> str:
    return f"c{next(_N)}.certs.corp.example"


def test_chain_sent_out_of_order_verifies_and_is_reported_as_sent(scene: Any, pki: Pki) -> None:
    lower = issue("probe test Second Intermediate CA", pki.intermediate, ca=True)
    name = fresh_name()
    leaf = issue(name, lower, dns_names=(name,))
    # Sent: leaf, then the upper intermediate before the lower one.
    chain = leaf.cert_pem + pki.intermediate.cert_pem + lower.cert_pem
    s = scene(hostname=name, cert=leaf, chain_pem=chain)
    result = run(s.target)

    assert result.status is Status.OK, result.failures
    tls = result.addresses[0].tls
    assert [c.common_name for c in tls.chain] == [
        name,
        "probe test Intermediate CA",
        "probe test Second Intermediate CA",
    ]
    assert [c.common_name for c in tls.verified_chain] == [
        name,
        "probe test Second Intermediate CA",
        "probe test Intermediate CA",
        "probe test Root CA",
    ]


def test_extra_expired_cross_signed_certificate_does_not_count(scene: Any, pki: Pki) -> None:
    old_root = issue("probe test Old Root CA", ca=True, not_before=NOW - dt.timedelta(days=3000))
    cross = issue(
        "probe test Intermediate CA",
        old_root,
        ca=True,
        key=pki.intermediate.key,
        not_before=NOW - dt.timedelta(days=800),
        not_after=NOW - dt.timedelta(days=30),
    )
    name = fresh_name()
    leaf = pki.leaf(name)
    s = scene(hostname=name, cert=leaf, chain_pem=leaf.cert_pem + pki.intermediate.cert_pem + cross.cert_pem)
    result = run({**s.target, "cert_expiry_warning_days": 30})

    # Like blackbox_exporter: the earliest expiry as sent is in the past, but the chain
    # that verified (and so the verdict and the expiry warning) does not contain it.
    assert result.status is Status.OK, result.failures
    tls = result.addresses[0].tls
    assert len(tls.chain) == 3
    assert tls.earliest_expiry_timestamp == pytest.approx((NOW - dt.timedelta(days=30)).timestamp(), abs=2)
    assert tls.verified_chain_expiry_timestamp == leaf.cert.not_valid_after_utc.timestamp()


@pytest.mark.parametrize(
    ("san", "host", "reason", "words"),
    [
        ("*.wild.corp.example", "www.wild.corp.example", None, ""),
        ("*.wild.corp.example", "a.b.wild.corp.example", Reason.CERT_HOSTNAME_MISMATCH, "exactly one label"),
        (
            "*.wild.corp.example",
            "wild.corp.example",
            Reason.CERT_HOSTNAME_MISMATCH,
            "covers names below wild.corp.example but never wild.corp.example itself: RFC 6125 §6.4.3",
        ),
        ("w*.wild.corp.example", "www.wild.corp.example", Reason.CERT_HOSTNAME_MISMATCH, "RFC 6125"),
        ("*.example", "corp.example", Reason.CERT_HOSTNAME_MISMATCH, "RFC 6125"),
    ],
    ids=["one-label", "two-labels", "bare-domain", "partial", "too-few-labels"],
)
def test_wildcards_as_rfc_6125_and_browsers_match_them(
    scene: Any, pki: Pki, san: str, host: str, reason: Reason | None, words: str
) -> None:
    s = scene(hostname=host, cert=issue(None, pki.intermediate, dns_names=(san,)))
    result = run(s.target)
    if reason is None:
        assert result.status is Status.OK, result.failures
    else:
        assert reasons(result) == {reason.value}
        assert words in result.failures[0].detail


def test_hostname_with_trailing_dot_and_upper_case(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    s = scene(hostname=name, cert=pki.leaf(name))
    url = s.target["url"].replace(name, name.upper() + ".")
    result = run({**s.target, "url": url})

    assert result.status is Status.OK, result.failures
    assert result.hostname == name
    assert s.nodes[0].sni_names[-1] == name


def test_leaf_that_expires_during_the_run(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    expiry = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    s = scene(hostname=name, cert=pki.leaf(name, not_after=expiry))
    target_plan = make_plan(**s.target)

    first = run(target_plan)
    assert first.status is Status.WARNING
    assert reasons(first) == {Reason.CERT_EXPIRING_SOON.value}

    time.sleep(max(0.0, expiry.timestamp() - time.time()) + 1.1)
    second = run(target_plan)
    assert second.status is Status.CRITICAL
    assert reasons(second) == {Reason.CERT_EXPIRED.value}
    assert second.addresses[0].tls.leaf is not None
    assert second.addresses[0].tls.leaf.not_after_timestamp == expiry.timestamp()


def test_insecure_skip_verify_probes_and_says_so(scene: Any) -> None:
    name = fresh_name()
    s = scene(hostname=name, cert=issue(name, None, dns_names=(name,)))  # self-signed
    target = {k: v for k, v in s.target.items() if k != "ca_file"}
    assert reasons(run(target)) == {Reason.CERT_SELF_SIGNED.value}

    result = run({**target, "insecure_skip_verify": True})
    assert result.status is Status.OK, result.failures
    assert result.insecure_skip_verify is True
    tls = result.addresses[0].tls
    assert tls.verified is False and tls.leaf is not None and tls.leaf.common_name == name
    assert result.backend_counts  # HTTP went ahead
