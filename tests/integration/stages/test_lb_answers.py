"""Answers the load balancer gives itself, from a loopback server that answers as an ALB does.

Each scene is one lab TLS node whose handler writes, per connection, the response an ALB
writes when it does not forward the request (``tests/support/alb.py``: ``Server:
awselb/2.0``, its own page or the action's headers and cookies, no backend header), with a
backend rule configured (``X-Backend``). probe runs as a user runs it (``probe check
--config``), in JSON and in text, with ``--platform aws`` and ``generic``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probe.model.reasons import ExitCode, Platform, Reason
from probe.report.hints import HINTS, LOAD_BALANCER_HINTS, NAMED_BACKEND_STATUS_HINT, STATUS_HINTS
from tests.support import alb
from tests.support.curl import curl_get
from tests.support.helpers import check_config as check

AWS, GENERIC = Platform.AWS, Platform.GENERIC
#: Bound on one whole ``probe check`` of these scenes.
BOUND = 3.0


def checked(tmp_path: Path, target: dict[str, Any], platform: str = "aws") -> tuple[int, dict[str, Any]]:
    """The exit code and the JSON document's target, within :data:`BOUND`."""
    code, out, seconds = check(tmp_path, target, "--json", "--platform", platform)
    assert seconds < BOUND
    (document,) = json.loads(out)["targets"]
    return code, document


def hint_line(out: str, reason: Reason) -> str:
    """The line after the finding's line, which must be its hint."""
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if f" {reason.value} " in line and "hint" not in line)
    return lines[index + 1].strip()


def finding(document: dict[str, Any], reason: str) -> dict[str, Any]:
    (found,) = [f for f in document["failures"] if f["reason"] == reason]
    return found


def attempts(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for address in document["addresses"] for a in address["http"]]


def reasons(document: dict[str, Any]) -> set[str]:
    return {f["reason"] for f in document["failures"]}


def test_alb_503_no_healthy_target_is_one_http_status_from_the_load_balancer(
    scene: Any, tmp_path: Path, ca_file: Path
) -> None:
    s = scene(handler=alb.answering(alb.no_healthy_target()), backends=())
    target = {**s.target, "expect_backends": ["web-1", "web-2"]}
    code, document = checked(tmp_path, target)

    assert code == ExitCode.CRITICAL
    # Once, by its status: no backend_unidentified, and no backend judged missing on the
    # strength of answers no backend gave.
    assert reasons(document) == {"http_status"}
    said = (
        "status 503 (expected 200-299) from the load balancer itself, not a backend: no target to "
        "forward to: the target group has no registered targets (Server: awselb/2.0; the ALB's own "
        "error page)"
    )
    status = finding(document, "http_status")
    assert status["detail"] == f"4 of 4 requests: {said}"
    assert (
        status["hint"]
        == f"503 from the load balancer itself: {LOAD_BALANCER_HINTS['no_healthy_target'][AWS]}"
    )
    for attempt in attempts(document):
        assert attempt["status_code"] == 503 and attempt["backend"] is None
        assert attempt["origin"] == "load_balancer"
        assert attempt["load_balancer"] == {
            "kind": "no_healthy_target",
            "balancer": "ALB",
            "what": "no target to forward to: the target group has no registered targets",
            "evidence": "Server: awselb/2.0; the ALB's own error page",
        }
        assert [f["detail"] for f in attempt["failures"]] == [said]
    assert document["backends"]["identified"] == 0
    assert document["backends"]["from_load_balancer"] == document["backends"]["responses"] == 4

    code, out, _ = check(tmp_path, target, "--platform", "generic")
    assert code == ExitCode.CRITICAL
    assert hint_line(out, Reason.HTTP_STATUS) == (
        f"hint: 503 from the load balancer itself: {LOAD_BALANCER_HINTS['no_healthy_target'][GENERIC]}"
    )
    assert "backends none identified  (4 from the load balancer itself)" in out
    assert "backend_unidentified" not in out

    # curl shows the same answer: 503 with the balancer's own Server header, which the
    # finding names; curl (without --fail) exits 0, as it judges nothing.
    host, port = s.hostname, s.port
    seen = curl_get(ca_file, host, s.nodes[0].address, port, "-D", "-")
    assert seen.ok, seen.stderr
    assert seen.stdout.startswith("HTTP/1.1 503 Service Temporarily Unavailable\n")
    assert "Server: awselb/2.0\n" in seen.stdout and "X-Backend" not in seen.stdout


def test_alb_authenticate_oidc_302_names_the_action_and_the_whole_location(
    scene: Any, tmp_path: Path
) -> None:
    name = "auth-oidc.corp.example"
    s = scene(hostname=name, handler=alb.answering(alb.authenticate(name)), backends=())
    code, document = checked(tmp_path, s.target)

    assert code == ExitCode.CRITICAL
    assert reasons(document) == {"http_status"}
    location = alb.authenticate_location(name)
    assert len(location) > 700
    status = finding(document, "http_status")
    assert status["detail"].startswith(
        "4 of 4 requests: status 302 (expected 200-299) from the load balancer itself, not a backend: "
        "an authenticate-oidc action sends a client without a session cookie to the identity provider "
        f"at {alb.IDP} (Server: awselb/2.0; sets AWSELBAuthNonce); Location: {location[:182]}"
    )
    # The Location is shown cut, saying so and how long it is; the JSON keeps it whole.
    assert status["detail"].endswith(f"… ({len(location)} characters) (another host: {alb.IDP})")
    assert status["hint"] == f"302 from the load balancer itself: {LOAD_BALANCER_HINTS['authenticate'][AWS]}"
    assert "authenticate-oidc or authenticate-cognito" in status["hint"]
    for attempt in attempts(document):
        assert attempt["origin"] == "load_balancer" and attempt["load_balancer"]["kind"] == "authenticate"
        assert attempt["location"] == location and attempt["location_length"] == len(location)
        assert attempt["cookies_set"] == ["AWSELBAuthNonce"]
    assert document["cookies"]["note"] == (
        "the load balancer's authenticate action sets AWSELBAuthNonce; requests were sent without it"
    )

    code, out, _ = check(tmp_path, s.target)
    assert hint_line(out, Reason.HTTP_STATUS) == (
        f"hint: 302 from the load balancer itself: {LOAD_BALANCER_HINTS['authenticate'][GENERIC]}"
    )


def test_alb_authenticate_cognito_302(scene: Any, tmp_path: Path) -> None:
    name = "auth-cognito.corp.example"
    s = scene(hostname=name, handler=alb.answering(alb.authenticate(name, alb.COGNITO)), backends=())
    code, document = checked(tmp_path, s.target)
    assert code == ExitCode.CRITICAL and reasons(document) == {"http_status"}
    assert (
        "an authenticate-cognito action sends a client without a session cookie to the identity provider "
        f"at {alb.COGNITO} (Server: awselb/2.0; sets AWSELBAuthNonce)"
    ) in finding(document, "http_status")["detail"]


def test_waf_block_is_not_blamed_on_the_application(scene: Any, tmp_path: Path) -> None:
    s = scene(handler=alb.answering(alb.waf_block()), backends=())
    code, document = checked(tmp_path, s.target)

    assert code == ExitCode.CRITICAL
    assert reasons(document) == {"http_status"}
    status = finding(document, "http_status")
    assert status["detail"] == (
        "4 of 4 requests: status 403 (expected 200-299) from the load balancer itself, not a backend: an "
        "AWS WAF web ACL blocked the request (the ALB's only own 403) (Server: awselb/2.0; the ALB's own "
        "error page)"
    )
    assert status["hint"] == f"403 from the load balancer itself: {LOAD_BALANCER_HINTS['blocked'][AWS]}"
    assert "the targets never saw it" in status["hint"]
    assert "application on the target" not in status["hint"]
    assert {a["load_balancer"]["kind"] for a in attempts(document)} == {"blocked"}

    code, out, _ = check(tmp_path, s.target)
    assert hint_line(out, Reason.HTTP_STATUS) == (
        f"hint: 403 from the load balancer itself: {LOAD_BALANCER_HINTS['blocked'][GENERIC]}"
    )


def test_waf_captcha_action_is_a_block_too(scene: Any, tmp_path: Path) -> None:
    s = scene(handler=alb.answering(alb.waf_captcha()), backends=())
    code, document = checked(tmp_path, s.target)
    assert code == ExitCode.CRITICAL and reasons(document) == {"http_status"}
    assert finding(document, "http_status")["detail"].endswith(
        "status 405 (expected 200-299) from the load balancer itself, not a backend: an AWS WAF CAPTCHA "
        "action stopped the request (a web ACL rule) (Server: awselb/2.0; x-amzn-waf-action: captcha)"
    )


def test_fixed_response_rule_outside_and_inside_valid_status_codes(scene: Any, tmp_path: Path) -> None:
    maintenance = alb.fixed(503, b"Down for maintenance until 06:00 UTC\n")
    s = scene(handler=alb.answering(maintenance), backends=())
    code, document = checked(tmp_path, s.target)
    assert code == ExitCode.CRITICAL and reasons(document) == {"http_status"}
    status = finding(document, "http_status")
    assert status["detail"] == (
        "4 of 4 requests: status 503 (expected 200-299) from the load balancer itself, not a backend: a "
        "listener rule's fixed-response action (or an AWS WAF block with a custom response) "
        "(Server: awselb/2.0)"
    )
    assert (
        status["hint"] == f"503 from the load balancer itself: {LOAD_BALANCER_HINTS['fixed_response'][AWS]}"
    )

    # A fixed response with an accepted status must not pass for the service: with a
    # backend rule it is backend_not_reached, once (not also a body mismatch).
    ok = alb.fixed(200, b"OK\n")
    s = scene(handler=alb.answering(ok), backends=())
    code, document = checked(tmp_path, {**s.target, "body_regex": "served by"})
    assert code == ExitCode.CRITICAL
    assert reasons(document) == {"backend_not_reached"}
    reached = finding(document, "backend_not_reached")
    assert reached["severity"] == "critical" and reached["stage"] == "backend"
    assert reached["detail"] == (
        "4 of 4 requests: the load balancer answered itself with status 200, not a backend: a listener "
        "rule's fixed-response action (Server: awselb/2.0)"
    )
    assert (
        reached["hint"] == f"200 from the load balancer itself: {LOAD_BALANCER_HINTS['fixed_response'][AWS]}"
    )
    assert {a["origin"] for a in attempts(document)} == {"load_balancer"}

    # Without a backend rule an accepted answer is judged by body_regex like any other.
    unruled = {k: v for k, v in s.target.items() if k != "backend"}
    code, document = checked(tmp_path, {**unruled, "body_regex": "served by"})
    assert code == ExitCode.CRITICAL and reasons(document) == {"http_body_mismatch"}
    assert finding(document, "http_body_mismatch")["detail"] == (
        "4 of 4 requests: body does not match 'served by'; the load balancer answered itself: a listener "
        "rule's fixed-response action (Server: awselb/2.0)"
    )
    code, document = checked(tmp_path, unruled)
    assert code == ExitCode.OK and {a["origin"] for a in attempts(document)} == {"load_balancer"}


def test_alb_502_in_a_failing_targets_turns_backend_missing_says_so(scene: Any, tmp_path: Path) -> None:
    # Round robin over web-1 and a web-2 whose connection fails: the ALB answers web-2's
    # turns with its own 502. web-2 is missing, and the finding says the 502s were the
    # balancer's; they are not unidentified backends.
    s = scene(handler=alb.answering(alb.forwarded("web-1"), alb.own_error(502)), backends=())
    code, document = checked(tmp_path, {**s.target, "expect_backends": ["web-1", "web-2"]})

    assert code == ExitCode.CRITICAL
    assert reasons(document) == {"http_status", "backend_missing"}
    assert finding(document, "backend_missing")["detail"] == (
        "backend web-2 answered none of the 2 identified responses (seen: web-1 2); 2 other responses came "
        "from the load balancer itself (status 502), not from a backend"
    )
    status = finding(document, "http_status")
    assert status["detail"] == (
        "2 of 4 requests: status 502 (expected 200-299) from the load balancer itself, not a backend: the "
        "ALB's own 502 answer (Server: awselb/2.0; the ALB's own error page)"
    )
    assert status["hint"] == STATUS_HINTS[502][AWS]
    origins = [(a["status_code"], a["backend"], a["origin"]) for a in attempts(document)]
    assert sorted(origins) == [(200, "web-1", "backend")] * 2 + [(502, None, "load_balancer")] * 2
    assert document["backends"]["counts"] == {"web-1": 2}
    assert document["backends"]["from_load_balancer"] == 2


def test_alb_504_page(scene: Any, tmp_path: Path) -> None:
    s = scene(handler=alb.answering(alb.own_error(504)), backends=())
    code, document = checked(tmp_path, s.target, "generic")
    assert code == ExitCode.CRITICAL and reasons(document) == {"http_status"}
    status = finding(document, "http_status")
    assert "the ALB's own 504 answer (Server: awselb/2.0; the ALB's own error page)" in status["detail"]
    assert status["hint"] == STATUS_HINTS[504][GENERIC]


def test_a_backend_503_is_still_the_applications(scene: Any, tmp_path: Path) -> None:
    # A 503 that names its backend is the backend's, whatever it looks like.
    forwarded = alb.forwarded("web-1").replace(b"200 OK", b"503 Service Unavailable")
    s = scene(handler=alb.answering(forwarded), backends=())
    code, document = checked(tmp_path, s.target)
    assert code == ExitCode.CRITICAL and reasons(document) == {"http_status"}
    status = finding(document, "http_status")
    assert status["detail"] == "4 of 4 requests: status 503 (expected 200-299)"
    # The target answered it: the hint is the target's 503, never the ALB's "no registered
    # targets" (the ALB forwarded the request, so the target group has targets).
    assert status["hint"] == f"503: {NAMED_BACKEND_STATUS_HINT[AWS]}"
    assert "no registered targets" not in status["hint"]
    assert {(a["origin"], a["backend"]) for a in attempts(document)} == {("backend", "web-1")}
    assert HINTS[Reason.HTTP_STATUS][AWS] not in status["hint"]


def test_an_awselb_looking_503_that_names_its_backend_is_the_backends(scene: Any, tmp_path: Path) -> None:
    # The ALB's own 503 page and Server: awselb/2.0, but X-Backend names web-1: the backend
    # header wins (origin backend), and so does the hint, for every request and the address.
    answer = alb.response(503, [("Content-Type", "text/html"), ("X-Backend", "web-1")], alb.page(503))
    s = scene(handler=alb.answering(answer), backends=())
    for platform in (AWS, GENERIC):
        code, document = checked(tmp_path, {**s.target, "requests_per_address": 2}, platform.value)
        assert code == ExitCode.CRITICAL and reasons(document) == {"http_status"}
        status = finding(document, "http_status")
        assert status["detail"] == "2 of 2 requests: status 503 (expected 200-299)"
        assert status["hint"] == f"503: {NAMED_BACKEND_STATUS_HINT[platform]}"
        for attempt in attempts(document):
            assert (attempt["origin"], attempt["backend"], attempt["load_balancer"]) == (
                "backend",
                "web-1",
                None,
            )
            assert attempt["failures"][0]["hint"] == status["hint"]
    # Without a backend rule nothing names the backend: the 503 is the ALB's own.
    target = {k: v for k, v in s.target.items() if k != "backend"}
    code, document = checked(tmp_path, {**target, "requests_per_address": 1})
    assert finding(document, "http_status")["hint"].startswith("503 from the load balancer itself")


def test_over_http2_the_albs_own_answers_are_told_the_same_way(
    scene: Any, tmp_path: Path, ca_file: Path
) -> None:
    # An ALB's HTTP/2 listener: the same answers with lower-case field names, no reason
    # phrase, no connection fields; per stream, in turn, an authenticate action's 302 and a
    # WAF block. One finding per address, whose hint names both actions (one each).
    name = "h2-auth.corp.example"
    answers = alb.answering_h2(alb.authenticate(name), alb.waf_block())
    s = scene(hostname=name, handler=answers, backends=(), alpn=("h2",))
    code, document = checked(tmp_path, s.target)

    assert code == ExitCode.CRITICAL
    assert reasons(document) == {"http_status"}
    seen = sorted(
        (a["http_version"], a["status_code"], a["load_balancer"]["kind"]) for a in attempts(document)
    )
    assert seen == [("HTTP/2", 302, "authenticate")] * 2 + [("HTTP/2", 403, "blocked")] * 2
    for attempt in attempts(document):
        assert attempt["origin"] == "load_balancer" and attempt["backend"] is None
        if attempt["status_code"] == 302:
            assert attempt["cookies_set"] == ["AWSELBAuthNonce"]
            assert attempt["location"] == alb.authenticate_location(name)
    status = finding(document, "http_status")
    # Both are http_status; the first request got the 302, so it is the variant shown.
    assert status["detail"].startswith(
        "4 of 4 requests: status 302 (expected 200-299) from the load balancer itself, not a backend: an "
        "authenticate-oidc action sends a client without a session cookie to the identity provider at "
        f"{alb.IDP} (Server: awselb/2.0; sets AWSELBAuthNonce); Location: https://{alb.IDP}/oauth2/"
    )
    assert status["detail"].endswith("(and 1 other variant)")
    assert status["hint"] == (
        f"302 from the load balancer itself: {LOAD_BALANCER_HINTS['authenticate'][AWS]}; "
        f"403 from the load balancer itself: {LOAD_BALANCER_HINTS['blocked'][AWS]}"
    )
    assert document["backends"]["from_load_balancer"] == 4 and document["backends"]["identified"] == 0

    # curl over HTTP/2 sees the same first answer: 302 with the balancer's Server, no backend.
    seen_by_curl = curl_get(ca_file, s.hostname, s.nodes[0].address, s.port, "--http2", "-D", "-")
    assert seen_by_curl.ok, seen_by_curl.stderr
    assert seen_by_curl.stdout.startswith(("HTTP/2 302", "HTTP/2 403"))
    assert "server: awselb/2.0" in seen_by_curl.stdout and "x-backend" not in seen_by_curl.stdout
