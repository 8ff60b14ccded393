"""TLS stage: TCP connect and TLS handshake with SNI to one address, verified by OpenSSL.

Verification is OpenSSL's, through Python's ``ssl``, configured as curl configures it
(partial chains to a trusted intermediate accepted) with one stricter rule taken from
browsers and Go: the subject CN is never used as a hostname (RFC 6125 §6.4.4). When
verification fails, a second handshake without verification obtains the certificates as
sent, so an expired or mismatched certificate still shows its names and dates.

Every context offers OpenSSL's default cipher list, as curl does, not Python's narrower
one; a weak suite a server picks is a warning (``tls_weak_cipher``), never a handshake
failure curl would not have. A certificate ``cryptography`` cannot parse is described from
OpenSSL's own decode of it (``cert_unparsed``), so certificate facts never vanish.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from probe._files import MAX_PEM_BYTES, FileRefused, check_capped, why_unreadable
from probe._text import openssl_words
from probe.config.models import Timeouts
from probe.model.deadline import Deadline
from probe.model.reasons import Reason
from probe.model.results import CertInfo, Failure, IPAddress, TlsResult
from probe.stages import _sockets as netio
from probe.stages import client_auth
from probe.stages.certs import (
    FactsCache,
    cert_info,
    classify_verify_error,
    dates_beside_a_name_mismatch,
    explain_unparsed,
)
from probe.stages.client_auth import ClientCredentials

if TYPE_CHECKING:
    from probe.stages.plan import TargetPlan

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

_SETTING = {version: setting for setting, version in _VERSIONS.items()}

# ssl.SSLError.reason values (OpenSSL reason codes) meaning "no common protocol version".
_VERSION_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_SSL_VERSION",
        "UNKNOWN_PROTOCOL",
    }
)
# The peer did not speak TLS at all (e.g. plain HTTP on the HTTPS port).
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"})
# The server accepts none of the ALPN protocols offered.
_ALPN_REASONS = frozenset({"TLSV1_ALERT_NO_APPLICATION_PROTOCOL", "NO_APPLICATION_PROTOCOL"})

#: ALPN protocols offered for each ``http_version``, in curl's order of preference.
ALPN = {"auto": ("h2", "http/1.1"), "1.1": ("http/1.1",), "2": ("h2",)}


class PinnedAlpnContext(ssl.SSLContext):
    """An ``SSLContext`` whose ALPN list, once set, stays as it is.

    httpcore sets its own ALPN list (``http/1.1`` first, and ``http/1.1`` even for
    HTTP/2 only) on the context of every connection it opens; pinning the list keeps the
    HTTP requests offering exactly what the TLS stage offered.
    """

    _alpn_pinned = False

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        """Set the list the first time; later calls are ignored."""
        if not self._alpn_pinned:
            super().set_alpn_protocols(alpn_protocols)
            self._alpn_pinned = True


#: OpenSSL's own default cipher list: what curl and ``openssl s_client`` offer.
CURL_CIPHERS = "DEFAULT"
#: The same at security level 0, the only level at which OpenSSL 3 speaks TLS 1.0 and 1.1.
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"

# Key exchanges without forward secrecy (RFC 9325 §4.1: SHOULD NOT negotiate static RSA).
_NO_FORWARD_SECRECY = frozenset({"kx-rsa", "kx-psk", "kx-rsa-psk"})
# TLS versions RFC 8996 deprecates, as ssl.SSLObject.version() names them.
_DEPRECATED_VERSIONS = frozenset({"TLSv1", "TLSv1.1"})


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The SSL contexts of one trust configuration, built once and reused every cycle.

    Attributes:
        verify: for the TLS stage's handshake (ALPN from ``http_version``; ``h2``,
            ``http/1.1`` like curl by default).
        http: for the HTTP stage: ``verify`` itself (its ALPN list is pinned against
            httpcore's changes).
        inspect: no verification, to read the certificates as sent after a failure.
        any_version: no verification and every TLS version, to learn which version a
            server speaks when the handshake at ``min_tls_version`` failed.
        skip_verify: verification is off (``insecure_skip_verify``); ``verify`` and
            ``http`` then do not verify either.
        anchors: the trust anchors of ``verify``, parsed on first use (only a failed
            verification needs them) and kept, to name an expired or not yet valid anchor
            (which the server does not send). Parsing the system store costs tens of
            milliseconds, which ``probe check`` would otherwise spend before its first DNS
            query.
        client: the client certificate every context presents when a server asks for one
            (``tls_client``), ``None`` without one.
    """

    verify: ssl.SSLContext
    http: ssl.SSLContext
    inspect: ssl.SSLContext
    any_version: ssl.SSLContext
    min_version: ssl.TLSVersion
    skip_verify: bool
    alpn: tuple[str, ...] = ALPN["auto"]
    client: ClientCredentials | None = None
    parsed_anchors: list[tuple[CertInfo, ...]] = field(default_factory=list, repr=False, compare=False)

    @property
    def anchors(self) -> tuple[CertInfo, ...]:
        """The parsed trust anchors of ``verify`` (none when verification is off)."""
        if not self.parsed_anchors:
            self.parsed_anchors.append(() if self.skip_verify else _anchors(self.verify))
        return self.parsed_anchors[0]


def build_contexts(
    ca_file: Path | None,
    min_tls_version: str,
    skip_verify: bool = False,
    http_version: str = "auto",
    client: ClientCredentials | None = None,
) -> TlsContexts:
    """Build the contexts for a trust configuration.

    Args:
        ca_file: PEM bundle of trust anchors; ``None`` for the system store.
        min_tls_version: ``"1.0"`` … ``"1.3"``.
        skip_verify: build non-verifying contexts (``insecure_skip_verify``).
        http_version: ``"auto"``, ``"1.1"`` or ``"2"``: the ALPN list (RFC 7301) of both
            the TLS stage and the HTTP requests, see :data:`ALPN`.
        client: the client certificate (``tls_client``, checked by
            :func:`probe.stages.client_auth.load`), loaded into every context.

    Every context offers OpenSSL's default cipher list (``DEFAULT``, at the security level
    of the system's OpenSSL configuration), the list curl and ``openssl s_client`` offer,
    instead of Python's narrower one (which leaves out, e.g., the RSA key-exchange suites
    that older load-balancer policies still serve). TLS 1.3 suites are OpenSSL's too.

    OpenSSL 3 refuses TLS 1.0 and 1.1 at its default security level, and so does curl. With
    ``min_tls_version`` 1.2 or 1.3 (the default) every context keeps that level, so the
    verdict never rests on weaker crypto than curl accepts. When the user lowers the floor
    to 1.0 or 1.1, probe must really be able to speak that version: ``verify``, ``http``
    and ``inspect`` then use security level 0 (``DEFAULT:@SECLEVEL=0``, what
    ``curl --tlsv1.0 --ciphers DEFAULT@SECLEVEL=0`` does), and a handshake at TLS 1.0/1.1 is
    reported as ``tls_version_deprecated`` (RFC 8996). ``any_version``, which only learns
    which version an old server speaks, always uses level 0.

    A client certificate is sent only to a server that asks for one, in the handshake or
    after it (TLS 1.3 post-handshake authentication, which every context offers, as curl
    does).

    Raises:
        ValueError: ``ca_file`` cannot be read, is not a regular file of at most 4 MiB
            (:data:`probe._files.MAX_PEM_BYTES`) or holds no certificate (a message without
            the file or field; the caller adds them).
        probe.stages.client_auth.ClientCertError: OpenSSL refuses the client certificate.
    """
    lowered = _VERSIONS[min_tls_version] < ssl.TLSVersion.TLSv1_2

    def make(
        verify: bool, alpn: list[str], minimum: str = min_tls_version, legacy: bool = lowered
    ) -> ssl.SSLContext:
        context = PinnedAlpnContext(ssl.PROTOCOL_TLS_CLIENT)
        # OpenSSL's defaults, as curl offers; level 0 because OpenSSL 3 refuses TLS < 1.2 otherwise.
        context.set_ciphers(LEGACY_CIPHERS if legacy else CURL_CIPHERS)
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1; probing for them is deliberate.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = _VERSIONS[minimum]
        context.set_alpn_protocols(alpn)
        context.post_handshake_auth = True  # as curl: a server may ask after the handshake
        if client is not None:
            client_auth.install(context, client)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        context.hostname_checks_common_name = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if ca_file is None:
            context.load_default_certs()
        else:
            try:
                check_capped(ca_file, MAX_PEM_BYTES)
                context.load_verify_locations(cafile=str(ca_file))
            except FileRefused as exc:
                raise ValueError(f"{ca_file}: {exc}") from None
            except ssl.SSLError as exc:
                why = openssl_words(exc)
                raise ValueError(f"{ca_file}: not a PEM certificate bundle ({why})") from None
            except OSError as exc:
                raise ValueError(f"{ca_file}: {why_unreadable(exc)}") from None
            # Any certificate is a trust anchor, a pinned self-signed leaf too (as for curl).
            if not context.cert_store_stats()["x509"]:
                raise ValueError(f"{ca_file}: holds no certificate")
        return context

    alpn = ALPN[http_version]
    # One context for the TLS stage and the HTTP requests: the same settings, its ALPN list
    # pinned, and the trust store (tens of milliseconds for the system's) loaded once.
    verify_context = make(not skip_verify, list(alpn))
    return TlsContexts(
        verify=verify_context,
        http=verify_context,
        inspect=make(False, ["h2", "http/1.1"]),
        any_version=make(False, ["h2", "http/1.1"], minimum="1.0", legacy=True),
        min_version=_VERSIONS[min_tls_version],
        skip_verify=skip_verify,
        alpn=alpn,
        client=client,
    )


class OpenConnection(NamedTuple):
    """The TLS stage's connection after a completed handshake, left open for HTTP.

    The first HTTP request of an address-probe goes over it (``probe.stages._transport``), so
    an address costs one handshake. Whoever receives it closes it (:meth:`close`).
    """

    connection: netio.Connection

    def close(self) -> None:
        """Close the connection at once."""
        self.connection.close()


async def handshake(
    plan: TargetPlan,
    address: IPAddress,
    deadline: Deadline,
    clock: Callable[[], float] = time.time,
) -> TlsResult:
    """Connect to ``address`` and complete a TLS handshake with SNI = the target's hostname.

    As :func:`handshake_open`, with the connection closed at once.

    Returns:
        The TLS result; TCP, TLS and certificate faults are findings in ``failures``.
    """
    result, connection = await handshake_open(plan, address, deadline, clock)
    if connection is not None:
        connection.close()
    return result


async def handshake_open(
    plan: TargetPlan,
    address: IPAddress,
    deadline: Deadline,
    clock: Callable[[], float] = time.time,
) -> tuple[TlsResult, OpenConnection | None]:
    """The TLS stage at one address; the connection is left open when it can carry HTTP.

    Connects to ``address`` on the target's port and completes a handshake with SNI = the
    target's hostname, verified by OpenSSL with the plan's contexts. An ``http://`` target
    has no handshake: the TCP connect only (:func:`connect_plain`).

    Args:
        plan: the target's plan (port, hostname, ``timeouts.connect`` and ``timeouts.tls``
            in seconds, the SSL contexts).
        address: the address to connect to.
        deadline: the cycle's deadline; both timeouts are clipped to it.
        clock: Unix time, for judging certificate dates in messages.

    Returns:
        The TLS result and, when the handshake completed (or the plain connect), the open
        connection (the caller closes it); ``None`` after any failure to connect or to shake
        hands. Faults are findings in the result, never exceptions.
    """
    target = plan.target
    if target.plain:
        return await connect_plain(address, target.port, target.timeouts, deadline)
    # Only h2 is offered for http_version 2, or for grpc_health, which needs HTTP/2 whatever
    # http_version says: the ALPN finding names the one the user set.
    only_h2 = "grpc_health needs HTTP/2 (gRPC runs on nothing else)" if target.grpc_health is not None else ""
    return await _handshake_open(
        address, target.port, target.hostname, plan.contexts, target.timeouts, deadline, clock, only_h2
    )


async def _handshake_open(
    address: IPAddress,
    port: int,
    hostname: str,
    contexts: TlsContexts,
    timeouts: Timeouts,
    deadline: Deadline,
    clock: Callable[[], float],
    only_h2: str = "",
) -> tuple[TlsResult, OpenConnection | None]:
    connected = await _connect(address, port, timeouts.connect, deadline)
    if isinstance(connected, Failure):
        return _result(address, port, failures=(connected,)), None
    connection, connect_seconds = connected
    start = time.monotonic()
    limit = deadline.clip(timeouts.tls)
    try:
        await connection.handshake(contexts.verify, hostname, connection.deadline(limit))
    except ssl.SSLCertVerificationError as exc:  # the connection is closed by now
        chain = await _inspect_chain(address, port, hostname, contexts, timeouts, deadline)
        return _result(
            address,
            port,
            connect_seconds=connect_seconds,
            verify_code=exc.verify_code,
            verify_message=exc.verify_message,
            chain=chain,
            failures=(
                *verify_findings(exc, chain, hostname, clock(), contexts.anchors, address),
                *unparsed_findings(chain, (), address),
            ),
        ), None
    except TimeoutError:
        reason = deadline.timeout_reason(Reason.TLS_HANDSHAKE_TIMEOUT)
        return _result(
            address,
            port,
            connect_seconds=connect_seconds,
            failures=(Failure(reason, f"TLS handshake did not complete within {limit:.3g}s", address),),
        ), None
    except (ssl.SSLError, OSError, EOFError, ValueError) as exc:
        where = client_auth.Where(address, port, hostname, contexts.min_version, timeouts, deadline)
        reason, detail = await _handshake_failure(exc, where, contexts, clock)
        return _result(
            address, port, connect_seconds=connect_seconds, failures=(Failure(reason, detail, address),)
        ), None
    handshake_seconds = time.monotonic() - start
    ssl_object = connection.ssl_object
    assert ssl_object is not None
    try:
        chain = _parse_chain(_peer_chain(ssl_object, verified=False))
        verified_chain = () if contexts.skip_verify else _parse_chain(_peer_chain(ssl_object, verified=True))
        cipher = ssl_object.cipher()
        version = ssl_object.version()
        cipher_name = cipher[0] if cipher else None
        alpn = ssl_object.selected_alpn_protocol()
        findings = (
            *alpn_failures(alpn, contexts.alpn, address, only_h2),
            *negotiation_findings(version, cipher_name, contexts.min_version, address),
            *unparsed_findings(chain, verified_chain, address),
        )
        result = _result(
            address,
            port,
            connect_seconds=connect_seconds,
            handshake_seconds=handshake_seconds,
            version=version,
            cipher=cipher_name,
            alpn=alpn,
            verified=not contexts.skip_verify,
            chain=chain,
            verified_chain=verified_chain,
            failures=findings,
        )
    except BaseException:
        connection.close()
        raise
    return result, OpenConnection(connection)


async def _handshake_failure(
    exc: BaseException, where: client_auth.Where, contexts: TlsContexts, clock: Callable[[], float]
) -> tuple[Reason, str]:
    """The finding of a handshake that failed otherwise than by verification or a timeout.

    Some servers just close or reset on a version mismatch instead of sending a
    protocol_version alert, and the alert does not say which version the server has: a
    second handshake, accepting any version, tells and names it. A refusal of the client
    certificate (or the bare handshake_failure of a TLS 1.2 listener that asked for one)
    is told and explained by :func:`probe.stages.client_auth.refusal`.
    """
    reason, detail = classify_tls_error(exc)
    if reason in (Reason.TLS_HANDSHAKE_FAILED, Reason.TLS_VERSION_BELOW_MINIMUM):
        spoken = await _spoken_version(
            where.address, where.port, where.hostname, contexts, where.timeouts, where.deadline
        )
        if spoken is not None and spoken < contexts.min_version:
            return Reason.TLS_VERSION_BELOW_MINIMUM, (
                f"the server speaks only {_version_name(spoken)}, below the minimum "
                f"{_version_name(contexts.min_version)}"
            )
    return await client_auth.refusal(exc, reason, detail, where, contexts.client, clock())


async def connect_plain(
    address: IPAddress, port: int, timeouts: Timeouts, deadline: Deadline
) -> tuple[TlsResult, OpenConnection | None]:
    """TCP connect only, for an ``http://`` target: the connection is left open for HTTP.

    The same connect as the handshake's (``tcp_refused``, ``tcp_timeout``,
    ``tcp_error``), without a handshake. The result has ``plain`` set and no TLS facts.

    Args:
        address: the address to connect to.
        port: the TCP port.
        timeouts: ``connect`` bounds the TCP connect (seconds).
        deadline: the cycle's deadline; the connect is clipped to it.

    Returns:
        The result (``connect_seconds`` or a TCP finding) and, when connected, the open
        connection (the caller closes it); ``None`` when the connect failed.
    """
    connected = await _connect(address, port, timeouts.connect, deadline)
    if isinstance(connected, Failure):
        return _result(address, port, plain=True, failures=(connected,)), None
    connection, connect_seconds = connected
    return _result(address, port, plain=True, connect_seconds=connect_seconds), OpenConnection(connection)


def classify_tls_error(exc: BaseException) -> tuple[Reason, str]:
    """Map a handshake exception (not a verification failure) to a reason and a sentence.

    Chosen by type and by ``ssl.SSLError.reason`` (OpenSSL's reason code), never by the
    message text.
    """
    if isinstance(exc, ssl.SSLError):
        code = getattr(exc, "reason", None) or ""
        if code in _VERSION_REASONS:
            return Reason.TLS_VERSION_BELOW_MINIMUM, (
                f"no TLS version in common: the server offers none at or above the minimum "
                f"(OpenSSL: {openssl_words(exc)})"
            )
        if code in _NOT_TLS_REASONS:
            return Reason.TLS_HANDSHAKE_FAILED, (
                "the server did not answer with TLS (plain HTTP on the HTTPS port?)"
            )
        client_cert = client_auth.classify_alert(exc)
        if client_cert is not None:
            return client_cert
        # Python 3.11's table of OpenSSL reason codes lacks this alert (reason is None);
        # then OpenSSL's own text for alert 120 is the only trace of it.
        if code in _ALPN_REASONS or (not code and "alert no application protocol" in str(exc)):
            return Reason.TLS_ALPN_MISMATCH, (
                "the server accepts none of the HTTP versions offered in ALPN "
                "(alert no_application_protocol); see http_version"
            )
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return Reason.TLS_HANDSHAKE_FAILED, "the server closed the connection during the handshake"
        return Reason.TLS_HANDSHAKE_FAILED, f"handshake failed: {openssl_words(exc)}"
    if isinstance(exc, ConnectionResetError):
        return Reason.TLS_HANDSHAKE_FAILED, "the server reset the connection during the handshake"
    if isinstance(exc, EOFError | ConnectionError):
        return Reason.TLS_HANDSHAKE_FAILED, "the server closed the connection during the handshake"
    return Reason.TLS_HANDSHAKE_FAILED, f"handshake failed: {type(exc).__name__}: {exc}"


def alpn_failures(
    selected: str | None, offered: tuple[str, ...], address: IPAddress, only_h2: str = ""
) -> tuple[Failure, ...]:
    """The finding when a completed handshake did not agree on a usable HTTP version.

    A server that selects no ALPN protocol speaks HTTP/1.1 to clients that offered it
    (RFC 7301 §3.2, as curl assumes). When only ``h2`` was offered (``http_version: 2``,
    or ``grpc_health``), that is a mismatch: the server offered no h2.

    Args:
        selected: the protocol the server selected, ``None`` when none.
        offered: the protocols probe offered, in order.
        address: the address, for the finding.
        only_h2: why only ``h2`` was offered, in words (default ``"http_version is 2"``).
    """
    if selected is None and "http/1.1" not in offered:
        return (
            Failure(
                Reason.TLS_ALPN_MISMATCH,
                f"{only_h2 or 'http_version is 2'} but the server offered no h2 in ALPN (probe offered "
                f"{', '.join(offered)}; the server selected none): it speaks HTTP/1.1 only",
                address,
            ),
        )
    return ()


def classify_connect_error(exc: OSError) -> tuple[Reason, str]:
    """Map a TCP connect failure to a reason and a sentence.

    The connect (``probe.stages._sockets``, as asyncio) puts its own text in ``strerror`` ("Connect
    call failed …"); the errno says what happened (no route, network unreachable …). No
    socket for lack of file descriptors is this host's limit, ``cycle_fd_limit``
    (:func:`probe.stages._sockets.fd_limit`), not a TCP failure.
    """
    if isinstance(exc, ConnectionRefusedError):
        return Reason.TCP_REFUSED, "connection refused"
    no_fd = netio.fd_limit(exc)
    if no_fd is not None:  # this host's limit: no packet left
        return Reason.CYCLE_FD_LIMIT, no_fd
    why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return Reason.TCP_ERROR, f"connect failed: {why}"


def _peer_chain(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, *, verified: bool
) -> list[tuple[bytes, Callable[[], dict[str, Any]]]]:
    """The peer's certificates as DER, each with a function returning OpenSSL's decode."""
    name = "get_verified_chain" if verified else "get_unverified_chain"
    low_level = getattr(ssl_object, "_sslobj", None)
    method = getattr(low_level, name, None) or getattr(ssl_object, name)
    certificates: list[tuple[bytes, Callable[[], dict[str, Any]]]] = []
    for cert in method() or []:
        if isinstance(cert, bytes):
            certificates.append((cert, dict))
        else:
            certificates.append((cert.public_bytes(ssl._ssl.ENCODING_DER), cert.get_info))  # type: ignore[attr-defined]
    return certificates


def _anchors(context: ssl.SSLContext) -> tuple[CertInfo, ...]:
    """The context's trust anchors that ``cryptography`` parses (to name an out-of-date one)."""
    infos = []
    for der in context.get_ca_certs(binary_form=True):
        try:
            infos.append(cert_info(der))
        except ValueError:
            continue
    return tuple(infos)


def negotiation_findings(
    version: str | None, cipher: str | None, min_version: ssl.TLSVersion, address: IPAddress
) -> tuple[Failure, ...]:
    """Warnings about what a completed handshake negotiated.

    ``tls_version_deprecated`` for TLS 1.0 or 1.1 (RFC 8996), which a handshake reaches
    only when ``min_tls_version`` was lowered; ``tls_weak_cipher`` for a suite RFC 9325
    (BCP 195) advises against (see :func:`cipher_weaknesses`). curl and ``openssl
    s_client`` complete such handshakes silently; probe completes them too and says so.

    Args:
        version: the negotiated version as ``ssl`` names it (``"TLSv1"`` … ``"TLSv1.3"``).
        cipher: the negotiated suite's OpenSSL name.
        min_version: the target's floor.
        address: the address, for the findings.
    """
    findings = []
    if version in _DEPRECATED_VERSIONS:
        findings.append(
            Failure(
                Reason.TLS_VERSION_DEPRECATED,
                f"negotiated {version}, deprecated by RFC 8996; probe spoke it because "
                f"min_tls_version is {_SETTING[min_version]} (OpenSSL security level 0, "
                "as curl --tlsv1.0 --ciphers DEFAULT@SECLEVEL=0); curl at its defaults refuses it",
                address,
            )
        )
    details = _cipher_table().get(cipher or "")
    weaknesses = cipher_weaknesses(details) if details else ()
    if weaknesses:
        findings.append(
            Failure(
                Reason.TLS_WEAK_CIPHER,
                f"negotiated {cipher} ({version}): {'; '.join(weaknesses)}; curl and openssl "
                "s_client accept it too",
                address,
            )
        )
    return tuple(findings)


def cipher_weaknesses(details: Mapping[str, Any]) -> tuple[str, ...]:
    """What RFC 9325 (BCP 195) holds against a cipher suite, from OpenSSL's description.

    Args:
        details: one entry of ``SSLContext.get_ciphers()`` (``kea``, ``symmetric``,
            ``digest``, ``aead``, ``strength_bits``).

    Returns:
        Plain phrases, empty for a suite without known weakness: static RSA (or PSK) key
        exchange without forward secrecy (§4.1), 3DES (§4.1, Sweet32) and RC4 (RFC 7465),
        CBC with HMAC-SHA-1 (§4.2 recommends only AEAD suites), fewer than 128 bits.
    """
    weaknesses = []
    kea = str(details.get("kea") or "")
    symmetric = str(details.get("symmetric") or "")
    if kea in _NO_FORWARD_SECRECY:
        exchange = kea.removeprefix("kx-").upper()
        weaknesses.append(f"no forward secrecy ({exchange} key exchange; RFC 9325 §4.1)")
    if symmetric.startswith("des-ede3"):
        weaknesses.append("3DES, 64-bit blocks (Sweet32; RFC 9325 §4.1)")
    elif symmetric.startswith("rc4"):
        weaknesses.append("RC4 (RFC 7465 forbids it)")
    elif not details.get("aead") and "cbc" in symmetric and details.get("digest") == "sha1":
        weaknesses.append("CBC with HMAC-SHA1, not an AEAD suite (RFC 9325 §4.2)")
    bits = details.get("strength_bits")
    if isinstance(bits, int) and 0 < bits < 128:
        weaknesses.append(f"{bits}-bit encryption")
    return tuple(weaknesses)


@functools.cache
def _cipher_table() -> dict[str, dict[str, Any]]:
    """OpenSSL's description of every cipher suite it knows, by name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return {c["name"]: dict(c) for c in context.get_ciphers()}


def verify_findings(
    error: ssl.SSLCertVerificationError,
    chain: tuple[CertInfo, ...],
    hostname: str,
    now: float,
    anchors: tuple[CertInfo, ...],
    address: IPAddress,
) -> tuple[Failure, ...]:
    """The findings of a failed verification: OpenSSL's error, then what it stopped before.

    OpenSSL's error comes first and sets the verdict (critical); a certificate for another
    name that is also out of date adds ``cert_expired`` or ``cert_not_yet_valid``
    (:func:`probe.stages.certs.dates_beside_a_name_mismatch`).

    Args:
        error: the handshake's verification error.
        chain: the certificates as sent, leaf first (from a second, unverified handshake).
        hostname: the name that was checked.
        now: Unix time, for the dates.
        anchors: the trust anchors of the context.
        address: the address the findings are about.
    """
    code = error.verify_code
    reason, detail = classify_verify_error(
        code, error.verify_message or str(error), chain, hostname, now, anchors
    )
    beside = dates_beside_a_name_mismatch(code, chain, now, anchors)
    return (Failure(reason, detail, address), *(Failure(r, d, address) for r, d in beside))


def unparsed_findings(
    chain: tuple[CertInfo, ...], verified_chain: tuple[CertInfo, ...], address: IPAddress
) -> tuple[Failure, ...]:
    """One ``cert_unparsed`` warning per certificate whose facts came from OpenSSL's decode."""
    seen: set[str] = set()
    findings = []
    for cert in (*chain, *verified_chain):
        if cert.parse_error is None or cert.sha256_fingerprint in seen:
            continue
        seen.add(cert.sha256_fingerprint)
        findings.append(
            Failure(Reason.CERT_UNPARSED, explain_unparsed(cert, chain or verified_chain), address)
        )
    return tuple(findings)


#: Parsed certificate facts by the DER's SHA-256, shared by every target (see FactsCache).
_FACTS = FactsCache()


def _parse_chain(certificates: list[tuple[bytes, Callable[[], dict[str, Any]]]]) -> tuple[CertInfo, ...]:
    """Facts of each certificate: ``cryptography``'s, else OpenSSL's decode (never dropped).

    Parsed once per distinct certificate (:class:`probe.stages.certs.FactsCache`); OpenSSL's decode
    is asked for only when ``cryptography`` refuses a certificate.
    """
    infos = []
    for index, (der, decode) in enumerate(certificates):
        try:
            infos.append(_FACTS.facts(der, decode, is_ca=index > 0))
        except ValueError:
            continue  # no decode (Python 3.13 public API only): the invariant in verdict reports it
    return tuple(infos)


async def _connect(
    address: IPAddress, port: int, timeout: float, deadline: Deadline
) -> tuple[netio.Connection, float] | Failure:
    start = time.monotonic()
    limit = deadline.clip(timeout)
    try:
        connection = await netio.connect(str(address), port, limit)
    except TimeoutError:
        reason = deadline.timeout_reason(Reason.TCP_TIMEOUT)
        return Failure(reason, f"no TCP connection to port {port} within {limit:.3g}s", address)
    except OSError as exc:
        reason, detail = classify_connect_error(exc)
        return Failure(reason, f"{detail} (port {port})", address)
    # Until the loop saw the connect complete (Go's ConnectDone), not until this task resumed.
    return connection, (connection.connected_at or time.monotonic()) - start


async def _spoken_version(
    address: IPAddress,
    port: int,
    hostname: str,
    contexts: TlsContexts,
    timeouts: Timeouts,
    deadline: Deadline,
) -> ssl.TLSVersion | None:
    """The version a server negotiates when every version is allowed, ``None`` if none."""
    if contexts.min_version <= ssl.TLSVersion.TLSv1:
        return None
    connected = await _connect(address, port, timeouts.connect, deadline)
    if isinstance(connected, Failure):
        return None
    connection, _ = connected
    try:
        await connection.handshake(
            contexts.any_version, hostname, connection.deadline(deadline.clip(timeouts.tls))
        )
        version = connection.ssl_object.version() if connection.ssl_object is not None else None
        return {_version_name(v): v for v in _VERSIONS.values()}.get(version or "")
    except (TimeoutError, OSError, EOFError, ValueError):  # ssl.SSLError is an OSError
        return None
    finally:
        connection.close()


def _version_name(version: ssl.TLSVersion) -> str:
    return {ssl.TLSVersion.TLSv1: "TLSv1"}.get(version, version.name.replace("_", "."))


async def _inspect_chain(
    address: IPAddress,
    port: int,
    hostname: str,
    contexts: TlsContexts,
    timeouts: Timeouts,
    deadline: Deadline,
) -> tuple[CertInfo, ...]:
    """The certificates as sent, from a second handshake that does not verify."""
    connected = await _connect(address, port, timeouts.connect, deadline)
    if isinstance(connected, Failure):
        return ()
    connection, _ = connected
    try:
        await connection.handshake(
            contexts.inspect, hostname, connection.deadline(deadline.clip(timeouts.tls))
        )
        ssl_object = connection.ssl_object
        return _parse_chain(_peer_chain(ssl_object, verified=False)) if ssl_object is not None else ()
    except (TimeoutError, OSError, EOFError, ValueError):  # ssl.SSLError is an OSError
        return ()
    finally:
        connection.close()


def _result(
    address: IPAddress,
    port: int,
    *,
    connect_seconds: float | None = None,
    handshake_seconds: float | None = None,
    version: str | None = None,
    cipher: str | None = None,
    alpn: str | None = None,
    verified: bool = False,
    verify_code: int | None = None,
    verify_message: str | None = None,
    chain: tuple[CertInfo, ...] = (),
    verified_chain: tuple[CertInfo, ...] = (),
    failures: tuple[Failure, ...] = (),
    plain: bool = False,
) -> TlsResult:
    """A TLS result; what the stage did not get to is left empty (``None``, ``False``, ``()``)."""
    return TlsResult(
        address=address,
        port=port,
        connect_seconds=connect_seconds,
        handshake_seconds=handshake_seconds,
        version=version,
        cipher=cipher,
        alpn=alpn,
        verified=verified,
        verify_code=verify_code,
        verify_message=verify_message,
        chain=chain,
        verified_chain=verified_chain,
        failures=failures,
        plain=plain,
    )
