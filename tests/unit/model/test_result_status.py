"""Every result's ``status`` is derived from its findings, so a result never disagrees with them."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from probe.model.reasons import Reason, Status
from probe.model.results import Failure
from tests.support.builders import address_result, dns_result, http_attempt, target_result, tls_result

A1 = ipaddress.ip_address("10.0.0.1")
WARNING = Failure(Reason.CERT_EXPIRING_SOON, "the leaf expires in 5 days", A1)
CRITICAL = Failure(Reason.TCP_REFUSED, "connection refused", A1)


def test_every_result_type_takes_the_worst_severity_of_its_findings() -> None:
    assert target_result().status is Status.OK
    assert target_result(extra=[WARNING]).status is Status.WARNING
    assert target_result(extra=[WARNING, CRITICAL, WARNING]).status is Status.CRITICAL
    assert dns_result(failures=(WARNING,)).status is Status.WARNING
    assert tls_result(A1, failures=(CRITICAL,)).status is Status.CRITICAL
    assert http_attempt(failures=(WARNING,)).status is Status.WARNING
    assert address_result(A1, tls_result(A1), failures=[CRITICAL]).status is Status.CRITICAL


def test_a_changed_result_is_judged_again_and_a_status_cannot_be_given() -> None:
    result = target_result()
    assert dataclasses.replace(result, failures=(CRITICAL,)).status is Status.CRITICAL
    with pytest.raises(ValueError, match="init=False"):
        dataclasses.replace(result, status=Status.OK)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        type(result)(
            **{
                **{f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.init},
                "status": Status.OK,
            }
        )
