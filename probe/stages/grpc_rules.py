"""gRPC's rules: the status of a gRPC response (pure).

A gRPC call's outcome is its ``grpc-status`` (gRPC's "PROTOCOL-HTTP2": in the trailers,
or in the headers of a trailers-only response) with an optional percent-encoded
``grpc-message``; the HTTP status of a gRPC response is 200 whatever happened. So a
response whose content type is ``application/grpc`` is judged by its ``grpc-status`` as
well as by its HTTP status (:func:`judge_grpc`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx

from probe._text import printable
from probe.model.reasons import Reason
from probe.model.results import Failure, IPAddress

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
#: The longest ``grpc-message`` kept (characters); a longer one is cut with ``…`` and its length.
MAX_MESSAGE = 512
_SHOWN_MESSAGE = 160

Headers = httpx.Headers | Mapping[str, str]


def status_name(code: int) -> str:
    """``"UNIMPLEMENTED"`` for 12; a code gRPC does not define as ``"code 42"``."""
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"code {code}"


def is_grpc(headers: Headers) -> bool:
    """Whether the response is gRPC: content type ``application/grpc`` (or ``application/grpc+…``)."""
    content_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return content_type == "application/grpc" or content_type.startswith("application/grpc+")


@dataclass(frozen=True, slots=True)
class GrpcFacts:
    """What a gRPC response said about the call.

    Attributes:
        status: the ``grpc-status`` (trailers, or the headers of a trailers-only response);
            ``None`` when absent or not a number.
        message: the ``grpc-message``, percent-decoded and printable; at most
            :data:`MAX_MESSAGE` characters (a longer one ends with ``…``); ``None`` when absent.
    """

    status: int | None = None
    message: str | None = None


def _field(headers: Headers | None, trailers: Sequence[tuple[bytes, bytes]] | None, name: str) -> str | None:
    """A field of the trailers if they have it, else of the headers (a trailers-only response)."""
    for key, value in trailers or ():
        if key.lower() == name.encode():
            return value.decode("latin-1")
    return headers.get(name) if headers is not None else None


def _message(raw: str | None) -> str | None:
    """``grpc-message`` percent-decoded (gRPC's encoding of UTF-8), printable, bounded."""
    if raw is None:
        return None
    text = printable(unquote_to_bytes(raw).decode("utf-8", "replace"))
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"


def _shown(message: str) -> str:
    """The message for a detail: quoted, cut at 160 characters with ``…`` and its whole length."""
    if len(message) <= _SHOWN_MESSAGE:
        return f"'{message}'"
    return f"'{message[:_SHOWN_MESSAGE]}…' ({len(message)} characters)"


def judge_grpc(
    headers: Headers,
    trailers: Sequence[tuple[bytes, bytes]] | None,
    *,
    http_ok: bool,
    address: IPAddress | None = None,
) -> tuple[GrpcFacts, tuple[Failure, ...]]:
    """Judge a response as a gRPC call by its ``grpc-status``.

    Args:
        headers: the response headers (the initial metadata).
        trailers: the HTTP/2 trailers, ``None`` when none came.
        http_ok: the HTTP status was accepted; without it a missing ``grpc-status`` (a load
            balancer's own error page) is left to ``http_status``.
        address: the address, for the failures.

    Returns:
        The facts, and a ``grpc_status`` finding unless the status is 0 (OK). A response
        that is not gRPC has no gRPC facts and no gRPC finding.
    """
    if not is_grpc(headers):
        return GrpcFacts(), ()
    raw_status = _field(headers, trailers, "grpc-status")
    status = int(raw_status) if raw_status is not None and raw_status.strip().isdigit() else None
    facts = GrpcFacts(status=status, message=_message(_field(headers, trailers, "grpc-message")))
    failure = _status_failure(facts, raw_status, http_ok, address)
    return facts, (failure,) if failure is not None else ()


def _status_failure(
    facts: GrpcFacts, raw: str | None, http_ok: bool, address: IPAddress | None
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
            else f"with a grpc-status that is no number ('{printable(raw[:16])}')"
        )
        return Failure(Reason.GRPC_STATUS, f"the gRPC response ended {what}", address)
    words = f"grpc-status {facts.status} {status_name(facts.status)}"
    if facts.message:
        words += f", grpc-message {_shown(facts.message)}"
    return Failure(Reason.GRPC_STATUS, f"the gRPC call failed: {words}", address)
