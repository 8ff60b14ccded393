"""The text report's notes on what HTTP/2 and gRPC said at an address: retries, gRPC answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from probe._text import plural, printable
from probe.model.facts import TargetFacts
from probe.model.results import HttpAttempt
from probe.stages.grpc_rules import status_name as grpc_status_name


def target_protocol_notes(target: TargetFacts) -> list[str]:
    """How the requests were made, when they were gRPC health checks (``grpc_health``)."""
    service = target.grpc_health_service
    if service is None:
        return []
    asked = f"service '{printable(service)}'" if service else "the server as a whole"
    return [f"gRPC health checks instead of GETs: grpc.health.v1.Health/Check of {asked}, over HTTP/2"]


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
