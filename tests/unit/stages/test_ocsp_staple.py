"""read_staple() and find_issuer() on responses built with cryptography: pure, ``now`` given."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from probe.lab.pki import Issued, issue, new_key
from probe.model.reasons import Reason
from probe.stages.ocsp import VALIDITY_LEEWAY, find_issuer, read_staple

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
T = NOW.timestamp()
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

ROOT = issue("Unit Root CA", ca=True, days=3650, not_before=NOW - 100 * DAY)
ISSUER = issue("Unit Intermediate CA", ROOT, ca=True, days=1000, not_before=NOW - 100 * DAY)
LEAF = issue("www.corp.example", ISSUER, dns_names=("www.corp.example",), not_before=NOW - 10 * DAY)
OTHER_LEAF = issue("old.corp.example", ISSUER, dns_names=("old.corp.example",), not_before=NOW - 10 * DAY)
STRANGER = issue("Stranger CA", ca=True, not_before=NOW - 100 * DAY)


def responder(name: str, signer: Issued, *, ocsp_signing: bool = True) -> Issued:
    """A delegated responder certificate issued by ``signer`` (with or without OCSPSigning)."""
    key = new_key()
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(signer.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(cert, key, (signer,))


def staple(
    leaf: Issued = LEAF,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    this_update: dt.datetime = NOW - HOUR,
    next_update: dt.datetime | None = NOW + 3 * DAY,
    revoked_at: dt.datetime | None = None,
    reason: x509.ReasonFlags | None = None,
    issuer: Issued = ISSUER,
    signer: Issued | None = None,
    responder_cert: Issued | None = None,
    encoding: ocsp.OCSPResponderEncoding = ocsp.OCSPResponderEncoding.NAME,
    include: tuple[Issued, ...] = (),
) -> bytes:
    """DER of a response about ``leaf`` from ``issuer``, signed by ``signer`` (default the issuer)."""
    signer = signer or issuer
    if status is ocsp.OCSPCertStatus.REVOKED and revoked_at is None:
        revoked_at = NOW - 20 * DAY
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf.cert,
            issuer=issuer.cert,
            algorithm=hashes.SHA1(),
            cert_status=status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(encoding, (responder_cert or signer).cert)
    )
    if include:
        builder = builder.certificates([c.cert for c in include])
    algorithm = None if isinstance(signer.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    response = builder.sign(signer.key, algorithm)  # type: ignore[arg-type]
    return response.public_bytes(serialization.Encoding.DER)


def read(data: bytes | None, *, leaf: Issued = LEAF, issuer: Issued | None = ISSUER, now: float = T) -> Any:
    return read_staple(data, leaf.cert, issuer.cert if issuer else None, now)


def codes(result: Any) -> list[Reason]:
    return [f.reason for f in result.failures]


# --------------------------------------------------------------------------- the three states


@pytest.mark.parametrize("data", [None, b""])
def test_no_staple_is_a_fact_without_findings(data: bytes | None) -> None:
    result = read(data)
    assert result.stapled is False and result.failures == () and result.cert_status is None


@pytest.mark.parametrize("encoding", list(ocsp.OCSPResponderEncoding))
def test_good_staple_signed_by_the_issuer(encoding: ocsp.OCSPResponderEncoding) -> None:
    result = read(staple(encoding=encoding))
    assert codes(result) == []
    assert result.stapled and result.response_status == "successful" and result.cert_status == "good"
    assert result.serial == format(LEAF.cert.serial_number, "x") and result.signature_valid is True
    assert result.this_update_timestamp == T - 3600 and result.next_update_timestamp == T + 3 * 86400
    assert result.revocation_timestamp is None and result.revocation_reason is None
    if encoding is ocsp.OCSPResponderEncoding.NAME:
        assert result.responder == "CN=Unit Intermediate CA"
    else:
        assert result.responder.startswith("key sha1:") and len(result.responder) == 9 + 40


def test_revoked_staple_is_critical_with_time_and_reason() -> None:
    at = dt.datetime(2026, 5, 2, 8, 30, tzinfo=dt.UTC)
    result = read(
        staple(status=ocsp.OCSPCertStatus.REVOKED, revoked_at=at, reason=x509.ReasonFlags.key_compromise)
    )
    assert codes(result) == [Reason.OCSP_REVOKED]
    detail = result.failures[0].detail
    assert f"serial {LEAF.cert.serial_number:x} was revoked on 2026-05-02 08:30 UTC (keyCompromise)" in detail
    assert "curl and openssl s_client ignore a staple" in detail and "Firefox refuses" in detail
    assert result.revocation_timestamp == at.timestamp() and result.revocation_reason == "keyCompromise"


def test_revoked_without_a_reason() -> None:
    result = read(staple(status=ocsp.OCSPCertStatus.REVOKED))
    assert codes(result) == [Reason.OCSP_REVOKED] and result.revocation_reason is None
    assert "was revoked on 2026-05-12 12:00 UTC; " in result.failures[0].detail


def test_unknown_status_is_invalid() -> None:
    result = read(staple(status=ocsp.OCSPCertStatus.UNKNOWN))
    assert codes(result) == [Reason.OCSP_INVALID] and result.cert_status == "unknown"
    assert "unknown to the responder" in result.failures[0].detail


# --------------------------------------------------------------------------- validity window


@pytest.mark.parametrize(
    ("after_next_update", "stale"), [(VALIDITY_LEEWAY - 1, False), (VALIDITY_LEEWAY + 1, True)]
)
def test_expired_staple_with_openssl_leeway(after_next_update: float, stale: bool) -> None:
    result = read(staple(this_update=NOW - 2 * DAY, next_update=NOW - DAY), now=T - 86400 + after_next_update)
    assert codes(result) == ([Reason.OCSP_STALE] if stale else [])
    if stale:
        assert "has expired: nextUpdate 2026-05-31 12:00 UTC was 5 minutes ago" in result.failures[0].detail


@pytest.mark.parametrize(("ahead", "stale"), [(VALIDITY_LEEWAY - 1, False), (VALIDITY_LEEWAY + 60, True)])
def test_not_yet_valid_staple_with_openssl_leeway(ahead: float, stale: bool) -> None:
    this_update = NOW + dt.timedelta(seconds=ahead)
    result = read(staple(this_update=this_update, next_update=NOW + 2 * DAY))
    assert codes(result) == ([Reason.OCSP_STALE] if stale else [])
    if stale:
        assert "is not valid yet" in result.failures[0].detail
        assert "probe's clock says 2026-06-01 12:00 UTC" in result.failures[0].detail


def test_no_next_update_never_goes_stale() -> None:
    result = read(staple(this_update=NOW - 400 * DAY, next_update=None))
    assert codes(result) == [] and result.next_update_timestamp is None


def test_revoked_and_expired_gives_both() -> None:
    data = staple(status=ocsp.OCSPCertStatus.REVOKED, this_update=NOW - 9 * DAY, next_update=NOW - 8 * DAY)
    assert codes(read(data)) == [Reason.OCSP_REVOKED, Reason.OCSP_STALE]


# --------------------------------------------------------------------------- not for this certificate


def test_staple_for_another_certificate_names_both_serials() -> None:
    result = read(staple(OTHER_LEAF))
    assert codes(result) == [Reason.OCSP_INVALID] and result.cert_status is None
    detail = result.failures[0].detail
    assert f"serial {OTHER_LEAF.cert.serial_number:x}, not the server's {LEAF.cert.serial_number:x}" in detail


def test_same_serial_from_another_issuer_is_for_another_certificate() -> None:
    """CertID is serial *and* issuer hashes (RFC 6960 §4.1.1): a serial alone does not match."""
    data = staple(issuer=STRANGER)
    assert codes(read(data)) == [Reason.OCSP_INVALID]
    assert "for another certificate" in read(data).failures[0].detail


def test_unparsable_and_unsuccessful_responses_are_invalid() -> None:
    garbage = read(b"\x30\x03\x0a\x01")
    assert (
        codes(garbage) == [Reason.OCSP_INVALID]
        and "is not a valid OCSP response" in garbage.failures[0].detail
    )
    late = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    result = read(late.public_bytes(serialization.Encoding.DER))
    assert codes(result) == [Reason.OCSP_INVALID] and result.response_status == "tryLater"
    assert "carries no answer: the responder said tryLater" in result.failures[0].detail


# ------------------------------------------------------------------- who signed it (RFC 6960 §4.2.2.2)


def test_delegated_responder_with_ocsp_signing_is_trusted() -> None:
    delegate = responder("Unit OCSP Responder", ISSUER)
    result = read(staple(signer=delegate, include=(delegate,)))
    assert codes(result) == [] and result.signature_valid is True
    assert result.responder == "CN=Unit OCSP Responder"


def test_delegated_responder_without_ocsp_signing_is_refused() -> None:
    delegate = responder("Unit TLS Server", ISSUER, ocsp_signing=False)
    result = read(staple(status=ocsp.OCSPCertStatus.REVOKED, signer=delegate, include=(delegate,)))
    assert codes(result) == [Reason.OCSP_INVALID] and result.signature_valid is False
    assert "no OCSPSigning usage" in result.failures[0].detail and "(revoked)" in result.failures[0].detail


def test_responder_certified_by_another_ca_is_refused() -> None:
    delegate = responder("Rogue Responder", STRANGER)
    result = read(staple(signer=delegate, include=(delegate,)))
    assert codes(result) == [Reason.OCSP_INVALID]
    assert "signed by CN=Rogue Responder, a responder the issuer did not certify" in result.failures[0].detail


def test_signer_that_sent_no_certificate_is_refused() -> None:
    result = read(staple(signer=STRANGER))
    assert codes(result) == [Reason.OCSP_INVALID]
    assert (
        "signed by CN=Stranger CA, which is not the issuer and sent no certificate"
        in result.failures[0].detail
    )


def test_forged_signature_in_the_issuers_name_is_refused() -> None:
    genuine = staple(status=ocsp.OCSPCertStatus.REVOKED)
    forged = genuine[:-1] + bytes([genuine[-1] ^ 0x01])  # the last byte is the signature's
    result = read(forged)
    assert codes(result) == [Reason.OCSP_INVALID] and result.signature_valid is False
    assert (
        "signature that does not verify with the key of CN=Unit Intermediate CA" in result.failures[0].detail
    )


@pytest.mark.parametrize("key_type", ["rsa-2048", "ed25519", "ec-p384"])
def test_issuer_key_types(key_type: Any) -> None:
    issuer = issue(f"{key_type} CA", ROOT, ca=True, key_type=key_type, not_before=NOW - DAY)
    leaf = issue("k.corp.example", issuer, dns_names=("k.corp.example",), not_before=NOW - DAY)
    assert codes(read(staple(leaf, issuer=issuer), leaf=leaf, issuer=issuer)) == []


def test_unknown_issuer_reads_by_serial_without_a_signature_check() -> None:
    result = read(staple(status=ocsp.OCSPCertStatus.REVOKED), issuer=None)
    assert codes(result) == [Reason.OCSP_REVOKED] and result.signature_valid is None


def test_find_issuer_needs_the_name_and_the_signature() -> None:
    impostor = issue("Unit Intermediate CA", ROOT, ca=True)  # same name, another key
    assert find_issuer(LEAF.cert, [ROOT.cert, impostor.cert, ISSUER.cert]) == ISSUER.cert
    assert find_issuer(LEAF.cert, [ROOT.cert, impostor.cert]) is None
    assert find_issuer(LEAF.cert, []) is None
