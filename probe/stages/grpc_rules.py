"""gRPC's rules: a gRPC response's status, and the ``grpc.health.v1.Health/Check`` messages (pure).

A gRPC call's outcome is its ``grpc-status`` (gRPC's "PROTOCOL-HTTP2": in the trailers,
or in the headers of a trailers-only response) with an optional percent-encoded
``grpc-message``; the HTTP status of a gRPC response is 200 whatever happened. So a
response whose content type is ``application/grpc`` is judged by its ``grpc-status`` as
well as by its HTTP status (:func:`judge_grpc`).

The Health messages are two tiny protobuf messages (``health.proto``):
``HealthCheckRequest { string service = 1; }`` and ``HealthCheckResponse { ServingStatus
status = 1; }``. probe writes and reads them itself (:func:`health_request`,
:func:`serving_status`): the protobuf runtime costs about 60 ms of import and 6 MiB of
memory for two fields; ``tests/unit/stages/test_grpc_rules.py`` checks the bytes against
it. Each message goes in gRPC's length-prefixed frame (a compressed flag, a 4-byte length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import httpx

from probe._text import printable, shorten
from probe.config.models import GRPC_HEALTH_PATH
from probe.model.reasons import Reason
from probe.model.results import Failure, IPAddress

#: The method probe calls for gRPC health checking.
HEALTH_PATH = GRPC_HEALTH_PATH
#: gRPC's status codes by number (grpc/doc/statuscodes.md).
STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
#: ``HealthCheckResponse.ServingStatus`` by number.
SERVING_STATUS_NAMES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
_NOT_FOUND = 5
#: The longest ``grpc-message`` kept (characters); a longer one is cut with ``…`` and its length.
MAX_MESSAGE = 512
_SHOWN_MESSAGE = 160

Headers = httpx.Headers | Mapping[str, str]


def status_name(code: int) -> str:
    """``"UNIMPLEMENTED"`` for 12; a code gRPC does not define as ``"code 42"``."""
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"code {code}"


def serving_status_name(value: int) -> str:
    """``"SERVING"`` for 1; a value ``health.proto`` does not define as ``"value 7"``."""
    return SERVING_STATUS_NAMES[value] if 0 <= value < len(SERVING_STATUS_NAMES) else f"value {value}"


def is_grpc(headers: Headers) -> bool:
    """Whether the response is gRPC: content type ``application/grpc`` (or ``application/grpc+…``)."""
    content_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return content_type == "application/grpc" or content_type.startswith("application/grpc+")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def health_request(service: str) -> bytes:
    """The request body of ``Health/Check`` for ``service`` (``""``: the server as a whole), framed."""
    name = service.encode()
    message = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """A varint at ``at``: ``(value, next position)``.

    Raises:
        ValueError: it runs past the end or beyond 64 bits.
    """
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    raise ValueError("a varint is cut short")


def _skip(data: bytes, at: int, wire_type: int) -> int:
    """The position after a field's value of ``wire_type`` (one this message does not define).

    Raises:
        ValueError: an unknown wire type, or a value past the end.
    """
    if wire_type == 0:
        return _read_varint(data, at)[1]
    sizes = {1: 8, 5: 4}
    if wire_type == 2:
        length, at = _read_varint(data, at)
        end = at + length
    elif wire_type in sizes:
        end = at + sizes[wire_type]
    else:
        raise ValueError(f"wire type {wire_type} is not one protobuf defines")
    if end > len(data):
        raise ValueError("a field runs past the end of the message")
    return end


def serving_status(body: bytes) -> int:
    """The ``status`` of a framed ``HealthCheckResponse`` (0, UNKNOWN, when the field is absent).

    Fields the message does not define are skipped, as protobuf does.

    Raises:
        ValueError: the body is not one uncompressed gRPC message holding a valid
            ``HealthCheckResponse``; the message says what is wrong.
    """
    if len(body) < 5:
        raise ValueError(f"the body holds no gRPC message ({len(body)} bytes)")
    if body[0] != 0:
        raise ValueError("the message is compressed, though probe offered no compression")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        raise ValueError(f"the gRPC frame says {length} bytes, the body holds {len(body) - 5}")
    message, at, status = body[5:], 0, 0
    while at < len(message):
        key, at = _read_varint(message, at)
        if key == 0x08:  # field 1, varint
            status, at = _read_varint(message, at)
        else:
            at = _skip(message, at, key & 0x7)
    return status


@dataclass(frozen=True, slots=True)
class GrpcFacts:
    """What a gRPC response said about the call.

    Attributes:
        status: the ``grpc-status`` (trailers, or the headers of a trailers-only response);
            ``None`` when absent or not a number.
        message: the ``grpc-message``, percent-decoded and printable; at most
            :data:`MAX_MESSAGE` characters (a longer one ends with ``…``); ``None`` when absent.
        serving: a ``Health/Check`` answer's serving status (``"SERVING"`` …), ``None`` when
            not a health check or not answered.
        message_length: the decoded ``grpc-message``'s whole length (characters), before
            :data:`MAX_MESSAGE` cut it; 0 when absent.
    """

    status: int | None = None
    message: str | None = None
    serving: str | None = None
    message_length: int = field(default=0, compare=False)


def _field(headers: Headers | None, trailers: Sequence[tuple[bytes, bytes]] | None, name: str) -> str | None:
    """A field of the trailers if they have it, else of the headers (a trailers-only response)."""
    for key, value in trailers or ():
        if key.lower() == name.encode():
            return value.decode("latin-1")
    return headers.get(name) if headers is not None else None


def _message(raw: str | None) -> tuple[str | None, int]:
    """``grpc-message`` percent-decoded (gRPC's encoding of UTF-8), printable, bounded; its whole length."""
    if raw is None:
        return None, 0
    text = printable(unquote_to_bytes(raw).decode("utf-8", "replace"))
    return (text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"), len(text)


def _shown(message: str, length: int) -> str:
    """The message for a detail: quoted, cut at 160 characters with ``…`` and its whole length."""
    if len(message) <= _SHOWN_MESSAGE:
        return f"'{message}'"
    return f"'{message[:_SHOWN_MESSAGE]}…' ({length} characters)"


def judge_grpc(
    headers: Headers,
    trailers: Sequence[tuple[bytes, bytes]] | None,
    body: bytes,
    *,
    http_ok: bool,
    health: str | None = None,
    address: IPAddress | None = None,
) -> tuple[GrpcFacts, tuple[Failure, ...]]:
    """Judge a response as a gRPC call: its ``grpc-status``, and a health check's serving status.

    Args:
        headers: the response headers (the initial metadata).
        trailers: the HTTP/2 trailers, ``None`` when none came.
        body: the body as read (the gRPC messages).
        http_ok: the HTTP status was accepted; without it a missing ``grpc-status`` (a load
            balancer's own error page) is left to ``http_status``.
        health: the service of a ``Health/Check`` call (``""`` for the whole server), ``None``
            when the request was no health check.
        address: the address, for the failures.

    Returns:
        The facts, and ``grpc_status``, ``grpc_not_serving`` or ``grpc_service_unknown``
        findings. A response that is not gRPC is no gRPC finding unless it answered a
        health check.
    """
    if not is_grpc(headers):
        if health is not None and http_ok:
            kind = shorten(printable(headers.get("content-type") or "none"), 64)
            detail = f"the answer to Health/Check is not gRPC (content type {kind})"
            return GrpcFacts(), (Failure(Reason.GRPC_STATUS, detail, address),)
        return GrpcFacts(), ()
    raw_status = _field(headers, trailers, "grpc-status")
    status = int(raw_status) if raw_status is not None and raw_status.strip().isdigit() else None
    message, length = _message(_field(headers, trailers, "grpc-message"))
    facts = GrpcFacts(status=status, message=message, message_length=length)
    failure = _status_failure(facts, raw_status, http_ok, health, address)
    if failure is not None or health is None or status is None:
        return facts, (failure,) if failure is not None else ()
    return _health(facts, body, health, address)


def _status_failure(
    facts: GrpcFacts, raw: str | None, http_ok: bool, health: str | None, address: IPAddress | None
) -> Failure | None:
    """The finding of a ``grpc-status`` other than OK, or of none; ``None`` when it is OK."""
    if facts.status == 0:
        return None
    if facts.status is None:
        if raw is None and not http_ok:
            return None
        what = (
            "without a grpc-status"
            if raw is None
            else f"with a grpc-status that is no number ('{shorten(printable(raw), 16)}')"
        )
        return Failure(Reason.GRPC_STATUS, f"the gRPC response ended {what}", address)
    words = f"grpc-status {facts.status} {status_name(facts.status)}"
    if facts.message:
        words += f", grpc-message {_shown(facts.message, facts.message_length)}"
    if health is not None and facts.status == _NOT_FOUND:
        # grpc.health.v1: "If the requested service is unknown, the call will fail with status NOT_FOUND."
        detail = f"the health server does not know the service {_service(health)} ({words})"
        return Failure(Reason.GRPC_SERVICE_UNKNOWN, detail, address)
    call = "Health/Check" if health is not None else "the gRPC call"
    return Failure(Reason.GRPC_STATUS, f"{call} failed: {words}", address)


def _service(health: str) -> str:
    return f"'{printable(health)}'" if health else "'' (the server as a whole)"


def _health(
    facts: GrpcFacts, body: bytes, health: str, address: IPAddress | None
) -> tuple[GrpcFacts, tuple[Failure, ...]]:
    """A health check whose call succeeded: its serving status."""
    try:
        value = serving_status(body)
    except ValueError as exc:
        detail = f"the Health/Check answer does not decode: {exc}"
        return facts, (Failure(Reason.HTTP_PROTOCOL_ERROR, detail, address),)
    serving = serving_status_name(value)
    facts = GrpcFacts(status=facts.status, message=facts.message, serving=serving)
    if serving == "SERVING":
        return facts, ()
    reason = Reason.GRPC_SERVICE_UNKNOWN if serving == "SERVICE_UNKNOWN" else Reason.GRPC_NOT_SERVING
    detail = f"Health/Check of service {_service(health)} answered {serving}"
    return facts, (Failure(reason, detail, address),)
