"""Certificate cases from the field: odd chains, wildcards, name forms, expiry during a run."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from probe.daemon.metrics import ProbeCollector
from probe.daemon.store import ResultStore
from probe.lab import Pki
from probe.lab.pki import der_to_pem, issue, resign
from probe.model.reasons import Reason, Status
from probe.stages.certs import format_time
from tests.support.curl import CERTIFICATE_REFUSED, curl_get
from tests.support.helpers import make_plan, probe_cli, reasons, run

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


def test_a_leaf_for_another_name_that_has_expired_is_reported_for_both(
    scene: Any, pki: Pki, ca_file: Path
) -> None:
    name = fresh_name()
    expired_on = NOW.replace(microsecond=0) - dt.timedelta(days=10)
    leaf = pki.leaf("other.corp.test", not_before=expired_on - dt.timedelta(days=90), not_after=expired_on)
    s = scene(hostname=name, cert=leaf)
    result = run(s.target)

    # OpenSSL stops at the name; the dates are read from the chain it built and trusted.
    assert result.status is Status.CRITICAL
    mismatch, expired = result.failures
    assert mismatch.reason is Reason.CERT_HOSTNAME_MISMATCH
    assert mismatch.detail == f"certificate is valid for other.corp.test, not {name}"
    assert expired.reason is Reason.CERT_EXPIRED and expired.severity is mismatch.severity
    assert expired.detail.startswith(
        f"leaf 'other.corp.test' (depth 0) expired on {format_time(expired_on.timestamp())} (10 days ago); "
    )
    assert expired.detail.endswith(
        "; found beside the name mismatch (OpenSSL reports only the name, curl only the dates)"
    )
    node = s.nodes[0]
    assert {str(f.address) for f in result.failures} == {node.address}
    # curl too reports one of the two: the expiry, and not the name.
    curl = curl_get(ca_file, name, node.address, node.port)
    assert curl.returncode == CERTIFICATE_REFUSED
    assert curl.stderr.splitlines()[0] == "curl: (60) SSL certificate problem: certificate has expired"
    assert "other.corp.test" not in curl.stderr and "match" not in curl.stderr


def test_hostname_with_trailing_dot_and_upper_case(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    s = scene(hostname=name, cert=pki.leaf(name))
    url = s.target["url"].replace(name, name.upper() + ".")
    result = run({**s.target, "url": url})

    assert result.status is Status.OK, result.failures
    assert result.target.hostname == name
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
    assert result.target.insecure_skip_verify is True
    tls = result.addresses[0].tls
    assert tls.verified is False and tls.leaf is not None and tls.leaf.common_name == name
    assert result.backend_counts  # HTTP went ahead


# --------------------------------------------------------------------------- facts never vanish
# Certificates OpenSSL, curl and browsers accept but cryptography (45+) refuses or warns
# about. The lab builds them with same-length placeholders and re-signs (lab.pki.resign).

PLACEHOLDER = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp-IT Ops.", _type=_ASN1Type.PrintableString)
ODD_NAME = {b"Corp-IT Ops.": b"Corp_IT Ops!"}  # '_' and '!' are not PrintableString characters


def printable_string_chain(pki: Pki, host: str, days: float, root: Pki | None = None) -> tuple[Any, bytes]:
    """An intermediate ``O=Corp_IT Ops!`` (PrintableString) and a leaf below it: (leaf, chain PEM)."""
    anchor = (root or pki).root
    intermediate = issue("Odd Intermediate CA", anchor, ca=True, subject_extra=(PLACEHOLDER,))
    leaf = issue(host, intermediate, dns_names=(host,), days=days)
    chain = der_to_pem(resign(leaf.cert, intermediate.key, ODD_NAME)) + der_to_pem(
        resign(intermediate.cert, anchor.key, ODD_NAME)
    )
    return leaf, chain


def served_leaf(pki: Pki, host: str, patches: dict[bytes, bytes], **kwargs: Any) -> tuple[Any, bytes]:
    """A leaf from the session intermediate with ``patches`` applied: (leaf, chain PEM)."""
    leaf = issue(host, pki.intermediate, dns_names=(host,), **kwargs)
    return leaf, der_to_pem(resign(leaf.cert, pki.intermediate.key, patches)) + pki.intermediate.cert_pem


def assert_leaf_facts(result: Any, host: str, not_after: float) -> None:
    """The invariant: every completed handshake yields the leaf and the expiries."""
    for address in result.addresses:
        tls = address.tls
        assert tls.leaf is not None and tls.leaf.common_name == host and tls.leaf.dns_names == (host,)
        assert tls.leaf.not_after_timestamp == not_after
        assert tls.earliest_expiry_timestamp == not_after
        assert tls.verified_chain_expiry_timestamp == not_after


def test_printable_string_intermediate_keeps_the_leaf_and_warns_of_its_expiry(
    scene: Any, pki: Pki, ca_file: Path
) -> None:
    name = fresh_name()
    leaf, chain = printable_string_chain(pki, name, days=5)
    s = scene(hostname=name, cert=leaf, chain_pem=chain)
    start = time.monotonic()
    result = run(s.target)
    not_after = leaf.cert.not_valid_after_utc.timestamp()

    assert time.monotonic() - start < 3
    assert result.status is Status.WARNING, result.failures
    assert reasons(result) == {Reason.CERT_UNPARSED.value, Reason.CERT_EXPIRING_SOON.value}
    soon = next(f for f in result.failures if f.reason is Reason.CERT_EXPIRING_SOON)
    assert f"leaf '{name}' expires on {format_time(not_after)}" in soon.detail
    unparsed = [f.detail for f in result.failures if f.reason is Reason.CERT_UNPARSED]
    assert len(unparsed) == 2  # the leaf (its issuer holds the name) and the intermediate
    assert any(d.startswith(f"leaf '{name}'") and "O=Corp_IT Ops!" in d for d in unparsed)
    assert any(d.startswith("intermediate 'Odd Intermediate CA'") for d in unparsed)
    assert all("PrintableString" in d for d in unparsed)
    assert_leaf_facts(result, name, not_after)
    tls = result.addresses[0].tls
    assert tls.verified and [c.common_name for c in tls.verified_chain] == [
        name,
        "Odd Intermediate CA",
        "probe test Root CA",
    ]
    assert (
        tls.leaf is not None
        and tls.leaf.parse_error
        and tls.leaf.issuer == "CN=Odd Intermediate CA,O=Corp_IT Ops!"
    )
    assert [a.status_code for a in result.addresses[0].attempts] == [200, 200, 200, 200]
    # Metrics carry the leaf's facts, not the root's date.
    store = ResultStore([result.target.name], time.time())
    store.record(result)
    registry = CollectorRegistry()
    registry.register(ProbeCollector(store))
    labels = {"target": result.target.name, "address": str(tls.address)}
    assert registry.get_sample_value("probe_ssl_earliest_cert_expiry", labels) == not_after
    assert registry.get_sample_value("probe_ssl_last_chain_expiry_timestamp_seconds", labels) == not_after
    # curl agrees the chain is good.
    node = s.nodes[0]
    assert curl_get(ca_file, name, node.address, node.port).ok


def test_printable_string_chain_under_an_unknown_root_still_names_it(scene: Any, pki: Pki) -> None:
    name = fresh_name()
    stranger = Pki.create("stranger")
    leaf, chain = printable_string_chain(pki, name, days=30, root=stranger)
    s = scene(hostname=name, cert=leaf, chain_pem=chain)
    result = run(s.target)

    assert result.status is Status.CRITICAL
    assert result.duration_seconds < 3
    assert reasons(result) == {Reason.CERT_UNTRUSTED.value, Reason.CERT_UNPARSED.value}
    untrusted = next(f for f in result.failures if f.reason is Reason.CERT_UNTRUSTED)
    # The names from OpenSSL's decode still chain: leaf → odd intermediate → unknown root.
    assert "ends at 'Odd Intermediate CA', whose issuer 'stranger Root CA'" in untrusted.detail
    tls = result.addresses[0].tls
    assert tls.leaf is not None and tls.leaf.common_name == name
    assert tls.leaf.not_after_timestamp == leaf.cert.not_valid_after_utc.timestamp()


def test_explicitly_encoded_default_in_the_leaf_keeps_its_facts(scene: Any, pki: Pki) -> None:
    # basicConstraints marked "critical FALSE" explicitly: BER allows it, DER (X.690 §11.5)
    # does not; OpenSSL accepts it, cryptography refuses it (EncodedDefault).
    name = fresh_name()
    leaf, chain = served_leaf(
        pki, name, {bytes.fromhex("0603551d130101ff"): bytes.fromhex("0603551d13010100")}
    )
    s = scene(hostname=name, cert=leaf, chain_pem=chain)
    result = run(s.target)

    assert result.status is Status.WARNING, result.failures
    assert reasons(result) == {Reason.CERT_UNPARSED.value}
    assert result.duration_seconds < 3
    assert "EncodedDefault" in result.failures[0].detail
    assert result.failures[0].detail.startswith(f"leaf '{name}'")
    assert_leaf_facts(result, name, leaf.cert.not_valid_after_utc.timestamp())
    tls = result.addresses[0].tls
    assert tls.leaf is not None and tls.leaf.serial == format(leaf.cert.serial_number, "x")
    assert tls.chain[1].parse_error is None and tls.chain[1].key == "EC P-256"


@pytest.mark.parametrize(
    ("patch", "note"),
    [
        ((bytes.fromhex("0123456789abcdef"), bytes.fromhex("f123456789abcdef")), "serial number is negative"),
        ((bytes.fromhex("a003020102020101"), bytes.fromhex("a003020102020100")), "serial number is zero"),
    ],
    ids=["negative", "zero"],
)
def test_odd_serial_is_ok_with_a_note_and_nothing_on_stderr(
    scene: Any, pki: Pki, ca_file: Path, dns: Any, patch: tuple[bytes, bytes], note: str
) -> None:
    name = fresh_name()
    serial = 0x0123456789ABCDEF if note.endswith("negative") else 1
    leaf, chain = served_leaf(pki, name, dict([patch]), serial=serial)
    s = scene(hostname=name, cert=leaf, chain_pem=chain)
    common = [
        "check",
        s.target["url"],
        "--resolver",
        dns.where,
        "--ca-file",
        str(ca_file),
        "--expect-network",
        "127.0.0.0/8",
    ]

    text = probe_cli(*common, "--color", "never")
    assert text.stderr == ""
    assert text.returncode == 0, text.stdout
    assert "Status: OK" in text.stdout and f"note: {note} (RFC 5280 §4.1.2.2" in text.stdout

    as_json = probe_cli(*common, "--json")
    assert as_json.stderr == ""
    assert as_json.returncode == 0
    document = json.loads(as_json.stdout)
    assert document["status"] == "ok"
    leaf_json = document["targets"][0]["addresses"][0]["tls"]["leaf"]
    assert leaf_json["notes"] == [f"{note} (RFC 5280 §4.1.2.2 requires a positive integer)"]
    assert leaf_json["parse_error"] is None
    assert leaf_json["not_after_timestamp"] == leaf.cert.not_valid_after_utc.timestamp()
    assert document["targets"][0]["duration_seconds"] < 3


def test_odd_serial_with_ocsp_stapling_prints_nothing_on_stderr(
    scene: Any, pki: Pki, ca_file: Path, dns: Any
) -> None:
    # The stapling handshake loads the leaf with cryptography a second time (pyOpenSSL's
    # as_cryptography); its CryptographyDeprecationWarning must not reach the terminal.
    name = fresh_name()
    leaf, chain = served_leaf(
        pki,
        name,
        {bytes.fromhex("0123456789abcdef"): bytes.fromhex("f123456789abcdef")},
        serial=0x0123456789ABCDEF,
    )
    s = scene(hostname=name, cert=leaf, chain_pem=chain)
    common = ["check", s.target["url"], "--resolver", dns.where, "--ca-file", str(ca_file)]
    common += ["--expect-network", "127.0.0.0/8", "--ocsp", "staple"]

    text = probe_cli(*common, "--color", "never")
    assert text.stderr == ""
    assert text.returncode == 0, text.stdout
    assert "Status: OK" in text.stdout and "note: serial number is negative" in text.stdout
    assert "ocsp no staple (the server sent no OCSP response)" in text.stdout

    as_json = probe_cli(*common, "--json")
    assert as_json.stderr == ""
    document = json.loads(as_json.stdout)
    address = document["targets"][0]["addresses"][0]
    assert document["status"] == "ok"
    assert address["ocsp"]["stapled"] is False and address["ocsp"]["error"] is None
    assert document["targets"][0]["duration_seconds"] < 3
