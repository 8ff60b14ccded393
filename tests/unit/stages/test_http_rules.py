"""Pure HTTP-stage rules: body decoding, cookies, redirects, dates, repeated fields, ALPN."""

from __future__ import annotations

import gzip
import ssl
import zlib
from ipaddress import IPv4Address

import httpx
import pytest

from probe.config.load import build_config
from probe.model.reasons import Reason
from probe.model.results import HttpAttempt, PhaseTimes, cookie_note
from probe.stages.headers import content_codings, cookie_names, response_date
from probe.stages.http_rules import (
    clock_skew,
    decode_body,
    redirect_location,
)
from probe.stages.tls import PinnedAlpnContext, alpn_failures, build_contexts, classify_tls_error
from tests.support.builders import judge_response
from tests.support.helpers import make_target

A1 = IPv4Address("10.0.1.17")
CAP = 65536


# --------------------------------------------------------------------------- decode_body


def test_gzip_is_decoded() -> None:
    assert decode_body(gzip.compress(b"served by web-1"), ("gzip",), CAP) == (b"served by web-1", False, None)


def test_a_gzip_bomb_yields_at_most_the_cap() -> None:
    body, cut, problem = decode_body(gzip.compress(b"a" * 10_000_000), ("x-gzip",), CAP)
    assert len(body) == CAP and cut and problem is None


def test_deflate_with_and_without_the_zlib_header() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bare = raw.compress(b"hello") + raw.flush()
    assert decode_body(zlib.compress(b"hello"), ("deflate",), CAP)[0] == b"hello"
    assert decode_body(bare, ("deflate",), CAP)[0] == b"hello"


def test_stacked_codings_are_undone_in_reverse_order() -> None:
    twice = gzip.compress(zlib.compress(b"inner"))
    assert decode_body(twice, ("deflate", "gzip"), CAP) == (b"inner", False, None)


def test_every_gzip_member_is_decoded_as_gzip_and_curl_do() -> None:
    two = gzip.compress(b"<html>") + gzip.compress(b"served by web-2</html>")
    assert decode_body(two, ("gzip",), CAP) == (b"<html>served by web-2</html>", False, None)


def test_gzip_members_share_the_cap() -> None:
    many = b"".join(gzip.compress(b"a" * 1000) for _ in range(10))
    body, cut, problem = decode_body(many, ("gzip",), 2500)
    assert (len(body), cut, problem) == (2500, True, None)


def test_a_body_cut_at_the_read_cap_decodes_as_far_as_it_goes() -> None:
    whole = gzip.compress(bytes(range(256)) * 4000)
    body, _, problem = decode_body(whole[: len(whole) // 2], ("gzip",), CAP)
    assert problem is None and body and (bytes(range(256)) * 4000).startswith(body)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress"])
def test_an_encoding_probe_cannot_decode_is_named(coding: str) -> None:
    assert decode_body(b"\x1b\x00", (coding,), CAP) == (
        b"\x1b\x00",
        False,
        f"body is {coding}-encoded, which probe cannot decode",
    )


def test_corrupt_gzip_says_so() -> None:
    body, cut, problem = decode_body(b"not gzip at all", ("gzip",), CAP)
    assert body == b"not gzip at all" and not cut
    assert problem is not None and problem.startswith("body is gzip-encoded but does not decode")


def test_content_codings_keep_order_and_drop_identity() -> None:
    headers = httpx.Headers([("Content-Encoding", "identity, GZIP"), ("content-encoding", "br")])
    assert content_codings(headers) == ("gzip", "br")


# --------------------------------------------------------------------------- cookies


def test_cookie_names_never_values_and_bounded() -> None:
    headers = httpx.Headers(
        [("Set-Cookie", "AWSALB=abc; Expires=Thu, 01 Jan 2030 00:00:00 GMT; Path=/")]
        + [("Set-Cookie", f"c{i}=v") for i in range(40)]
        + [("Set-Cookie", "AWSALB=again"), ("Set-Cookie", "=novalue"), ("Set-Cookie", "bad\x01name=x")]
    )
    names = cookie_names(headers)
    assert names[0] == "AWSALB" and len(names) == 16 and all("=" not in n for n in names)
    assert cookie_names(httpx.Headers([("Set-Cookie", "bad\x01name=x")])) == ("bad_name",)


@pytest.mark.parametrize(
    ("names", "note"),
    [
        ((), None),
        (("AWSALB",), "the load balancer sets a stickiness cookie (AWSALB); requests were sent without it"),
        (("SERVERID", "sid"), "the load balancer sets a stickiness cookie (SERVERID); the application sets "
         "a cookie (sid); requests were sent without them"),
        (("a", "b"), "the application sets cookies (a, b); requests were sent without them"),
        (("AWSALBTG", "AWSALBTGCORS", "AWSELB"), "the load balancer sets stickiness cookies "
         "(AWSALBTG, AWSALBTGCORS, AWSELB); requests were sent without them"),
    ],
)  # fmt: skip
def test_cookie_note(names: tuple[str, ...], note: str | None) -> None:
    assert cookie_note(names) == note


# --------------------------------------------------------------------------- Location, Date


def test_redirect_location_is_made_absolute_against_the_hostname() -> None:
    target = make_target(url="https://www.corp.example:8443/health")
    headers = httpx.Headers({"Location": "/login"})
    assert redirect_location(302, headers, target) == ("https://www.corp.example:8443/login", "same host")
    assert redirect_location(200, headers, target) == (None, None)
    assert redirect_location(302, httpx.Headers(), target) == (None, None)


@pytest.mark.parametrize(
    ("location", "note"),
    [
        ("http://www.corp.example/", "a downgrade to http://"),
        ("https://www.corp.example:8443/x", "another host: www.corp.example:8443"),
        ("https://sso.corp.example/", "another host: sso.corp.example"),
        ("ftp://files.corp.example/", "to a ftp: URL"),
        ("https://[::1/", "not a valid URL"),
    ],
)
def test_redirect_location_says_where_it_points(location: str, note: str) -> None:
    target = make_target(url="https://www.corp.example/")
    assert redirect_location(301, httpx.Headers({"Location": location}), target)[1] == note


def test_two_different_locations_are_noted() -> None:
    target = make_target(url="https://www.corp.example/")
    headers = httpx.Headers([("Location", "/a"), ("Location", "/b"), ("Location", "/a")])
    url, note = redirect_location(301, headers, target)
    assert url == "https://www.corp.example/a"
    assert note == "same host; 2 different Location headers, the first is shown"


def test_status_finding_carries_the_location() -> None:
    target = make_target(url="https://www.corp.example/")
    _, failures = judge_response(
        301, httpx.Headers({"Location": "http://www.corp.example/"}), b"", target, A1
    )
    assert failures[0].detail == (
        "status 301 (expected 200-299); Location: http://www.corp.example/ (a downgrade to http://)"
    )


def test_response_date() -> None:
    assert response_date(httpx.Headers({"Date": "Sun, 06 Nov 1994 08:49:37 GMT"})) == 784111777.0
    same = httpx.Headers([("Date", "Sun, 06 Nov 1994 08:49:37 GMT")] * 2)
    assert response_date(same) == 784111777.0
    differ = httpx.Headers(
        [("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Date", "Mon, 07 Nov 1994 08:49:37 GMT")]
    )
    assert response_date(differ) is None
    assert response_date(httpx.Headers({"Date": "yesterday"})) is None
    assert response_date(httpx.Headers()) is None


def attempt(date: float | None, received: float) -> HttpAttempt:
    return HttpAttempt(
        200,
        "HTTP/1.1",
        None,
        0,
        False,
        PhaseTimes(),
        0.01,
        (),
        date_timestamp=date,
        received_timestamp=received,
    )


def test_clock_skew_over_a_minute_either_way() -> None:
    now = 1_800_000_000.0
    assert clock_skew((attempt(now + 60, now), attempt(now - 59, now)), A1) == ()
    assert clock_skew((attempt(None, now),), A1) == ()
    (ahead,) = clock_skew((attempt(now + 90, now),), A1)
    assert ahead.reason is Reason.HTTP_CLOCK_SKEW and ahead.address == A1
    assert ahead.detail.startswith(
        "the server's clock is 90 seconds ahead of this machine's: its Date header says "
        "2027-01-15 08:01:30 UTC, this machine's clock said 2027-01-15 08:00:00 UTC"
    )
    (behind,) = clock_skew((attempt(now, now), attempt(now - 3 * 86400, now)), A1)
    assert "3 days behind this machine's" in behind.detail


# --------------------------------------------------------------------------- repeated fields


def header_target() -> object:
    return make_target(url="https://www.corp.example/", backend={"header": "X-Backend"})


@pytest.mark.parametrize(
    "fields",
    [
        [("X-Backend", "web-1"), ("X-Backend", "web-1")],
        [("X-Backend", "web-1, web-1")],
        [("X-Backend", " web-1 "), ("x-backend", "web-1")],
    ],
    ids=["two-lines", "folded", "spacing-and-case"],
)
def test_identical_repeats_count_once(fields: list[tuple[str, str]]) -> None:
    assert judge_response(200, httpx.Headers(fields), b"", header_target(), A1) == ("web-1", ())  # type: ignore[arg-type]


def test_different_values_are_named_not_folded() -> None:
    headers = httpx.Headers([("X-Backend", f"web-{i}") for i in range(1, 7)])
    backend, failures = judge_response(200, headers, b"", header_target(), A1)  # type: ignore[arg-type]
    assert backend is None
    assert failures[0].reason is Reason.BACKEND_UNIDENTIFIED
    assert failures[0].detail == "the X-Backend header has 6 different values: web-1, web-2, web-3, web-4, …"


def test_charset_from_content_type_and_unknown_charset_falls_back_to_utf8() -> None:
    target = make_target(url="https://www.corp.example/", backend={"body_regex": r"by (\S+)"})
    utf16 = httpx.Headers({"Content-Type": "text/plain; charset=utf-16"})
    assert judge_response(200, utf16, "by web-1".encode("utf-16"), target)[0] == "web-1"
    unknown = httpx.Headers({"Content-Type": 'text/plain; charset="x-nonsense"'})
    assert judge_response(200, unknown, b"by web-2", target)[0] == "web-2"


# --------------------------------------------------------------------------- ALPN


def test_alpn_lists_follow_http_version() -> None:
    assert build_contexts(None, "1.2", http_version="2").alpn == ("h2",)
    assert build_contexts(None, "1.2").alpn == ("h2", "http/1.1")
    assert isinstance(build_contexts(None, "1.2", http_version="1.1").http, PinnedAlpnContext)


def test_alpn_failures() -> None:
    assert alpn_failures(None, ("h2", "http/1.1"), A1) == ()
    assert alpn_failures("h2", ("h2",), A1) == ()
    (failure,) = alpn_failures(None, ("h2",), A1)
    assert failure.reason is Reason.TLS_ALPN_MISMATCH and "offered no h2" in failure.detail


def test_no_application_protocol_alert_is_an_alpn_mismatch() -> None:
    exc = ssl.SSLError(1, "[SSL] tlsv1 alert no application protocol (_ssl.c:1006)")
    assert classify_tls_error(exc)[0] is Reason.TLS_ALPN_MISMATCH


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), (1.1, "1.1"), ("1.1", "1.1"), (2, "2"), ("2", "2")]
)
def test_http_version_values(value: object, expected: str) -> None:
    config = build_config({"targets": [{"url": "https://www.corp.example/", "http_version": value}]})
    assert config.targets[0].http_version == expected


def test_body_size_limit_defaults_to_none() -> None:
    assert make_target(url="https://www.corp.example/").body_size_limit is None
    assert make_target(url="https://www.corp.example/", body_size_limit=1024).body_size_limit == 1024
