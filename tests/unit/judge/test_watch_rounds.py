"""probe.judge.watch: rounds of hand-built results become changes of state and a summary.

How the changes and the summary read (lines, JSON lines, the status line) is tested in
tests/unit/report/test_watch_lines.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

import pytest

from probe.judge.watch import ABSENT, Change, Outage, State, Watch
from probe.model.reasons import ExitCode, Platform, Reason, Status
from probe.model.results import Failure, IPAddress
from tests.support.builders import NOW, address_result, dns_result, http_attempt, tls_result
from tests.support.watch_rounds import LEAF, T0, A, B, healthy, mismatched, refused, round_of


def moves(changes: Sequence[Change]) -> list[tuple[str, IPAddress | None, str | None, str]]:
    """Each change as (target, address, old state's word or None, new state's word)."""
    return [(c.target, c.address, c.old.word if c.old is not None else None, c.new.word) for c in changes]


def test_first_round_gives_the_starting_state_of_the_target_and_every_address() -> None:
    watch = Watch(T0)
    changes = watch.observe([round_of(refused(A), healthy(B), at=NOW)])

    assert moves(changes) == [
        ("www", None, None, "critical"),  # the target as a whole: its address A is critical
        ("www", A, None, "critical"),
        ("www", B, None, "ok"),
    ]
    assert changes[1].new == State(Status.CRITICAL, (Reason.TCP_TIMEOUT,))
    assert changes[1].added == (Reason.TCP_TIMEOUT,) and changes[1].cleared == ()
    assert {c.timestamp for c in changes} == {NOW + 0.5} and {c.round for c in changes} == {1}
    assert changes[1].failures[0].detail == "tcp_timeout at 10.0.2.31"
    assert watch.status is Status.CRITICAL and watch.exit_code is ExitCode.CRITICAL
    assert watch.last_change_timestamp is None  # the starting states are no change


def test_critical_to_ok_is_one_change_naming_the_cleared_reason() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    assert watch.observe([round_of(refused(A), healthy(B), at=NOW + 2)]) == ()

    changes = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 4)])

    assert moves(changes) == [("www", None, "critical", "ok"), ("www", A, "critical", "ok")]
    assert changes[1].cleared == (Reason.TCP_TIMEOUT,) and changes[1].added == ()
    assert changes[1].timestamp == NOW + 4.5 and changes[1].round == 3 and changes[1].failures == ()
    assert watch.last_change_timestamp == NOW + 4.5


def test_a_new_reason_at_the_same_status_is_a_change_too() -> None:
    watch = Watch(T0)
    watch.observe([round_of(refused(A, Reason.TCP_REFUSED), at=NOW)])

    changes = watch.observe([round_of(mismatched(A), at=NOW + 2)])

    assert moves(changes) == [("www", None, "critical", "critical"), ("www", A, "critical", "critical")]
    assert all(c.added == (Reason.CERT_HOSTNAME_MISMATCH,) for c in changes)
    assert all(c.cleared == (Reason.TCP_REFUSED,) for c in changes)


def test_the_target_is_the_worst_of_its_own_and_its_addresses_findings() -> None:
    # A node going critical turns its target critical in the same round, and the target
    # stays critical while any address is: it never reads "ok" while a node is down.
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), healthy(B), at=NOW)])

    down = watch.observe([round_of(refused(A), healthy(B), at=NOW + 2)])
    assert moves(down) == [("www", None, "ok", "critical"), ("www", A, "ok", "critical")]
    assert down[0].failures == down[1].failures and down[0].added == (Reason.TCP_TIMEOUT,)
    both = watch.observe([round_of(refused(A), refused(B), at=NOW + 4)])
    assert moves(both) == [("www", B, "ok", "critical")]  # the target's state is unchanged
    one_back = watch.observe([round_of(healthy(A), refused(B), at=NOW + 6)])
    assert moves(one_back) == [("www", A, "critical", "ok")]
    back = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 8)])
    assert moves(back) == [("www", None, "critical", "ok"), ("www", B, "critical", "ok")]


def test_an_address_that_leaves_the_answer_becomes_absent_and_comes_back() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), at=NOW)])
    nxdomain = Failure(Reason.DNS_NXDOMAIN, "www.corp.example does not exist")
    gone = watch.observe([round_of(at=NOW + 2, dns=dns_result([], rcode="NXDOMAIN", failures=(nxdomain,)))])

    assert moves(gone) == [("www", None, "ok", "critical"), ("www", A, "ok", "absent")]
    assert gone[0].failures == (nxdomain,) and gone[0].added == (Reason.DNS_NXDOMAIN,)
    assert gone[1].new == ABSENT and gone[1].failures == () and gone[1].timestamp == NOW + 2.5
    back = watch.observe([round_of(healthy(A), at=NOW + 4)])
    assert moves(back) == [("www", None, "critical", "ok"), ("www", A, "absent", "ok")]
    assert back[0].cleared == (Reason.DNS_NXDOMAIN,) and back[1].cleared == ()
    later = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 6)])
    assert moves(later) == [("www", B, "absent", "ok")]
    flips = {(e.target, e.address): e.flips for e in watch.summary(NOW + 7, "interrupted").entities}
    assert flips == {("www", None): 2, ("www", A): 2, ("www", B): 0}


def test_an_answer_outside_the_expected_networks_counts_at_the_target_level() -> None:
    public = ip_address("203.0.113.9")
    finding = Failure(Reason.DNS_UNEXPECTED_ADDRESS, "203.0.113.9 is not in 10.0.0.0/8", public)
    watch = Watch(T0)
    changes = watch.observe(
        [round_of(healthy(A), at=NOW, dns=dns_result([A, public], unexpected=[public], failures=(finding,)))]
    )

    assert [c.address for c in changes] == [None, A]
    assert changes[0].new == State(Status.CRITICAL, (Reason.DNS_UNEXPECTED_ADDRESS,))
    assert changes[0].failures == (finding,)


def test_a_change_carries_the_facts_of_its_findings_hints() -> None:
    # The platform, and for http_status the codes of the address's requests that got an
    # unaccepted status (the hint is written by probe.report.watch from these).
    unaccepted = Failure(Reason.HTTP_STATUS, "status 503 (expected 200)", A)
    slow = Failure(Reason.HTTP_CLOCK_SKEW, "the Date header is 10 min behind", A)
    attempts = (
        http_attempt(status=503, failures=(unaccepted,)),
        http_attempt(status=200),
        http_attempt(status=502, failures=(unaccepted,)),
    )
    address = address_result(A, tls_result(A, (LEAF,), (LEAF,)), attempts, failures=(unaccepted, slow))
    watch = Watch(T0)
    (level, change) = watch.observe([round_of(address, at=NOW, platform=Platform.AWS)])

    assert level.platform is Platform.AWS and level.failures == (unaccepted, slow)
    assert level.status_codes == (((503, None), (502, None)), ())
    assert change.platform is Platform.AWS
    assert change.failures == (unaccepted, slow)
    assert change.status_codes == (((503, None), (502, None)), ())


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
    assert summary.worst is None and summary.first_ok_seconds is None and summary.entities == ()
    assert summary.duration_seconds == pytest.approx(0.2)


def test_the_summary_counts_flips_worst_and_current_state_per_address() -> None:
    watch = Watch(T0, until="ok")
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(healthy(A), healthy(B), at=NOW + 2)])
    summary = watch.summary(NOW + 3, "ok")

    assert summary.rounds == 2 and summary.duration_seconds == pytest.approx(13.0)
    assert [(e.target, e.address, e.flips, e.worst, e.state.word) for e in summary.entities] == [
        ("www", None, 1, Status.CRITICAL, "ok"),
        ("www", A, 1, Status.CRITICAL, "ok"),
        ("www", B, 0, Status.OK, "ok"),
    ]
    assert summary.last_change_timestamp == NOW + 2.5


def test_current_gives_every_address_and_target_level_with_its_latest_state() -> None:
    watch = Watch(T0)
    assert watch.current() == ()
    watch.observe([round_of(refused(A), healthy(B), at=NOW)])
    watch.observe([round_of(healthy(A), at=NOW + 2)])

    assert [(key, state.word) for key, state in watch.current()] == [
        (("www", None), "ok"),
        (("www", A), "ok"),
        (("www", B), "absent"),
    ]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="until must be"):
        Watch(T0, until="forever")
    with pytest.raises(ValueError, match="at least 2"):
        Watch(T0, stable_rounds=1)
    with pytest.raises(ValueError, match="ended_by"):
        Watch(T0).summary(T0, "bored")
    assert ABSENT.word == "absent"


# --------------------------------------------------------------------------- outages


def test_an_outage_runs_from_the_first_round_that_saw_it_to_the_first_that_no_longer_did() -> None:
    watch = Watch(T0)
    watch.observe([round_of(healthy(A), healthy(B), at=NOW)])
    (_, began) = watch.observe([round_of(refused(A), healthy(B), at=NOW + 2)])
    assert began.outage == Outage(NOW + 2.5, 2, NOW + 2.5, Status.CRITICAL, (Reason.TCP_TIMEOUT,))
    assert watch.observe([round_of(refused(A), healthy(B), at=NOW + 4)]) == ()  # it goes on, no change
    (_, worse) = watch.observe([round_of(mismatched(A), healthy(B), at=NOW + 6)])
    assert worse.outage is not None and not worse.outage.over
    assert worse.outage.reasons == (Reason.TCP_TIMEOUT, Reason.CERT_HOSTNAME_MISMATCH)
    (_, ended) = watch.observe([round_of(healthy(A), healthy(B), at=NOW + 13)])

    assert ended.outage is not None and ended.outage.over
    assert (ended.outage.started_timestamp, ended.outage.ended_timestamp) == (NOW + 2.5, NOW + 13.5)
    assert (ended.outage.started_round, ended.outage.ended_round) == (2, 5)
    assert ended.outage.seconds == pytest.approx(11.0)
    summary = watch.summary(NOW + 20, "interrupted")
    target, first, second = summary.entities
    assert first.outages == (ended.outage,) and first.longest_outage == ended.outage
    assert target.outages == first.outages  # the target was as broken as its worst address
    assert second.outages == () and second.longest_outage is None
    assert summary.longest_outage == (target, ended.outage)
    assert first.ok_since_timestamp == NOW + 13.5 and first.last_change_timestamp == NOW + 13.5
    assert second.ok_since_timestamp == NOW + 0.5 and second.last_change_timestamp is None
    assert summary.first_round_status is Status.OK


def test_the_longest_of_several_outages_and_one_that_lasts_at_the_end() -> None:
    watch = Watch(T0)
    for at, address in [(0, healthy(A)), (2, refused(A)), (4, healthy(A)), (6, refused(A)), (14, refused(A))]:
        watch.observe([round_of(address, at=NOW + at)])
    summary = watch.summary(NOW + 15, "max_time")
    (_, entity) = summary.entities

    short, lasting = entity.outages
    assert short.over and short.seconds == pytest.approx(2.0)
    assert not lasting.over and lasting.ended_timestamp is None and lasting.ended_round is None
    assert lasting.seconds == pytest.approx(8.0)  # to the last round that saw it: at least that long
    assert entity.longest_outage == lasting and entity.ok_since_timestamp is None
    assert entity.since_timestamp == NOW + 6.5


def test_a_warning_is_an_outage_too_and_an_address_that_becomes_absent_ends_its_own() -> None:
    expiring = Failure(Reason.CERT_EXPIRING_SOON, "expires in 5 days", A)
    warning = address_result(A, tls_result(A, (LEAF,), (LEAF,), failures=(expiring,)))
    watch = Watch(T0)
    (_, first) = watch.observe([round_of(warning, at=NOW)])
    assert first.outage is not None and first.outage.worst is Status.WARNING
    assert first.outage.started_round == 1  # under way when the watch started
    nxdomain = Failure(Reason.DNS_NXDOMAIN, "www.corp.example does not exist")
    (target, gone) = watch.observe(
        [round_of(at=NOW + 2, dns=dns_result([], rcode="NXDOMAIN", failures=(nxdomain,)))]
    )

    assert gone.new == ABSENT and gone.outage is not None and gone.outage.ended_round == 2
    assert target.outage is not None and not target.outage.over  # the target's goes on, now critical
    assert target.outage.worst is Status.CRITICAL
    assert target.outage.reasons == (Reason.CERT_EXPIRING_SOON, Reason.DNS_NXDOMAIN)


def test_no_round_has_no_outage_and_no_first_round_status() -> None:
    summary = Watch(T0, max_time_seconds=10).summary(T0 + 0.2, "max_time", round_cut=True)
    assert summary.longest_outage is None and summary.first_round_status is None
    assert summary.max_time_seconds == 10 and summary.round_cut
