"""The hint table: every reason code has a hint per platform or is listed as having none."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from probe.model.reasons import Platform, Reason
from probe.model.results import LOAD_BALANCER_KINDS, Failure
from probe.report.hints import (
    HINTS,
    LOAD_BALANCER_HINTS,
    NO_HINT,
    OWN_ERROR_HINT,
    PUBLIC_ADDRESS_HINT,
    REDIRECT_HINT,
    STATUS_HINTS,
    Answer,
    hint_for,
)

AWS, GENERIC = Platform.AWS, Platform.GENERIC
HERE = ip_address("10.0.2.31")


def hint(
    reason: Reason, platform: Platform = AWS, codes: tuple[Answer, ...] = (), address: str = "10.0.2.31"
) -> str:
    text = hint_for(Failure(reason, "detail", ip_address(address)), platform, codes)
    assert text is not None
    return text


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_has_a_hint_for_each_platform_or_is_listed_as_having_none(reason: Reason) -> None:
    if reason in NO_HINT:
        assert reason not in HINTS
        assert all(hint_for(Failure(reason, "x"), p) is None for p in Platform)
    else:
        assert set(HINTS[reason]) == set(Platform), reason
        for platform in Platform:
            assert hint_for(Failure(reason, "x"), platform) == HINTS[reason][platform]


def test_no_hint_list_is_short_and_explained() -> None:
    assert {Reason.INTERNAL_ERROR, Reason.CERT_UNPARSED} == NO_HINT


@pytest.mark.parametrize(
    "text",
    [
        t
        for table in (HINTS, STATUS_HINTS, LOAD_BALANCER_HINTS)
        for per in table.values()
        for t in per.values()
    ]
    + list(PUBLIC_ADDRESS_HINT.values())
    + list(REDIRECT_HINT.values())
    + list(OWN_ERROR_HINT.values()),
)
def test_hint_texts_are_one_short_line_without_a_full_stop(text: str) -> None:
    assert text and text == text.strip() and "\n" not in text
    assert not text.endswith(".")
    assert len(text) <= 260, len(text)


def test_every_table_has_both_platforms() -> None:
    for per in (*STATUS_HINTS.values(), *LOAD_BALANCER_HINTS.values(), PUBLIC_ADDRESS_HINT, REDIRECT_HINT):
        assert set(per) == set(Platform)
    assert set(OWN_ERROR_HINT) == set(Platform)
    # Every kind of the load balancer's own answer has its words, but "error", which takes the code's.
    assert set(LOAD_BALANCER_HINTS) == set(LOAD_BALANCER_KINDS) - {"error"}


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (Reason.TCP_TIMEOUT, ["security group", "network ACL", "peering", "transit gateway"]),
        (Reason.TCP_REFUSED, ["no listener on this port"]),
        (Reason.CERT_HOSTNAME_MISMATCH, ["default certificate", "certificate list (SNI)"]),
        (Reason.CERT_UNTRUSTED, ["imported certificate without its chain", "private CA"]),
        (Reason.CERT_CHAIN_INCOMPLETE, ["imported certificate without its chain", "private CA"]),
        (Reason.DNS_NXDOMAIN, ["hosted zone", "private hosted zone is not associated"]),
        (Reason.DNS_NO_ANSWER, ["hosted zone", "private hosted zone is not associated"]),
        (Reason.DNS_ALIAS_MISMATCH, ["alias record points at another load balancer"]),
        (Reason.BACKEND_MISSING, ["unhealthy or deregistered", "cross-zone load balancing is off"]),
    ],
)
def test_aws_hints_name_the_causes_the_issue_lists(reason: Reason, words: list[str]) -> None:
    text = hint(reason)
    for word in words:
        assert word in text
    assert "security group" not in hint(reason, GENERIC)  # generic words stay generic


def test_unexpected_public_address_points_at_an_internet_facing_load_balancer() -> None:
    public = hint(Reason.DNS_UNEXPECTED_ADDRESS, address="52.95.110.1")
    assert "internet-facing load balancer" in public
    private = hint(Reason.DNS_UNEXPECTED_ADDRESS, address="172.31.4.5")
    assert "internet-facing" not in private and "another VPC" in private
    # Documentation and shared ranges are not public.
    assert hint(Reason.DNS_UNEXPECTED_ADDRESS, address="203.0.113.9") == private
    assert hint(Reason.DNS_UNEXPECTED_ADDRESS, address="100.64.1.1") == private
    assert "internet-facing service" in hint(Reason.DNS_UNEXPECTED_ADDRESS, GENERIC, address="2600:1f18::1")


@pytest.mark.parametrize(
    ("code", "words", "classic"),
    [
        (502, ["ALB 502", "closed the connection", "TLS"], "Classic Load Balancer means the same"),
        (
            503,
            ["ALB 503", "no registered targets"],
            "Classic Load Balancer also answers 503 when no instance",
        ),
        (504, ["ALB 504", "idle timeout"], "Classic Load Balancer means the same"),
        (460, ["ALB 460", "client closed the connection"], "Classic Load Balancer has no 460"),
        (463, ["ALB 463", "X-Forwarded-For", "30"], "Classic Load Balancer has no 463"),
        (464, ["ALB 464", "protocol version"], "Classic Load Balancer has no 464"),
    ],
)
def test_http_status_hint_depends_on_the_code(code: int, words: list[str], classic: str) -> None:
    text = hint(Reason.HTTP_STATUS, codes=(code,))
    for word in [*words, classic]:
        assert word in text
    assert "ALB" not in hint(Reason.HTTP_STATUS, GENERIC, codes=(code,))


def test_http_status_hint_names_each_distinct_code_lowest_first() -> None:
    text = hint(Reason.HTTP_STATUS, codes=(503, 502, 503))
    assert text.index("ALB 502") < text.index("ALB 503")
    assert text.count("ALB 503") == 1


def test_http_status_from_the_application_and_redirects() -> None:
    text = hint(Reason.HTTP_STATUS, codes=(404, 500, 302))
    assert "302: a redirect, perhaps a listener rule's redirect action" in text
    assert "404, 500: this status likely comes from the application" in text
    assert hint(Reason.HTTP_STATUS) == HINTS[Reason.HTTP_STATUS][AWS]  # no codes known


def test_the_platform_is_a_closed_vocabulary() -> None:
    assert [p.value for p in Platform] == ["generic", "aws"]


def test_the_load_balancers_own_answer_is_hinted_by_what_it_did_not_by_its_code() -> None:
    # The WAF's 403 is not the application's: the hint says the targets never saw it.
    waf = hint(Reason.HTTP_STATUS, codes=((403, "blocked"),))
    assert waf == f"403 from the load balancer itself: {LOAD_BALANCER_HINTS['blocked'][AWS]}"
    assert "AWS WAF web ACL" in waf and "application" not in waf
    assert "web application firewall" in hint(Reason.HTTP_STATUS, GENERIC, codes=((403, "blocked"),))
    # The same code from a backend keeps the backend's words.
    assert hint(Reason.HTTP_STATUS, codes=((403, None),)) == f"403: {HINTS[Reason.HTTP_STATUS][AWS]}"
    assert hint(Reason.HTTP_STATUS, codes=(403,)) == f"403: {HINTS[Reason.HTTP_STATUS][AWS]}"
    # Its own error page takes the code's hint, or says it is the balancer's own.
    assert hint(Reason.HTTP_STATUS, codes=((502, "error"),)) == STATUS_HINTS[502][AWS]
    assert hint(Reason.HTTP_STATUS, codes=((400, "error"),)) == f"400: {OWN_ERROR_HINT[AWS]}"
    # Mixed: each distinct answer once, the balancer's first, then the backend's by code.
    mixed = hint(Reason.HTTP_STATUS, codes=((502, None), (302, "authenticate"), (302, "authenticate"), 503))
    assert mixed.count("302 from the load balancer itself") == 1
    assert mixed.index("302 from the load balancer") < mixed.index("ALB 502") < mixed.index("ALB 503")


def test_backend_not_reached_hint_follows_what_answered() -> None:
    assert hint(Reason.BACKEND_NOT_REACHED) == HINTS[Reason.BACKEND_NOT_REACHED][AWS]
    fixed = hint(Reason.BACKEND_NOT_REACHED, codes=((200, "fixed_response"),))
    assert fixed == f"200 from the load balancer itself: {LOAD_BALANCER_HINTS['fixed_response'][AWS]}"
    assert "fixed-response action" in fixed and "fixed-response" not in hint(
        Reason.BACKEND_NOT_REACHED, GENERIC, codes=((200, "fixed_response"),)
    )
