"""Mutual TLS: the client certificate probe presents, and what a listener that refuses it says.

Three moments, one function each:

* **Config load** (:func:`load`): the files of ``tls_client`` (``--cert``, ``--key``) are
  read and checked once, and refused with one line: a key file readable by group or
  others (``mode & 0o077``, as ssh refuses such a key), an encrypted key without
  ``key_password_file`` (or with a wrong passphrase), a key that does not match the
  certificate, a file without a certificate or a key. :func:`install` then loads them
  into every SSL context of the target, so the TLS stage, every request, the direct
  checks and (:func:`probe.stages.ocsp.build_context`) the stapling handshake present the
  same certificate, and only when the server asks for one (OpenSSL's behaviour, curl's).
* **A refusal** (:func:`classify_alert`): the alerts a server sends about the client's
  certificate, named as RFC 8446 §6.2 names them (``unknown_ca``,
  ``certificate_expired``, ``bad_certificate``, ``certificate_required`` …). TLS 1.2 sends
  them in the handshake (the TLS stage's failure); TLS 1.3 after it, since the client's
  certificate is its last flight: they surface on the first read of the first request.
* **What the listener accepts** (:func:`read_request`, :func:`explained`): Python's ``ssl``
  does not expose the server's CertificateRequest, whose certificate_authorities
  (RFC 8446 §4.2.4; RFC 5246 §7.4.4 in TLS 1.2) name the CAs whose certificates it
  accepts. After a refusal, one more handshake with pyOpenSSL (``get_client_ca_list``, and
  an info callback that sees the message arrive) reads them. It is worth its cost: it
  happens only on the failure path, never for a healthy listener; it is bounded by the
  connect and TLS timeouts within the cycle's deadline; pyOpenSSL is already a dependency
  (OCSP stapling); the names are what one needs to fix the refusal (the CA the listener
  trusts beside the one that issued the certificate); and it tells a TLS 1.2
  ``handshake_failure``, which says nothing about why, from a listener that asked for a
  certificate.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from probe._files import MAX_PEM_BYTES, FileRefused, read_capped, why_unreadable
from probe._text import openssl_words, plural
from probe.config.models import Timeouts, TlsClientConfig
from probe.model.deadline import Deadline
from probe.model.facts import ClientCertificate
from probe.model.reasons import Reason
from probe.model.results import Failure, IPAddress
from probe.stages.certs import as_ip_address, cert_info, describe_age, format_time, label_of, rfc4514_name

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from probe.stages.plan import TargetPlan

#: ``ssl.SSLError.reason`` of the alerts a server sends about the client's certificate, by
#: the name RFC 8446 §6.2 gives them.
_ALERTS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate_revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate_required",
}
#: The alert that says nothing about why (TLS 1.2 servers send it when no certificate came).
_HANDSHAKE_FAILURE = "SSLV3_ALERT_HANDSHAKE_FAILURE"

#: The findings about the client certificate, which :func:`explained` completes.
CLIENT_CERT_REASONS = frozenset({Reason.TLS_CLIENT_CERT_REQUIRED, Reason.TLS_CLIENT_CERT_REFUSED})

#: CA names shown in a finding; the rest are counted.
SHOWN_AUTHORITIES = 5

#: OpenSSL's state string when a CertificateRequest arrived (TLS 1.2 and 1.3 alike).
_REQUEST_READ = b"SSLv3/TLS read server certificate request"
#: States that show the server's flight was read whole: whether it asked is then known.
_FLIGHT_READ = frozenset({b"SSLv3/TLS read server done", b"SSLv3/TLS read finished", _REQUEST_READ})

_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


class ClientCertError(ValueError):
    """A ``tls_client`` file probe refuses; ``field`` is the setting (``cert_file`` …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, eq=False)
class ClientCredentials:
    """A checked client certificate with its key, ready to load into SSL contexts.

    Compared and hashed by identity: one per ``tls_client`` setting and config load.

    Attributes:
        cert_file: the certificate (then its intermediates) file.
        key_file: the private key's file (``cert_file`` when it holds the key).
        password: the key's passphrase, ``None`` for an unencrypted key.
        facts: what reports say about the certificate.
        certificates: the certificates of ``cert_file``, leaf first (for pyOpenSSL).
        key: the private key (for pyOpenSSL).
        usage: why the certificate is not meant for TLS clients, ``None`` when it is.
    """

    cert_file: Path
    key_file: Path
    password: bytes | None = field(repr=False)
    facts: ClientCertificate
    certificates: tuple[x509.Certificate, ...] = field(repr=False)
    key: PrivateKeyTypes = field(repr=False)
    usage: str | None = None


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """What a listener's CertificateRequest said, as read by :func:`read_request`.

    Attributes:
        asked: the listener asked for a client certificate.
        authorities: the CA names it accepts (RFC 4514), in the order sent; empty when it
            named none.
        authorities_der: the same names in DER, to compare with the certificate's issuers.
    """

    asked: bool
    authorities: tuple[str, ...] = ()
    authorities_der: tuple[bytes, ...] = ()


# --------------------------------------------------------------------------- config load


def load(config: TlsClientConfig) -> ClientCredentials:
    """Read and check the files of a ``tls_client`` setting.

    Args:
        config: the setting (paths already made relative to the config file).

    Returns:
        The credentials, with the certificate's facts.

    Raises:
        ClientCertError: a file cannot be read or holds no certificate or key; the key
            file (``cert_file`` when it holds the key) or ``key_password_file`` is
            readable by group or others; the key is encrypted and no passphrase is given,
            or the passphrase is wrong; the key does not match the certificate.
    """
    # serialization imports bcrypt (its SSH keys): only when a client certificate is configured.
    from cryptography.hazmat.primitives import serialization

    cert_data = _read(config.cert_file, "cert_file")
    try:
        certificates = tuple(x509.load_pem_x509_certificates(cert_data))
    except ValueError:
        raise ClientCertError("cert_file", f"{config.cert_file}: holds no PEM certificate") from None
    key_file = config.key_file or config.cert_file
    key_field = "key_file" if config.key_file is not None else "cert_file"
    key_data = cert_data if config.key_file is None else _read(key_file, key_field)
    if not _PRIVATE_KEY.search(key_data):
        hint = "; give key_file (--key)" if config.key_file is None else ""
        raise ClientCertError(key_field, f"{key_file}: holds no PEM private key{hint}")
    _refuse_open_mode(key_file, key_field, "holds a private key")
    password = _password(config.key_password_file) if config.key_password_file is not None else None
    key = _private_key(key_data, key_file, key_field, password)
    _refuse_mismatch(certificates[0], key, key_file, key_field, config.cert_file)
    facts = ClientCertificate(
        cert_file=str(config.cert_file),
        leaf=cert_info(certificates[0].public_bytes(serialization.Encoding.DER)),
        chain=tuple(cert_info(c.public_bytes(serialization.Encoding.DER)) for c in certificates[1:]),
    )
    return ClientCredentials(
        cert_file=config.cert_file,
        key_file=key_file,
        password=password,
        facts=facts,
        certificates=certificates,
        key=key,
        usage=_usage_problem(certificates[0]),
    )


def install(context: ssl.SSLContext, credentials: ClientCredentials) -> None:
    """Load the certificate (and the intermediates after it) and the key into ``context``.

    Raises:
        ClientCertError: OpenSSL refuses them (e.g. a key type it cannot use).
    """
    try:
        context.load_cert_chain(credentials.cert_file, credentials.key_file, credentials.password)
    except (ssl.SSLError, OSError) as exc:
        why = openssl_words(exc)
        raise ClientCertError("cert_file", f"{credentials.cert_file}: OpenSSL refuses it ({why})") from None


def _read(path: Path, setting: str) -> bytes:
    """The bytes of a ``tls_client`` file: a regular file of at most 4 MiB (as every PEM file)."""
    try:
        return read_capped(path, MAX_PEM_BYTES)
    except FileRefused as exc:
        raise ClientCertError(setting, f"{path}: {exc}") from None


def _refuse_open_mode(path: Path, setting: str, what: str) -> None:
    """Refuse a secret's file that group or others may read (``mode & 0o077``), as ssh does."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise ClientCertError(setting, f"{path}: {why_unreadable(exc)}") from None
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
        raise ClientCertError(
            setting,
            f"{path} {what} and is open to {who} (mode {mode:04o}); make it readable by its owner only "
            f"(chmod 600 {path}), as ssh requires of a private key",
        )


def _password(path: Path) -> bytes:
    """The first line of ``key_password_file``, without its line end."""
    _refuse_open_mode(path, "key_password_file", "holds a passphrase")
    line = _read(path, "key_password_file").split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise ClientCertError("key_password_file", f"{path}: its first line is empty (the passphrase)")
    return line


def _private_key(data: bytes, path: Path, setting: str, password: bytes | None) -> PrivateKeyTypes:
    """The PEM private key in ``data``, decrypted with ``password`` when it is encrypted.

    Raises:
        ClientCertError: an encrypted key without passphrase, a wrong passphrase, a key
            ``cryptography`` cannot read.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password)
    except TypeError:
        if password is None:  # "Password was not given but private key is encrypted"
            raise ClientCertError(
                setting,
                f"{path}: the private key is encrypted and no passphrase is given "
                "(key_password_file, --key-password-file)",
            ) from None
        return serialization.load_pem_private_key(data, None)  # a passphrase for a plain key: unused
    except ValueError as exc:
        if password is not None and "decrypt" in str(exc).lower():
            raise ClientCertError(
                "key_password_file", f"the passphrase does not decrypt the private key in {path}"
            ) from None
        raise ClientCertError(setting, f"{path}: not a private key probe can read") from None


def _refuse_mismatch(
    cert: x509.Certificate, key: PrivateKeyTypes, key_file: Path, setting: str, cert_file: Path
) -> None:
    """Refuse a key whose public half is not the certificate's."""
    from cryptography.hazmat.primitives import serialization

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        ours = key.public_key().public_bytes(serialization.Encoding.DER, spki)
        theirs = cert.public_key().public_bytes(serialization.Encoding.DER, spki)
    except (ValueError, TypeError):
        ours, theirs = b"", b"?"
    if ours != theirs:
        name = cert.subject.rfc4514_string() or "(empty subject)"
        raise ClientCertError(
            setting,
            f"the private key in {key_file} does not match the certificate in {cert_file} ({name}): "
            "they are not one key pair",
        )


def _usage_problem(cert: x509.Certificate) -> str | None:
    """Why the certificate is not meant for TLS clients (its extended key usage), else ``None``."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        return None
    names = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages) or "none"
    return f"its extended key usage ({names}) does not include clientAuth"


# --------------------------------------------------------------------------- a refusal


def classify_alert(exc: ssl.SSLError) -> tuple[Reason, str] | None:
    """The finding for an alert about the client's certificate, ``None`` for another error.

    Python's ``ssl`` names the alert in ``reason`` (an OpenSSL reason code); when its
    table lacks the code, OpenSSL's own text is read instead. The certificate's facts and
    the listener's CA names are added by :func:`explained`.
    """
    code = getattr(exc, "reason", None) or ""
    text = str(exc).lower()
    for openssl, name in _ALERTS.items():
        if code == openssl or (not code and openssl.lower().replace("_", " ") in text):
            if name == "certificate_required":
                return Reason.TLS_CLIENT_CERT_REQUIRED, (
                    "the server requires a client certificate and got none (alert certificate_required)"
                )
            return Reason.TLS_CLIENT_CERT_REFUSED, f"the server refused the client certificate (alert {name})"
    return None


def is_bare_handshake_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the handshake_failure alert (a TLS 1.2 listener's when no certificate came)."""
    return isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) == _HANDSHAKE_FAILURE


async def refusal(
    exc: BaseException,
    reason: Reason,
    detail: str,
    where: Where,
    credentials: ClientCredentials | None,
    now: float,
) -> tuple[Reason, str]:
    """The TLS stage's finding for a failed handshake, told and explained when it is about mTLS.

    A certificate alert is explained (:func:`explain`); a bare ``handshake_failure`` is a
    client-certificate finding when the listener's CertificateRequest shows it asked for
    one, and stays ``tls_handshake_failed`` otherwise.

    Args:
        exc: the handshake's exception.
        reason: its classification (:func:`probe.stages.tls.classify_tls_error`).
        detail: the same.
        where: the address and the TLS settings, for :func:`read_request`.
        credentials: the client certificate presented, ``None`` without one.
        now: Unix time, for the certificate's dates.
    """
    if reason not in CLIENT_CERT_REASONS and not is_bare_handshake_failure(exc):
        return reason, detail
    request = await read_request(where)
    if reason not in CLIENT_CERT_REASONS:
        if request is None or not request.asked:
            return reason, detail
        reason = Reason.TLS_CLIENT_CERT_REFUSED
        detail = (
            "the server asked for a client certificate, then ended the handshake (alert handshake_failure)"
        )
    failure = explain(Failure(reason, detail), credentials, request, now)
    if getattr(exc, "reason", None) == "SSLV3_ALERT_CERTIFICATE_EXPIRED":
        # curl 7.88 maps this alert to CURLE_PEER_FAILED_VERIFICATION, worded as if the
        # server's certificate had failed.
        return failure.reason, f"{failure.detail}; curl reports this alert as its exit 60, " + (
            "'SSL certificate verification failed', though it is the client certificate the server refused"
        )
    return failure.reason, failure.detail


def explain(
    failure: Failure, credentials: ClientCredentials | None, request: CertificateRequest | None, now: float
) -> Failure:
    """A client-certificate finding with what probe presented and what the listener accepts.

    Without a client certificate the finding is ``tls_client_cert_required`` whatever the
    alert; with one, it says which certificate the listener refused (its dates when they
    are the likely cause, its usage when it is not meant for clients) and whether any CA
    the listener names issued it.
    """
    parts = [failure.detail]
    if credentials is None:
        reason = Reason.TLS_CLIENT_CERT_REQUIRED
        parts.append("no client certificate is configured (tls_client, --cert/--key)")
    else:
        reason = failure.reason
        parts.append(_presented(credentials, failure.reason, now))
    if request is not None:
        parts.append(_accepted(request, credentials))
    return replace(failure, reason=reason, detail="; ".join(p for p in parts if p))


def _presented(credentials: ClientCredentials, reason: Reason, now: float) -> str:
    """What probe presented, with the facts that explain a refusal."""
    leaf = credentials.facts.leaf
    if reason is Reason.TLS_CLIENT_CERT_REQUIRED:
        return (
            f"probe has the client certificate '{label_of(leaf)}' but OpenSSL did not send it: the "
            "server's request allows no signature algorithm its key can make, or names other CAs "
            "(a TLS 1.2 client may then send none)"
        )
    text = f"probe presented '{label_of(leaf)}' issued by {leaf.issuer}"
    if leaf.not_after_timestamp < now:
        expired = leaf.not_after_timestamp
        text += f", which expired on {format_time(expired)} ({describe_age(expired, now)})"
    elif leaf.not_before_timestamp > now:
        text += (
            f", which is valid only from {format_time(leaf.not_before_timestamp)} "
            f"({describe_age(leaf.not_before_timestamp, now)}; check the clocks)"
        )
    if not credentials.facts.chain and not leaf.self_issued:
        text += " (cert_file holds no intermediate: only the certificate was sent)"
    if credentials.usage is not None:
        text += f"; {credentials.usage}"
    return text


def _accepted(request: CertificateRequest, credentials: ClientCredentials | None) -> str:
    """Which CAs the listener named, and whether one of them issued the certificate."""
    if not request.asked:
        return "the listener did not ask for a client certificate on a second handshake"
    if not request.authorities:
        return "the listener names no CA it accepts"
    shown = ", ".join(request.authorities[:SHOWN_AUTHORITIES])
    more = len(request.authorities) - SHOWN_AUTHORITIES
    text = f"the listener accepts certificates from {shown}"
    if more > 0:
        text += f" (and {plural(more, 'more CA')})"
    if credentials is not None:
        names = {n.public_bytes() for cert in credentials.certificates for n in (cert.issuer, cert.subject)}
        if any(der in names for der in request.authorities_der):
            text += ", which issued this certificate's chain"
        elif len(credentials.certificates) == 1:
            text += ", none of which issued it directly"
        else:
            text += ", none of which issued this certificate's chain"
    return text


# --------------------------------------------------------------------------- the second handshake


@dataclass(frozen=True, slots=True)
class Where:
    """Where and how to shake hands once more: the address and the TLS stage's settings.

    Attributes:
        address: the address.
        port: the TCP port.
        hostname: the SNI (none for an IP address).
        min_version: the lowest TLS version offered.
        timeouts: ``connect`` and ``tls`` bound the handshake (seconds).
        deadline: the cycle's deadline; both are clipped to it.
    """

    address: IPAddress
    port: int
    hostname: str
    min_version: ssl.TLSVersion
    timeouts: Timeouts
    deadline: Deadline


async def read_request(where: Where) -> CertificateRequest | None:
    """Whether the listener asks for a client certificate, and which CAs it names.

    One handshake with pyOpenSSL, without verification and without a certificate of our
    own; it ends as the listener likes (a refusal is expected).

    Returns:
        What its CertificateRequest said; ``None`` when the handshake did not get as far
        as the server's whole first flight (no connection, a timeout), so nothing is known.
    """
    from OpenSSL import SSL

    from probe.stages.ocsp import bio_handshake

    try:
        async with asyncio.timeout(where.deadline.clip(where.timeouts.connect)):
            reader, writer = await asyncio.open_connection(str(where.address), where.port)
    except (TimeoutError, OSError):
        return None
    states: set[bytes] = set()
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(int(where.min_version))
    if where.min_version < ssl.TLSVersion.TLSv1_2:
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    context.set_verify(SSL.VERIFY_NONE)
    context.set_info_callback(lambda connection, _where, _ret: states.add(connection.get_state_string()))
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if as_ip_address(where.hostname) is None:  # no SNI for an address (RFC 6066 §3)
        connection.set_tlsext_host_name(where.hostname.encode("ascii"))
    try:
        async with asyncio.timeout(where.deadline.clip(where.timeouts.tls)):
            await bio_handshake(connection, reader, writer)
    except (TimeoutError, SSL.Error, OSError, EOFError):
        pass  # a refusal is expected; what was read before it counts
    finally:
        writer.transport.abort()
    if not states & _FLIGHT_READ:
        return None
    names = connection.get_client_ca_list()
    return CertificateRequest(
        asked=_REQUEST_READ in states,
        authorities=tuple(rfc4514_name([[pair] for pair in _components(name)]) for name in names),
        authorities_der=tuple(name.der() for name in names),
    )


def _components(name: Any) -> Sequence[tuple[str, str]]:
    """A pyOpenSSL ``X509Name``'s attributes as text pairs, in DER order."""
    return [(k.decode("ascii", "replace"), v.decode("utf-8", "replace")) for k, v in name.get_components()]


# --------------------------------------------------------------------------- TLS 1.3


async def explained(
    failures: tuple[Failure, ...], plan: TargetPlan, address: IPAddress, deadline: Deadline, now: float
) -> tuple[Failure, ...]:
    """``failures`` with each client-certificate finding explained (:func:`explain`).

    For the findings of an address's requests: a TLS 1.3 listener refuses the certificate
    after the handshake, on the first read. Nothing happens (no handshake) without such a
    finding.

    Args:
        failures: an address's findings.
        plan: the target's plan (its port, hostname, TLS settings and client certificate).
        address: the address.
        deadline: the cycle's deadline.
        now: Unix time, for the certificate's dates.
    """
    if not any(f.reason in CLIENT_CERT_REASONS for f in failures):
        return failures
    target = plan.target
    where = Where(address, target.port, target.hostname, plan.contexts.min_version, target.timeouts, deadline)
    request = await read_request(where)
    credentials = plan.contexts.client
    return tuple(
        explain(f, credentials, request, now) if f.reason in CLIENT_CERT_REASONS else f for f in failures
    )
