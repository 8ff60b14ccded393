"""probe.report.watch: a watch's changes and summary as change lines, JSON lines, a status line, a summary.

The rounds are hand-built results folded by ``probe.judge.watch.Watch`` (tested in
tests/unit/judge/test_watch_rounds.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from ipaddress import ip_address

import pytest

from probe.judge.watch import Change, Watch
from probe.model.reasons import Platform, Reason
from probe.model.results import Failure
from probe.report.watch import (
    LISTED_OUTAGES,
    change_json,
    change_text,
    status_line,
    summary_json,
    summary_text,
    why,
)
from tests.support.builders import NOW, address_result, dns_result, http_attempt, tls_result
from tests.support.watch_rounds import LEAF, T0, A, B, healthy, mismatched, refused, round_of


def lines(changes: Iterable[Change]) -> list[str]:
    return [change_text(c, UTC) for c in changes]


def test_the_first_round_reads_as_the_starting_state_of_the_target_and_every_address() -> None:
    changes = Watch(T0).observe([round_of(refused(A), healthy(B), at=NOW)])

    assert lines(changes) == [
        "20:26:40 www (target) critical (tcp_timeout)",
        "20:26:40 www 10.0.2.31 critical (tcp_timeout)",
        "20:26:40 www 10.0.2.32 ok",
    ]


def test_critical_to_ok_is_one_line_naming_the_cleared_reason() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(refused(A), healthy(B), at=NOW + 2)])

    changes = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 4)])

    ended = "tcp_timeout cleared; outage of at least 4.00 s, from the first round"
    assert lines(changes) == [
        f"20:26:44 www (target) critical→ok ({ended})",
        f"20:26:44 www 10.0.2.31 critical→ok ({ended})",
    ]


def test_a_new_reason_at_the_same_status_names_both_reasons() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW)])

    changes = watch.observe([round_of(mismatched(A), at=NOW + 2)])

    assert lines(changes) == [
        "20:26:42 www (target) critical→critical (cert_hostname_mismatch; tcp_refused cleared)",
        "20:26:42 www 10.0.2.31 critical→critical (cert_hostname_mismatch; tcp_refused cleared)",
    ]


def test_ok_to_critical_names_the_new_reason_and_colour_marks_the_new_state() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), at=NOW)])
    (_, change) = watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW + 2)])

    assert why(change) == "tcp_refused"
    assert change_text(change, UTC, color=True) == (
        "20:26:42 www 10.0.2.31 ok→\033[31mcritical\033[0m (tcp_refused)"
    )


def test_an_address_that_leaves_the_answer_and_comes_back_says_so() -> None:
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
        "20:26:44 www (target) critical→ok (dns_nxdomain cleared; outage of 2.00 s since 20:26:42)",
        "20:26:44 www 10.0.2.31 absent→ok (in the DNS answer)",
    ]
    later = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 6)])
    assert lines(later) == ["20:26:46 www 10.0.2.32 absent→ok (in the DNS answer)"]


def test_an_answer_outside_the_expected_networks_reads_at_the_target_level() -> None:
    public = ip_address("203.0.113.9")
    finding = Failure(Reason.DNS_UNEXPECTED_ADDRESS, "203.0.113.9 is not in 10.0.0.0/8", public)
    changes = Watch(T0).observe(
        [round_of(healthy(A), at=NOW, dns=dns_result([A, public], unexpected=[public], failures=(finding,)))]
    )

    assert lines(changes)[0] == "20:26:40 www (target) critical (dns_unexpected_address)"
    assert change_json(changes[0])["failures"][0]["hint"] == (
        "the record points at a host in another network, or expect_networks lacks this network"
    )


def test_no_round_reads_as_unknown() -> None:
    summary = Watch(T0).summary(T0 + 0.2, "interrupted")
    text = summary_text(summary)
    assert "watch: 0 rounds in 0.20 s, interrupted" in text
    assert "first ok        never" in text and "final           unknown (exit 3)" in text
    assert "longest outage  none" in text and "last change     none" in text
    assert summary_json(summary)["exit_code"] == 3 and summary_json(summary)["worst"] is None


def test_summary_text_lists_flips_worst_and_current_state_per_address() -> None:
    watch = Watch(T0, until="ok")
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(healthy(A), healthy(B), at=NOW + 2)])
    text = summary_text(watch.summary(NOW + 3, "ok"), UTC)

    assert text.splitlines() == [
        "watch: 2 rounds in 13.0 s, ended at the first all-ok round (--until ok)",
        "  first ok        after 12.5 s (round 2)",
        "  worst seen      critical",
        "  final           ok (exit 0)",
        "  longest outage  at least 2.00 s, www (target) 20:26:40 → 20:26:42",
        "  last change     20:26:42",
        "  www (target)   1 flip   worst critical  now ok since 20:26:42",
        "    outage 20:26:40 → 20:26:42  at least 2.00 s  critical (tcp_timeout)",
        "  www 10.0.2.31  1 flip   worst critical  now ok since 20:26:42",
        "    outage 20:26:40 → 20:26:42  at least 2.00 s  critical (tcp_timeout)",
        "  www 10.0.2.32  0 flips  worst ok        now ok since 20:26:40",
    ]


def test_summary_text_for_until_stable_says_how_many_rounds() -> None:
    watch = Watch(T0, until="stable", stable_rounds=4)
    assert "ended after 4 identical rounds (--until stable)" in summary_text(watch.summary(NOW, "stable"))


def test_json_lines_carry_states_reasons_and_details() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A), at=NOW)])
    (_, change) = watch.observe([round_of(mismatched(A), at=NOW + 2)])
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
        "outage": {
            "started_timestamp": NOW + 0.5,
            "started_round": 1,
            "ended_timestamp": None,
            "ended_round": None,
            "seconds": 2.0,
            "worst": "critical",
            "reasons": ["tcp_timeout", "cert_hostname_mismatch"],
        },
    }
    summary = summary_json(watch.summary(NOW + 3, "interrupted"))
    assert summary["type"] == "summary" and summary["ended_by"] == "interrupted" and summary["rounds"] == 2
    assert summary["first_ok_seconds"] is None and summary["status"] == "critical"
    assert summary["first_round_status"] == "critical" and summary["round_cut"] is False
    assert summary["max_time_seconds"] is None
    assert summary["addresses"][1] == {
        "target": "www",
        "address": "10.0.2.31",
        "flips": 1,
        "worst": "critical",
        "state": "critical",
        "reasons": ["cert_hostname_mismatch"],
        "last_change_timestamp": NOW + 2.5,
        "ok_since_timestamp": None,
        "outages": [line["outage"]],
        "longest_outage": line["outage"],
    }
    assert summary["longest_outage"] == {"target": "www", "address": None, **line["outage"]}


def test_json_hints_use_the_platforms_words_and_the_status_codes_of_the_requests() -> None:
    unaccepted = Failure(Reason.HTTP_STATUS, "status 503 (expected 200)", A)
    attempts = (http_attempt(status=503, failures=(unaccepted,)), http_attempt(status=200))
    address = address_result(A, tls_result(A, (LEAF,), (LEAF,)), attempts, failures=(unaccepted,))

    def hint(platform: Platform) -> str:
        (_, change) = Watch(T0).observe([round_of(address, at=NOW, platform=platform)])
        (finding,) = change_json(change)["failures"]
        assert finding["reason"] == "http_status"
        return str(finding["hint"])

    assert hint(Platform.GENERIC).startswith("503: no backend is available (none registered or healthy)")
    assert hint(Platform.AWS).startswith("ALB 503: the target group has no registered targets")


def test_status_line_shows_rounds_states_and_time_since_the_last_change() -> None:
    watch = Watch(T0)
    assert status_line(watch, T0 + 1, 120, probing=True) == "round 1… · no change in 1.00 s"
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(healthy(A), healthy(B), at=NOW + 2)])

    line = status_line(watch, NOW + 14.5, 200)
    assert line == "round 2 · www ok (10.0.2.31 ok, 10.0.2.32 ok) · last change 12.0 s ago"
    short = status_line(watch, NOW + 100, 40)
    assert len(short) == 39 and short.endswith("…")
    assert "last change 1 min 38 s ago" in status_line(watch, NOW + 100, 200)
    watch.observe([round_of(healthy(A), refused(B), at=NOW + 4)])  # the target is as bad as its worst address
    line = status_line(watch, NOW + 5.5, 200)
    assert line == "round 3 · www critical (10.0.2.31 ok, 10.0.2.32 critical) · last change 1.00 s ago"


# --------------------------------------------------------------------------- outages


def node_outage() -> Watch:
    """A watch that starts healthy; 10.0.2.32 refuses from the round at NOW+2 to the one at NOW+13."""
    watch = Watch(T0, until="stable")
    plan = [(0, True), (2, False), (4, False), (13, True), (15, True), (17, True)]
    for at, up in plan:
        watch.observe(
            [round_of(healthy(A), healthy(B) if up else refused(B, Reason.TCP_REFUSED), at=NOW + at)]
        )
    return watch


def test_a_change_that_ends_an_outage_says_how_long_and_since_when() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), at=NOW)])
    watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW + 2)])
    changes = watch.observe([round_of(healthy(A), at=NOW + 13)])

    assert lines(changes)[1] == (
        "20:26:53 www 10.0.2.31 critical→ok (tcp_refused cleared; outage of 11.0 s since 20:26:42)"
    )


def test_a_summary_that_started_healthy_reports_outages_not_a_first_ok() -> None:
    text = summary_text(node_outage().summary(NOW + 18, "stable"), UTC)

    assert text.splitlines() == [
        "watch: 6 rounds in 28.0 s, ended after 3 identical rounds (--until stable)",
        "  worst seen      critical",
        "  final           ok (exit 0)",
        "  longest outage  11.0 s, www (target) 20:26:42 → 20:26:53",
        "  last change     20:26:53",
        "  www (target)   2 flips  worst critical  now ok since 20:26:53",
        "    outage 20:26:42 → 20:26:53  11.0 s  critical (tcp_refused)",
        "  www 10.0.2.31  0 flips  worst ok        now ok since 20:26:40",
        "  www 10.0.2.32  2 flips  worst critical  now ok since 20:26:53",
        "    outage 20:26:42 → 20:26:53  11.0 s  critical (tcp_refused)",
    ]
    line = summary_json(node_outage().summary(NOW + 18, "stable"))
    assert line["first_round_status"] == "ok" and line["first_ok_round"] == 1  # the JSON keeps both
    assert line["longest_outage"]["seconds"] == 11.0 and line["longest_outage"]["address"] is None
    node = line["addresses"][2]
    assert node["ok_since_timestamp"] == NOW + 13.5 and node["last_change_timestamp"] == NOW + 13.5
    assert [(o["started_round"], o["ended_round"], o["reasons"]) for o in node["outages"]] == [
        (2, 4, ["tcp_refused"])
    ]


def test_an_outage_that_lasts_at_the_end_is_not_over_and_names_its_reasons() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), at=NOW)])
    watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW + 2)])
    watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW + 9)])
    text = summary_text(watch.summary(NOW + 10, "interrupted"), UTC)

    assert "  www 10.0.2.31  1 flip   worst critical  now critical since 20:26:42 (tcp_refused)" in text
    assert "    outage 20:26:42 → not over  at least 7.00 s  critical (tcp_refused)" in text
    assert "  final           critical (exit 2)" in text


def test_an_address_with_many_outages_lists_the_last_ones_and_the_longest() -> None:
    watch = Watch(T0)
    at = 0.0
    for length in (30, 2, 2, 2, 2, 2, 2):  # the first outage is the longest
        watch.observe([round_of(healthy(A), at=NOW + at)])
        watch.observe([round_of(refused(A), at=NOW + at + 1)])
        at += 1 + length
    watch.observe([round_of(healthy(A), at=NOW + at)])
    lines_ = summary_text(watch.summary(NOW + at + 1, "interrupted"), UTC).splitlines()
    listed = [line for line in lines_ if line.startswith("    outage ")]

    assert len(listed) == 2 * LISTED_OUTAGES  # the target's and the address's
    assert listed[0] == "    outage 20:26:41 → 20:27:11  30.0 s  critical (tcp_timeout)"
    assert lines_.count("    … and 2 more (the JSON summary lists them all)") == 2
    assert len(summary_json(watch.summary(NOW + at + 1, "interrupted"))["addresses"][1]["outages"]) == 7


@pytest.mark.parametrize(
    ("ended_by", "cut", "words"),
    [
        ("max_time", False, "ended: the next round would have passed --max-time (10.0 s)"),
        ("max_time", True, "ended at --max-time (10.0 s)"),
        ("interrupted", True, "interrupted"),
    ],
)
def test_max_time_and_a_cut_round_are_said(ended_by: str, cut: bool, words: str) -> None:
    watch = Watch(T0, max_time_seconds=10)
    watch.observe([round_of(healthy(A), at=NOW)])
    summary = watch.summary(T0 + 8.2, ended_by, round_cut=cut)
    text = summary_text(summary, UTC).splitlines()

    assert text[0] == f"watch: 1 round in 8.20 s, {words}"
    assert (text[1] == "  cut short       round 2 was under way; it does not count") is cut
    assert summary_json(summary)["max_time_seconds"] == 10 and summary_json(summary)["round_cut"] is cut
