"""gRPC's rules: a gRPC response's grpc-status, from its headers or its trailers."""

from __future__ import annotations

import ipaddress

import httpx

from probe.model.reasons import Reason
from probe.stages.grpc_rules import GrpcFacts, is_grpc, judge_grpc, status_name

A1 = ipaddress.ip_address("10.0.0.1")
GRPC = httpx.Headers({"content-type": "application/grpc", "x-backend": "g-1"})


def test_grpc_content_types() -> None:
    assert is_grpc({"content-type": "application/grpc"})
    assert is_grpc({"content-type": "application/grpc+proto"})
    assert is_grpc({"content-type": "Application/gRPC; charset=x"})
    assert not is_grpc({"content-type": "application/grpc-web"})
    assert not is_grpc({"content-type": "text/html"})
    assert not is_grpc({})


def test_status_names() -> None:
    assert (status_name(0), status_name(12), status_name(16), status_name(42)) == (
        "OK",
        "UNIMPLEMENTED",
        "UNAUTHENTICATED",
        "code 42",
    )


def test_a_trailers_only_answer_to_a_get_is_judged_by_its_grpc_status() -> None:
    # A gRPC service's answer to a plain GET: :status 200, application/grpc, grpc-status 12.
    headers = httpx.Headers({**GRPC, "grpc-status": "12", "grpc-message": "Method%20not%20found%3A%20%2F"})
    facts, failures = judge_grpc(headers, None, http_ok=True, address=A1)
    assert facts == GrpcFacts(status=12, message="Method not found: /")
    assert [(f.reason, f.detail) for f in failures] == [
        (
            Reason.GRPC_STATUS,
            "the gRPC call failed: grpc-status 12 UNIMPLEMENTED, grpc-message 'Method not found: /'",
        )
    ]


def test_the_trailers_win_over_the_headers() -> None:
    trailers = [(b"grpc-status", b"0")]
    facts, failures = judge_grpc(httpx.Headers({**GRPC, "grpc-status": "14"}), trailers, http_ok=True)
    assert facts.status == 0 and failures == ()


def test_a_grpc_response_without_grpc_status() -> None:
    _, failures = judge_grpc(GRPC, None, http_ok=True, address=A1)
    assert [f.detail for f in failures] == ["the gRPC response ended without a grpc-status"]
    # Behind an HTTP status already refused (a load balancer's 502), the status speaks.
    assert judge_grpc(GRPC, None, http_ok=False) == (GrpcFacts(), ())
    _, failures = judge_grpc(httpx.Headers({**GRPC, "grpc-status": "x\x1b"}), None, http_ok=True)
    assert failures[0].detail == "the gRPC response ended with a grpc-status that is no number ('x\\x1b')"


def test_a_long_grpc_message_is_cut_and_says_so() -> None:
    headers = httpx.Headers({**GRPC, "grpc-status": "13", "grpc-message": "x" * 600})
    facts, failures = judge_grpc(headers, None, http_ok=True)
    assert facts.message == "x" * 512 + "…"
    assert failures[0].detail.endswith("grpc-message '" + "x" * 160 + "…' (513 characters)")


def test_a_response_that_is_not_grpc_is_no_grpc_finding() -> None:
    html = httpx.Headers({"content-type": "text/html"})
    assert judge_grpc(html, None, http_ok=True) == (GrpcFacts(), ())
