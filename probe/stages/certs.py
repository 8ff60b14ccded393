"""Pure certificate logic: DER to :class:`CertInfo`, chain analysis, name-matching explanations.

Nothing here opens a socket or reads the clock; ``now`` is always an argument.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import ssl
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from probe.model.reasons import Reason
from probe.model.results import CertInfo

# OpenSSL X509_V_ERR_* codes we tell apart (see openssl/x509_vfy.h).
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def cert_info(der: bytes) -> CertInfo:
    """Extract the facts probe reports from one DER-encoded certificate.

    Warnings ``cryptography`` emits while parsing (e.g. ``CryptographyDeprecationWarning``
    for a negative serial number) never reach the terminal: they become ``notes`` on the
    result, with the rule they cite (e.g. "serial number is negative (RFC 5280
    §4.1.2.2)"). Python's warning filters are process-wide, so this briefly changes them
    (probe parses on one thread).

    Args:
        der: the certificate in DER encoding.

    Returns:
        The certificate's facts; times as Unix time (seconds).

    Raises:
        ValueError: ``der`` is not a certificate ``cryptography`` can parse, at load or
            when an extension is read (the message is the parser's complaint).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            info = _cert_info(der)
        except ValueError:
            raise
        except Exception as exc:  # DuplicateExtension, UnsupportedGeneralNameType …
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    notes = list(info.notes)
    for warning in caught:
        text = f"{warning.category.__name__}: {warning.message}"
        if info.notes and "serial" in str(warning.message).lower():
            continue  # the serial note above says it, with the rule
        if text not in notes:
            notes.append(text)
    return replace(info, notes=tuple(notes))


#: How many certificates' facts :class:`FactsCache` keeps (a few per target suffice).
FACTS_CACHE_SIZE = 512


class FactsCache:
    """Parsed certificate facts by the SHA-256 of the DER, least recently used dropped first.

    A server sends the same chain cycle after cycle; parsing it with ``cryptography`` on
    every handshake was a fifth of an address-probe's CPU. Both outcomes are kept: the
    facts ``cryptography`` gave (``notes`` from its warnings included, see
    :func:`cert_info`), or its complaint together with the facts from OpenSSL's decode
    (:func:`cert_info_from_openssl`, kept per ``is_ca`` since that decode does not say).
    A certificate's facts depend on its bytes alone, so an entry never goes stale. Used
    from the event loop's thread only.

    Args:
        size: the most certificates kept.
    """

    def __init__(self, size: int = FACTS_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[bytes, bool | None], CertInfo | str] = OrderedDict()

    def facts(self, der: bytes, decoded: Callable[[], Mapping[str, Any]], *, is_ca: bool) -> CertInfo:
        """The facts of one certificate, parsed once.

        Args:
            der: the certificate in DER encoding.
            decoded: returns OpenSSL's decode of it, called only when ``cryptography``
                refuses the certificate and the fallback is not cached yet.
            is_ca: for the fallback: whether to treat it as a CA (see
                :func:`cert_info_from_openssl`).

        Returns:
            ``cryptography``'s facts, else those from OpenSSL's decode with ``parse_error``.

        Raises:
            ValueError: neither ``cryptography`` nor OpenSSL's decode gives the facts.
        """
        digest = hashlib.sha256(der).digest()
        parsed = self._get((digest, None))
        if parsed is None:
            try:
                parsed = cert_info(der)
            except ValueError as exc:
                parsed = str(exc)
            self._put((digest, None), parsed)
        if isinstance(parsed, CertInfo):
            return parsed
        fallback = self._get((digest, is_ca))
        if fallback is None:
            fallback = cert_info_from_openssl(der, decoded(), parsed, is_ca=is_ca)
            self._put((digest, is_ca), fallback)
        assert isinstance(fallback, CertInfo)
        return fallback

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: tuple[bytes, bool | None]) -> CertInfo | str | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _put(self, key: tuple[bytes, bool | None], entry: CertInfo | str) -> None:
        self._entries[key] = entry
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _cert_info(der: bytes) -> CertInfo:
    cert = x509.load_der_x509_certificate(der)
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(common_names[0].value) if common_names else None
    try:
        signature = cert.signature_algorithm_oid._name
    except Exception:  # pragma: no cover - exotic OIDs
        signature = cert.signature_algorithm_oid.dotted_string
    serial = cert.serial_number
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(serial, "x"),
        not_before_timestamp=cert.not_valid_before_utc.timestamp(),
        not_after_timestamp=cert.not_valid_after_utc.timestamp(),
        sha256_fingerprint=hashlib.sha256(der).hexdigest(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        common_name=common_name,
        is_ca=is_ca,
        key=describe_key(cert),
        signature_algorithm=signature,
        notes=serial_notes(serial),
    )


def serial_notes(serial: int) -> tuple[str, ...]:
    """Notes on a serial number RFC 5280 §4.1.2.2 forbids (it must be positive)."""
    if serial < 0:
        return ("serial number is negative (RFC 5280 §4.1.2.2 requires a positive integer)",)
    if serial == 0:
        return ("serial number is zero (RFC 5280 §4.1.2.2 requires a positive integer)",)
    return ()


def cert_info_from_openssl(
    der: bytes, decoded: Mapping[str, Any], parse_error: str, *, is_ca: bool
) -> CertInfo:
    """Facts of a certificate ``cryptography`` refused, from OpenSSL's own decode of it.

    OpenSSL (and so curl and the handshake) accepts some encodings ``cryptography`` 45+
    refuses, e.g. a subject ``O=Corp_IT Ops!`` encoded as a PrintableString (which may
    not hold ``_`` or ``!``, X.680) or an explicitly encoded DEFAULT value (X.690 DER
    §11.5). ``decoded`` is OpenSSL's view as Python's ``ssl`` gives it
    (``_ssl.Certificate.get_info()``, the shape of ``SSLSocket.getpeercert()``):
    ``subject``/``issuer`` as tuples of RDNs of ``(long name, value)`` pairs,
    ``notBefore``/``notAfter`` as ``"Jun  1 12:00:00 2026 GMT"``, ``serialNumber`` in hex
    and ``subjectAltName`` as ``(type, value)`` pairs.

    Args:
        der: the certificate in DER (for the fingerprint).
        decoded: OpenSSL's decode.
        parse_error: the parser's complaint, kept in ``parse_error``.
        is_ca: whether to treat it as a CA; OpenSSL's decode does not say (the caller
            infers it from the certificate's place in the chain).

    Returns:
        The facts; ``key`` and ``signature_algorithm`` are ``"unknown"``.

    Raises:
        ValueError: ``decoded`` lacks the validity dates.
    """
    subject = decoded.get("subject", ())
    issuer = decoded.get("issuer", ())
    sans = tuple(decoded.get("subjectAltName", ()))
    try:
        not_before = float(ssl.cert_time_to_seconds(decoded["notBefore"]))
        not_after = float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"OpenSSL's decode has no usable validity: {exc}") from None
    serial_text = str(decoded.get("serialNumber", "0"))
    try:
        serial = int(serial_text, 16)
    except ValueError:
        serial = 0
    ip_addresses = []
    for kind, value in sans:
        if kind == "IP Address":
            try:
                ip_addresses.append(str(ipaddress.ip_address(str(value).strip())))
            except ValueError:
                ip_addresses.append(str(value).strip())
    common_names = [value for rdn in subject for name, value in rdn if name == "commonName"]
    return CertInfo(
        subject=rfc4514_name(subject),
        issuer=rfc4514_name(issuer),
        serial=format(serial, "x"),
        not_before_timestamp=not_before,
        not_after_timestamp=not_after,
        sha256_fingerprint=hashlib.sha256(der).hexdigest(),
        dns_names=tuple(str(value) for kind, value in sans if kind == "DNS"),
        ip_addresses=tuple(ip_addresses),
        common_name=str(common_names[0]) if common_names else None,
        is_ca=is_ca,
        key="unknown",
        signature_algorithm="unknown",
        notes=serial_notes(serial),
        parse_error=parse_error,
    )


def rfc4514_name(rdns: Any) -> str:
    """OpenSSL's decoded name as the RFC 4514 string ``cryptography`` would print.

    The same text as :func:`cert_info`'s, so issuer and subject names still chain (see
    :func:`path_from_leaf`) when one certificate came from each parser.

    Args:
        rdns: the relative distinguished names in DER order, each a sequence of
            ``(name, value)`` pairs; a name is OpenSSL's long or short name, or an OID.
    """
    relative = []
    for rdn in rdns:
        attributes = []
        for name, value in rdn:
            try:
                oid = x509.ObjectIdentifier(_oid_of(str(name)))
                attributes.append(x509.NameAttribute(oid, str(value)))
            except ValueError:  # unknown name, or a value NameAttribute refuses
                return ",".join(
                    "+".join(f"{n}={_escape(str(v))}" for n, v in r) for r in reversed(tuple(rdns))
                )
        relative.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(relative).rfc4514_string()


def _oid_of(name: str) -> str:
    """The dotted OID of an attribute as OpenSSL names it (long name, or already dotted)."""
    if all(part.isdigit() for part in name.split(".")):
        return name
    return ssl._ASN1Object.fromname(name).oid


def _escape(value: str) -> str:
    """Escape a value as RFC 4514 §2.4 asks."""
    out = "".join("\\" + c if c in '\\"+,;<>' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and len(out) > 1:
        out = out[:-1] + "\\ "
    return out


def describe_key(cert: x509.Certificate) -> str:
    """The public key's kind and size: ``"RSA 2048"``, ``"EC P-256"``, ``"Ed25519"`` …."""
    try:
        key = cert.public_key()
    except Exception:
        return "unknown"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def format_time(timestamp: float) -> str:
    """Unix time as ``2026-11-29 08:30 UTC``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe_age(timestamp: float, now: float) -> str:
    """How far ``timestamp`` is from ``now``: ``"in 12 days"``, ``"3 hours ago"``."""
    delta = timestamp - now
    seconds = abs(delta)
    if seconds >= 2 * 86400:
        amount = f"{seconds / 86400:.0f} days"
    elif seconds >= 2 * 3600:
        amount = f"{seconds / 3600:.0f} hours"
    else:
        amount = f"{seconds / 60:.0f} minutes"
    return f"in {amount}" if delta >= 0 else f"{amount} ago"


def label_of(cert: CertInfo) -> str:
    """A short name for a certificate in messages: its CN, else its subject."""
    return cert.common_name or cert.subject or "(empty subject)"


# --------------------------------------------------------------------------- hostnames


def hostname_matches(pattern: str, hostname: str) -> bool:
    """Whether a SAN dNSName matches a hostname under RFC 6125 §6.4.

    Case-insensitive; a wildcard is allowed only as the whole left-most label, matches
    exactly one label, and is not accepted when fewer than two labels follow it (so
    ``*.example`` and partial wildcards such as ``w*.corp.example`` never match, as in
    browsers and Go).
    """
    pattern = pattern.lower().rstrip(".")
    hostname = hostname.lower().rstrip(".")
    if "*" not in pattern:
        return pattern == hostname
    first, _, rest = pattern.partition(".")
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    host_first, _, host_rest = hostname.partition(".")
    return bool(host_first) and host_rest == rest


def explain_hostname_mismatch(leaf: CertInfo, hostname: str) -> str:
    """A sentence saying why ``leaf`` is not valid for ``hostname`` (RFC 6125).

    Mentions the names the certificate is valid for, rejected wildcard forms, and the
    case where the name appears only in the subject CN, which browsers and Go ignore
    (RFC 6125 §6.4.4; CA/Browser Forum Baseline Requirements §7.1.4.3). An IP address
    (an IP-address URL without a server name) is explained by the certificate's iPAddress
    entries.
    """
    address = as_ip_address(hostname)
    if address is not None:
        return _explain_address_mismatch(leaf, address)
    names = leaf.dns_names + leaf.ip_addresses
    if not leaf.dns_names and leaf.common_name and hostname_matches(leaf.common_name, hostname):
        return (
            f"certificate names {hostname} only in its subject CN and has no DNS name in a "
            "subjectAltName; browsers and Go ignore the CN (RFC 6125 §6.4.4), so probe does too"
        )
    for name in leaf.dns_names:
        if "*" in name and not hostname_matches(name, hostname) and _loose_wildcard(name, hostname):
            return (
                f"certificate name {name} is a wildcard form that RFC 6125 §6.4.3 and "
                f"browsers reject, so it does not cover {hostname}"
            )
    if not names:
        return f"certificate has no subjectAltName, so it is valid for no name, not {hostname}"
    hint = ""
    apex = next((name for name in leaf.dns_names if _wildcard_over_apex(name, hostname)), None)
    if apex is not None:
        hint = f" ({apex} covers names below {hostname} but never {hostname} itself: RFC 6125 §6.4.3)"
    elif any(_one_label_short(name, hostname) for name in leaf.dns_names):
        hint = " (a wildcard covers exactly one label, RFC 6125 §6.4.3)"
    return f"certificate is valid for {', '.join(names)}, not {hostname}{hint}"


def as_ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address (a hostname that is one: an IP-address URL), else ``None``."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _explain_address_mismatch(leaf: CertInfo, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why ``leaf`` is not valid for an IP-address URL without a server name.

    An address is matched only against the iPAddress entries of the subjectAltName
    (RFC 5280 §4.2.1.6; OpenSSL's ``X509_check_ip``, as curl and ``openssl s_client
    -verify_ip`` use it): never a dNSName that spells the address, never the CN.
    """
    spelt = [name for name in (*leaf.dns_names, leaf.common_name or "") if as_ip_address(name) == address]
    if spelt and not leaf.ip_addresses:
        return (
            f"certificate names {address} only as text ({'a DNS name' if leaf.dns_names else 'its CN'} "
            f"{spelt[0]}), not as an iPAddress in its subjectAltName; an address is verified against "
            "iPAddress entries only (RFC 5280 §4.2.1.6), as curl and OpenSSL verify it"
        )
    if not leaf.ip_addresses:
        names = f" (it names {', '.join(leaf.dns_names)})" if leaf.dns_names else ""
        return (
            f"certificate names no IP address, so it is not valid for the address {address}{names}; "
            "give the DNS name it is issued for with server_name (--server-name)"
        )
    return f"certificate is valid for the addresses {', '.join(leaf.ip_addresses)}, not {address}" + (
        f" (and the names {', '.join(leaf.dns_names)})" if leaf.dns_names else ""
    )


def _loose_wildcard(pattern: str, hostname: str) -> bool:
    """Whether a label-by-label glob accepts ``pattern`` where RFC 6125 does not.

    True for the forms browsers reject but lax matchers take: partial wildcards such as
    ``w*.corp.example``, a wildcard that is not the left-most label, or one over too few
    labels (``*.example``). For explanations only.
    """
    pattern_labels = pattern.lower().rstrip(".").split(".")
    host_labels = hostname.lower().rstrip(".").split(".")
    if len(pattern_labels) != len(host_labels):
        return False
    return all(fnmatch.fnmatchcase(h, p) for p, h in zip(pattern_labels, host_labels, strict=True))


def _wildcard_over_apex(pattern: str, hostname: str) -> bool:
    """``*.corp.example`` against ``corp.example``: a wildcard never covers the apex."""
    return pattern.startswith("*.") and pattern[2:].lower().rstrip(".") == hostname.lower().rstrip(".")


def _one_label_short(pattern: str, hostname: str) -> bool:
    """``*.corp.example`` against ``a.b.corp.example``: the wildcard would need two labels."""
    if not pattern.startswith("*."):
        return False
    return hostname.lower().rstrip(".").endswith("." + pattern[2:].lower()) and not hostname_matches(
        pattern, hostname
    )


# --------------------------------------------------------------------------- chains


def path_from_leaf(chain: tuple[CertInfo, ...]) -> tuple[CertInfo, ...]:
    """Order the certificates as sent into the issuer path starting at the leaf.

    Servers may send intermediates out of order or send extra certificates; this follows
    issuer names from ``chain[0]`` through the sent certificates and stops when the next
    issuer was not sent (or at a self-issued certificate).
    """
    if not chain:
        return ()
    path = [chain[0]]
    remaining = list(chain[1:])
    while not path[-1].self_issued:
        issuer = next((c for c in remaining if c.subject == path[-1].issuer), None)
        if issuer is None:
            break
        path.append(issuer)
        remaining.remove(issuer)
    return tuple(path)


def classify_verify_error(
    code: int | None,
    message: str,
    chain: tuple[CertInfo, ...],
    hostname: str,
    now: float,
    anchors: tuple[CertInfo, ...] = (),
) -> tuple[Reason, str]:
    """Turn an OpenSSL verification failure into a reason code and a plain sentence.

    OpenSSL reports an untrusted root and a missing intermediate with the same codes
    (``X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY`` and friends); they are told apart
    from the chain as sent: when the path from the leaf ends at a certificate that is not
    a CA (a lone leaf), the intermediate is missing (``cert_chain_incomplete``); when it
    ends at a CA whose issuer is unknown, the root is not trusted (``cert_untrusted``).

    For an expired or not yet valid certificate the detail names it (role, name, depth in
    the path from the leaf at 0, and the date) and gives the probe's own clock, since a
    wrong clock is a common cause of both. OpenSSL checks the dates of the trust anchor
    too; when it is the anchor that is out of date (it comes from the trust store and was
    not sent), it is found in ``anchors`` by the issuer name at the top of the path as
    sent.

    Args:
        code: ``SSLCertVerificationError.verify_code``.
        message: ``SSLCertVerificationError.verify_message``.
        chain: the certificates as sent, leaf first (may be empty).
        hostname: the name that was checked.
        now: the current Unix time.
        anchors: the trust anchors of the context (``ca_file`` or the system store).

    Returns:
        ``(reason, detail)``.
    """
    leaf = chain[0] if chain else None
    if code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH):
        if leaf is None:
            return Reason.CERT_HOSTNAME_MISMATCH, f"certificate is not valid for {hostname}"
        return Reason.CERT_HOSTNAME_MISMATCH, explain_hostname_mismatch(leaf, hostname)
    if code == X509_V_ERR_CERT_HAS_EXPIRED:
        return Reason.CERT_EXPIRED, _expired(message, chain, now, anchors)
    if code == X509_V_ERR_CERT_NOT_YET_VALID:
        return Reason.CERT_NOT_YET_VALID, _not_yet_valid(message, chain, now, anchors)
    if code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        name = f" '{label_of(leaf)}'" if leaf else ""
        return Reason.CERT_SELF_SIGNED, (
            f"the server sent a self-signed certificate{name} that is not in the trust store"
        )
    if code == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        path = path_from_leaf(chain)
        root = path[-1] if path else None
        name = f" '{label_of(root)}'" if root else ""
        return Reason.CERT_UNTRUSTED, (f"the chain ends at root{name}, which is not in the trust store")
    if code in (
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    ):
        return _issuer_unknown(message, chain)
    return Reason.CERT_UNTRUSTED, f"certificate verification failed: {message} (code {code})"


def _expired(message: str, chain: tuple[CertInfo, ...], now: float, anchors: tuple[CertInfo, ...]) -> str:
    """The detail of ``cert_expired``: which certificate expired and when, and probe's clock."""
    found = _out_of_date(chain, anchors, _has_expired(now))
    if found is None:
        return f"a certificate in the chain has expired ({message}); probe's clock: {format_time(now)}"
    return _expired_detail(*found, now)


def _not_yet_valid(
    message: str, chain: tuple[CertInfo, ...], now: float, anchors: tuple[CertInfo, ...]
) -> str:
    """The detail of ``cert_not_yet_valid``: which certificate and from when, and probe's clock."""
    found = _out_of_date(chain, anchors, _not_valid_yet(now))
    if found is None:
        return f"a certificate is not valid yet ({message}); probe's clock: {format_time(now)}"
    return _not_yet_valid_detail(*found, now)


def _has_expired(now: float) -> Callable[[CertInfo], bool]:
    return lambda cert: cert.not_after_timestamp < now


def _not_valid_yet(now: float) -> Callable[[CertInfo], bool]:
    return lambda cert: cert.not_before_timestamp > now


def _expired_detail(cert: CertInfo, where: str, now: float) -> str:
    return (
        f"{where} expired on {format_time(cert.not_after_timestamp)} "
        f"({describe_age(cert.not_after_timestamp, now)}); probe's clock: {format_time(now)}"
    )


def _not_yet_valid_detail(cert: CertInfo, where: str, now: float) -> str:
    return (
        f"{where} is valid only from {format_time(cert.not_before_timestamp)} "
        f"({describe_age(cert.not_before_timestamp, now)}); probe's clock: {format_time(now)}; "
        "check the clocks"
    )


#: Said after a date finding that OpenSSL's name mismatch hid.
_BESIDE_THE_NAME = "; found beside the name mismatch (OpenSSL reports only the name, curl only the dates)"


def dates_beside_a_name_mismatch(
    code: int | None, chain: tuple[CertInfo, ...], now: float, anchors: tuple[CertInfo, ...] = ()
) -> tuple[tuple[Reason, str], ...]:
    """The date problems OpenSSL did not report because it stopped at the name.

    OpenSSL reports one verification error, the first it meets, and it checks the name
    before the dates; curl checks the name itself after OpenSSL and so reports the dates
    first. A certificate for another name that has also expired is therefore one finding
    in either, while the person fixing it needs both. When OpenSSL's error is the name
    mismatch, its chain was built and trusted: this reads the dates of that path (from
    the leaf up the certificates as sent, then the trust anchor above it) as OpenSSL would.
    Any other error: nothing is added (a reported date error means the name matched).

    Args:
        code: ``SSLCertVerificationError.verify_code``.
        chain: the certificates as sent, leaf first (may be empty).
        now: the current Unix time.
        anchors: the trust anchors of the context.

    Returns:
        ``(reason, detail)`` for ``cert_expired`` and ``cert_not_yet_valid`` when found;
        empty otherwise.
    """
    if code != X509_V_ERR_HOSTNAME_MISMATCH:
        return ()
    findings = []
    if expired := _out_of_date_on_path(chain, anchors, _has_expired(now)):
        findings.append((Reason.CERT_EXPIRED, _expired_detail(*expired, now) + _BESIDE_THE_NAME))
    if early := _out_of_date_on_path(chain, anchors, _not_valid_yet(now)):
        findings.append((Reason.CERT_NOT_YET_VALID, _not_yet_valid_detail(*early, now) + _BESIDE_THE_NAME))
    return tuple(findings)


def _issuer_unknown(message: str, chain: tuple[CertInfo, ...]) -> tuple[Reason, str]:
    """An issuer OpenSSL could not find: a missing intermediate, or an untrusted root (see above)."""
    path = path_from_leaf(chain)
    if not path:
        return Reason.CERT_UNTRUSTED, f"the chain is not trusted ({message})"
    top = path[-1]
    issuer = common_name_of(top.issuer)
    if not top.is_ca:
        return Reason.CERT_CHAIN_INCOMPLETE, (
            f"the issuer '{issuer}' of {_role(top, chain)} '{label_of(top)}' was not sent "
            "and is not in the trust store: the server must send the intermediate "
            f"certificate (or, if '{issuer}' is a private root, add it to ca_file)"
        )
    return Reason.CERT_UNTRUSTED, (
        f"the chain ends at '{label_of(top)}', whose issuer '{issuer}' is not in the "
        "trust store (an unknown root, or an intermediate missing above it)"
    )


def _out_of_date(
    chain: tuple[CertInfo, ...], anchors: tuple[CertInfo, ...], bad: Callable[[CertInfo], bool]
) -> tuple[CertInfo, str] | None:
    """The certificate OpenSSL found out of date and how to name it, ``None`` if not in view.

    Looks at the certificates as sent (those on the path from the leaf first), then at the
    trust anchor that issued the top of that path.
    """
    path = path_from_leaf(chain)
    for cert in (*path, *(c for c in chain if c not in path)):
        if bad(cert):
            depth = f"depth {path.index(cert)}" if cert in path else "sent but not on the path"
            return cert, f"{_role(cert, chain)} '{label_of(cert)}' ({depth})"
    return _anchor_out_of_date(path, anchors, bad)


def _out_of_date_on_path(
    chain: tuple[CertInfo, ...], anchors: tuple[CertInfo, ...], bad: Callable[[CertInfo], bool]
) -> tuple[CertInfo, str] | None:
    """As :func:`_out_of_date`, on the path from the leaf and its anchor only (what OpenSSL verified)."""
    path = path_from_leaf(chain)
    for depth, cert in enumerate(path):
        if bad(cert):
            return cert, f"{_role(cert, chain)} '{label_of(cert)}' (depth {depth})"
    return _anchor_out_of_date(path, anchors, bad)


def _anchor_out_of_date(
    path: tuple[CertInfo, ...], anchors: tuple[CertInfo, ...], bad: Callable[[CertInfo], bool]
) -> tuple[CertInfo, str] | None:
    """The trust anchor that issued the top of ``path``, when it is out of date, and how to name it."""
    if not path or path[-1].self_issued:
        return None
    issuer = path[-1].issuer
    anchor = next((a for a in anchors if a.subject == issuer and bad(a)), None)
    if anchor is None:
        return None
    role = "root" if anchor.self_issued else "intermediate"
    return anchor, (
        f"{role} '{label_of(anchor)}' (depth {len(path)}, a trust anchor from the trust store, "
        "not sent by the server)"
    )


def explain_unparsed(cert: CertInfo, chain: tuple[CertInfo, ...]) -> str:
    """A sentence naming a certificate ``cryptography`` refused and the parser's complaint."""
    return (
        f"{_role(cert, chain)} '{label_of(cert)}' (subject {cert.subject or '(empty)'}; issuer "
        f"{cert.issuer or '(empty)'}) could not be parsed by cryptography: {cert.parse_error}. "
        "OpenSSL, curl and browsers decode it; its names, dates and serial here are OpenSSL's "
        "(key and signature algorithm unknown)"
    )


def _role(cert: CertInfo, chain: tuple[CertInfo, ...]) -> str:
    if chain and cert is chain[0]:
        return "leaf"
    return "root" if cert.self_issued else "intermediate"


def common_name_of(rfc4514: str) -> str:
    """The CN value of an RFC 4514 name string, or the whole string when it has none."""
    try:
        names = x509.Name.from_rfc4514_string(rfc4514).get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return rfc4514
    return str(names[0].value) if names else rfc4514
