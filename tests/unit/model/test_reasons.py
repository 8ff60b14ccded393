"""The public vocabulary: every reason code is complete and statuses map to exit codes."""

from __future__ import annotations

import pytest

from probe.model.reasons import ExitCode, Reason, Stage, Status

WARNINGS = {
    Reason.DNS_RESOLVER_FAILOVER,
    Reason.DNS_TOO_MANY_ADDRESSES,  # the rest of the answer is not probed
    Reason.CERT_EXPIRING_SOON,
    Reason.CERT_DIFFERS_BETWEEN_ADDRESSES,
    Reason.OCSP_STALE,
    Reason.BACKEND_UNEXPECTED,
    Reason.BACKEND_IMBALANCE,
    Reason.TLS_WEAK_CIPHER,
    Reason.TLS_VERSION_DEPRECATED,
    Reason.CERT_UNPARSED,
    Reason.HTTP_CLOCK_SKEW,
    Reason.BACKEND_DIRECT_BLOCKED,  # clients go through the load balancer
    Reason.BACKEND_DIRECT_FAILED,
    Reason.BACKEND_CERT_EXPIRING_SOON,
    Reason.BACKEND_UNDECIDED,
    Reason.TLS_CLIENT_CERT_EXPIRING_SOON,  # the listener has not refused it yet
}


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_has_stage_severity_and_summary(reason: Reason) -> None:
    assert isinstance(reason.stage, Stage)
    assert reason.severity in (Status.WARNING, Status.CRITICAL)
    assert reason.summary[:1].isupper() and reason.summary.endswith(".")
    assert "\n" not in reason.summary


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_reason_code_is_named_after_its_stage(reason: Reason) -> None:
    if reason is Reason.INTERNAL_ERROR:
        assert reason.stage is Stage.CYCLE
    else:
        assert reason.value.startswith(f"{reason.stage.value}_")


def test_which_reasons_are_only_warnings() -> None:
    assert {r for r in Reason if r.severity is Status.WARNING} == WARNINGS


def test_reason_codes_are_unique_lowercase_strings() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values)) == len(Reason.__members__)  # no aliases
    assert all(v == v.lower() and " " not in v for v in values)
    assert Reason("cert_chain_incomplete") is Reason.CERT_CHAIN_INCOMPLETE


def test_summaries_differ() -> None:
    summaries = [r.summary for r in Reason]
    assert len(summaries) == len(set(summaries))


@pytest.mark.parametrize(
    ("status", "code"),
    [(Status.OK, 0), (Status.WARNING, 1), (Status.CRITICAL, 2)],
)
def test_exit_code_from_status(status: Status, code: int) -> None:
    assert ExitCode.from_status(status) == code
    assert ExitCode.from_status(status) is ExitCode(code)


def test_unknown_exit_code_is_3() -> None:
    assert ExitCode.UNKNOWN.value == 3


def test_status_rank() -> None:
    assert [s.rank for s in (Status.OK, Status.WARNING, Status.CRITICAL)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("statuses", "worst"),
    [
        ([], Status.OK),
        ([Status.OK], Status.OK),
        ([Status.OK, Status.WARNING, Status.OK], Status.WARNING),
        ([Status.WARNING, Status.CRITICAL, Status.OK], Status.CRITICAL),
        ([Status.CRITICAL, Status.WARNING], Status.CRITICAL),
    ],
)
def test_status_worst(statuses: list[Status], worst: Status) -> None:
    assert Status.worst(statuses) is worst
    assert Status.worst(iter(statuses)) is worst
