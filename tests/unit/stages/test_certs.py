"""Certificate logic on real certificates from probe.lab.pki; ``now`` is always fixed."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from probe.lab.pki import Issued, KeyType, Pki, der_to_pem, issue, resign
from probe.model.reasons import Reason
from probe.model.results import CertInfo
from probe.stages.certs import (
    cert_info,
    cert_info_from_openssl,
    classify_verify_error,
    common_name_of,
    dates_beside_a_name_mismatch,
    explain_hostname_mismatch,
    explain_unparsed,
    hostname_matches,
    path_from_leaf,
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


NOW = at(2026, 6, 1, 12, 0).timestamp()
HOST = "www.corp.example"


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def info(issued: Issued) -> CertInfo:
    return cert_info(der(issued))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create("unit")


@pytest.fixture(scope="module")
def dated() -> dict[str, CertInfo]:
    """A root, an intermediate and leaves with fixed dates around NOW."""
    root = issue("Corp Root CA", ca=True, not_before=at(2025, 1, 1), not_after=at(2035, 1, 1))
    intermediate = issue(
        "Corp Intermediate CA", root, ca=True, not_before=at(2025, 1, 1), not_after=at(2030, 1, 1)
    )
    expired_intermediate = issue(
        "Corp Old Intermediate CA", root, ca=True, not_before=at(2025, 1, 1), not_after=at(2026, 5, 20, 8, 30)
    )

    def leaf(issuer: Issued, **kwargs: object) -> CertInfo:
        kwargs.setdefault("not_before", at(2026, 3, 1))
        kwargs.setdefault("not_after", at(2026, 9, 1))
        return info(issue(HOST, issuer, dns_names=(HOST,), **kwargs))  # type: ignore[arg-type]

    return {
        "root": info(root),
        "intermediate": info(intermediate),
        "expired_intermediate": info(expired_intermediate),
        "leaf": leaf(intermediate),
        "leaf_under_expired": leaf(expired_intermediate),
        "expired_leaf": leaf(intermediate, not_before=at(2026, 1, 1), not_after=at(2026, 5, 29, 12, 0)),
        "future_leaf": leaf(intermediate, not_before=at(2026, 6, 4, 6, 15), not_after=at(2026, 12, 1)),
        "self_signed": info(
            issue(HOST, dns_names=(HOST,), not_before=at(2026, 1, 1), not_after=at(2027, 1, 1))
        ),
        "other_root": info(
            issue("Other Root CA", ca=True, not_before=at(2025, 1, 1), not_after=at(2035, 1, 1))
        ),
    }


# --------------------------------------------------------------------------- cert_info


def test_cert_info_of_a_leaf(pki: Pki) -> None:
    issued = pki.leaf("www.corp.example", "api.corp.example", ip_addresses=("10.0.0.1", "fd00::1"))
    cert = info(issued)
    assert cert.subject == "CN=www.corp.example"
    assert cert.issuer == "CN=unit Intermediate CA"
    assert cert.common_name == "www.corp.example"
    assert cert.dns_names == ("www.corp.example", "api.corp.example")
    assert cert.ip_addresses == ("10.0.0.1", "fd00::1")
    assert cert.is_ca is False
    assert cert.self_issued is False
    assert int(cert.serial, 16) == issued.cert.serial_number
    assert cert.serial == cert.serial.lower() and not cert.serial.startswith("0x")
    assert cert.sha256_fingerprint == hashlib.sha256(der(issued)).hexdigest()
    assert cert.sha256_fingerprint == issued.cert.fingerprint(hashes.SHA256()).hex()
    assert cert.key == "EC P-256"
    assert cert.signature_algorithm == "ecdsa-with-SHA256"


def test_cert_info_of_root_and_intermediate(pki: Pki) -> None:
    root, intermediate = info(pki.root), info(pki.intermediate)
    assert root.subject == root.issuer == "CN=unit Root CA"
    assert root.is_ca is True and root.self_issued is True
    assert root.dns_names == () and root.ip_addresses == ()
    assert intermediate.subject == "CN=unit Intermediate CA"
    assert intermediate.issuer == "CN=unit Root CA"
    assert intermediate.is_ca is True and intermediate.self_issued is False


def test_cert_info_timestamps() -> None:
    cert = info(issue("t.corp.example", not_before=at(2026, 3, 1, 8, 30), not_after=at(2026, 9, 1)))
    assert cert.not_before_timestamp == 1772353800.0
    assert cert.not_after_timestamp == 1788220800.0


def test_cert_info_of_an_empty_subject() -> None:
    cert = info(issue(None, dns_names=(HOST,)))
    assert cert.subject == ""
    assert cert.common_name is None


@pytest.mark.parametrize(
    ("key_type", "key", "signature"),
    [
        ("ec-p256", "EC P-256", "ecdsa-with-SHA256"),
        ("ec-p384", "EC P-384", "ecdsa-with-SHA256"),
        ("rsa-2048", "RSA 2048", "sha256WithRSAEncryption"),
        ("ed25519", "Ed25519", "ed25519"),
    ],
)
def test_cert_info_key_description(key_type: KeyType, key: str, signature: str) -> None:
    cert = info(issue("k.corp.example", key_type=key_type))
    assert cert.key == key
    assert cert.signature_algorithm == signature


def test_cert_info_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        cert_info(b"\x30\x03\x02\x01\x00")


# --------------------------------------------------------------------------- hostnames


@pytest.mark.parametrize(
    ("pattern", "hostname", "matches"),
    [
        ("www.corp.example", "www.corp.example", True),
        ("WWW.Corp.Example", "www.corp.example", True),
        ("www.corp.example", "WWW.CORP.EXAMPLE", True),
        ("www.corp.example.", "www.corp.example", True),
        ("www.corp.example", "www.corp.example.", True),
        ("www.corp.example", "api.corp.example", False),
        ("www.corp.example", "corp.example", False),
        ("*.corp.example", "www.corp.example", True),
        ("*.Corp.Example", "API.corp.example.", True),
        ("*.corp.example", "corp.example", False),
        ("*.corp.example", "a.b.corp.example", False),
        ("*.corp.example", ".corp.example", False),
        ("w*.corp.example", "www.corp.example", False),
        ("*w.corp.example", "www.corp.example", False),
        ("*.example", "corp.example", False),
        ("*", "localhost", False),
        ("www.*.example", "www.corp.example", False),
        ("*.*.example", "www.corp.example", False),
    ],
)
def test_hostname_matches(pattern: str, hostname: str, matches: bool) -> None:
    assert hostname_matches(pattern, hostname) is matches


def test_explain_lists_the_names() -> None:
    leaf = info(
        issue(
            "api.corp.example",
            dns_names=("api.corp.example", "*.api.corp.example"),
            ip_addresses=("10.0.0.1",),
        )
    )
    assert explain_hostname_mismatch(leaf, HOST) == (
        "certificate is valid for api.corp.example, *.api.corp.example, 10.0.0.1, not www.corp.example"
    )


def test_explain_an_address_against_other_addresses_and_names() -> None:
    leaf = info(issue("nlb", dns_names=("nlb.corp.example",), ip_addresses=("10.0.0.1", "fd00::1")))
    assert explain_hostname_mismatch(leaf, "10.0.0.2") == (
        "certificate is valid for the addresses 10.0.0.1, fd00::1, not 10.0.0.2 "
        "(and the names nlb.corp.example)"
    )


def test_explain_an_address_only_in_the_cn() -> None:
    """OpenSSL's X509_check_ip reads iPAddress entries only; an address in the CN never counts."""
    leaf = info(issue("10.0.0.1"))
    assert explain_hostname_mismatch(leaf, "10.0.0.1").startswith(
        "certificate names 10.0.0.1 only as text (its CN 10.0.0.1), not as an iPAddress"
    )


def test_ip_address_mismatch_code_is_a_hostname_mismatch() -> None:
    leaf = info(issue("appliance", ip_addresses=("10.0.0.1",)))
    reason, detail = classify_verify_error(64, "IP address mismatch", (leaf,), "10.0.0.9", 0.0)
    assert reason is Reason.CERT_HOSTNAME_MISMATCH
    assert detail == "certificate is valid for the addresses 10.0.0.1, not 10.0.0.9"


def test_explain_cn_only() -> None:
    leaf = info(issue(HOST))
    assert explain_hostname_mismatch(leaf, HOST) == (
        "certificate names www.corp.example only in its subject CN and has no DNS name in a "
        "subjectAltName; browsers and Go ignore the CN (RFC 6125 §6.4.4), so probe does too"
    )


def test_explain_no_san_and_other_cn() -> None:
    leaf = info(issue("api.corp.example"))
    assert explain_hostname_mismatch(leaf, HOST) == (
        "certificate has no subjectAltName, so it is valid for no name, not www.corp.example"
    )


@pytest.mark.parametrize(
    ("pattern", "host"), [("w*.corp.example", HOST), ("*.example", "corp.example"), ("www.*.example", HOST)]
)
def test_explain_rejected_wildcard_form(pattern: str, host: str) -> None:
    leaf = info(issue("x", dns_names=(pattern,)))
    assert explain_hostname_mismatch(leaf, host) == (
        f"certificate name {pattern} is a wildcard form that RFC 6125 §6.4.3 and browsers reject, "
        f"so it does not cover {host}"
    )


def test_explain_valid_wildcard_one_label_too_deep() -> None:
    leaf = info(issue("x", dns_names=("*.corp.example",)))
    assert explain_hostname_mismatch(leaf, "a.www.corp.example") == (
        "certificate is valid for *.corp.example, not a.www.corp.example "
        "(a wildcard covers exactly one label, RFC 6125 §6.4.3)"
    )


def test_explain_wildcard_never_covers_the_apex() -> None:
    leaf = info(issue("x", dns_names=("*.corp.example", "www.corp.example")))
    assert explain_hostname_mismatch(leaf, "corp.example") == (
        "certificate is valid for *.corp.example, www.corp.example, not corp.example "
        "(*.corp.example covers names below corp.example but never corp.example itself: RFC 6125 §6.4.3)"
    )


def test_explain_cn_only_with_an_ip_san() -> None:
    leaf = info(issue(HOST, ip_addresses=("10.0.0.1",)))
    assert explain_hostname_mismatch(leaf, HOST).startswith(
        "certificate names www.corp.example only in its subject CN and has no DNS name"
    )


# --------------------------------------------------------------------------- chains


def test_path_from_leaf_orders_a_chain_sent_out_of_order(dated: dict[str, CertInfo]) -> None:
    leaf, intermediate, root = dated["leaf"], dated["intermediate"], dated["root"]
    assert path_from_leaf((leaf, root, intermediate)) == (leaf, intermediate, root)


def test_path_from_leaf_skips_an_unrelated_certificate(dated: dict[str, CertInfo]) -> None:
    leaf, intermediate, other = dated["leaf"], dated["intermediate"], dated["other_root"]
    assert path_from_leaf((leaf, other, intermediate)) == (leaf, intermediate)


def test_path_from_leaf_stops_at_a_self_issued_certificate(dated: dict[str, CertInfo]) -> None:
    assert path_from_leaf((dated["self_signed"], dated["root"])) == (dated["self_signed"],)
    assert path_from_leaf(()) == ()


def classify(code: int | None, chain: tuple[CertInfo, ...], message: str = "msg") -> tuple[Reason, str]:
    return classify_verify_error(code, message, chain, HOST, NOW)


def test_expired_intermediate_is_named(dated: dict[str, CertInfo]) -> None:
    chain = (dated["leaf_under_expired"], dated["expired_intermediate"])
    assert classify(10, chain, "certificate has expired") == (
        Reason.CERT_EXPIRED,
        "intermediate 'Corp Old Intermediate CA' (depth 1) expired on 2026-05-20 08:30 UTC (12 days ago); "
        "probe's clock: 2026-06-01 12:00 UTC",
    )


def test_expired_leaf_is_named(dated: dict[str, CertInfo]) -> None:
    chain = (dated["expired_leaf"], dated["intermediate"])
    assert classify(10, chain) == (
        Reason.CERT_EXPIRED,
        "leaf 'www.corp.example' (depth 0) expired on 2026-05-29 12:00 UTC (3 days ago); "
        "probe's clock: 2026-06-01 12:00 UTC",
    )


def test_expired_root_is_named(dated: dict[str, CertInfo]) -> None:
    old_root = replace(dated["root"], not_after_timestamp=at(2026, 6, 1, 9, 0).timestamp())
    chain = (dated["leaf"], dated["intermediate"], old_root)
    assert classify(10, chain) == (
        Reason.CERT_EXPIRED,
        "root 'Corp Root CA' (depth 2) expired on 2026-06-01 09:00 UTC (3 hours ago); "
        "probe's clock: 2026-06-01 12:00 UTC",
    )


def test_expired_without_an_expired_certificate_in_view(dated: dict[str, CertInfo]) -> None:
    assert classify(10, (dated["leaf"],), "certificate has expired") == (
        Reason.CERT_EXPIRED,
        "a certificate in the chain has expired (certificate has expired); "
        "probe's clock: 2026-06-01 12:00 UTC",
    )


def test_expired_trust_anchor_not_sent_is_found_among_the_anchors(dated: dict[str, CertInfo]) -> None:
    old_root = replace(dated["root"], not_after_timestamp=at(2026, 5, 31, 12, 0).timestamp())
    chain = (dated["leaf"], dated["intermediate"])
    anchors = (dated["other_root"], old_root)
    assert classify_verify_error(10, "certificate has expired", chain, HOST, NOW, anchors) == (
        Reason.CERT_EXPIRED,
        "root 'Corp Root CA' (depth 2, a trust anchor from the trust store, not sent by the server) "
        "expired on 2026-05-31 12:00 UTC (24 hours ago); probe's clock: 2026-06-01 12:00 UTC",
    )
    # A valid anchor of that name is not blamed.
    assert classify_verify_error(10, "x", chain, HOST, NOW, (dated["root"],))[1].startswith(
        "a certificate in the chain has expired (x)"
    )


def test_not_yet_valid_trust_anchor_is_named(dated: dict[str, CertInfo]) -> None:
    future_root = replace(dated["root"], not_before_timestamp=at(2026, 6, 2, 12, 0).timestamp())
    chain = (dated["leaf"], dated["intermediate"])
    reason, detail = classify_verify_error(9, "x", chain, HOST, NOW, (future_root,))
    assert reason is Reason.CERT_NOT_YET_VALID
    assert detail == (
        "root 'Corp Root CA' (depth 2, a trust anchor from the trust store, not sent by the server) "
        "is valid only from 2026-06-02 12:00 UTC (in 24 hours); probe's clock: 2026-06-01 12:00 UTC; "
        "check the clocks"
    )


def test_expired_certificate_sent_off_the_path_is_named_last(dated: dict[str, CertInfo]) -> None:
    chain = (dated["expired_leaf"], dated["expired_intermediate"], dated["intermediate"])
    assert classify(10, chain)[1].startswith("leaf 'www.corp.example' (depth 0) expired")
    chain = (dated["leaf"], dated["expired_intermediate"], dated["intermediate"])
    assert classify(10, chain)[1].startswith(
        "intermediate 'Corp Old Intermediate CA' (sent but not on the path) expired"
    )


def test_not_yet_valid(dated: dict[str, CertInfo]) -> None:
    chain = (dated["future_leaf"], dated["intermediate"])
    assert classify(9, chain) == (
        Reason.CERT_NOT_YET_VALID,
        "leaf 'www.corp.example' (depth 0) is valid only from 2026-06-04 06:15 UTC (in 3 days); "
        "probe's clock: 2026-06-01 12:00 UTC; check the clocks",
    )
    assert classify(9, (), "certificate is not yet valid") == (
        Reason.CERT_NOT_YET_VALID,
        "a certificate is not valid yet (certificate is not yet valid); probe's clock: 2026-06-01 12:00 UTC",
    )


BESIDE = "; found beside the name mismatch (OpenSSL reports only the name, curl only the dates)"


def test_a_name_mismatch_on_an_expired_leaf_adds_the_expiry(dated: dict[str, CertInfo]) -> None:
    chain = (dated["expired_leaf"], dated["intermediate"])
    assert dates_beside_a_name_mismatch(62, chain, NOW) == (
        (
            Reason.CERT_EXPIRED,
            "leaf 'www.corp.example' (depth 0) expired on 2026-05-29 12:00 UTC (3 days ago); "
            "probe's clock: 2026-06-01 12:00 UTC" + BESIDE,
        ),
    )


def test_a_name_mismatch_adds_an_expired_intermediate_or_anchor_and_a_leaf_not_yet_valid(
    dated: dict[str, CertInfo],
) -> None:
    chain = (dated["leaf_under_expired"], dated["expired_intermediate"])
    ((reason, detail),) = dates_beside_a_name_mismatch(62, chain, NOW)
    assert reason is Reason.CERT_EXPIRED
    assert detail.startswith("intermediate 'Corp Old Intermediate CA' (depth 1) expired on 2026-05-20")

    old_root = replace(dated["root"], not_after_timestamp=at(2026, 5, 31, 12, 0).timestamp())
    ((reason, detail),) = dates_beside_a_name_mismatch(
        62, (dated["leaf"], dated["intermediate"]), NOW, (old_root,)
    )
    assert reason is Reason.CERT_EXPIRED
    assert detail.startswith("root 'Corp Root CA' (depth 2, a trust anchor from the trust store")

    ((reason, detail),) = dates_beside_a_name_mismatch(62, (dated["future_leaf"], dated["intermediate"]), NOW)
    assert reason is Reason.CERT_NOT_YET_VALID
    assert detail.endswith("check the clocks" + BESIDE)


def test_nothing_is_added_to_a_valid_chain_an_off_path_certificate_or_another_error(
    dated: dict[str, CertInfo],
) -> None:
    assert dates_beside_a_name_mismatch(62, (dated["leaf"], dated["intermediate"]), NOW) == ()
    # An expired certificate sent but not on the path is not what OpenSSL verified.
    off_path = (dated["leaf"], dated["expired_intermediate"], dated["intermediate"])
    assert dates_beside_a_name_mismatch(62, off_path, NOW) == ()
    assert dates_beside_a_name_mismatch(62, (), NOW) == ()
    # OpenSSL checks the name before the dates: a date error it reports means the name matched.
    expired = (dated["expired_leaf"], dated["intermediate"])
    for code in (10, 9, 20, None):
        assert dates_beside_a_name_mismatch(code, expired, NOW) == ()


def test_self_signed_leaf(dated: dict[str, CertInfo]) -> None:
    assert classify(18, (dated["self_signed"],)) == (
        Reason.CERT_SELF_SIGNED,
        "the server sent a self-signed certificate 'www.corp.example' that is not in the trust store",
    )


def test_self_signed_root_in_chain(dated: dict[str, CertInfo]) -> None:
    chain = (dated["leaf"], dated["root"], dated["intermediate"])
    assert classify(19, chain) == (
        Reason.CERT_UNTRUSTED,
        "the chain ends at root 'Corp Root CA', which is not in the trust store",
    )


@pytest.mark.parametrize("code", [2, 20, 21])
def test_lone_leaf_means_missing_intermediate(dated: dict[str, CertInfo], code: int) -> None:
    assert classify(code, (dated["leaf"],)) == (
        Reason.CERT_CHAIN_INCOMPLETE,
        "the issuer 'Corp Intermediate CA' of leaf 'www.corp.example' was not sent and is not in the "
        "trust store: the server must send the intermediate certificate (or, if 'Corp Intermediate CA' "
        "is a private root, add it to ca_file)",
    )


def test_lone_leaf_with_an_unrelated_extra_certificate(dated: dict[str, CertInfo]) -> None:
    reason, detail = classify(20, (dated["leaf"], dated["other_root"]))
    assert reason is Reason.CERT_CHAIN_INCOMPLETE
    assert detail.startswith("the issuer 'Corp Intermediate CA' of leaf 'www.corp.example' was not sent")


@pytest.mark.parametrize("code", [20, 21])
def test_chain_ending_at_a_ca_means_untrusted_root(dated: dict[str, CertInfo], code: int) -> None:
    assert classify(code, (dated["leaf"], dated["intermediate"])) == (
        Reason.CERT_UNTRUSTED,
        "the chain ends at 'Corp Intermediate CA', whose issuer 'Corp Root CA' is not in the trust "
        "store (an unknown root, or an intermediate missing above it)",
    )


def test_untrusted_without_a_chain() -> None:
    assert classify(20, (), "unable to get local issuer certificate") == (
        Reason.CERT_UNTRUSTED,
        "the chain is not trusted (unable to get local issuer certificate)",
    )


def test_hostname_mismatch(dated: dict[str, CertInfo]) -> None:
    leaf = info(issue("api.corp.example", dns_names=("api.corp.example",)))
    assert classify(62, (leaf, dated["intermediate"])) == (
        Reason.CERT_HOSTNAME_MISMATCH,
        "certificate is valid for api.corp.example, not www.corp.example",
    )
    assert classify(62, ()) == (
        Reason.CERT_HOSTNAME_MISMATCH,
        "certificate is not valid for www.corp.example",
    )


@pytest.mark.parametrize("code", [26, None])
def test_unknown_code_is_untrusted_with_the_code(dated: dict[str, CertInfo], code: int | None) -> None:
    assert classify(code, (dated["leaf"],), "unsuitable certificate purpose") == (
        Reason.CERT_UNTRUSTED,
        f"certificate verification failed: unsuitable certificate purpose (code {code})",
    )


def test_common_name_of() -> None:
    assert common_name_of("CN=Corp Root CA,O=Corp,C=DE") == "Corp Root CA"
    assert common_name_of("O=Corp,CN=Corp Root CA") == "Corp Root CA"
    assert common_name_of("O=Corp,C=DE") == "O=Corp,C=DE"


def test_issuer_name_with_an_escaped_comma() -> None:
    root = issue("Acme, Inc. Root CA", ca=True, not_before=at(2025, 1, 1), not_after=at(2035, 1, 1))
    leaf = info(issue(HOST, root, dns_names=(HOST,), not_before=at(2026, 1, 1), not_after=at(2027, 1, 1)))
    assert leaf.issuer == r"CN=Acme\, Inc. Root CA"
    reason, detail = classify(20, (leaf,))
    assert reason is Reason.CERT_CHAIN_INCOMPLETE
    assert detail.startswith("the issuer 'Acme, Inc. Root CA' of leaf 'www.corp.example' was not sent")


# --------------------------------------------------------------------------- odd encodings


def test_negative_serial_becomes_a_note_and_no_warning_escapes(pki: Pki) -> None:
    # pytest turns warnings into errors here: a CryptographyDeprecationWarning that
    # escaped cert_info would fail this test.
    leaf = issue(HOST, pki.intermediate, dns_names=(HOST,), serial=0x0123456789ABCDEF)
    patched = resign(
        leaf.cert,
        pki.intermediate.key,
        {bytes.fromhex("0123456789abcdef"): bytes.fromhex("f123456789abcdef")},
    )
    facts = cert_info(patched)
    assert facts.serial.startswith("-")
    assert facts.notes == ("serial number is negative (RFC 5280 §4.1.2.2 requires a positive integer)",)
    assert facts.parse_error is None


def test_a_well_formed_certificate_has_no_notes(pki: Pki) -> None:
    assert info(pki.leaf(HOST)).notes == ()


def test_printable_string_violation_is_refused_with_the_parsers_complaint(pki: Pki) -> None:
    odd = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp-IT Ops.", _type=_ASN1Type.PrintableString)
    intermediate = issue("Odd CA", pki.root, ca=True, subject_extra=(odd,))
    patched = resign(intermediate.cert, pki.root.key, {b"Corp-IT Ops.": b"Corp_IT Ops!"})
    with pytest.raises(ValueError, match="PrintableString"):
        cert_info(patched)


def openssl_decode(der_bytes: bytes, tmp_path: Path) -> dict[str, Any]:
    """OpenSSL's decode of a certificate, as the handshake's ``get_info()`` gives it."""
    path = tmp_path / "cert.pem"
    path.write_bytes(der_to_pem(der_bytes))
    return ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined,no-any-return]


def test_openssl_decode_gives_the_same_facts_as_cryptography(pki: Pki, tmp_path: Path) -> None:
    odd = x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Corp, "IT" + Ops')  # needs RFC 4514 escapes
    unit = x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, " edge#")
    leaf = issue(
        HOST, pki.intermediate, dns_names=(HOST, "*.corp.example"), ip_addresses=("10.0.0.1", "fd00::1")
    )
    ca = issue("Odd CA", pki.root, ca=True, subject_extra=(odd, unit))
    for issued, is_ca in ((leaf, False), (ca, True), (pki.root, True)):
        raw = der(issued)
        parsed = cert_info(raw)
        decoded = cert_info_from_openssl(raw, openssl_decode(raw, tmp_path), "complaint", is_ca=is_ca)
        assert decoded == replace(
            parsed, key="unknown", signature_algorithm="unknown", parse_error="complaint"
        )


def test_openssl_decode_notes_a_negative_serial_too(pki: Pki, tmp_path: Path) -> None:
    leaf = issue(HOST, pki.intermediate, dns_names=(HOST,), serial=0x0123456789ABCDEF)
    raw = resign(
        leaf.cert,
        pki.intermediate.key,
        {bytes.fromhex("0123456789abcdef"): bytes.fromhex("f123456789abcdef")},
    )
    facts = cert_info_from_openssl(raw, openssl_decode(raw, tmp_path), "x", is_ca=False)
    assert facts.serial == cert_info(raw).serial and facts.notes[0].startswith("serial number is negative")


def test_openssl_decode_without_dates_is_refused() -> None:
    with pytest.raises(ValueError, match="validity"):
        cert_info_from_openssl(b"x", {"subject": ()}, "x", is_ca=False)


def test_explain_unparsed_names_the_certificate_and_the_complaint(pki: Pki, tmp_path: Path) -> None:
    raw = der(pki.leaf(HOST))
    leaf = cert_info_from_openssl(raw, openssl_decode(raw, tmp_path), "ParseError { kind: X }", is_ca=False)
    text = explain_unparsed(leaf, (leaf,))
    assert text.startswith(f"leaf '{HOST}' (subject CN={HOST}; issuer CN=unit Intermediate CA)")
    assert "ParseError { kind: X }" in text and "OpenSSL" in text
