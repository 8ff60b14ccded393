"""probe.judge.watch: rounds of hand-built results become change lines, a status line and a summary."""

from __future__ import annotations

from datetime import UTC
from ipaddress import IPv4Address, ip_address

import pytest

from probe.judge.watch import (
    ABSENT,
    State,
    Watch,
    change_json,
    change_text,
    status_line,
    summary_json,
    summary_text,
    why,
)
from probe.model.reasons import ExitCode, Reason, Status
from probe.model.results import Failure, TargetResult
from tests.support.builders import (
    NOW,
    address_result,
    cert,
    dns_result,
    target_result,
    tls_result,
    unconnected_tls,
)

A = IPv4Address("10.0.2.31")
B = IPv4Address("10.0.2.32")
LEAF = cert("www.corp.example", NOW + 90 * 86400)
T0 = NOW - 10  # the watch starts 10 s before the first round's cycle


def healthy(ip: IPv4Address) -> object:
    return address_result(ip, tls_result(ip, (LEAF,), (LEAF,)))


def refused(ip: IPv4Address, reason: Reason = Reason.TCP_TIMEOUT) -> object:
    return address_result(ip, unconnected_tls(ip, Failure(reason, f"{reason} at {ip}", ip)))


def mismatched(ip: IPv4Address) -> object:
    failure = Failure(Reason.CERT_HOSTNAME_MISMATCH, "valid for other.corp.example", ip)
    return address_result(ip, tls_result(ip, (LEAF,), verified=False, failures=(failure,)))


def round_of(*addresses: object, at: float, name: str = "www", **kwargs: object) -> TargetResult:
    return target_result(name, addresses, started=at, duration=0.5, **kwargs)  # type: ignore[arg-type]


def lines(changes: object) -> list[str]:
    return [change_text(c, UTC) for c in changes]  # type: ignore[attr-defined]


def test_first_round_gives_the_starting_state_of_every_address_and_the_target_level() -> None:
    watch = Watch(T0)
    changes = watch.observe([round_of(refused(A), healthy(B), at=NOW)])

    assert lines(changes) == [
        "20:26:40 www (target) ok",
        "20:26:40 www 10.0.2.31 critical (tcp_timeout)",
        "20:26:40 www 10.0.2.32 ok",
    ]
    assert all(c.old is None for c in changes)
    assert changes[1].failures[0].detail == "tcp_timeout at 10.0.2.31"
    assert watch.status is Status.CRITICAL and watch.exit_code is ExitCode.CRITICAL


def test_critical_to_ok_is_one_line_naming_the_cleared_reason() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    assert watch.observe([round_of(refused(A), healthy(B), at=NOW + 2)]) == ()

    changes = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 4)])

    assert lines(changes) == ["20:26:44 www 10.0.2.31 critical→ok (tcp_timeout cleared)"]
    assert changes[0].cleared == (Reason.TCP_TIMEOUT,) and changes[0].added == ()
    assert watch.last_change_timestamp == NOW + 4.5


def test_a_new_reason_at_the_same_status_is_a_change_too() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW)])

    changes = watch.observe([round_of(mismatched(A), at=NOW + 2)])

    assert lines(changes) == [
        "20:26:42 www 10.0.2.31 critical→critical (cert_hostname_mismatch; tcp_refused cleared)"
    ]


def test_ok_to_critical_names_the_new_reason_and_colour_marks_the_new_state() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), at=NOW)])
    (change,) = watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW + 2)])

    assert why(change) == "tcp_refused"
    assert change_text(change, UTC, color=True) == (
        "20:26:42 www 10.0.2.31 ok→\033[31mcritical\033[0m (tcp_refused)"
    )


def test_an_address_that_leaves_the_answer_becomes_absent_and_comes_back() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), at=NOW)])
    nxdomain = Failure(Reason.DNS_NXDOMAIN, "www.corp.example does not exist")
    gone = watch.observe([round_of(at=NOW + 2, dns=dns_result([], rcode="NXDOMAIN", failures=(nxdomain,)))])

    assert lines(gone) == [
        "20:26:42 www (target) ok→critical (dns_nxdomain)",
        "20:26:42 www 10.0.2.31 ok→absent (not probed this round)",
    ]
    back = watch.observe([round_of(healthy(A), at=NOW + 4)])
    assert lines(back) == [
        "20:26:44 www (target) critical→ok (dns_nxdomain cleared)",
        "20:26:44 www 10.0.2.31 absent→ok (in the DNS answer)",
    ]
    later = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 6)])
    assert lines(later) == ["20:26:46 www 10.0.2.32 absent→ok (in the DNS answer)"]
    flips = {(e.target, e.address): e.flips for e in watch.summary(NOW + 7, "interrupted").entities}
    assert flips == {("www", None): 2, ("www", A): 2, ("www", B): 0}


def test_an_answer_outside_the_expected_networks_counts_at_the_target_level() -> None:
    public = ip_address("203.0.113.9")
    finding = Failure(Reason.DNS_UNEXPECTED_ADDRESS, "203.0.113.9 is not in 10.0.0.0/8", public)
    watch = Watch(T0)
    changes = watch.observe(
        [round_of(healthy(A), at=NOW, dns=dns_result([A, public], unexpected=[public], failures=(finding,)))]
    )

    assert lines(changes)[0] == "20:26:40 www (target) critical (dns_unexpected_address)"
    assert [c.address for c in changes] == [None, A]


def test_until_ok_ends_at_the_first_all_ok_round_and_times_the_first_ok() -> None:
    watch = Watch(T0, until="ok")
    watch.observe([round_of(refused(A), at=NOW)])
    assert not watch.until_met
    watch.observe([round_of(healthy(A), at=NOW + 2)])

    assert watch.until_met
    summary = watch.summary(NOW + 3, "ok")
    assert summary.first_ok_seconds == pytest.approx(12.5) and summary.first_ok_round == 2
    assert summary.worst is Status.CRITICAL and summary.status is Status.OK
    assert summary.exit_code is ExitCode.OK


def test_until_ok_waits_for_every_target() -> None:
    watch = Watch(T0, until="ok")
    watch.observe([round_of(healthy(A), at=NOW), round_of(refused(B), at=NOW, name="api")])
    assert not watch.until_met and watch.exit_code is ExitCode.CRITICAL


def test_until_stable_needs_n_identical_rounds_in_a_row() -> None:
    watch = Watch(T0, until="stable", stable_rounds=3)
    watch.observe([round_of(refused(A), at=NOW)])
    watch.observe([round_of(refused(A), at=NOW + 2)])
    assert not watch.until_met
    watch.observe([round_of(healthy(A), at=NOW + 4)])  # a change starts the count again
    watch.observe([round_of(healthy(A), at=NOW + 6)])
    assert not watch.until_met and watch.identical_rounds == 2
    watch.observe([round_of(healthy(A), at=NOW + 8)])
    assert watch.until_met and watch.identical_rounds == 3


def test_a_warning_round_exits_1_and_is_the_worst_when_nothing_worse_happened() -> None:
    expiring = Failure(Reason.CERT_EXPIRING_SOON, "expires in 5 days", A)
    warning = address_result(A, tls_result(A, (LEAF,), (LEAF,), failures=(expiring,)))
    watch = Watch(T0)
    (_, change) = watch.observe([round_of(warning, at=NOW)])

    assert change.new == State(Status.WARNING, (Reason.CERT_EXPIRING_SOON,))
    summary = watch.summary(NOW + 1, "max_time")
    assert summary.worst is Status.WARNING and summary.exit_code is ExitCode.WARNING


def test_no_round_means_unknown() -> None:
    summary = Watch(T0).summary(T0 + 0.2, "interrupted")
    assert summary.rounds == 0 and summary.status is None and summary.exit_code is ExitCode.UNKNOWN
    text = summary_text(summary)
    assert "watch: 0 rounds in 0.20 s, interrupted" in text
    assert "first ok     never" in text and "final        unknown (exit 3)" in text
    assert summary_json(summary)["exit_code"] == 3 and summary_json(summary)["worst"] is None


def test_summary_text_lists_flips_worst_and_current_state_per_address() -> None:
    watch = Watch(T0, until="ok")
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(healthy(A), healthy(B), at=NOW + 2)])
    text = summary_text(watch.summary(NOW + 3, "ok"))

    assert text.splitlines() == [
        "watch: 2 rounds in 13.0 s, ended at the first all-ok round (--until ok)",
        "  first ok     after 12.5 s (round 2)",
        "  worst seen   critical",
        "  final        ok (exit 0)",
        "  www (target)   0 flips  worst ok        now ok",
        "  www 10.0.2.31  1 flip   worst critical  now ok",
        "  www 10.0.2.32  0 flips  worst ok        now ok",
    ]


def test_summary_text_for_until_stable_says_how_many_rounds() -> None:
    watch = Watch(T0, until="stable", stable_rounds=4)
    assert "ended after 4 identical rounds (--until stable)" in summary_text(watch.summary(NOW, "stable"))


def test_json_lines_carry_states_reasons_and_details() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A), at=NOW)])
    (change,) = watch.observe([round_of(mismatched(A), at=NOW + 2)])
    line = change_json(change)
    hint = line["failures"][0].pop("hint")

    assert hint is not None and hint.startswith("the server sends a certificate for other names")
    assert line == {
        "type": "change",
        "schema_version": 1,
        "timestamp": NOW + 2.5,
        "round": 2,
        "target": "www",
        "address": "10.0.2.31",
        "old": "critical",
        "new": "critical",
        "reasons": ["cert_hostname_mismatch"],
        "added": ["cert_hostname_mismatch"],
        "cleared": ["tcp_timeout"],
        "failures": [
            {
                "reason": "cert_hostname_mismatch",
                "severity": "critical",
                "detail": "valid for other.corp.example",
            }
        ],
    }
    summary = summary_json(watch.summary(NOW + 3, "interrupted"))
    assert summary["type"] == "summary" and summary["ended_by"] == "interrupted" and summary["rounds"] == 2
    assert summary["first_ok_seconds"] is None and summary["status"] == "critical"
    assert summary["addresses"][1] == {
        "target": "www",
        "address": "10.0.2.31",
        "flips": 1,
        "worst": "critical",
        "state": "critical",
        "reasons": ["cert_hostname_mismatch"],
    }


def test_status_line_shows_rounds_states_and_time_since_the_last_change() -> None:
    watch = Watch(T0)
    assert status_line(watch, T0 + 1, 120, probing=True) == "round 1… · no change in 1.00 s"
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(healthy(A), healthy(B), at=NOW + 2)])

    line = status_line(watch, NOW + 14.5, 200)
    assert line == "round 2 · www (target) ok, 10.0.2.31 ok, 10.0.2.32 ok · last change 12.0 s ago"
    short = status_line(watch, NOW + 100, 40)
    assert len(short) == 39 and short.endswith("…")
    assert "last change 1 min 38 s ago" in status_line(watch, NOW + 100, 200)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="until must be"):
        Watch(T0, until="forever")
    with pytest.raises(ValueError, match="at least 2"):
        Watch(T0, stable_rounds=1)
    with pytest.raises(ValueError, match="ended_by"):
        Watch(T0).summary(T0, "bored")
    assert ABSENT.word == "absent"
