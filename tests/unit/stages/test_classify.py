"""Pure classification: rcodes, TLS and connect errors, httpx errors, response judgement."""

from __future__ import annotations

import errno
import ipaddress
import ssl

import dns.exception
import dns.message
import dns.rcode
import httpx
import pytest

from probe._version import __version__
from probe.config.models import TargetConfig
from probe.config.values import PRIVATE_NETWORKS, parse_network
from probe.model.reasons import Reason
from probe.model.results import Failure, HttpAttempt, PhaseTimes
from probe.stages import _sockets as netio
from probe.stages._wire import ProtocolViolation, StreamError, StreamRefused
from probe.stages.dns import address_expected, classify_dns_error, classify_rcode
from probe.stages.http import request_headers, request_url
from probe.stages.http_rules import classify_http_error, summarise
from probe.stages.tls import classify_connect_error, classify_tls_error
from tests.support.builders import judge_response
from tests.support.helpers import make_target

A1 = ipaddress.ip_address("10.0.0.1")


# --------------------------------------------------------------------------- DNS


@pytest.mark.parametrize(
    ("rcode", "expected"),
    [
        (dns.rcode.NOERROR, (None, "NOERROR")),
        (dns.rcode.NXDOMAIN, (None, "NXDOMAIN")),
        (dns.rcode.SERVFAIL, (Reason.DNS_SERVFAIL, "SERVFAIL")),
        (dns.rcode.REFUSED, (Reason.DNS_REFUSED, "REFUSED")),
        (dns.rcode.FORMERR, (Reason.DNS_ERROR, "rcode FORMERR")),
        (dns.rcode.NOTIMP, (Reason.DNS_ERROR, "rcode NOTIMP")),
        (dns.rcode.NOTAUTH, (Reason.DNS_ERROR, "rcode NOTAUTH")),
    ],
)
def test_classify_rcode(rcode: dns.rcode.Rcode, expected: tuple[Reason | None, str]) -> None:
    assert classify_rcode(rcode) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), (Reason.DNS_TIMEOUT, "no answer within 2s")),
        (dns.exception.Timeout(), (Reason.DNS_TIMEOUT, "no answer within 2s")),
        (dns.message.ShortHeader(), (Reason.DNS_MALFORMED, "malformed response: ShortHeader")),
        (dns.exception.FormError(), (Reason.DNS_MALFORMED, "malformed response: FormError")),
        (ValueError("bad label"), (Reason.DNS_MALFORMED, "malformed response: bad label")),
        (
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            (Reason.DNS_ERROR, "cannot query: Network is unreachable"),
        ),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), (Reason.DNS_ERROR, "cannot query: refused")),
    ],
)
def test_classify_dns_error(exc: BaseException, expected: tuple[Reason, str]) -> None:
    assert classify_dns_error(exc, 2.0) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.1.2.3", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.0.1", True),
        ("100.64.0.1", True),
        ("8.8.8.8", False),
        ("fd00::1", True),
        ("2001:db8::1", False),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
    ],
)
def test_address_expected_in_private_networks(address: str, expected: bool) -> None:
    assert address_expected(ipaddress.ip_address(address), PRIVATE_NETWORKS) is expected


def test_address_expected_in_configured_networks() -> None:
    networks = [parse_network("10.20.0.0/16"), parse_network("fd00:1::/64")]
    assert address_expected(ipaddress.ip_address("10.20.3.4"), networks) is True
    assert address_expected(ipaddress.ip_address("::ffff:10.20.3.4"), networks) is True
    assert address_expected(ipaddress.ip_address("10.21.3.4"), networks) is False
    assert address_expected(ipaddress.ip_address("fd00:1::5"), networks) is True
    assert address_expected(ipaddress.ip_address("fd00:2::5"), networks) is False
    assert address_expected(ipaddress.ip_address("10.20.3.4"), []) is False


# --------------------------------------------------------------------------- TLS and TCP


def ssl_error(
    reason: str | None,
    message: str = "[SSL] handshake failure (_ssl.c:1006)",
    cls: type[ssl.SSLError] = ssl.SSLError,
) -> ssl.SSLError:
    """An SSLError as OpenSSL makes it: ``reason`` and ``library`` set."""
    exc = cls(1, message)
    exc.reason = reason  # type: ignore[assignment]
    exc.library = "SSL"
    return exc


@pytest.mark.parametrize(
    ("reason", "detail"),
    [
        ("UNSUPPORTED_PROTOCOL", "unsupported protocol"),
        ("TLSV1_ALERT_PROTOCOL_VERSION", "tlsv1 alert protocol version"),
        ("NO_PROTOCOLS_AVAILABLE", "no protocols available"),
        ("WRONG_SSL_VERSION", "wrong ssl version"),
    ],
)
def test_tls_version_below_minimum(reason: str, detail: str) -> None:
    assert classify_tls_error(ssl_error(reason)) == (
        Reason.TLS_VERSION_BELOW_MINIMUM,
        f"no TLS version in common: the server offers none at or above the minimum (OpenSSL: {detail})",
    )


@pytest.mark.parametrize("reason", ["WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"])
def test_tls_not_spoken(reason: str) -> None:
    assert classify_tls_error(ssl_error(reason)) == (
        Reason.TLS_HANDSHAKE_FAILED,
        "the server did not answer with TLS (plain HTTP on the HTTPS port?)",
    )


def test_tls_client_certificate_required() -> None:
    assert classify_tls_error(ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED")) == (
        Reason.TLS_CLIENT_CERT_REQUIRED,
        "the server requires a client certificate and got none (alert certificate_required)",
    )


@pytest.mark.parametrize(
    ("reason", "alert"),
    [("SSLV3_ALERT_BAD_CERTIFICATE", "bad_certificate"), ("TLSV1_ALERT_UNKNOWN_CA", "unknown_ca")],
)
def test_tls_client_certificate_refused(reason: str, alert: str) -> None:
    assert classify_tls_error(ssl_error(reason)) == (
        Reason.TLS_CLIENT_CERT_REFUSED,
        f"the server refused the client certificate (alert {alert})",
    )


def test_tls_generic_alert() -> None:
    assert classify_tls_error(ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE")) == (
        Reason.TLS_HANDSHAKE_FAILED,
        "handshake failed: sslv3 alert handshake failure",
    )


def test_tls_error_without_an_openssl_reason() -> None:
    assert classify_tls_error(ssl_error(None, "something odd")) == (
        Reason.TLS_HANDSHAKE_FAILED,
        "handshake failed: something odd",
    )


@pytest.mark.parametrize("cls", [ssl.SSLEOFError, ssl.SSLZeroReturnError])
def test_tls_closed_by_the_server(cls: type[ssl.SSLError]) -> None:
    exc = ssl_error("UNEXPECTED_EOF_WHILE_READING", "EOF occurred in violation of protocol", cls)
    assert classify_tls_error(exc) == (
        Reason.TLS_HANDSHAKE_FAILED,
        "the server closed the connection during the handshake",
    )


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (
            ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            "the server reset the connection during the handshake",
        ),
        (EOFError(), "the server closed the connection during the handshake"),
        (
            BrokenPipeError(errno.EPIPE, "Broken pipe"),
            "the server closed the connection during the handshake",
        ),
        (
            OSError(errno.ENETDOWN, "Network is down"),
            "handshake failed: OSError: [Errno 100] Network is down",
        ),
    ],
)
def test_tls_non_ssl_errors(exc: BaseException, detail: str) -> None:
    assert classify_tls_error(exc) == (Reason.TLS_HANDSHAKE_FAILED, detail)


def test_connect_refused() -> None:
    exc = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert classify_connect_error(exc) == (Reason.TCP_REFUSED, "connection refused")


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (OSError(errno.EHOSTUNREACH, "No route to host"), "connect failed: No route to host"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "connect failed: Network is unreachable"),
        (
            ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            "connect failed: Connection reset by peer",
        ),
        (OSError("Multiple exceptions: one, two"), "connect failed: Multiple exceptions: one, two"),
    ],
)
def test_connect_other_errors(exc: OSError, detail: str) -> None:
    assert classify_connect_error(exc) == (Reason.TCP_ERROR, detail)


@pytest.fixture
def fresh_limit_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """No limit logged yet in this process (the log of a limit is rate-limited)."""
    monkeypatch.setattr(netio, "_logged", {})


@pytest.mark.usefixtures("fresh_limit_log")
def test_a_full_system_file_table_is_this_hosts_limit_in_every_classifier() -> None:
    # ENFILE cannot be produced on a shared test machine; EMFILE is produced for real in
    # tests/integration/stages/test_fd_limit.py.
    full = OSError(errno.ENFILE, "Too many open files in system")
    sentence = "no file descriptor left for a socket: the system's file table is full (fs.file-max)"
    assert classify_connect_error(full) == (Reason.CYCLE_FD_LIMIT, sentence)
    assert classify_dns_error(full, 2.0) == (Reason.CYCLE_FD_LIMIT, f"cannot query: {sentence}")
    assert classify_http_error(caused(httpx.ConnectError("no socket"), full)) == (
        Reason.CYCLE_FD_LIMIT,
        sentence,
    )


@pytest.mark.usefixtures("fresh_limit_log")
def test_the_limit_is_logged_once_a_minute_with_the_count_between(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    monkeypatch.setattr(netio, "monotonic", lambda: now[0])
    monkeypatch.setattr(netio.resource, "getrlimit", lambda _: (256, 4096))
    exhausted = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level("WARNING", logger="probe.sockets"):
        for _ in range(5):
            classify_connect_error(exhausted)
            now[0] += 10
        now[0] += 20  # 70 s after the first line
        classify_connect_error(exhausted)
    keys = ("limit", "soft", "hard", "times_since_last_line")
    lines = [(r.getMessage(), *(vars(r)[key] for key in keys)) for r in caplog.records]
    message = (
        "no file descriptor left for a socket: this process is at its limit of open files "
        "(RLIMIT_NOFILE, soft 256, hard 4096)"
    )
    assert lines == [
        (message, "RLIMIT_NOFILE", "256", "4096", 0),
        (message, "RLIMIT_NOFILE", "256", "4096", 4),
    ]


# --------------------------------------------------------------------------- httpx errors


def caused(exc: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    exc.__cause__ = cause
    return exc


def test_http_connect_refused() -> None:
    exc = caused(
        httpx.ConnectError("[Errno 111] Connection refused"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    )
    assert classify_http_error(exc) == (Reason.TCP_REFUSED, "connection refused")


def test_http_connect_unreachable() -> None:
    exc = caused(httpx.ConnectError("unreachable"), OSError(errno.EHOSTUNREACH, "No route to host"))
    assert classify_http_error(exc) == (Reason.TCP_ERROR, "connect failed: No route to host")


def test_http_connect_tls_error() -> None:
    exc = caused(httpx.ConnectError("handshake"), ssl_error("WRONG_VERSION_NUMBER"))
    assert classify_http_error(exc) == (
        Reason.TLS_HANDSHAKE_FAILED,
        "the server did not answer with TLS (plain HTTP on the HTTPS port?)",
    )


def test_http_connect_error_without_a_cause() -> None:
    assert classify_http_error(httpx.ConnectError("no route")) == (
        Reason.TCP_ERROR,
        "connect failed: no route",
    )


def as_httpx_raises(inner: BaseException) -> httpx.HTTPError:
    """The exception chain probe's transport raises: httpx.ConnectError from the real error."""
    return caused(httpx.ConnectError("the TCP connect failed"), inner)


def test_http_connect_refused_as_httpx_really_raises_it() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('10.0.0.1', 443)")
    assert classify_http_error(as_httpx_raises(refused)) == (Reason.TCP_REFUSED, "connection refused")


def test_http_connect_error_found_deeper_in_the_chain() -> None:
    wrapper = OSError("All connection attempts failed")
    wrapper.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('10.0.0.1', 443)")
    assert classify_http_error(as_httpx_raises(wrapper)) == (Reason.TCP_REFUSED, "connection refused")


def test_http_tls_error_as_httpx_really_raises_it() -> None:
    exc = as_httpx_raises(
        ssl_error("WRONG_VERSION_NUMBER", "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    )
    assert classify_http_error(exc) == (
        Reason.TLS_HANDSHAKE_FAILED,
        "the server did not answer with TLS (plain HTTP on the HTTPS port?)",
    )


def test_http_remote_protocol_error() -> None:
    exc = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert classify_http_error(exc) == (
        Reason.HTTP_PROTOCOL_ERROR,
        "invalid HTTP response: Server disconnected without sending a response.",
    )


def test_http_remote_protocol_error_is_cut_to_120_characters() -> None:
    exc = httpx.RemoteProtocolError("illegal header line: " + "x" * 200)
    reason, detail = classify_http_error(exc)
    assert reason is Reason.HTTP_PROTOCOL_ERROR
    assert detail == "invalid HTTP response: illegal header line: " + "x" * 81 + "… (221 characters)"


@pytest.mark.parametrize("cls", [httpx.ReadError, httpx.WriteError])
def test_http_read_or_write_error(cls: type[httpx.HTTPError]) -> None:
    assert classify_http_error(cls("")) == (
        Reason.HTTP_PROTOCOL_ERROR,
        "the connection closed before the response was complete",
    )


def test_http2_refusal_and_stream_errors_keep_probes_sentence() -> None:
    refused = StreamRefused("RST_STREAM REFUSED_STREAM (0x7)")
    assert classify_http_error(refused) == (
        Reason.HTTP_STREAM_REFUSED,
        "the server refused the request's stream (RST_STREAM REFUSED_STREAM (0x7))",
    )
    reset = StreamError(
        "the server reset the stream with CANCEL (0x8) after 10 bytes of the body, before its end"
    )
    assert classify_http_error(reset) == (Reason.HTTP_STREAM_ERROR, str(reset))
    # probe's own sentences are never cut (they are bounded), unlike another library's text.
    violation = ProtocolViolation("the server's first HTTP/2 frame was not SETTINGS " + "x" * 150)
    assert classify_http_error(violation) == (
        Reason.HTTP_PROTOCOL_ERROR,
        f"invalid HTTP response: {violation}",
    )


def test_http_decoding_error() -> None:
    assert classify_http_error(httpx.DecodingError("bad gzip")) == (
        Reason.HTTP_PROTOCOL_ERROR,
        "the response cannot be decoded: bad gzip",
    )


def test_http_other_error_names_its_type() -> None:
    assert classify_http_error(httpx.UnsupportedProtocol("")) == (
        Reason.HTTP_PROTOCOL_ERROR,
        "UnsupportedProtocol: UnsupportedProtocol",
    )


# --------------------------------------------------------------------------- judge_response


def header_target(**fields: object) -> TargetConfig:
    return make_target(url="https://www.corp.example/", backend={"header": "X-Backend"}, **fields)


def test_accepted_response_with_backend_from_header() -> None:
    target = header_target()
    assert judge_response(200, httpx.Headers({"x-backend": "web-1"}), b"ok", target, A1) == ("web-1", ())


def test_backend_header_lookup_ignores_case() -> None:
    target = header_target()
    headers = httpx.Headers([(b"X-BACKEND", b" web-2 ")])
    assert judge_response(200, headers, b"", target) == ("web-2", ())


def test_status_outside_the_accepted_codes() -> None:
    target = make_target(url="https://www.corp.example/", valid_status_codes=["2xx", 301])
    assert judge_response(302, {}, b"", target, A1) == (
        None,
        (Failure(Reason.HTTP_STATUS, "status 302 (expected 200-299, 301)", A1),),
    )
    assert judge_response(301, {}, b"", target, A1) == (None, ())


def test_body_regex_mismatch() -> None:
    target = make_target(url="https://www.corp.example/", body_regex="status: ok")
    assert judge_response(200, {}, b"status: degraded", target, A1) == (
        None,
        (Failure(Reason.HTTP_BODY_MISMATCH, "body does not match 'status: ok'", A1),),
    )
    assert judge_response(200, {}, b"x\nstatus: ok\n", target, A1) == (None, ())


def test_body_regex_is_shown_as_written() -> None:
    target = make_target(url="https://www.corp.example/", body_regex=r"status:\s*ok")
    _, failures = judge_response(200, {}, b"down", target, A1)
    assert [f.detail for f in failures] == [r"body does not match 'status:\s*ok'"]


def test_backend_from_body_regex_group() -> None:
    target = make_target(url="https://www.corp.example/", backend={"body_regex": r"served-by: (\S+)"})
    assert judge_response(200, {}, b"ok\nserved-by: web-3\n", target, A1) == ("web-3", ())


def test_backend_body_regex_no_match() -> None:
    target = make_target(url="https://www.corp.example/", backend={"body_regex": "served-by: (\\w+)"})
    assert judge_response(200, {}, b"ok", target, A1) == (
        None,
        (
            Failure(
                Reason.BACKEND_UNIDENTIFIED,
                "body does not match the backend pattern 'served-by: (\\w+)'",
                A1,
            ),
        ),
    )


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "no X-Backend header in the response"),
        ({"X-Backend": ""}, "the X-Backend header is empty"),
        ({"X-Backend": "   "}, "the X-Backend header is empty"),
    ],
)
def test_backend_header_missing_or_empty(headers: dict[str, str], detail: str) -> None:
    assert judge_response(200, headers, b"", header_target(), A1) == (
        None,
        (Failure(Reason.BACKEND_UNIDENTIFIED, detail, A1),),
    )


def test_backend_pattern_with_an_empty_group() -> None:
    target = make_target(url="https://www.corp.example/", backend={"body_regex": "served-by: (\\w*)"})
    assert judge_response(200, {}, b"served-by: ", target, A1)[1] == (
        Failure(
            Reason.BACKEND_UNIDENTIFIED, "the backend pattern 'served-by: (\\w*)' captured an empty name", A1
        ),
    )


def test_hostile_backend_name_is_cut_to_64_printable_characters() -> None:
    raw = ("  web 1\x00\t" + "é" * 3 + "A" * 100).encode()
    backend, failures = judge_response(200, httpx.Headers([(b"x-backend", raw)]), b"", header_target())
    assert failures == ()
    assert backend == "web_1_" + "A" * 57 + "…"  # cut, and saying so
    assert len(backend) == 64


def test_all_failures_of_one_response_are_reported() -> None:
    target = make_target(url="https://www.corp.example/", body_regex="ok", backend={"header": "X-Backend"})
    _, failures = judge_response(503, {}, b"maintenance", target, A1)
    assert [f.reason for f in failures] == [
        Reason.HTTP_STATUS,
        Reason.HTTP_BODY_MISMATCH,
        Reason.BACKEND_UNIDENTIFIED,
    ]


# --------------------------------------------------------------------------- summarise


def attempt(*failures: Failure) -> HttpAttempt:
    return HttpAttempt(503 if failures else 200, "HTTP/1.1", None, 0, False, PhaseTimes(), 0.01, failures)


def test_summarise_counts_requests_per_reason() -> None:
    status = Failure(Reason.HTTP_STATUS, "status 503 (expected 200-299)", A1)
    unidentified = Failure(Reason.BACKEND_UNIDENTIFIED, "no X-Backend header in the response", A1)
    attempts = (attempt(status, unidentified), attempt(), attempt(status), attempt(status))
    assert summarise(attempts, A1) == (
        Failure(Reason.HTTP_STATUS, "3 of 4 requests: status 503 (expected 200-299)", A1),
        Failure(Reason.BACKEND_UNIDENTIFIED, "1 of 4 requests: no X-Backend header in the response", A1),
    )


def test_summarise_names_the_most_common_variant() -> None:
    s503 = Failure(Reason.HTTP_STATUS, "status 503 (expected 200-299)", A1)
    s502 = Failure(Reason.HTTP_STATUS, "status 502 (expected 200-299)", A1)
    s500 = Failure(Reason.HTTP_STATUS, "status 500 (expected 200-299)", A1)
    attempts = (attempt(s502), attempt(s503), attempt(s503), attempt(s500))
    assert summarise(attempts, A1) == (
        Failure(
            Reason.HTTP_STATUS, "4 of 4 requests: status 503 (expected 200-299) (and 2 other variants)", A1
        ),
    )


def test_summarise_one_other_variant_is_singular() -> None:
    s503 = Failure(Reason.HTTP_STATUS, "status 503 (expected 200-299)", A1)
    s502 = Failure(Reason.HTTP_STATUS, "status 502 (expected 200-299)", A1)
    assert summarise((attempt(s503), attempt(s503), attempt(s502)), A1) == (
        Failure(
            Reason.HTTP_STATUS, "3 of 3 requests: status 503 (expected 200-299) (and 1 other variant)", A1
        ),
    )


def test_summarise_a_single_request_keeps_the_detail() -> None:
    status = Failure(Reason.HTTP_STATUS, "status 503 (expected 200-299)", A1)
    assert summarise((attempt(status),), A1) == (status,)
    assert summarise((attempt(), attempt()), A1) == ()


# --------------------------------------------------------------------------- requests


def test_request_headers_default_port() -> None:
    target = make_target(url="https://WWW.corp.example./health")
    assert request_headers(target) == {
        "Host": "www.corp.example",
        "User-Agent": f"probe/{__version__}",
        "Accept": "*/*",
        "Accept-Encoding": "identity",
    }


def test_request_headers_other_port_and_configured_headers() -> None:
    target = make_target(
        url="https://www.corp.example:8443/health",
        headers={
            "X-Env": "prod",
            "Authorization": {"value": "Bearer t", "secret": True},
            "User-Agent": "custom/1",
        },
    )
    assert request_headers(target) == {
        "Host": "www.corp.example:8443",
        "User-Agent": "custom/1",
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        "X-Env": "prod",
        "Authorization": "Bearer t",
    }


def test_request_url() -> None:
    target = make_target(url="https://www.corp.example:8443/health?full=1")
    assert request_url(ipaddress.ip_address("10.0.0.1"), target) == "https://10.0.0.1:8443/health?full=1"
    assert request_url(ipaddress.ip_address("fd00::1"), target) == "https://[fd00::1]:8443/health?full=1"
    plain = make_target(url="https://www.corp.example")
    assert request_url(ipaddress.ip_address("fd00::1"), plain) == "https://[fd00::1]:443/"
