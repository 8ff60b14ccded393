"""Immutable results of one probe cycle, from one DNS query up to a whole target.

Conventions: durations are float seconds in ``*_seconds`` fields, instants are float Unix
time in ``*_timestamp`` fields, sizes are int bytes in ``*_bytes`` fields, addresses are
``ipaddress`` objects. ``None`` means "unknown / did not happen", never a sentinel value.
Values are safe to hand from the probe loop to another thread without copying.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from probe.model.facts import ClientCertificate, TargetFacts
from probe.model.reasons import Reason, Stage, Status

IPAddress = IPv4Address | IPv6Address


def status_of(failures: Iterable[Failure]) -> Status:
    """The worst severity among ``failures``; ``OK`` when there are none."""
    return Status.worst(f.severity for f in failures)


class _Judged:
    """A result whose ``status`` is derived from its ``failures``, so the two never disagree.

    ``status`` is the worst severity among ``failures`` (``OK`` when there are none). It is
    worked out once, when the result is built (``dataclasses.replace`` builds anew), and
    cannot be passed in: reading it costs what reading a field costs (the daemon reads
    every target's status after every cycle).
    """

    __slots__ = ()
    failures: tuple[Failure, ...]
    status: Status

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", status_of(self.failures))


@dataclass(frozen=True, slots=True)
class Failure:
    """One finding: a reason code, the address it concerns (if any) and a plain sentence.

    ``backend`` names the backend a per-backend finding is about (``backend_missing`` by
    name, the ``direct_backends`` findings), ``None`` otherwise.
    """

    reason: Reason
    detail: str
    address: IPAddress | None = None
    backend: str | None = None

    @property
    def stage(self) -> Stage:
        """The stage of the reason code."""
        return self.reason.stage

    @property
    def severity(self) -> Status:
        """``Status.CRITICAL`` or ``Status.WARNING``."""
        return self.reason.severity


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """One query sent to one resolver.

    Attributes:
        resolver: ``IP:port`` of the resolver (IPv6 as ``[IP]:port``).
        qname: the name asked for, without the trailing dot.
        qtype: ``"A"`` or ``"AAAA"``.
        rcode: the response code text (``"NOERROR"``, ``"NXDOMAIN"`` …), ``None`` when no
            usable response arrived.
        tcp: the answer came over TCP (UDP answer was truncated).
        duration_seconds: time from sending to the answer (when the event loop saw it
            arrive) or the failure.
        error: why this attempt did not give a usable answer, ``None`` when it did.
        detail: a plain sentence about the attempt.
    """

    resolver: str
    qname: str
    qtype: str
    rcode: str | None
    tcp: bool
    duration_seconds: float
    error: Reason | None
    detail: str


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One address in the answer, with its TTL (seconds) and whether it may be probed.

    ``ttl`` is ``None`` for a pinned address (no DNS answer, so no TTL).
    """

    address: IPAddress
    ttl: int | None
    expected: bool


@dataclass(frozen=True, slots=True)
class AliasResult:
    """The addresses of ``expect_same_addresses_as`` and whether they equal the target's."""

    name: str
    addresses: tuple[IPAddress, ...]
    resolved: bool
    matches: bool


@dataclass(frozen=True, slots=True)
class DnsResult(_Judged):
    """The DNS stage of one target.

    Attributes:
        name: the hostname that was resolved.
        answers: the addresses, deduplicated and sorted (IPv4 first) so reports are stable.
        cname_chain: CNAME targets followed from ``name``, in order (empty when none).
        resolver: the resolver whose answer was used, ``None`` when none answered.
        rcode: the response code of that answer, ``None`` when none answered.
        queries: every query sent, in order, including failed ones.
        lookup_seconds: wall time of the whole stage, up to when the event loop saw the
            last answer arrive (or the last query failed).
        alias: the alias comparison, ``None`` when not configured.
        failures: DNS findings.
        pinned_by: the setting that pinned the addresses instead of a DNS query for
            ``name`` (``"addresses"``, ``"--resolve"``, ``"server_name"``,
            ``"--server-name"``, or ``"url"`` for an IP-address URL without a server name),
            ``None`` when ``name`` was resolved. Pinned answers have
            no TTL; ``queries``, ``resolver`` and ``lookup_seconds`` then concern only the
            alias name of ``expect_same_addresses_as``, if any.
    """

    name: str
    answers: tuple[DnsAnswer, ...]
    cname_chain: tuple[str, ...]
    resolver: str | None
    rcode: str | None
    queries: tuple[DnsQuery, ...]
    lookup_seconds: float
    alias: AliasResult | None
    failures: tuple[Failure, ...]
    status: Status = field(init=False, repr=False, compare=False)
    pinned_by: str | None = None

    @property
    def pinned(self) -> bool:
        """The addresses were given (``--resolve``, ``addresses``, an IP URL), not resolved."""
        return self.pinned_by is not None

    @property
    def probe_addresses(self) -> tuple[IPAddress, ...]:
        """The answers inside the expected networks: the only ones ever connected to."""
        return tuple(answer.address for answer in self.answers if answer.expected)


@dataclass(frozen=True, slots=True)
class CertInfo:
    """Facts about one X.509 certificate.

    Attributes:
        subject: RFC 4514 string of the subject.
        issuer: RFC 4514 string of the issuer.
        serial: the serial number in lowercase hex.
        not_before_timestamp: start of validity, Unix time.
        not_after_timestamp: end of validity, Unix time.
        sha256_fingerprint: SHA-256 of the DER encoding, lowercase hex.
        dns_names: subjectAltName dNSName entries.
        ip_addresses: subjectAltName iPAddress entries as text.
        common_name: the subject CN, ``None`` when absent.
        is_ca: basicConstraints CA is true.
        key: the public key kind and size, e.g. ``"RSA 2048"``, ``"EC P-256"``, ``"Ed25519"``.
        signature_algorithm: e.g. ``"sha256WithRSAEncryption"``.
        notes: true facts about the encoding that clients tolerate but standards forbid,
            e.g. ``"serial number is negative (RFC 5280 §4.1.2.2)"``; empty when none.
        parse_error: why probe's X.509 parser (cryptography) refused the certificate;
            the facts then come from OpenSSL's decode (``key`` and
            ``signature_algorithm`` are ``"unknown"``, ``is_ca`` is inferred from the
            certificate's place in the chain). ``None`` when it parsed.
    """

    subject: str
    issuer: str
    serial: str
    not_before_timestamp: float
    not_after_timestamp: float
    sha256_fingerprint: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    common_name: str | None
    is_ca: bool
    key: str
    signature_algorithm: str
    notes: tuple[str, ...] = ()
    parse_error: str | None = None

    @property
    def self_issued(self) -> bool:
        """Subject equals issuer (a root or a self-signed leaf)."""
        return self.subject == self.issuer


@dataclass(frozen=True, slots=True)
class TlsResult(_Judged):
    """TCP connect and TLS handshake to one address.

    Attributes:
        address: the address connected to.
        port: the TCP port.
        connect_seconds: TCP connect time, ``None`` when the connect failed.
        handshake_seconds: TLS handshake time, ``None`` when it did not complete.
        version: negotiated protocol, e.g. ``"TLSv1.3"``.
        cipher: negotiated cipher suite name.
        alpn: negotiated ALPN protocol, ``None`` when none.
        verified: chain and hostname verified by OpenSSL (with the stricter rules documented).
        verify_code: OpenSSL ``X509_V_ERR_*`` code when verification failed.
        verify_message: OpenSSL's text for ``verify_code``.
        chain: the certificates as sent by the server, leaf first; kept when verification fails.
        verified_chain: the chain OpenSSL built up to the trust anchor (empty unless verified).
        failures: TCP, TLS and certificate findings for this address.
        plain: an ``http://`` target: only the TCP connect happened, by design; every TLS
            fact is ``None`` or empty (absent, never "failed" or "not verified").
    """

    address: IPAddress
    port: int
    connect_seconds: float | None
    handshake_seconds: float | None
    version: str | None
    cipher: str | None
    alpn: str | None
    verified: bool
    verify_code: int | None
    verify_message: str | None
    chain: tuple[CertInfo, ...]
    verified_chain: tuple[CertInfo, ...]
    failures: tuple[Failure, ...]
    status: Status = field(init=False, repr=False, compare=False)
    plain: bool = False

    @property
    def connected(self) -> bool:
        """The TCP connection was established."""
        return self.connect_seconds is not None

    @property
    def leaf(self) -> CertInfo | None:
        """The server's own certificate, ``None`` when no certificate was obtained."""
        return self.chain[0] if self.chain else None

    @property
    def earliest_expiry_timestamp(self) -> float | None:
        """Earliest not-after among the certificates as sent (Unix time)."""
        return min((c.not_after_timestamp for c in self.chain), default=None)

    @property
    def verified_chain_expiry_timestamp(self) -> float | None:
        """Earliest not-after within the verified chain (Unix time); ``None`` if unverified."""
        return min((c.not_after_timestamp for c in self.verified_chain), default=None)

    @property
    def handshake_outcome(self) -> str:
        """What became of the handshake, one word.

        ``"verified"``: completed and the certificate verified. ``"unverified"``: completed
        with verification off (``insecure_skip_verify``). ``"verify_failed"``: the server
        spoke TLS but its certificate was refused (``verify_code`` says why), so the
        handshake was aborted. ``"timeout"``: did not complete in time. ``"failed"``: any
        other handshake failure. ``"not_attempted"``: no TCP connection. ``"plain"``: an
        ``http://`` target, connected; no handshake by design.
        """
        if not self.connected:
            return "not_attempted"
        if self.plain:
            return "plain"
        if self.version is not None:
            return "verified" if self.verified else "unverified"
        if self.verify_code is not None:
            return "verify_failed"
        timeouts = {Reason.TLS_HANDSHAKE_TIMEOUT, Reason.CYCLE_DEADLINE_EXCEEDED}
        if any(f.reason in timeouts for f in self.failures):
            return "timeout"
        return "failed"


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    """Phases of one HTTP request in seconds, named as in blackbox_exporter.

    ``connect`` TCP connect, ``tls`` handshake, ``processing`` from the end of the
    handshake to the first response byte, ``transfer`` reading the body. ``None`` when the
    phase did not happen.
    """

    connect: float | None = None
    tls: float | None = None
    processing: float | None = None
    transfer: float | None = None

    def items(self) -> tuple[tuple[str, float], ...]:
        """The phases that happened, as ``(name, seconds)`` pairs."""
        pairs = (
            ("connect", self.connect),
            ("tls", self.tls),
            ("processing", self.processing),
            ("transfer", self.transfer),
        )
        return tuple((name, value) for name, value in pairs if value is not None)


#: What a load balancer's own answer was, for :attr:`LoadBalancerAnswer.kind`.
LOAD_BALANCER_KINDS = (
    "authenticate",
    "blocked",
    "fixed_response",
    "redirect",
    "no_healthy_target",
    "error",
)

#: :attr:`HttpAttempt.answered_by` of a response that names its backend.
NAMED_BACKEND = "named_backend"


@dataclass(frozen=True, slots=True)
class LoadBalancerAnswer:
    """A response the load balancer gave itself instead of forwarding the request.

    Told from a backend's answer by what the response says about itself (see
    :mod:`probe.stages.origin`), and only when no backend rule identified a backend in it.

    Attributes:
        kind: what answered, one of :data:`LOAD_BALANCER_KINDS`: ``authenticate`` (a login
            step: an ALB ``authenticate-oidc`` or ``authenticate-cognito`` action, HAProxy's
            ``http-request auth``), ``blocked`` (a web ACL or access rule: AWS WAF, HAProxy's
            ``http-request deny``), ``fixed_response`` (a rule that answers itself),
            ``redirect`` (a redirect action), ``no_healthy_target`` (nothing to forward
            to), ``error`` (the balancer's own page for another error).
        balancer: whose answer it is: ``"ALB"``, ``"HAProxy"``, ``"API Gateway"``.
        what: what happened, in words (``"an authenticate-cognito action sends a client
            without a session to the identity provider"``).
        evidence: what the response said about itself (``"Server: awselb/2.0; sets
            AWSELBAuthNonce"``).
    """

    kind: str
    balancer: str
    what: str
    evidence: str

    @property
    def said(self) -> str:
        """What happened and the evidence, for a finding's detail: ``"<what> (<evidence>)"``."""
        return f"{self.what} ({self.evidence})"


@dataclass(frozen=True, slots=True)
class HttpAttempt(_Judged):
    """One HTTP request to one address.

    Attributes:
        status_code: the response status, ``None`` when no response arrived.
        http_version: e.g. ``"HTTP/1.1"``.
        backend: the backend that answered, ``None`` when unknown.
        body_bytes: body bytes read from the connection, as sent (at most ``max_body_bytes``).
        body_truncated: the body (as sent, or once decoded) was longer than
            ``max_body_bytes``; only that much was read and judged, and the connection
            was closed.
        phases: phase times.
        duration_seconds: the whole request, body included.
        failures: findings for this request.
        cookies_set: names of the cookies the response set (``Set-Cookie``), in order,
            never their values; no request ever sends them back.
        location: the ``Location`` header of a redirect (3xx) as an absolute URL, ``None``
            when there is none; non-printable characters replaced by ``_``, whole up to
            8,192 characters (a longer one is cut there and ends with ``…``).
        content_encoding: the ``Content-Encoding`` the server used (lower case, e.g.
            ``"gzip"``), ``None`` for identity. gzip and deflate are decoded before matching.
        date_timestamp: the response's ``Date`` header, Unix time; ``None`` when absent
            or unreadable.
        received_timestamp: this machine's clock when the response headers arrived, Unix time.
        retried_after: what refused the request's first try, in words (``"RST_STREAM
            REFUSED_STREAM (0x7)"``, ``"GOAWAY NO_ERROR (0x0) with last_stream_id 0"``): the
            server did not process it (RFC 9113 §8.7), so it was sent again on a new
            connection and the other fields are the retry's. ``None`` when sent once.
        grpc_status: a gRPC response's ``grpc-status`` (0 OK, 12 UNIMPLEMENTED …), from its
            trailers or, for a trailers-only response, its headers; ``None`` when the
            response is not gRPC or has none.
        grpc_message: its ``grpc-message``, percent-decoded and printable (at most 512
            characters; a longer one ends with ``…``); ``None`` when absent.
        grpc_serving_status: the serving status a ``grpc.health.v1.Health/Check`` answered
            (``"SERVING"``, ``"NOT_SERVING"``, ``"UNKNOWN"``, ``"SERVICE_UNKNOWN"``), ``None``
            without ``grpc_health`` or without an answer.
        location_length: the full length of that URL in characters (``location`` is cut
            past 8,192), ``None`` without a Location.
        load_balancer: the load balancer's own answer, ``None`` for a response that did
            not come from it as far as probe can tell (see :attr:`origin`).
    """

    status_code: int | None
    http_version: str | None
    backend: str | None
    body_bytes: int
    body_truncated: bool
    phases: PhaseTimes
    duration_seconds: float
    failures: tuple[Failure, ...]
    status: Status = field(init=False, repr=False, compare=False)
    cookies_set: tuple[str, ...] = ()
    location: str | None = None
    content_encoding: str | None = None
    date_timestamp: float | None = None
    received_timestamp: float | None = None
    retried_after: str | None = None
    grpc_status: int | None = None
    grpc_message: str | None = None
    grpc_serving_status: str | None = None
    location_length: int | None = None
    load_balancer: LoadBalancerAnswer | None = None

    @property
    def origin(self) -> str | None:
        """Who answered: ``"load_balancer"`` (its own answer), ``"backend"`` (any other response).

        ``None`` when no response arrived.
        """
        if self.status_code is None:
            return None
        return "backend" if self.load_balancer is None else "load_balancer"

    @property
    def answered_by(self) -> str | None:
        """Who answered, as a status hint needs it: the load balancer's kind of answer, or a backend.

        The kind of the balancer's own answer (:data:`LOAD_BALANCER_KINDS`),
        :data:`NAMED_BACKEND` when the response names its backend (the balancer forwarded
        it: a backend's 503 is not the balancer's "no target"), ``None`` when neither is
        known (no backend rule, or a response that names nothing).
        """
        if self.load_balancer is not None:
            return self.load_balancer.kind
        return NAMED_BACKEND if self.backend is not None else None


@dataclass(frozen=True, slots=True)
class OcspResult(_Judged):
    """The OCSP response a server stapled to its handshake (``ocsp: staple``), as probe read it.

    Asked for with the TLS ``status_request`` extension (RFC 6066 §8) on a second handshake;
    the response is judged by RFC 6960 (see ``probe.stages.ocsp``).

    Attributes:
        stapled: the server sent a response; ``False`` is a fact, not a finding.
        handshake_seconds: TCP connect plus handshake of the second handshake, ``None`` when
            it did not complete.
        response_status: the response status, e.g. ``"successful"``, ``"try_later"``;
            ``None`` without a parsable staple.
        cert_status: ``"good"``, ``"revoked"`` or ``"unknown"`` from the response for the
            server's certificate; ``None`` when there is none.
        serial: the serial number the response is about, lowercase hex.
        responder: who signed it: an RFC 4514 name or ``"key sha1:HEX"``.
        produced_at_timestamp: producedAt, Unix time.
        this_update_timestamp: thisUpdate, Unix time.
        next_update_timestamp: nextUpdate, Unix time; ``None`` when the response has none.
        revocation_timestamp: revocationTime, Unix time (revoked only).
        revocation_reason: the CRLReason name (RFC 5280 §5.3.1), e.g. ``"keyCompromise"``.
        signature_valid: the signature verified against the issuer or a responder it
            authorised; ``None`` when not checked (no issuer known, or no response).
        error: why no staple could be asked for (the second handshake failed), else ``None``.
        failures: ``ocsp_revoked``, ``ocsp_stale`` and ``ocsp_invalid`` findings, and
            ``cycle_fd_limit`` when no socket could be opened for the handshake.
    """

    stapled: bool
    handshake_seconds: float | None = None
    response_status: str | None = None
    cert_status: str | None = None
    serial: str | None = None
    responder: str | None = None
    produced_at_timestamp: float | None = None
    this_update_timestamp: float | None = None
    next_update_timestamp: float | None = None
    revocation_timestamp: float | None = None
    revocation_reason: str | None = None
    signature_valid: bool | None = None
    error: str | None = None
    failures: tuple[Failure, ...] = ()
    status: Status = field(init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class AddressResult(_Judged):
    """Everything probed at one address of the target.

    Attributes:
        address: the address.
        tls: the connect and handshake result.
        attempts: the HTTP requests, in order (empty when TCP or TLS failed).
        failures: this address's findings: its stages' (TLS, summarised HTTP, OCSP) and the
            cycle's findings about it (an expiring chain, leaves that differ); ``status``
            is the worst of them.
        ocsp: the stapled OCSP response, ``None`` unless ``ocsp: staple`` and the handshake
            completed without a finding.
    """

    address: IPAddress
    tls: TlsResult
    attempts: tuple[HttpAttempt, ...]
    failures: tuple[Failure, ...]
    status: Status = field(init=False, repr=False, compare=False)
    ocsp: OcspResult | None = None

    @property
    def backend_counts(self) -> dict[str, int]:
        """Responses per identified backend, most first."""
        return dict(Counter(a.backend for a in self.attempts if a.backend).most_common())


@dataclass(frozen=True, slots=True)
class DirectBackendResult(_Judged):
    """The direct check of one backend (``direct_backends``): TCP, TLS, one HTTP request.

    The same stages as an address of the target, run against the backend's own URL,
    bypassing the load balancer. Its findings are the hop's own; the target's verdict
    carries one correlated finding per backend instead (``backend_down``,
    ``backend_not_in_rotation``, ``backend_direct_blocked``, ``backend_direct_failed``),
    plus ``backend_cert_expiring_soon``.

    Attributes:
        name: the backend's name, as the backend rule identifies it.
        url: the configured URL (an IP literal is allowed).
        server_name: the name sent in SNI and Host (and verified with ``ca_file``).
        trust: how the certificate is trusted: ``"ca_file"``, ``"fingerprint_sha256"`` or
            ``"insecure_skip_verify"``.
        pinned_fingerprint: the configured SHA-256 pin (lowercase hex), ``None`` without one.
        dns: the DNS stage of the URL's host (pinned for an IP literal: no query).
        address: the address checked, ``None`` when none could be (DNS failed or the
            address lies outside ``expect_networks``).
        tls: the connect and handshake, ``None`` when no address was checked.
        attempt: the one HTTP request, ``None`` when none was sent.
        failures: the hop's own findings (stage findings and ``backend_cert_pin_mismatch``);
            ``status`` is the hop's own verdict (before correlation with the load
            balancer's view).
        duration_seconds: the whole direct check.
        client_certificate: the hop's own client certificate (its ``tls_client``), ``None``
            when it presents the target's or none.
    """

    name: str
    url: str
    server_name: str
    trust: str
    pinned_fingerprint: str | None
    dns: DnsResult | None
    address: IPAddress | None
    tls: TlsResult | None
    attempt: HttpAttempt | None
    failures: tuple[Failure, ...]
    status: Status = field(init=False, repr=False, compare=False)
    duration_seconds: float
    client_certificate: ClientCertificate | None = None

    @property
    def answered(self) -> bool:
        """The direct check passed: no critical finding of its own."""
        return self.status is not Status.CRITICAL

    @property
    def first_critical(self) -> Failure | None:
        """The first critical finding (what broke the direct check), ``None`` when it passed."""
        return next((f for f in self.failures if f.severity is Status.CRITICAL), None)

    @property
    def pin_matches(self) -> bool | None:
        """Whether the leaf matches the pin; ``None`` without a pin or without a leaf."""
        if self.pinned_fingerprint is None or self.tls is None or self.tls.leaf is None:
            return None
        return self.tls.leaf.sha256_fingerprint == self.pinned_fingerprint


@dataclass(frozen=True, slots=True)
class TargetResult(_Judged):
    """The result of one cycle for one target.

    Attributes:
        target: what the target is (URL, names, rules): built once per config load and
            shared by every result of the target.
        started_timestamp: when the cycle started, Unix time.
        duration_seconds: how long the cycle took.
        dns: the DNS stage.
        addresses: one result per probed address, in DNS answer order.
        failures: every finding of the cycle, in stage order; ``status`` is the worst of
            their severities.
        direct_backends: the direct checks of ``direct_backends``, in config order; empty
            when none are configured.
        rotation: with ``weighted_random`` or ``least_outstanding_requests``, the identified
            responses counted across evaluations (:mod:`probe.judge.balancing`), handed to the
            next cycle of the daemon or round of ``--watch``; ``None`` otherwise.
        interval_seconds: the daemon's ``interval`` for the target (seconds between cycle
            starts), set by the scheduler so the metrics can say when a cycle is overdue
            (``probe_interval_seconds``); ``None`` for ``probe check``.
    """

    target: TargetFacts
    started_timestamp: float
    duration_seconds: float
    dns: DnsResult
    addresses: tuple[AddressResult, ...]
    failures: tuple[Failure, ...]
    status: Status = field(init=False, repr=False, compare=False)
    direct_backends: tuple[DirectBackendResult, ...] = ()
    rotation: Rotation | None = None
    interval_seconds: float | None = None

    @property
    def backend_counts(self) -> dict[str, int]:
        """Responses per identified backend over all addresses, most first."""
        total: Counter[str] = Counter()
        for address in self.addresses:
            total.update(address.backend_counts)
        return dict(total.most_common())

    @property
    def response_count(self) -> int:
        """Responses received (a status line arrived) over all addresses."""
        return sum(a.status_code is not None for r in self.addresses for a in r.attempts)

    @property
    def load_balancer_count(self) -> int:
        """Responses the load balancer gave itself (:attr:`HttpAttempt.load_balancer`) over all addresses."""
        return sum(a.load_balancer is not None for r in self.addresses for a in r.attempts)

    @property
    def request_count(self) -> int:
        """HTTP requests sent over all addresses."""
        return sum(len(r.attempts) for r in self.addresses)

    @property
    def cookies_set(self) -> tuple[str, ...]:
        """Names of the cookies any response set, in order of first appearance."""
        return tuple(
            dict.fromkeys(
                name
                for address in self.addresses
                for attempt in address.attempts
                for name in attempt.cookies_set
            )
        )

    @property
    def cookie_note(self) -> str | None:
        """A sentence about the cookies the responses set, ``None`` when none did.

        Known load-balancer stickiness cookies (AWS ALB/CLB, HAProxy) are named as such:
        every request was sent without them, as a new client sends it.
        """
        return cookie_note(self.cookies_set)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """The distinct reason codes among the failures, in order of first appearance."""
        return tuple(dict.fromkeys(f.reason for f in self.failures))


@dataclass(frozen=True, slots=True)
class Scope:
    """Where responses are counted: all addresses together, or one address (``cross_zone: false``).

    Attributes:
        name: ``""`` for all addresses together, else the address.
        addresses: addresses probed in this scope in the last evaluation.
        responses: identified responses since the memory began.
        evaluations: evaluations with at least one identified response in this scope.
        last_responses: identified responses in the last evaluation.
        threshold: identified responses without a backend after which it is missing here.
        decide_requests: requests per address a single check needs to decide
            (``probe check --requests N``).
    """

    name: str
    addresses: int
    responses: int
    evaluations: int
    last_responses: int
    threshold: int
    decide_requests: int


@dataclass(frozen=True, slots=True)
class Unseen:
    """How long one backend has not answered in one scope.

    Attributes:
        scope: the scope's name.
        backend: the backend's name.
        responses: identified responses in the scope since it last answered there (since
            the memory began when it never did).
        evaluations: evaluations with identified responses since then.
    """

    scope: str
    backend: str
    responses: int
    evaluations: int


@dataclass(frozen=True, slots=True)
class Rotation:
    """The memory of one target's rotation, carried from one evaluation to the next.

    Attributes:
        balancing: ``weighted_random`` or ``least_outstanding_requests``.
        cross_zone: ``False``: counted per address (each reaches only its zone's backends).
        expected: the number of expected backends (``k``).
        names: the expected names; empty when only a count is expected.
        scopes: the scopes of the last evaluation.
        unseen: per scope and tracked backend, its unseen run.
        seen: backends that answered at least once since the memory began.
    """

    balancing: str
    cross_zone: bool
    expected: int
    names: tuple[str, ...]
    scopes: tuple[Scope, ...]
    unseen: tuple[Unseen, ...]
    seen: tuple[str, ...]

    def runs(self, backend: str) -> list[tuple[Scope, int]]:
        """Per scope of the last evaluation: identified responses since ``backend`` last answered there."""
        runs = {(u.scope, u.backend): u.responses for u in self.unseen}
        return [(s, runs.get((s.name, backend), s.responses)) for s in self.scopes]

    def is_missing(self, backend: str) -> bool:
        """The backend's unseen run reached the threshold in every scope."""
        runs = self.runs(backend)
        return bool(runs) and all(run >= scope.threshold for scope, run in runs)

    @property
    def missing(self) -> tuple[str, ...]:
        """Expected names reported missing (empty when only a count is expected)."""
        return tuple(name for name in self.names if self.is_missing(name))

    @property
    def fresh(self) -> tuple[str, ...]:
        """Backends (tracked) not missing: they answered within the threshold somewhere."""
        tracked = dict.fromkeys(u.backend for u in self.unseen)
        return tuple(b for b in tracked if not self.is_missing(b))

    @property
    def decided(self) -> bool:
        """Every scope counted enough responses to decide about a backend never seen."""
        return bool(self.scopes) and all(s.responses >= s.threshold for s in self.scopes)

    @property
    def first(self) -> bool:
        """Every scope is in its first evaluation: this is a single check's memory."""
        return all(s.evaluations <= 1 for s in self.scopes)


#: Cookies that load balancers set to pin a client to one backend (AWS ALB and CLB, HAProxy).
STICKINESS_COOKIES = frozenset({"AWSALB", "AWSALBCORS", "AWSALBTG", "AWSALBTGCORS", "AWSELB", "SERVERID"})


#: The prefix of the cookies of an ALB's authenticate actions (``AWSELBAuthNonce``,
#: ``AWSELBAuthSessionCookie-0`` …).
AUTHENTICATION_COOKIE = "AWSELBAuth"


def cookie_note(names: tuple[str, ...]) -> str | None:
    """Say which cookies responses set, stickiness cookies first; ``None`` when none.

    Example: ``"the load balancer sets a stickiness cookie (AWSALB); requests were sent
    without it"``.
    """
    if not names:
        return None
    sticky = [n for n in names if n.upper() in STICKINESS_COOKIES]
    login = [n for n in names if n.startswith(AUTHENTICATION_COOKIE)]
    other = [n for n in names if n.upper() not in STICKINESS_COOKIES and n not in login]
    parts = []
    if sticky:
        kind = "a stickiness cookie" if len(sticky) == 1 else "stickiness cookies"
        parts.append(f"the load balancer sets {kind} ({', '.join(sticky)})")
    if login:
        parts.append(f"the load balancer's authenticate action sets {', '.join(login)}")
    if other:
        parts.append(
            f"the application sets {'a cookie' if len(other) == 1 else 'cookies'} ({', '.join(other)})"
        )
    pronoun = "it" if len(names) == 1 else "them"
    return f"{'; '.join(parts)}; requests were sent without {pronoun}"
