"""Telling the load balancer's own answer from a backend's (probe.stages.origin), and cut values."""

from __future__ import annotations

from ipaddress import ip_address

import httpx
import pytest

from probe._text import shorten
from probe.model.reasons import Reason
from probe.model.results import cookie_note
from probe.stages.http_rules import MAX_LOCATION, judge_answer, location_facts
from probe.stages.origin import HAPROXY_SENTENCES, load_balancer_answer
from tests.support import alb
from tests.support.helpers import make_target

A1 = ip_address("10.0.1.17")
ALB = {"Server": "awselb/2.0", "Content-Type": "text/html"}


def haproxy_page(status: int, phrase: str, sentence: str) -> bytes:
    return f"<html><body><h1>{status} {phrase}</h1>\n{sentence}\n</body></html>\n".encode()


def test_the_albs_own_pages_by_status() -> None:
    assert len(alb.page(503)) == 162  # the ALB's 503, byte for byte
    no_target = load_balancer_answer(503, ALB, alb.page(503))
    assert no_target is not None and (no_target.kind, no_target.balancer) == ("no_healthy_target", "ALB")
    assert no_target.evidence == "Server: awselb/2.0; the ALB's own error page"
    waf = load_balancer_answer(403, ALB, alb.page(403))
    assert waf is not None and waf.kind == "blocked" and "AWS WAF web ACL" in waf.what
    bad = load_balancer_answer(502, ALB, alb.page(502))
    assert bad is not None and (bad.kind, bad.what) == ("error", "the ALB's own 502 answer")
    deny = load_balancer_answer(401, ALB, alb.page(401))
    assert deny is not None and deny.kind == "authenticate" and "OnUnauthenticatedRequest: deny" in deny.what


def test_an_older_albs_page_names_it_in_its_footer_even_without_server() -> None:
    # As ALBs answered in 2016: nginx's template with bgcolor and an awselb/2.0 footer.
    body = (
        b'<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body bgcolor="white">\r\n'
        b"<center><h1>400 Bad Request</h1></center>\r\n<hr><center>awselb/2.0</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )
    answer = load_balancer_answer(400, {"Content-Type": "text/html"}, body)
    assert answer is not None and answer.balancer == "ALB" and answer.kind == "error"
    assert answer.evidence == "its page's footer names awselb/2.0; the ALB's own error page"
    # The same template from nginx is not the ALB's, and nginx's own pages are not recognised.
    nginx = body.replace(b"awselb/2.0", b"nginx/1.25.3")
    assert load_balancer_answer(400, {"Server": "nginx/1.25.3"}, nginx) is None
    # A page whose code is not the response's is not the balancer's page for it.
    assert load_balancer_answer(503, {"Content-Type": "text/html"}, body) is None


def test_an_alb_answer_that_is_no_page_is_a_rule() -> None:
    fixed = load_balancer_answer(503, ALB, b"Down for maintenance")
    assert fixed is not None and fixed.kind == "fixed_response"
    assert (
        fixed.what == "a listener rule's fixed-response action (or an AWS WAF block with a custom response)"
    )
    ok = load_balancer_answer(200, ALB, b"OK")
    assert ok is not None and ok.what == "a listener rule's fixed-response action"
    moved = load_balancer_answer(301, {**ALB, "Location": "https://www.corp.example/"}, b"")
    assert moved is not None and moved.kind == "redirect"


def test_authenticate_actions_by_cookie_or_callback() -> None:
    location = alb.authenticate_location("www.corp.example", alb.COGNITO)
    by_cookie = load_balancer_answer(302, ALB, alb.page(302), cookies=("AWSELBAuthNonce",), location=location)
    assert by_cookie is not None and by_cookie.kind == "authenticate"
    assert by_cookie.what.startswith("an authenticate-cognito action") and alb.COGNITO in by_cookie.what
    assert by_cookie.evidence == "Server: awselb/2.0; sets AWSELBAuthNonce"
    # Without the cookie, the redirect_uri to /oauth2/idpresponse still gives it away.
    oidc = alb.authenticate_location("www.corp.example")
    by_callback = load_balancer_answer(302, ALB, b"", location=oidc)
    assert by_callback is not None and by_callback.what.startswith("an authenticate-oidc action")
    idp_error = load_balancer_answer(561, ALB, b"", cookies=("AWSELBAuthSessionCookie-0",))
    assert idp_error is not None and idp_error.what.startswith("the identity provider answered")


def test_waf_captcha_and_challenge() -> None:
    for value, words in (("captcha", "CAPTCHA"), ("challenge", "Challenge")):
        answer = load_balancer_answer(405, {**ALB, "x-amzn-waf-action": value}, b"<html></html>")
        assert answer is not None and answer.kind == "blocked"
        assert answer.what == f"an AWS WAF {words} action stopped the request (a web ACL rule)"
        assert answer.evidence.endswith(f"x-amzn-waf-action: {value}")


@pytest.mark.parametrize(
    ("status", "phrase", "kind"),
    [
        (503, "Service Unavailable", "no_healthy_target"),
        (403, "Forbidden", "blocked"),
        (429, "Too Many Requests", "blocked"),
        (401, "Unauthorized", "authenticate"),
        (200, "OK", "fixed_response"),
        (502, "Bad Gateway", "error"),
        (504, "Gateway Time-out", "error"),
    ],
)
def test_haproxys_own_pages(status: int, phrase: str, kind: str) -> None:
    body = haproxy_page(status, phrase, HAPROXY_SENTENCES[status])
    answer = load_balancer_answer(status, {"Content-Type": "text/html", "Cache-Control": "no-cache"}, body)
    assert answer is not None and (answer.balancer, answer.kind) == ("HAProxy", kind)
    assert answer.evidence == f"HAProxy's own {status} page: '{HAPROXY_SENTENCES[status]}'"


def test_haproxy_lookalikes_are_not_haproxy() -> None:
    # HAProxy's 501 really starts its sentence with a full stop; that is still its page.
    odd = haproxy_page(501, "Not Implemented", "." + HAPROXY_SENTENCES[501])
    assert load_balancer_answer(501, {}, odd) is not None
    # Another sentence, another code, or a page inside a larger body is the application's.
    assert load_balancer_answer(503, {}, haproxy_page(503, "Service Unavailable", "Back soon.")) is None
    assert (
        load_balancer_answer(502, {}, haproxy_page(503, "Service Unavailable", HAPROXY_SENTENCES[503]))
        is None
    )
    padded = haproxy_page(503, "Service Unavailable", HAPROXY_SENTENCES[503]) + b" " * 4096
    assert load_balancer_answer(503, {}, padded) is None


def test_api_gateway_error_type_and_request_id() -> None:
    answer = load_balancer_answer(403, {"x-amzn-ErrorType": "ForbiddenException"}, b'{"message":"Forbidden"}')
    assert answer is not None and (answer.balancer, answer.kind) == ("API Gateway", "blocked")
    assert answer.evidence == "x-amzn-ErrorType: ForbiddenException"
    # x-amzn-RequestId is on every API Gateway response, the backend's too: no evidence.
    assert load_balancer_answer(503, {"x-amzn-RequestId": "c6af9ac6-7b61"}, b"") is None


def test_hostile_server_header_is_printable_and_cut_saying_so() -> None:
    answer = load_balancer_answer(503, {"Server": "awselb/" + "\x1b[31m" + "x" * 300}, b"")
    assert answer is not None
    assert "\x1b" not in answer.evidence and answer.evidence.endswith("… (312 characters)")


def test_a_response_that_names_its_backend_is_the_backends() -> None:
    target = make_target(url="https://www.corp.example/", backend={"header": "X-Backend"})
    headers = httpx.Headers({**ALB, "X-Backend": "web-1"})
    backend, failures, answer = judge_answer(503, headers, alb.page(503), target, A1)
    assert (backend, answer) == ("web-1", None)
    assert [f.reason for f in failures] == [Reason.HTTP_STATUS]
    assert failures[0].detail == "status 503 (expected 200-299)"


def test_without_a_backend_rule_the_origin_is_still_recorded() -> None:
    target = make_target(url="https://www.corp.example/")
    _, failures, answer = judge_answer(403, httpx.Headers(ALB), alb.page(403), target, A1)
    assert answer is not None and answer.kind == "blocked"
    (failure,) = failures
    assert "from the load balancer itself, not a backend: an AWS WAF web ACL" in failure.detail


def test_expect_redirect_records_the_redirect_actions_origin() -> None:
    target = make_target(url="http://www.corp.example/", expect_redirect="https")
    headers = httpx.Headers({**ALB, "Location": "https://www.corp.example:443/"})
    _, failures, answer = judge_answer(
        301, headers, alb.page(302).replace(b"302 Found", b"301 Moved"), target
    )
    assert failures == () and answer is not None and answer.kind == "redirect"


def test_shorten_says_it_cut_and_how_long_the_value_was() -> None:
    assert shorten("x" * 120) == "x" * 120
    cut = shorten("x" * 500, 100)
    assert len(cut) == 100 and cut.endswith("… (500 characters)")
    # A value already cut to a cap still tells its full length.
    assert shorten("y" * 300, 100, length=9000).endswith("… (9000 characters)")
    assert shorten("abc", 100, length=9000) == "abc… (9000 characters)"[: len("abc")] + "… (9000 characters)"
    # Limits too small for the mark keep the ellipsis.
    assert shorten("z" * 50, 20) == "z" * 19 + "…"


def test_location_is_kept_whole_up_to_its_cap_with_its_length() -> None:
    target = make_target(url="https://www.corp.example/")
    url = "https://idp.corp.example/authorize?state=" + "s" * 9000
    facts = location_facts(302, httpx.Headers({"Location": url}), target)
    assert facts["location_length"] == len(url)
    assert len(facts["location"]) == MAX_LOCATION and facts["location"].endswith("…")
    assert url.startswith(facts["location"][:-1])
    whole = location_facts(302, httpx.Headers({"Location": url[:2000]}), target)
    assert whole == {"location": url[:2000], "location_length": 2000}
    assert location_facts(200, httpx.Headers({"Location": url}), target) == {
        "location": None,
        "location_length": None,
    }


def test_authentication_cookies_are_named_the_load_balancers() -> None:
    assert cookie_note(("AWSELBAuthNonce", "session")) == (
        "the load balancer's authenticate action sets AWSELBAuthNonce; the application sets a cookie "
        "(session); requests were sent without them"
    )
