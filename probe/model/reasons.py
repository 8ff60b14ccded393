"""The public vocabulary of probe: stages, statuses, reason codes and exit codes.

Reason codes are stable: they appear in the JSON report, in metric labels and in logs.
Adding one means a member here, an entry in ``_REASON_TABLE``, a test that produces it
and a row in the reason-code table of docs/reason-codes.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, StrEnum


class Stage(StrEnum):
    """The part of a probe cycle a finding belongs to."""

    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    CERT = "cert"
    OCSP = "ocsp"
    HTTP = "http"
    GRPC = "grpc"
    BACKEND = "backend"
    CYCLE = "cycle"


class Status(StrEnum):
    """Verdict of an address, a target or a whole run, in rising order of badness."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for ok, 1 for warning, 2 for critical (the exit-code order)."""
        return _STATUS_RANK[self]

    @classmethod
    def worst(cls, statuses: Iterable[Status]) -> Status:
        """The worst of some statuses; ``OK`` when there are none."""
        return max(statuses, key=_STATUS_RANK.__getitem__, default=cls.OK)


_STATUS_RANK = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2}


class ExitCode(IntEnum):
    """Process exit status, following the monitoring-plugin convention (0-3).

    ``LISTEN_FAILED`` (4) is the daemon's own (``probe run``, ``probe demo``): its endpoint
    cannot listen (port in use, address not on this host, no permission). It is the first
    value the monitoring-plugin convention leaves free, so it never reads as a verdict
    (1 would say "warning") nor as bad configuration (3, which systemd is told not to
    restart on); a port still held by a stopping process is worth a restart. It stays
    clear of the BSD ``sysexits.h`` range (64-78), systemd's own codes (200 and up) and the
    shell's (126 and up).

    ``PUSH_FAILED`` (5) is ``probe check --push``'s: the verdict was ok (0) but its metrics
    did not reach the Pushgateway. It only ever replaces 0, so it still says "ok": a
    warning or critical verdict keeps its 1 or 2 when the push fails too (the stderr line
    tells about the push), and a check whose trace was the point of a cron job does not
    pass silently.
    """

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
    LISTEN_FAILED = 4
    PUSH_FAILED = 5

    @classmethod
    def from_status(cls, status: Status) -> ExitCode:
        """Map a verdict to its exit code (ok 0, warning 1, critical 2)."""
        return cls(status.rank)


class Platform(StrEnum):
    """Whose words the hints use: the console the person probing works in.

    ``generic`` speaks of listeners, firewalls and backends; ``aws`` of Elastic Load
    Balancing (ALB, Classic Load Balancer), security groups, target groups, Route 53 and
    ACM. The hint texts are in :mod:`probe.report.hints`.
    """

    GENERIC = "generic"
    AWS = "aws"


class Reason(StrEnum):
    """A machine-readable cause of a failure or warning."""

    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_SERVFAIL = "dns_servfail"
    DNS_REFUSED = "dns_refused"
    DNS_TIMEOUT = "dns_timeout"
    DNS_NO_ANSWER = "dns_no_answer"
    DNS_ERROR = "dns_error"
    DNS_MALFORMED = "dns_malformed"
    DNS_CNAME_LOOP = "dns_cname_loop"
    DNS_UNEXPECTED_ADDRESS = "dns_unexpected_address"
    DNS_ALIAS_MISMATCH = "dns_alias_mismatch"
    DNS_RESOLVER_FAILOVER = "dns_resolver_failover"
    DNS_TOO_MANY_ADDRESSES = "dns_too_many_addresses"
    TCP_REFUSED = "tcp_refused"
    TCP_TIMEOUT = "tcp_timeout"
    TCP_ERROR = "tcp_error"
    TLS_HANDSHAKE_TIMEOUT = "tls_handshake_timeout"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    TLS_VERSION_BELOW_MINIMUM = "tls_version_below_minimum"
    CERT_EXPIRED = "cert_expired"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    CERT_HOSTNAME_MISMATCH = "cert_hostname_mismatch"
    CERT_SELF_SIGNED = "cert_self_signed"
    CERT_UNTRUSTED = "cert_untrusted"
    CERT_CHAIN_INCOMPLETE = "cert_chain_incomplete"
    CERT_EXPIRING_SOON = "cert_expiring_soon"
    CERT_DIFFERS_BETWEEN_ADDRESSES = "cert_differs_between_addresses"
    OCSP_REVOKED = "ocsp_revoked"
    OCSP_STALE = "ocsp_stale"
    OCSP_INVALID = "ocsp_invalid"
    HTTP_TIMEOUT = "http_timeout"
    HTTP_STATUS = "http_status"
    HTTP_BODY_MISMATCH = "http_body_mismatch"
    HTTP_PROTOCOL_ERROR = "http_protocol_error"
    BACKEND_UNIDENTIFIED = "backend_unidentified"
    BACKEND_MISSING = "backend_missing"
    BACKEND_UNEXPECTED = "backend_unexpected"
    BACKEND_IMBALANCE = "backend_imbalance"
    CYCLE_DEADLINE_EXCEEDED = "cycle_deadline_exceeded"
    INTERNAL_ERROR = "internal_error"
    TLS_WEAK_CIPHER = "tls_weak_cipher"
    TLS_VERSION_DEPRECATED = "tls_version_deprecated"
    CERT_UNPARSED = "cert_unparsed"
    HTTP_BODY_TOO_LARGE = "http_body_too_large"
    HTTP_CLOCK_SKEW = "http_clock_skew"
    TLS_ALPN_MISMATCH = "tls_alpn_mismatch"
    BACKEND_DOWN = "backend_down"
    BACKEND_NOT_IN_ROTATION = "backend_not_in_rotation"
    BACKEND_DIRECT_BLOCKED = "backend_direct_blocked"
    BACKEND_DIRECT_FAILED = "backend_direct_failed"
    BACKEND_CERT_PIN_MISMATCH = "backend_cert_pin_mismatch"
    BACKEND_CERT_EXPIRING_SOON = "backend_cert_expiring_soon"
    BACKEND_UNDECIDED = "backend_undecided"
    HTTP_REDIRECT_WRONG = "http_redirect_wrong"
    HTTP_REDIRECT_MISSING = "http_redirect_missing"
    CYCLE_FD_LIMIT = "cycle_fd_limit"
    TLS_CLIENT_CERT_REQUIRED = "tls_client_cert_required"
    TLS_CLIENT_CERT_REFUSED = "tls_client_cert_refused"
    TLS_CLIENT_CERT_EXPIRING_SOON = "tls_client_cert_expiring_soon"
    HTTP_STREAM_ERROR = "http_stream_error"
    HTTP_STREAM_REFUSED = "http_stream_refused"
    GRPC_STATUS = "grpc_status"
    GRPC_NOT_SERVING = "grpc_not_serving"
    GRPC_SERVICE_UNKNOWN = "grpc_service_unknown"
    BACKEND_NOT_REACHED = "backend_not_reached"

    @property
    def stage(self) -> Stage:
        """The stage this reason belongs to."""
        return _REASON_TABLE[self][0]

    @property
    def severity(self) -> Status:
        """``Status.CRITICAL`` or ``Status.WARNING``."""
        return _REASON_TABLE[self][1]

    @property
    def summary(self) -> str:
        """One sentence saying what the code means (used in docs and help)."""
        return _REASON_TABLE[self][2]


_C = Status.CRITICAL
_W = Status.WARNING

_REASON_TABLE: dict[Reason, tuple[Stage, Status, str]] = {
    Reason.DNS_NXDOMAIN: (Stage.DNS, _C, "The resolver answered NXDOMAIN: the name does not exist."),
    Reason.DNS_SERVFAIL: (Stage.DNS, _C, "Every resolver tried answered SERVFAIL (or failed)."),
    Reason.DNS_REFUSED: (Stage.DNS, _C, "Every resolver tried answered REFUSED (or failed)."),
    Reason.DNS_TIMEOUT: (Stage.DNS, _C, "No resolver answered within the DNS timeout."),
    Reason.DNS_NO_ANSWER: (
        Stage.DNS,
        _C,
        "The name exists but has no address of the probed family (NOERROR, empty answer).",
    ),
    Reason.DNS_ERROR: (
        Stage.DNS,
        _C,
        "Any other DNS failure: another rcode, or the resolver could not be reached.",
    ),
    Reason.DNS_MALFORMED: (
        Stage.DNS,
        _C,
        "The resolver sent a response that is not valid DNS or does not match the query.",
    ),
    Reason.DNS_CNAME_LOOP: (
        Stage.DNS,
        _C,
        "The CNAME chain loops or is longer than 16 links.",
    ),
    Reason.DNS_UNEXPECTED_ADDRESS: (
        Stage.DNS,
        _C,
        "An answer lies outside expect_networks; that address is reported and never connected to.",
    ),
    Reason.DNS_ALIAS_MISMATCH: (
        Stage.DNS,
        _C,
        "The name's addresses differ from those of expect_same_addresses_as (or it did not resolve).",
    ),
    Reason.DNS_RESOLVER_FAILOVER: (
        Stage.DNS,
        _W,
        "A resolver failed and the answer came from the next one in the list.",
    ),
    Reason.DNS_TOO_MANY_ADDRESSES: (
        Stage.DNS,
        _W,
        "The answer held more than 64 addresses of a family; the 64 lowest were probed.",
    ),
    Reason.TCP_REFUSED: (Stage.TCP, _C, "The address refused the TCP connection (RST)."),
    Reason.TCP_TIMEOUT: (Stage.TCP, _C, "TCP connect did not complete within the connect timeout."),
    Reason.TCP_ERROR: (
        Stage.TCP,
        _C,
        "Any other connect failure (unreachable network or host, reset).",
    ),
    Reason.TLS_HANDSHAKE_TIMEOUT: (
        Stage.TLS,
        _C,
        "The TLS handshake did not complete within the TLS timeout.",
    ),
    Reason.TLS_HANDSHAKE_FAILED: (
        Stage.TLS,
        _C,
        "The handshake failed for a reason other than the certificate (alert, reset, not TLS).",
    ),
    Reason.TLS_VERSION_BELOW_MINIMUM: (
        Stage.TLS,
        _C,
        "The server offers no TLS version at or above min_tls_version.",
    ),
    Reason.CERT_EXPIRED: (Stage.CERT, _C, "A certificate in the chain has expired."),
    Reason.CERT_NOT_YET_VALID: (Stage.CERT, _C, "A certificate in the chain is not valid yet."),
    Reason.CERT_HOSTNAME_MISMATCH: (
        Stage.CERT,
        _C,
        "The leaf certificate is not valid for the hostname (RFC 6125; subject CN is ignored).",
    ),
    Reason.CERT_SELF_SIGNED: (
        Stage.CERT,
        _C,
        "The server sent a single self-signed certificate that is not trusted.",
    ),
    Reason.CERT_UNTRUSTED: (
        Stage.CERT,
        _C,
        "The chain leads to a root (or CA) that is not in the trust store, or is otherwise invalid.",
    ),
    Reason.CERT_CHAIN_INCOMPLETE: (
        Stage.CERT,
        _C,
        "The server did not send the intermediate certificate(s) needed to reach a trusted root.",
    ),
    Reason.CERT_EXPIRING_SOON: (
        Stage.CERT,
        _W,
        "The verified chain expires within cert_expiry_warning_days.",
    ),
    Reason.CERT_DIFFERS_BETWEEN_ADDRESSES: (
        Stage.CERT,
        _W,
        "The addresses of one name serve different leaf certificates (e.g. a rotation half done).",
    ),
    Reason.OCSP_REVOKED: (
        Stage.OCSP,
        _C,
        "The server stapled an OCSP response saying its certificate is revoked (ocsp: staple).",
    ),
    Reason.OCSP_STALE: (
        Stage.OCSP,
        _W,
        "The stapled OCSP response is past its nextUpdate or not valid yet (ocsp: staple).",
    ),
    Reason.OCSP_INVALID: (
        Stage.OCSP,
        _C,
        "The stapled OCSP response cannot vouch for the certificate: malformed, not successful, "
        "status unknown, badly signed or for another certificate (ocsp: staple).",
    ),
    Reason.HTTP_TIMEOUT: (
        Stage.HTTP,
        _C,
        "A request (headers and body) did not complete within the HTTP timeout.",
    ),
    Reason.HTTP_STATUS: (Stage.HTTP, _C, "A response status is not in valid_status_codes."),
    Reason.HTTP_BODY_MISMATCH: (Stage.HTTP, _C, "A response body does not match body_regex."),
    Reason.HTTP_PROTOCOL_ERROR: (
        Stage.HTTP,
        _C,
        "The response is malformed or ends early (not valid HTTP/1.1 or HTTP/2).",
    ),
    Reason.BACKEND_UNIDENTIFIED: (
        Stage.BACKEND,
        _C,
        "A response did not say which backend answered (header absent, body_regex no match).",
    ),
    Reason.BACKEND_MISSING: (
        Stage.BACKEND,
        _C,
        "An expected backend answered none of the cycle's requests.",
    ),
    Reason.BACKEND_UNEXPECTED: (
        Stage.BACKEND,
        _W,
        "A backend not in the expect_backends list answered.",
    ),
    Reason.BACKEND_IMBALANCE: (
        Stage.BACKEND,
        _W,
        "A backend got less than half its fair share of the cycle's requests.",
    ),
    Reason.CYCLE_DEADLINE_EXCEEDED: (
        Stage.CYCLE,
        _C,
        "The cycle reached its overall deadline; unfinished work was cancelled.",
    ),
    Reason.INTERNAL_ERROR: (
        Stage.CYCLE,
        _C,
        "A bug in probe; the traceback is logged and the process goes on.",
    ),
    Reason.TLS_WEAK_CIPHER: (
        Stage.TLS,
        _W,
        "The negotiated cipher suite lacks forward secrecy or uses CBC with SHA-1 or 3DES (RFC 9325).",
    ),
    Reason.TLS_VERSION_DEPRECATED: (
        Stage.TLS,
        _W,
        "TLS 1.0 or 1.1 was negotiated (allowed by a lowered min_tls_version); RFC 8996 deprecates both.",
    ),
    Reason.CERT_UNPARSED: (
        Stage.CERT,
        _W,
        "The X.509 parser (cryptography) refused a certificate OpenSSL accepts; its facts come from OpenSSL.",
    ),
    Reason.HTTP_BODY_TOO_LARGE: (
        Stage.HTTP,
        _C,
        "A response body is larger than body_size_limit (from Content-Length, or counted while read).",
    ),
    Reason.HTTP_CLOCK_SKEW: (
        Stage.HTTP,
        _W,
        "A response's Date header differs from this machine's clock by more than 60 seconds.",
    ),
    Reason.TLS_ALPN_MISMATCH: (
        Stage.TLS,
        _C,
        "The server accepts none of the HTTP versions offered in ALPN (see http_version).",
    ),
    Reason.BACKEND_DOWN: (
        Stage.BACKEND,
        _C,
        "A backend is missing behind the load balancer and fails its direct check too (direct_backends).",
    ),
    Reason.BACKEND_NOT_IN_ROTATION: (
        Stage.BACKEND,
        _C,
        "A backend is missing behind the load balancer but answers its direct check: the balancer "
        "does not send to it.",
    ),
    Reason.BACKEND_DIRECT_BLOCKED: (
        Stage.BACKEND,
        _W,
        "A backend's direct check gets no TCP connection (timeout, refused) while the load balancer "
        "is not known to miss it: the path from this host is blocked.",
    ),
    Reason.BACKEND_DIRECT_FAILED: (
        Stage.BACKEND,
        _W,
        "A backend's direct check fails past TCP (TLS, certificate, pin, HTTP) while the load "
        "balancer is not known to miss it.",
    ),
    Reason.BACKEND_CERT_PIN_MISMATCH: (
        Stage.BACKEND,
        _C,
        "A backend's certificate differs from its fingerprint_sha256 pin (direct check only).",
    ),
    Reason.BACKEND_CERT_EXPIRING_SOON: (
        Stage.BACKEND,
        _W,
        "A backend's own certificate (direct check) expires within "
        "direct_backend_cert_expiry_warning_days, or has expired.",
    ),
    Reason.BACKEND_UNDECIDED: (
        Stage.BACKEND,
        _W,
        "An expected backend has not answered yet, but too few responses were counted to call "
        "it missing under the balancing algorithm (see balancing).",
    ),
    Reason.HTTP_REDIRECT_WRONG: (
        Stage.HTTP,
        _C,
        "With expect_redirect, a redirect that is not a 301 or 302 to the https:// form of the URL "
        "(same host, path and query, port 443).",
    ),
    Reason.HTTP_REDIRECT_MISSING: (
        Stage.HTTP,
        _C,
        "With expect_redirect, a response that is not a redirect (a 200 serves the page over plain HTTP).",
    ),
    Reason.CYCLE_FD_LIMIT: (
        Stage.CYCLE,
        _C,
        "This host could not open a socket: probe is at its limit of open files (RLIMIT_NOFILE) or "
        "the system's file table is full; nothing was learned about the service.",
    ),
    Reason.TLS_CLIENT_CERT_REQUIRED: (
        Stage.TLS,
        _C,
        "The listener requires a client certificate (mutual TLS) and none was presented (see tls_client).",
    ),
    Reason.TLS_CLIENT_CERT_REFUSED: (
        Stage.TLS,
        _C,
        "The listener refused the client certificate presented (an alert such as unknown_ca or "
        "certificate_expired; TLS 1.3 sends it after the handshake).",
    ),
    Reason.TLS_CLIENT_CERT_EXPIRING_SOON: (
        Stage.TLS,
        _W,
        "The client certificate (tls_client) expires within cert_expiry_warning_days, or has expired.",
    ),
    Reason.HTTP_STREAM_ERROR: (
        Stage.HTTP,
        _C,
        "The server reset the request's HTTP/2 stream (RST_STREAM) or sent GOAWAY with an error "
        "code; the detail names the code as RFC 9113 does.",
    ),
    Reason.HTTP_STREAM_REFUSED: (
        Stage.HTTP,
        _C,
        "The server refused the request's HTTP/2 stream unprocessed (REFUSED_STREAM, or a GOAWAY "
        "below it) and again on the retry over a new connection.",
    ),
    Reason.GRPC_STATUS: (
        Stage.GRPC,
        _C,
        "A gRPC response (content type application/grpc) ended with a grpc-status other than 0 (OK), "
        "or none; or a grpc_health check was not answered with gRPC.",
    ),
    Reason.GRPC_NOT_SERVING: (
        Stage.GRPC,
        _C,
        "With grpc_health, Health/Check answered NOT_SERVING (or UNKNOWN).",
    ),
    Reason.GRPC_SERVICE_UNKNOWN: (
        Stage.GRPC,
        _C,
        "With grpc_health, the health server does not know the service (SERVICE_UNKNOWN, or the "
        "call's NOT_FOUND, as grpc.health.v1 answers for an unknown service).",
    ),
    Reason.BACKEND_NOT_REACHED: (
        Stage.BACKEND,
        _C,
        "With a backend rule, the load balancer answered a request itself with an accepted status "
        "(a fixed response, a redirect action): no backend was reached.",
    ),
}
