"""The certificate facts cache: parsed once per DER, notes and the OpenSSL fallback kept."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from probe.lab.pki import Pki, der_to_pem, issue, resign
from probe.stages.certs import FactsCache, cert_info

HOST = "www.corp.example"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create("unit")


class Decoder:
    """OpenSSL's decode of one certificate, counting how often it is asked for."""

    def __init__(self, der: bytes, tmp_path: Path) -> None:
        path = tmp_path / "cert.pem"
        path.write_bytes(der_to_pem(der))
        self._decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return self._decoded


def never() -> dict[str, Any]:
    raise AssertionError("OpenSSL's decode was asked for a certificate cryptography parses")


def test_a_certificate_is_parsed_once_and_its_facts_are_the_parsers(pki: Pki) -> None:
    cache = FactsCache()
    raw = pki.leaf(HOST).cert.public_bytes(Encoding.DER)
    first = cache.facts(raw, never, is_ca=False)
    assert first == cert_info(raw)
    assert cache.facts(raw, never, is_ca=False) is first  # the same object: not parsed again
    assert len(cache) == 1


def test_notes_from_parser_warnings_stay_on_the_cached_facts(pki: Pki) -> None:
    # pytest turns warnings into errors: a CryptographyDeprecationWarning escaping would fail.
    leaf = issue(HOST, pki.intermediate, dns_names=(HOST,), serial=0x0123456789ABCDEF)
    raw = resign(
        leaf.cert,
        pki.intermediate.key,
        {bytes.fromhex("0123456789abcdef"): bytes.fromhex("f123456789abcdef")},
    )
    cache = FactsCache()
    note = "serial number is negative (RFC 5280 §4.1.2.2 requires a positive integer)"
    for _ in range(3):
        facts = cache.facts(raw, never, is_ca=False)
        assert facts.notes == (note,)
        assert facts.serial.startswith("-")


def test_a_refused_certificate_falls_back_to_openssl_once_per_role(pki: Pki, tmp_path: Path) -> None:
    odd = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp-IT Ops.", _type=_ASN1Type.PrintableString)
    intermediate = issue("Odd CA", pki.root, ca=True, subject_extra=(odd,))
    raw = resign(intermediate.cert, pki.root.key, {b"Corp-IT Ops.": b"Corp_IT Ops!"})
    with pytest.raises(ValueError, match="PrintableString"):
        cert_info(raw)
    decode = Decoder(raw, tmp_path)
    cache = FactsCache()

    as_ca = cache.facts(raw, decode, is_ca=True)
    assert as_ca.parse_error is not None and "PrintableString" in as_ca.parse_error
    assert as_ca.is_ca and "O=Corp_IT Ops!" in as_ca.subject
    assert cache.facts(raw, decode, is_ca=True) is as_ca
    assert decode.calls == 1
    # The fallback cannot tell a CA from its decode; the role is part of the key.
    as_leaf = cache.facts(raw, decode, is_ca=False)
    assert not as_leaf.is_ca and as_leaf.parse_error == as_ca.parse_error
    assert decode.calls == 2


def test_a_certificate_neither_parser_reads_is_refused_every_time() -> None:
    cache = FactsCache()
    for _ in range(2):
        with pytest.raises(ValueError, match="validity"):
            cache.facts(b"\x30\x03\x02\x01\x00", lambda: {"subject": ()}, is_ca=False)


def test_the_cache_is_bounded_and_drops_the_least_recently_used(pki: Pki) -> None:
    cache = FactsCache(size=2)
    a, b, c = (pki.leaf(f"{n}.corp.example").cert.public_bytes(Encoding.DER) for n in "abc")
    first_a = cache.facts(a, never, is_ca=False)
    cache.facts(b, never, is_ca=False)
    assert cache.facts(a, never, is_ca=False) is first_a  # a is now the most recent
    cache.facts(c, never, is_ca=False)  # drops b
    assert len(cache) == 2
    assert cache.facts(a, never, is_ca=False) is first_a
    assert cache.facts(b, never, is_ca=False) == cert_info(b)
