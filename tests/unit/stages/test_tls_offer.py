"""What the TLS contexts offer (OpenSSL's defaults, as curl) and how a negotiation is judged."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess

import pytest

from probe.model.reasons import Reason
from probe.stages.tls import build_contexts, cipher_weaknesses, negotiation_findings

A1 = ipaddress.ip_address("10.0.0.1")


def offered(context: ssl.SSLContext) -> set[str]:
    return {c["name"] for c in context.get_ciphers()}


def openssl_default_ciphers() -> set[str]:
    """The suites ``openssl ciphers`` offers by default: what curl and s_client send."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    out = subprocess.run(["openssl", "ciphers", "-s"], capture_output=True, text=True, check=True).stdout
    return set(out.strip().split(":"))


@pytest.mark.parametrize("min_version", ["1.2", "1.3"])
@pytest.mark.parametrize("skip_verify", [False, True])
def test_every_context_offers_what_curl_offers(min_version: str, skip_verify: bool) -> None:
    contexts = build_contexts(None, min_version, skip_verify)
    want = openssl_default_ciphers()
    for context in (contexts.verify, contexts.http, contexts.inspect):
        assert want <= offered(context)
        assert "AES128-GCM-SHA256" in offered(context)  # RSA key exchange, as older LB policies serve


def test_default_floor_keeps_openssls_security_level() -> None:
    default = ssl.create_default_context().security_level
    contexts = build_contexts(None, "1.2")
    assert contexts.verify.security_level == contexts.http.security_level == default
    assert contexts.inspect.security_level == default
    assert contexts.any_version.security_level == 0  # only to learn what an old server speaks


@pytest.mark.parametrize("floor", ["1.0", "1.1"])
def test_lowered_floor_lowers_the_security_level_of_every_context(floor: str) -> None:
    contexts = build_contexts(None, floor)
    for context in (contexts.verify, contexts.http, contexts.inspect):
        assert context.security_level == 0
        assert context.minimum_version == {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1}[floor]
    assert contexts.verify.verify_mode is ssl.CERT_REQUIRED


def describe(name: str) -> dict[str, object]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return next(c for c in context.get_ciphers() if c["name"] == name)


@pytest.mark.parametrize(
    ("cipher", "weaknesses"),
    [
        ("TLS_AES_128_GCM_SHA256", ()),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", ()),
        ("ECDHE-RSA-CHACHA20-POLY1305", ()),
        ("DHE-RSA-AES256-GCM-SHA384", ()),
        ("ECDHE-RSA-AES128-SHA256", ()),  # CBC, but with SHA-256
        ("AES128-GCM-SHA256", ("no forward secrecy (RSA key exchange; RFC 9325 §4.1)",)),
        (
            "AES256-SHA",
            (
                "no forward secrecy (RSA key exchange; RFC 9325 §4.1)",
                "CBC with HMAC-SHA1, not an AEAD suite (RFC 9325 §4.2)",
            ),
        ),
        ("ECDHE-RSA-AES128-SHA", ("CBC with HMAC-SHA1, not an AEAD suite (RFC 9325 §4.2)",)),
        ("PSK-AES128-GCM-SHA256", ("no forward secrecy (PSK key exchange; RFC 9325 §4.1)",)),
    ],
)
def test_cipher_weaknesses(cipher: str, weaknesses: tuple[str, ...]) -> None:
    assert cipher_weaknesses(describe(cipher)) == weaknesses


def test_3des_and_short_keys_are_weak() -> None:
    triple = {
        "kea": "kx-ecdhe",
        "symmetric": "des-ede3-cbc",
        "digest": "sha1",
        "aead": False,
        "strength_bits": 112,
    }
    assert cipher_weaknesses(triple) == ("3DES, 64-bit blocks (Sweet32; RFC 9325 §4.1)", "112-bit encryption")
    rc4 = {"kea": "kx-rsa", "symmetric": "rc4", "digest": "sha1", "aead": False, "strength_bits": 128}
    assert cipher_weaknesses(rc4)[1] == "RC4 (RFC 7465 forbids it)"


def test_modern_negotiation_has_no_findings() -> None:
    assert negotiation_findings("TLSv1.3", "TLS_AES_256_GCM_SHA384", ssl.TLSVersion.TLSv1_2, A1) == ()
    assert negotiation_findings("TLSv1.2", "unknown-suite", ssl.TLSVersion.TLSv1_2, A1) == ()


def test_old_version_and_weak_cipher_are_two_warnings() -> None:
    findings = negotiation_findings("TLSv1", "AES128-SHA", ssl.TLSVersion.TLSv1, A1)
    assert [(f.reason, f.address) for f in findings] == [
        (Reason.TLS_VERSION_DEPRECATED, A1),
        (Reason.TLS_WEAK_CIPHER, A1),
    ]
    assert findings[0].detail.startswith("negotiated TLSv1, deprecated by RFC 8996")
    assert "min_tls_version is 1.0 (OpenSSL security level 0" in findings[0].detail
    assert findings[1].detail.startswith("negotiated AES128-SHA (TLSv1): no forward secrecy")
