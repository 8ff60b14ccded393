"""gRPC's rules: grpc-status from headers or trailers, and the Health messages probe writes itself.

probe encodes ``HealthCheckRequest`` and decodes ``HealthCheckResponse`` without the protobuf
runtime; these tests hold its bytes to the runtime's (``grpc_health.v1.health_pb2``, a test
dependency).
"""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from grpc_health.v1 import health_pb2

from probe.model.reasons import Reason
from probe.stages.grpc_rules import (
    GrpcFacts,
    health_request,
    is_grpc,
    judge_grpc,
    serving_status,
    status_name,
)

A1 = ipaddress.ip_address("10.0.0.1")
GRPC = httpx.Headers({"content-type": "application/grpc", "x-backend": "g-1"})
Serving = health_pb2.HealthCheckResponse.ServingStatus


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


@pytest.mark.parametrize("service", ["", "grpc.health.v1.Health", "shop.Cart", "é" * 100])
def test_the_request_is_the_bytes_protobuf_writes(service: str) -> None:
    assert health_request(service) == framed(
        health_pb2.HealthCheckRequest(service=service).SerializeToString()
    )


@pytest.mark.parametrize(
    "status", [Serving.UNKNOWN, Serving.SERVING, Serving.NOT_SERVING, Serving.SERVICE_UNKNOWN]
)
def test_the_response_reads_as_protobuf_wrote_it(status: int) -> None:
    body = framed(health_pb2.HealthCheckResponse(status=status).SerializeToString())
    assert serving_status(body) == status


def test_fields_the_response_does_not_define_are_skipped_as_protobuf_does() -> None:
    # field 2 (length-delimited), field 3 (fixed32), field 4 (fixed64), field 5 (varint), then status
    message = b"\x12\x03abc" + b"\x1d\x01\x02\x03\x04" + b"\x21" + b"\x00" * 8 + b"\x28\x96\x01" + b"\x08\x02"
    assert serving_status(framed(message)) == Serving.NOT_SERVING
    assert health_pb2.HealthCheckResponse.FromString(message).status == Serving.NOT_SERVING


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "the body holds no gRPC message (0 bytes)"),
        (b"\x01\x00\x00\x00\x02\x08\x01", "the message is compressed, though probe offered no compression"),
        (b"\x00\x00\x00\x00\x05\x08\x01", "the gRPC frame says 5 bytes, the body holds 2"),
        (framed(b"\x08"), "a varint is cut short"),
        (framed(b"\x12\x09ab"), "a field runs past the end of the message"),
        (framed(b"\x0b"), "wire type 3 is not one protobuf defines"),
    ],
)
def test_a_response_that_does_not_decode_says_why(body: bytes, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        serving_status(body)
    assert str(caught.value) == why


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
    facts, failures = judge_grpc(headers, None, b"", http_ok=True, address=A1)
    assert facts == GrpcFacts(status=12, message="Method not found: /")
    assert [(f.reason, f.detail) for f in failures] == [
        (
            Reason.GRPC_STATUS,
            "the gRPC call failed: grpc-status 12 UNIMPLEMENTED, grpc-message 'Method not found: /'",
        )
    ]


def test_the_trailers_win_over_the_headers() -> None:
    trailers = [(b"grpc-status", b"0")]
    facts, failures = judge_grpc(httpx.Headers({**GRPC, "grpc-status": "14"}), trailers, b"", http_ok=True)
    assert facts.status == 0 and failures == ()


def test_a_grpc_response_without_grpc_status() -> None:
    _, failures = judge_grpc(GRPC, None, b"", http_ok=True, address=A1)
    assert [f.detail for f in failures] == ["the gRPC response ended without a grpc-status"]
    # Behind an HTTP status already refused (a load balancer's 502), the status speaks.
    assert judge_grpc(GRPC, None, b"", http_ok=False) == (GrpcFacts(), ())
    _, failures = judge_grpc(httpx.Headers({**GRPC, "grpc-status": "x\x1b"}), None, b"", http_ok=True)
    assert failures[0].detail == "the gRPC response ended with a grpc-status that is no number ('x\\x1b')"


def test_a_long_grpc_message_is_cut_and_says_so() -> None:
    headers = httpx.Headers({**GRPC, "grpc-status": "13", "grpc-message": "x" * 600})
    facts, failures = judge_grpc(headers, None, b"", http_ok=True)
    assert facts.message == "x" * 512 + "…"
    assert failures[0].detail.endswith("grpc-message '" + "x" * 160 + "…' (600 characters)")


def test_a_response_that_is_not_grpc_is_no_grpc_finding_unless_it_answered_a_health_check() -> None:
    html = httpx.Headers({"content-type": "text/html"})
    assert judge_grpc(html, None, b"<html>", http_ok=True) == (GrpcFacts(), ())
    _, failures = judge_grpc(html, None, b"<html>", http_ok=True, health="")
    assert [(f.reason, f.detail) for f in failures] == [
        (Reason.GRPC_STATUS, "the answer to Health/Check is not gRPC (content type text/html)")
    ]
    assert judge_grpc(html, None, b"<html>", http_ok=False, health="") == (GrpcFacts(), ())


def test_long_header_values_in_a_detail_are_cut_saying_so() -> None:
    long_type = httpx.Headers({"content-type": "text/html; " + "x" * 200})
    _, failures = judge_grpc(long_type, None, b"", http_ok=True, health="")
    assert failures[0].detail.startswith("the answer to Health/Check is not gRPC (content type text/html; xx")
    assert failures[0].detail.endswith("… (211 characters))")
    _, failures = judge_grpc(httpx.Headers({**GRPC, "grpc-status": "9" * 40 + "x"}), None, b"", http_ok=True)
    cut = "9" * 15 + "…"
    assert failures[0].detail == f"the gRPC response ended with a grpc-status that is no number ('{cut}')"


def health_answer(status: int) -> bytes:
    return framed(health_pb2.HealthCheckResponse(status=status).SerializeToString())


OK_TRAILERS = [(b"grpc-status", b"0")]


@pytest.mark.parametrize(
    ("status", "reason", "detail"),
    [
        (Serving.SERVING, None, None),
        (
            Serving.NOT_SERVING,
            Reason.GRPC_NOT_SERVING,
            "Health/Check of service 'shop.Cart' answered NOT_SERVING",
        ),
        (Serving.UNKNOWN, Reason.GRPC_NOT_SERVING, "Health/Check of service 'shop.Cart' answered UNKNOWN"),
        (
            Serving.SERVICE_UNKNOWN,
            Reason.GRPC_SERVICE_UNKNOWN,
            "Health/Check of service 'shop.Cart' answered SERVICE_UNKNOWN",
        ),
    ],
)
def test_health_check_answers(status: int, reason: Reason | None, detail: str | None) -> None:
    facts, failures = judge_grpc(GRPC, OK_TRAILERS, health_answer(status), http_ok=True, health="shop.Cart")
    assert facts.serving == Serving.Name(status)
    assert [(f.reason, f.detail) for f in failures] == ([(reason, detail)] if reason else [])


def test_a_health_check_for_a_service_the_server_does_not_know() -> None:
    # grpc.health.v1: "If the requested service is unknown, the call will fail with status NOT_FOUND."
    trailers = [(b"grpc-status", b"5"), (b"grpc-message", b"unknown service")]
    facts, failures = judge_grpc(GRPC, trailers, b"", http_ok=True, health="")
    assert facts == GrpcFacts(status=5, message="unknown service")
    assert [(f.reason, f.detail) for f in failures] == [
        (
            Reason.GRPC_SERVICE_UNKNOWN,
            "the health server does not know the service '' (the server as a whole) "
            "(grpc-status 5 NOT_FOUND, grpc-message 'unknown service')",
        )
    ]


def test_a_server_without_the_health_service() -> None:
    trailers = [(b"grpc-status", b"12")]
    _, failures = judge_grpc(GRPC, trailers, b"", http_ok=True, health="")
    assert [(f.reason, f.detail) for f in failures] == [
        (Reason.GRPC_STATUS, "Health/Check failed: grpc-status 12 UNIMPLEMENTED")
    ]


def test_a_health_answer_that_does_not_decode_is_a_protocol_error() -> None:
    _, failures = judge_grpc(GRPC, OK_TRAILERS, b"\x00\x00", http_ok=True, health="")
    assert [(f.reason, f.detail) for f in failures] == [
        (
            Reason.HTTP_PROTOCOL_ERROR,
            "the Health/Check answer does not decode: the body holds no gRPC message (2 bytes)",
        )
    ]
