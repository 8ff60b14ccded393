"""Pure rules of ``http://`` targets: config, request URL and Host, redirects, report and metrics."""

from __future__ import annotations

import io
import json
from ipaddress import IPv4Address

import httpx
import pytest

from probe.config.errors import ConfigError
from probe.config.load import parse_config
from probe.daemon.metrics import render_target
from probe.daemon.store import TargetState
from probe.model.reasons import Reason
from probe.model.results import TargetResult, TlsResult
from probe.report.document import certificates_verified, to_json
from probe.report.text import render_text
from probe.stages.http import request_headers, request_url
from probe.stages.http_rules import expected_redirect, judge_redirect, redirect_location
from tests.support.builders import address_result, http_attempt, judge_response, target_result
from tests.support.helpers import make_target

A1 = IPv4Address("10.0.1.17")


# --------------------------------------------------------------------------- config


def test_http_url_defaults_to_port_80_and_keeps_the_query() -> None:
    target = make_target(url="http://WWW.corp.example/health?full=1")
    assert (target.scheme, target.port, target.hostname, target.path) == (
        "http",
        80,
        "www.corp.example",
        "/health?full=1",
    )
    assert target.plain and target.expect_redirect is None
    assert make_target(url="https://www.corp.example/").port == 443
    assert make_target(url="http://www.corp.example:8080/").port == 8080


def test_scheme_cannot_be_set() -> None:
    with pytest.raises(ConfigError, match="'scheme' is taken from 'url' and cannot be set"):
        parse_config("targets: [{url: 'http://a.corp.example/', scheme: https}]")


def test_expect_redirect_with_a_backend_rule_from_defaults_is_accepted() -> None:
    config = parse_config(
        "defaults: {backend: {header: X-Backend}}\n"
        "targets: [{url: 'http://a.corp.example/', expect_redirect: https}]"
    )
    assert config.targets[0].expect_redirect == "https"


def test_tls_settings_do_not_stop_an_http_target() -> None:
    target = make_target(url="http://a.corp.example/", insecure_skip_verify=True, min_tls_version="1.3")
    assert target.plain


# --------------------------------------------------------------------------- requests


def test_request_url_and_host_follow_the_scheme() -> None:
    target = make_target(url="http://www.corp.example/health")
    assert request_url(A1, target) == "http://10.0.1.17:80/health"
    assert request_headers(target)["Host"] == "www.corp.example"
    other = make_target(url="http://www.corp.example:8080/")
    assert request_headers(other)["Host"] == "www.corp.example:8080"
    assert request_headers(make_target(url="https://www.corp.example:80/"))["Host"] == "www.corp.example:80"


@pytest.mark.parametrize(
    ("location", "note"),
    [
        ("https://www.corp.example/", "an upgrade to https://, same host"),
        ("/other", "same host"),
        ("http://www.corp.example:8080/", "another host: www.corp.example:8080"),
        ("https://elsewhere.example/", "another host: elsewhere.example"),
        ("ftp://www.corp.example/", "to a ftp: URL"),
    ],
)
def test_redirect_notes_from_a_plain_target(location: str, note: str) -> None:
    target = make_target(url="http://www.corp.example/")
    assert redirect_location(301, httpx.Headers({"Location": location}), target)[1] == note


def test_a_relative_location_resolves_against_the_http_url() -> None:
    target = make_target(url="http://www.corp.example:8080/a/b")
    url, note = redirect_location(302, httpx.Headers({"Location": "c"}), target)
    assert (url, note) == ("http://www.corp.example:8080/a/c", "same host")


# --------------------------------------------------------------------------- judge_redirect


REDIRECT = make_target(url="http://www.corp.example/health?full=1", expect_redirect="https")


def test_expected_redirect_is_the_https_form_on_443() -> None:
    assert expected_redirect(REDIRECT) == "https://www.corp.example/health?full=1"
    assert expected_redirect(make_target(url="http://www.corp.example:8080/", expect_redirect="https")) == (
        "https://www.corp.example/"
    )


@pytest.mark.parametrize("status", [301, 302])
@pytest.mark.parametrize(
    "location",
    [
        "https://www.corp.example/health?full=1",
        "https://WWW.corp.example:443/health?full=1",
        "https://www.corp.example./health?full=1",
    ],
)
def test_right_redirects(status: int, location: str) -> None:
    assert judge_redirect(status, httpx.Headers({"Location": location}), REDIRECT, A1) == ()


def test_a_redirect_to_a_long_url_is_judged_on_the_whole_url_and_shown_cut() -> None:
    # The detail shows 200 characters, saying so and how long the URL is; the comparison takes all of it.
    long_path = "/" + "p" * 300
    target = make_target(url=f"http://www.corp.example{long_path}", expect_redirect="https")
    right = httpx.Headers({"Location": f"https://www.corp.example{long_path}"})
    assert judge_redirect(301, right, target, A1) == ()
    wrong = httpx.Headers({"Location": f"https://www.corp.example{long_path}x"})
    (failure,) = judge_redirect(301, wrong, target, A1)
    assert failure.reason is Reason.HTTP_REDIRECT_WRONG
    assert failure.detail.startswith(
        f"301 to https://www.corp.example/{'p' * 157}… (326 characters): another path (expected"
    )


@pytest.mark.parametrize(
    ("status", "location", "why"),
    [
        (301, "http://www.corp.example/health?full=1", "still plain http://"),
        (301, "/health?full=1", "still plain http://"),
        (301, "https://other.corp.example/health?full=1", "another host (other.corp.example)"),
        (301, "https://www.corp.example:8443/health?full=1", "port 8443, not 443"),
        (301, "https://www.corp.example/?full=1", "another path"),
        (301, "https://www.corp.example/health", "another query"),
        (
            301,
            "http://other.corp.example/",
            "still plain http://; another host (other.corp.example); another path",
        ),
        (308, "https://www.corp.example/health?full=1", "status 308, not 301 or 302"),
        (
            303,
            "https://x.corp.example/health?full=1",
            "status 303, not 301 or 302; another host (x.corp.example)",
        ),
        (301, "javascript:alert(1)", "a javascript: URL, not https://"),
    ],
)
def test_wrong_redirects(status: int, location: str, why: str) -> None:
    [failure] = judge_redirect(status, httpx.Headers({"Location": location}), REDIRECT, A1)
    assert failure.reason is Reason.HTTP_REDIRECT_WRONG and failure.address == A1
    assert failure.detail.endswith(f": {why} (expected 301 or 302 to https://www.corp.example/health?full=1)")
    assert failure.detail.startswith(f"{status} to ")


def test_a_redirect_without_location() -> None:
    [failure] = judge_redirect(302, httpx.Headers(), REDIRECT)
    assert failure.reason is Reason.HTTP_REDIRECT_WRONG
    assert failure.detail == (
        "status 302 without a Location header (expected 301 or 302 to https://www.corp.example/health?full=1)"
    )


@pytest.mark.parametrize("status", [200, 204, 404, 503])
def test_not_a_redirect(status: int) -> None:
    [failure] = judge_redirect(status, httpx.Headers(), REDIRECT)
    assert failure.reason is Reason.HTTP_REDIRECT_MISSING
    assert failure.detail == (
        f"status {status}, not a redirect (expected 301 or 302 to https://www.corp.example/health?full=1)"
    )


def test_expect_redirect_replaces_status_body_and_backend_rules() -> None:
    target = make_target(
        url="http://www.corp.example/",
        expect_redirect="https",
        backend={"header": "X-Backend"},
        body_regex="ok",
    )
    headers = httpx.Headers({"Location": "https://www.corp.example/"})
    assert judge_response(301, headers, b"", target, A1) == (None, ())


# --------------------------------------------------------------------------- rendering


def _plain_result() -> TargetResult:
    tls = TlsResult(A1, 80, 0.001, None, None, None, None, False, None, None, (), (), (), plain=True)
    address = address_result(A1, tls, [http_attempt("web-1")])
    return target_result(addresses=(address,), url="http://www.corp.example/", port=80, scheme="http")


def test_plain_result_renders_without_tls_facts() -> None:
    result = _plain_result()
    assert result.target.plain and result.addresses[0].tls.handshake_outcome == "plain"
    out = io.StringIO()
    render_text([result], out, now=0.0)
    text = out.getvalue()
    assert "plain HTTP" in text and "no certificate checked" in text
    doc = to_json([result], now=0.0)
    assert doc["certificates_verified"] is None
    assert doc["targets"][0]["scheme"] == "http"
    assert doc["targets"][0]["addresses"][0]["tls"]["verified"] is None
    json.dumps(doc)


def test_certificates_verified_with_mixed_targets() -> None:
    https = target_result()
    assert certificates_verified([https, _plain_result()]) is True
    assert certificates_verified([_plain_result()]) is None
    assert certificates_verified([]) is True


def test_plain_target_has_no_tls_series() -> None:
    state = TargetState(result=_plain_result(), cycles=1, failures_total={}, backends={}, phases={})
    text = b"".join(render_target(state)).decode()
    assert 'probe_tcp_connect_seconds{address="10.0.1.17",target="www"} 0.001' in text
    assert "probe_tls_" not in text and "probe_ssl_" not in text
