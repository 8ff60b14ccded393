"""OCSP stapling: ask the server for the OCSP response it staples, and judge that response.

Python's ``ssl`` cannot ask for a stapled response, so this hop is a second handshake made
with pyOpenSSL (the TLS ``status_request`` extension, RFC 6066 §8), driven over memory
BIOs from asyncio streams: no thread, bounded by ``timeouts.connect`` and ``timeouts.tls``
clipped to the cycle's deadline. It runs only with ``ocsp: staple`` and only after the TLS
stage's handshake succeeded. :func:`read_staple` judges the response by RFC 6960 and is pure.

The verdicts, and where they come from:

- no staple: a fact, not a finding (most servers do not staple; no client requires it);
- ``revoked``: ``ocsp_revoked`` (critical): Firefox refuses such a server;
- past ``nextUpdate`` or before ``thisUpdate`` (with OpenSSL's five minutes of leeway,
  ``OCSP_check_validity``): ``ocsp_stale`` (warning): Firefox ignores an expired staple and
  asks the responder itself;
- not parsable, not ``successful``, status ``unknown``, a signature that verifies neither
  against the issuer nor against a responder the issuer authorised (RFC 6960 §4.2.2.2), or
  no answer for the server's certificate: ``ocsp_invalid`` (critical): Firefox refuses the
  server in each of these cases (mozilla::pkix hard-fails any stapled response that does
  not verify, except an expired one).

probe is stricter here than curl and ``openssl s_client``, which ignore a staple unless
asked to check it (``curl --cert-status``); each finding's detail says so.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID
from OpenSSL import SSL, crypto

from probe._files import MAX_PEM_BYTES, FileRefused, check_capped
from probe._text import openssl_words, shorten
from probe.config.models import Timeouts
from probe.model.deadline import Deadline
from probe.model.reasons import Reason
from probe.model.results import Failure, IPAddress, OcspResult
from probe.stages._sockets import fd_limit
from probe.stages.certs import as_ip_address, describe_age, format_time

if TYPE_CHECKING:
    from probe.stages.client_auth import ClientCredentials
    from probe.stages.plan import TargetPlan

#: Leeway for thisUpdate and nextUpdate (seconds): OpenSSL's ``MAX_VALIDITY_PERIOD`` that
#: ``openssl ocsp`` and ``s_client -status`` pass to ``OCSP_check_validity``.
VALIDITY_LEEWAY = 300.0

#: Bytes read from the socket or the memory BIO at once.
_CHUNK = 65536

_STRICTER = "curl and openssl s_client ignore a staple unless asked to check it; Firefox"
_REFUSES = f"{_STRICTER} refuses this server"

_PROTOCOLS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}


def build_context(
    ca_file: Path | None, min_tls_version: str, client: ClientCredentials | None = None
) -> SSL.Context:
    """The pyOpenSSL context of the stapling handshake, built once per trust configuration.

    It does not abort on a verification failure (the TLS stage judged the chain already),
    but it loads the same trust anchors, with partial chains allowed as in the TLS stage, so
    that OpenSSL builds the verified chain in which the leaf's issuer is found.

    Args:
        ca_file: PEM bundle of trust anchors; ``None`` for the system store.
        min_tls_version: ``"1.0"`` … ``"1.3"``; below 1.2 OpenSSL's security level 0 is
            used, as a server that old needs it.
        client: the client certificate (``tls_client``), presented when the server asks
            for one, as in the TLS stage's handshake.

    Raises:
        ValueError: ``ca_file`` cannot be loaded (a message without the file name).
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(_PROTOCOLS[min_tls_version])
    if _PROTOCOLS[min_tls_version] < SSL.TLS1_2_VERSION:
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    context.set_verify(SSL.VERIFY_NONE)
    try:
        if ca_file is None:
            context.set_default_verify_paths()
        else:
            check_capped(ca_file, MAX_PEM_BYTES)
            context.load_verify_locations(str(ca_file))
    except FileRefused as exc:
        raise ValueError(f"cannot load the trust anchors for OCSP stapling: {ca_file}: {exc}") from None
    except SSL.Error as exc:
        raise ValueError(f"cannot load the trust anchors for OCSP stapling: {openssl_words(exc)}") from None
    store = context.get_cert_store()
    if store is not None:
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    context.set_ocsp_client_callback(_keep_staple)
    if client is not None:
        context.use_certificate(client.certificates[0])
        for intermediate in client.certificates[1:]:
            context.add_extra_chain_cert(intermediate)
        context.use_privatekey(client.key)  # type: ignore[arg-type]  # an RSA, EC or Ed key
    return context


async def staple(
    plan: TargetPlan,
    address: IPAddress,
    deadline: Deadline,
    clock: Callable[[], float] = time.time,
) -> OcspResult:
    """Handshake once more with ``status_request`` and judge the stapled OCSP response.

    Args:
        plan: the target's plan: its port, hostname (the SNI), ``timeouts.connect`` and
            ``timeouts.tls`` (seconds) and the stapling context (``plan.ocsp``, from
            :func:`build_context`; the plan of a target with ``ocsp: staple``).
        address: the address to connect to.
        deadline: the cycle's deadline; both timeouts are clipped to it.
        clock: Unix time, for judging the response's dates.

    Returns:
        The result; a failed connect or handshake is an ``error`` fact (the TLS stage
        reports the address's handshake faults), never an exception; no socket for lack of
        file descriptors is a ``cycle_fd_limit`` finding besides.

    Raises:
        ValueError: the plan has no stapling context (a bug in the caller).
    """
    if plan.ocsp is None:
        raise ValueError(f"target {plan.target.name!r} does not staple (ocsp: off)")
    return await _staple(
        address, plan.target.port, plan.target.hostname, plan.ocsp, plan.target.timeouts, deadline, clock
    )


async def _staple(
    address: IPAddress,
    port: int,
    hostname: str,
    context: SSL.Context,
    timeouts: Timeouts,
    deadline: Deadline,
    clock: Callable[[], float],
) -> OcspResult:
    start = time.monotonic()
    limit = deadline.clip(timeouts.connect)
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(str(address), port)
    except TimeoutError:
        return OcspResult(
            stapled=False, error=f"no TCP connection for the stapling handshake within {limit:.3g}s"
        )
    except OSError as exc:
        no_fd = fd_limit(exc)
        if no_fd is not None:  # this host's limit, a finding: the staple was never asked for
            why = f"no stapling handshake: {no_fd}"
            return OcspResult(
                stapled=False, error=why, failures=(Failure(Reason.CYCLE_FD_LIMIT, why, address),)
            )
        why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        return OcspResult(stapled=False, error=f"connect for the stapling handshake failed: {why}")
    staples: list[bytes] = []
    connection = SSL.Connection(context, None)
    connection.set_app_data(staples)
    connection.set_connect_state()
    if as_ip_address(hostname) is None:  # no SNI for an address (RFC 6066 §3), as the TLS stage
        connection.set_tlsext_host_name(hostname.encode("ascii"))
    connection.request_ocsp()
    limit = deadline.clip(timeouts.tls)
    try:
        async with asyncio.timeout(limit):
            await bio_handshake(connection, reader, writer)
        leaf, candidates = _peer_certificates(connection)
    except TimeoutError:
        return OcspResult(stapled=False, error=f"the stapling handshake did not complete within {limit:.3g}s")
    except (SSL.Error, OSError, EOFError) as exc:
        return OcspResult(stapled=False, error=f"the stapling handshake failed: {openssl_words(exc)}")
    except ValueError as exc:  # cryptography refused a certificate of the chain
        return OcspResult(stapled=False, error=f"a certificate could not be parsed: {shorten(str(exc))}")
    finally:
        writer.transport.abort()
    seconds = time.monotonic() - start
    if leaf is None:
        return OcspResult(stapled=False, handshake_seconds=seconds, error="the server sent no certificate")
    data = staples[-1] if staples and staples[-1] else None
    result = read_staple(data, leaf, find_issuer(leaf, candidates), clock(), address)
    return replace(result, handshake_seconds=seconds)


def read_staple(
    data: bytes | None,
    leaf: x509.Certificate,
    issuer: x509.Certificate | None,
    now: float,
    address: IPAddress | None = None,
) -> OcspResult:
    """Judge a stapled OCSP response for ``leaf`` (pure).

    Args:
        data: the DER response as stapled; ``None`` or empty when none came.
        leaf: the server's certificate.
        issuer: the certificate that issued ``leaf``; ``None`` when unknown, in which case
            the signature is not checked and the response is matched by serial alone.
        now: Unix time.
        address: the address, for the findings.

    Returns:
        The facts of the response and its findings (see the module docstring).
    """
    if not data:
        return OcspResult(stapled=False)

    def invalid(why: str, **facts: Any) -> OcspResult:
        detail = f"stapled OCSP response {why}; {_REFUSES}"
        return OcspResult(stapled=True, failures=(Failure(Reason.OCSP_INVALID, detail, address),), **facts)

    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        return invalid(f"is not a valid OCSP response ({shorten(str(exc), 80)})")
    status = response.response_status
    if status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return invalid(
            f"carries no answer: the responder said {_status_name(status)}",
            response_status=_status_name(status),
        )
    serial = format(leaf.serial_number, "x")
    single = _single_for(response.responses, leaf, issuer)
    facts: dict[str, Any] = {
        "response_status": "successful",
        "responder": _responder(response),
        "produced_at_timestamp": response.produced_at_utc.timestamp(),
    }
    if single is None:
        others = ", ".join(format(s.serial_number, "x") for s in response.responses) or "none"
        return invalid(
            f"is for another certificate: serial {others}, not the server's {serial} "
            f"(a staple left from before a certificate change?)",
            **facts,
        )
    facts |= {
        "cert_status": single.certificate_status.name.lower(),
        "serial": serial,
        "this_update_timestamp": single.this_update_utc.timestamp(),
        "next_update_timestamp": _ts(single.next_update_utc),
        "revocation_timestamp": _ts(single.revocation_time_utc),
        "revocation_reason": single.revocation_reason.value if single.revocation_reason else None,
    }
    if issuer is not None:
        problem = _signature_problem(response, issuer, now)
        facts["signature_valid"] = problem is None
        if problem is not None:
            return invalid(f"for serial {serial} ({facts['cert_status']}) {problem}", **facts)
    failures: list[Failure] = []
    status_finding = _cert_status_finding(single, serial, facts["revocation_reason"], address)
    if status_finding is not None:
        failures.append(status_finding)
    stale = _staleness(single.this_update_utc.timestamp(), _ts(single.next_update_utc), now)
    if stale is not None:
        failures.append(
            Failure(
                Reason.OCSP_STALE,
                f"stapled OCSP response for serial {serial} {stale}; Firefox ignores it and asks the "
                f"responder itself; the server should fetch a fresh one",
                address,
            )
        )
    return OcspResult(stapled=True, failures=tuple(failures), **facts)


def _cert_status_finding(
    single: ocsp.OCSPSingleResponse, serial: str, revocation_reason: str | None, address: IPAddress | None
) -> Failure | None:
    """``ocsp_revoked`` for a revoked certificate, ``ocsp_invalid`` for one unknown to the responder."""
    if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        revoked = single.revocation_time_utc.timestamp() if single.revocation_time_utc else None
        when = f" on {format_time(revoked)}" if revoked is not None else ""
        reason = f" ({revocation_reason})" if revocation_reason else ""
        return Failure(
            Reason.OCSP_REVOKED,
            f"the stapled OCSP response says certificate serial {serial} was revoked{when}{reason}; "
            f"{_REFUSES}",
            address,
        )
    if single.certificate_status is ocsp.OCSPCertStatus.UNKNOWN:
        return Failure(
            Reason.OCSP_INVALID,
            f"stapled OCSP response says the status of serial {serial} is unknown to the responder; "
            f"{_REFUSES}",
            address,
        )
    return None


def _peer_certificates(connection: SSL.Connection) -> tuple[x509.Certificate | None, list[x509.Certificate]]:
    """The leaf and the issuer candidates (verified chain, then as sent), as ``cryptography`` objects.

    ``cryptography`` warns (``CryptographyDeprecationWarning``) when it loads a certificate
    with a negative or zero serial number; the TLS stage already records that as a note
    on the certificate, so the warning is silenced here rather than printed on stderr.

    Raises:
        ValueError: ``cryptography`` refuses a certificate of the chain.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        leaf = connection.get_peer_certificate(as_cryptography=True)
        candidates = [
            *(connection.get_verified_chain(as_cryptography=True) or [])[1:],
            *(connection.get_peer_cert_chain(as_cryptography=True) or [])[1:],
        ]
    return leaf, candidates


def find_issuer(leaf: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The first candidate whose name is the leaf's issuer and whose key signed the leaf (pure)."""
    for candidate in candidates:
        if candidate.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


# --------------------------------------------------------------------------- helpers


def _keep_staple(connection: SSL.Connection, data: bytes, _unused: object) -> bool:
    """OpenSSL's status callback: keep the staple for later judgement, never abort."""
    staples = connection.get_app_data()
    if isinstance(staples, list):
        staples.append(bytes(data))
    return True


async def bio_handshake(
    connection: SSL.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Drive a client handshake over memory BIOs: OpenSSL's output to the socket and back.

    Raises:
        SSL.Error: the handshake failed (an alert …).
        EOFError: the server closed the connection during the handshake.
        OSError: the connection failed.
    """
    while True:
        try:
            connection.do_handshake()
        except SSL.WantReadError:
            await _flush(connection, writer)
            data = await reader.read(_CHUNK)
            if not data:
                raise EOFError("the server closed the connection during the handshake") from None
            connection.bio_write(data)
            continue
        await _flush(connection, writer)
        return


async def _flush(connection: SSL.Connection, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            chunk = connection.bio_read(_CHUNK)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        writer.write(chunk)
    await writer.drain()


def _status_name(status: ocsp.OCSPResponseStatus) -> str:
    return {
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
        ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
        ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
        ocsp.OCSPResponseStatus.SIG_REQUIRED: "sigRequired",
        ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
    }.get(status, status.name.lower())


def _ts(value: object) -> float | None:
    return value.timestamp() if hasattr(value, "timestamp") else None


def _staleness(this_update: float, next_update: float | None, now: float) -> str | None:
    """Why the response is outside its validity (with :data:`VALIDITY_LEEWAY`), else ``None``."""
    if this_update - VALIDITY_LEEWAY > now:
        return (
            f"is not valid yet: thisUpdate {format_time(this_update)} is {describe_age(this_update, now)} "
            f"(probe's clock says {format_time(now)})"
        )
    if next_update is not None and next_update + VALIDITY_LEEWAY < now:
        return f"has expired: nextUpdate {format_time(next_update)} was {describe_age(next_update, now)}"
    return None


def _single_for(
    responses: Iterable[ocsp.OCSPSingleResponse], leaf: x509.Certificate, issuer: x509.Certificate | None
) -> ocsp.OCSPSingleResponse | None:
    """The answer about ``leaf``: same serial and, when the issuer is known, same issuer hashes."""
    for single in responses:
        if single.serial_number != leaf.serial_number:
            continue
        if issuer is None:
            return single
        try:
            wanted = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, single.hash_algorithm).build()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if (wanted.issuer_name_hash, wanted.issuer_key_hash) == (
            single.issuer_name_hash,
            single.issuer_key_hash,
        ):
            return single
    return None


def _responder(response: ocsp.OCSPResponse) -> str:
    if response.responder_name is not None:
        return response.responder_name.rfc4514_string()
    return f"key sha1:{(response.responder_key_hash or b'').hex()}"


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Whether ``cert`` is the one the response's ResponderID names (by name or key hash)."""
    if response.responder_name is not None:
        return cert.subject == response.responder_name
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest == response.responder_key_hash


def _signature_problem(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: float) -> str | None:
    """Why the response's signature cannot be trusted for ``issuer``'s certificates, else ``None``.

    RFC 6960 §4.2.2.2: the signer is the issuer itself, or a certificate the issuer issued
    with the id-kp-OCSPSigning extended key usage (included in the response).
    """
    if _is_responder(response, issuer):
        signer = issuer
    else:
        delegated = [c for c in response.certificates if _is_responder(response, c)]
        if not delegated:
            return f"is signed by {_responder(response)}, which is not the issuer and sent no certificate"
        signer = delegated[0]
        name = signer.subject.rfc4514_string()
        if find_issuer(signer, [issuer]) is None:
            return f"is signed by {name}, a responder the issuer did not certify"
        try:
            usages = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            return (
                f"is signed by {name}, which is not authorised to sign OCSP responses (no OCSPSigning usage)"
            )
        if not signer.not_valid_before_utc.timestamp() <= now <= signer.not_valid_after_utc.timestamp():
            return f"is signed by {name}, whose certificate is not valid now"
    if not _signature_verifies(response, signer):
        return f"has a signature that does not verify with the key of {signer.subject.rfc4514_string()}"
    return None


def _signature_verifies(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    try:
        algorithm = response.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
                key.verify(signature, data, pss, algorithm)
            else:
                key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        elif isinstance(key, dsa.DSAPublicKey) and algorithm is not None:
            key.verify(signature, data, algorithm)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True
