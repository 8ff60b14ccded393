"""The text report's notes on an address's responses.

The HTTP version, cut or encoded bodies, accepted redirects, HTTP/2 retries, gRPC answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from probe._text import plural, printable, shorten
from probe.model.facts import TargetFacts
from probe.model.results import HttpAttempt
from probe.stages.grpc_rules import status_name as grpc_status_name
from probe.stages.http_rules import SHOWN_LOCATION


def target_protocol_notes(target: TargetFacts) -> list[str]:
    """How the requests were made, when they were gRPC health checks (``grpc_health``)."""
    service = target.grpc_health_service
    if service is None:
        return []
    asked = f"service '{printable(service)}'" if service else "the server as a whole"
    return [f"gRPC health checks instead of GETs: grpc.health.v1.Health/Check of {asked}, over HTTP/2"]


def http_notes(attempts: Sequence[HttpAttempt]) -> list[str]:
    """Facts about an address's responses worth a word.

    The HTTP version, cut or encoded bodies, where accepted redirects pointed (a
    refused one is in its ``http_status`` finding), then :func:`attempt_notes`.
    """
    versions = sorted({a.http_version for a in attempts if a.http_version and a.http_version != "HTTP/1.1"})
    notes = [printable(v) for v in versions]
    for note in (_cut_note(attempts), _encoding_note(attempts), _redirect_note(attempts)):
        if note is not None:
            notes.append(note)
    return [*notes, *attempt_notes(attempts)]


def _cut_note(attempts: Sequence[HttpAttempt]) -> str | None:
    """``body cut at N bytes`` when a body was cut at ``max_body_bytes``."""
    cut = [a.body_bytes for a in attempts if a.body_truncated]
    if not cut:
        return None
    return f"{'bodies' if len(cut) > 1 else 'body'} cut at {max(cut)} bytes"


def _encoding_note(attempts: Sequence[HttpAttempt]) -> str | None:
    """The content encodings a server used though identity was asked for."""
    encodings = sorted({a.content_encoding for a in attempts if a.content_encoding})
    if not encodings:
        return None
    return f"{printable(', '.join(encodings))}-encoded though identity was asked for"


def _redirect_note(attempts: Sequence[HttpAttempt]) -> str | None:
    """Where the accepted redirects pointed (each cut to 200 characters, saying so)."""
    accepted = sorted(
        {
            shorten(a.location, SHOWN_LOCATION, length=a.location_length)
            for a in attempts
            if a.location and not a.failures
        }
    )
    if not accepted:
        return None
    return f"redirects to {printable(', '.join(accepted))}"


def attempt_notes(attempts: Sequence[HttpAttempt]) -> list[str]:
    """What gRPC answered at an address, then the requests retried after an HTTP/2 refusal."""
    grpc = grpc_note(attempts)
    return [*([grpc] if grpc is not None else []), *retry_notes(attempts)]


def retry_notes(attempts: Sequence[HttpAttempt]) -> list[str]:
    """One note per refusal that made requests retry: "2 requests retried on a new connection after …"."""
    causes = Counter(a.retried_after for a in attempts if a.retried_after is not None)
    return [
        f"{plural(count, 'request')} retried on a new connection after {printable(cause)}"
        for cause, count in sorted(causes.items())
    ]


def grpc_note(attempts: Sequence[HttpAttempt]) -> str | None:
    """What the gRPC responses said: "gRPC: SERVING ×4", "gRPC: grpc-status 12 UNIMPLEMENTED ×2"."""
    said = Counter(
        attempt.grpc_serving_status
        or f"grpc-status {attempt.grpc_status} {grpc_status_name(attempt.grpc_status)}"
        for attempt in attempts
        if attempt.grpc_status is not None
    )
    if not said:
        return None
    return "gRPC: " + ", ".join(f"{printable(what)} ×{count}" for what, count in sorted(said.items()))
