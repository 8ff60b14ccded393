"""Generate certificate authorities and server certificates for the loopback lab.

Everything is made fresh (per demo run, per test session) with ``cryptography``: a root,
an intermediate and leaves, plus the broken variants the tests need (expired, not yet
valid, wrong name, self-signed, other root, CN only), certificates for IP addresses and
TLS client certificates.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-4096", "ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def new_key(kind: KeyType = "ec-p256") -> PrivateKey:
    """A new private key of the given kind."""
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}")


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key and the chain above it (issuers, nearest first)."""

    cert: x509.Certificate
    key: PrivateKey
    parents: tuple[Issued, ...] = field(default=())

    @property
    def cert_pem(self) -> bytes:
        """This certificate alone, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def chain_pem(self, *, include_root: bool = False) -> bytes:
        """This certificate followed by its issuers (the root only when asked), PEM."""
        certs = [self, *self.parents]
        if not include_root and len(certs) > 1 and _self_issued(certs[-1].cert):
            certs = certs[:-1]
        return b"".join(c.cert_pem for c in certs)

    def write(self, directory: Path, name: str, *, chain: bytes | None = None) -> tuple[Path, Path]:
        """Write ``NAME.crt`` (``chain`` or the chain without root) and ``NAME.key``.

        Returns:
            ``(cert_path, key_path)``.
        """
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{name}.crt"
        key_path = directory / f"{name}.key"
        cert_path.write_bytes(chain if chain is not None else self.chain_pem())
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def issue(
    common_name: str | None,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: float = 90,
    key_type: KeyType = "ec-p256",
    key: PrivateKey | None = None,
    client: bool = False,
    subject_extra: tuple[x509.NameAttribute[str], ...] = (),
    serial: int | None = None,
) -> Issued:
    """Issue a certificate; self-signed when ``issuer`` is ``None``.

    Args:
        common_name: subject CN (``None`` for an empty subject).
        issuer: the signing CA, or ``None`` for a self-signed certificate.
        ca: make a CA certificate (basicConstraints CA, keyCertSign).
        dns_names: subjectAltName dNSNames (no SAN extension when both lists are empty).
        ip_addresses: subjectAltName iPAddresses.
        not_before: start of validity (default: one hour ago).
        not_after: end of validity (default: ``not_before`` + ``days``).
        days: validity length in days when ``not_after`` is not given.
        key_type: kind of the new key when ``key`` is not given.
        key: reuse this private key (e.g. for a cross-signed CA).
        client: a TLS client certificate (extended key usage clientAuth, not serverAuth).
        subject_extra: attributes put before the CN in the subject (e.g. an ``O``).
        serial: the serial number (default: random, positive).

    Returns:
        The certificate, its key and its issuers.
    """
    key = key or new_key(key_type)
    now = datetime.now(UTC)
    start = not_before or now - timedelta(hours=1)
    end = not_after or start + timedelta(days=days)
    cn = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    subject = x509.Name([*subject_extra, *cn])
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(key, ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    builder = _with_usage_and_names(
        builder, issuer, ca=ca, client=client, names=_san(dns_names, ip_addresses)
    )
    algorithm = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signer_key, algorithm)
    parents = (issuer, *issuer.parents) if issuer else ()
    return Issued(cert=cert, key=key, parents=parents)


def _key_usage(key: PrivateKey, *, ca: bool) -> x509.KeyUsage:
    """digitalSignature; keyCertSign and cRLSign for a CA; keyEncipherment for an RSA leaf."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(dns_names: tuple[str, ...], ip_addresses: tuple[str, ...]) -> x509.SubjectAlternativeName | None:
    """The subjectAltName of these dNSNames and iPAddresses, ``None`` when both are empty."""
    if not dns_names and not ip_addresses:
        return None
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    return x509.SubjectAlternativeName(names)


def _with_usage_and_names(
    builder: x509.CertificateBuilder,
    issuer: Issued | None,
    *,
    ca: bool,
    client: bool,
    names: x509.SubjectAlternativeName | None,
) -> x509.CertificateBuilder:
    """Add, in this order, authorityKeyIdentifier (when issued), the extended key usage of a leaf, the SAN."""
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    if names is not None:
        builder = builder.add_extension(names, critical=False)
    return builder


@dataclass(frozen=True)
class Pki:
    """A root and an intermediate below it, ready to issue server certificates."""

    root: Issued
    intermediate: Issued

    @classmethod
    def create(cls, label: str = "probe lab") -> Pki:
        """A new root ``{label} Root CA`` and intermediate ``{label} Intermediate CA``."""
        root = issue(f"{label} Root CA", ca=True, days=3650)
        intermediate = issue(f"{label} Intermediate CA", root, ca=True, days=1825)
        return cls(root=root, intermediate=intermediate)

    def leaf(self, *names: str, **kwargs: object) -> Issued:
        """A server certificate from the intermediate for ``names`` (SAN dNSNames, CN first)."""
        return issue(names[0] if names else None, self.intermediate, dns_names=names, **kwargs)  # type: ignore[arg-type]

    def address_leaf(self, *addresses: str, **kwargs: object) -> Issued:
        """A server certificate from the intermediate for IP ``addresses`` (SAN iPAddresses, CN first).

        As for an appliance or a load balancer's static address: no DNS name unless
        ``dns_names`` is given.
        """
        return issue(addresses[0] if addresses else None, self.intermediate, ip_addresses=addresses, **kwargs)  # type: ignore[arg-type]

    def client(self, name: str, **kwargs: object) -> Issued:
        """A TLS client certificate from the intermediate (extended key usage clientAuth), CN ``name``."""
        return issue(name, self.intermediate, client=True, **kwargs)  # type: ignore[arg-type]

    def write_ca(self, path: Path) -> Path:
        """Write the root certificate (the trust anchor) as PEM to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.root.cert_pem)
        return path


def resign(cert: x509.Certificate, signer: PrivateKey, patches: dict[bytes, bytes]) -> bytes:
    """Replace byte strings inside a certificate's to-be-signed part and sign it again.

    For certificates ``cryptography`` refuses to build but OpenSSL accepts: build one with
    a same-length placeholder, then patch it (an invalid PrintableString, a negative
    serial number, a non-ASCII dNSName). Each replacement has the length of what it
    replaces, so no DER length changes. Signs with SHA-256 (ECDSA or RSA PKCS#1 v1.5) or
    Ed25519, as :func:`issue` does.

    Args:
        cert: the certificate built with placeholders.
        signer: its issuer's private key (its own when self-signed).
        patches: ``{placeholder: replacement}``, each placeholder present in the TBS part.

    Returns:
        The new certificate in DER (it may not load with ``cryptography``).

    Raises:
        ValueError: a placeholder is absent or a replacement changes the length.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    end = der.index(tbs) + len(tbs)
    algorithm = der[end : _tlv_end(der, end)]
    for old, new in patches.items():
        if len(old) != len(new) or old not in tbs:
            raise ValueError(f"cannot patch {old!r} into {new!r}")
        tbs = tbs.replace(old, new)
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    elif isinstance(signer, rsa.RSAPrivateKey):
        signature = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = signer.sign(tbs)
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def der_to_pem(der: bytes) -> bytes:
    """One DER certificate as PEM text (without parsing it)."""
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _tlv_end(data: bytes, start: int) -> int:
    """Index just past the DER element starting at ``start``."""
    size = data[start + 1]
    position = start + 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(data[position : position + count], "big")
        position += count
    return position + size
