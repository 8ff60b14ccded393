"""The result store: tallies across cycles (pure ``accumulate``) and the snapshot swaps."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from probe.daemon import store as store_module
from probe.daemon.store import (
    BUCKETS,
    CHANGE_DETAIL_CHARS,
    HISTORY_LENGTH,
    MAX_BACKEND_SERIES,
    STALE_AFTER_CYCLES,
    Histogram,
    ResultStore,
    Snapshot,
    StateChange,
    TargetState,
    accumulate,
    change_of,
    state_changed,
)
from probe.model.reasons import Reason, Status
from probe.model.results import AddressResult, Failure, HttpAttempt, IPAddress, PhaseTimes, TargetResult
from tests.support.builders import NOW, address_result, dns_result, http_attempt, target_result, tls_result

A1 = ipaddress.ip_address("10.0.0.1")
A2 = ipaddress.ip_address("10.0.0.2")


# --------------------------------------------------------------------------- builders


def address(ip: IPAddress, attempts: Sequence[HttpAttempt] = ()) -> AddressResult:
    tls = tls_result(ip, verified=True, cipher=None, alpn=None)
    return address_result(ip, tls, attempts)


def served(ip: IPAddress, *backends: str) -> AddressResult:
    """An address whose requests were answered by ``backends`` (one request each)."""
    return address(ip, [http_attempt(b) for b in backends])


def result(
    name: str = "www",
    addresses: Sequence[AddressResult] = (),
    failures: Sequence[Failure] = (),
    lookup_seconds: float = 0.004,
) -> TargetResult:
    dns = dns_result([a.address for a in addresses], lookup_seconds=lookup_seconds)
    return target_result(name, addresses, dns=dns, failures=failures)


def run_cycles(
    results: Sequence[TargetResult], state: TargetState | None = None, histograms: bool = False
) -> TargetState:
    for r in results:
        state = accumulate(state, r, histograms)
    assert state is not None
    return state


def requests(state: TargetState) -> dict[tuple[str, str], int]:
    return {key: tally.requests for key, tally in state.backends.items()}


# --------------------------------------------------------------------------- accumulate


def test_first_cycle() -> None:
    refused = Failure(Reason.TCP_REFUSED, "refused", A1)
    r = result(addresses=[served(A1, "web-1")], failures=[refused])
    state = accumulate(None, r)
    assert state.result is r
    assert state.cycles == 1
    assert dict(state.failures_total) == {"tcp_refused": 1}
    assert requests(state) == {("10.0.0.1", "web-1"): 1}


def test_cycles_are_counted() -> None:
    assert run_cycles([result()] * 5).cycles == 5


def test_failures_total_counts_cycles_per_reason_not_findings() -> None:
    refused = [Failure(Reason.TCP_REFUSED, "refused", A1), Failure(Reason.TCP_REFUSED, "refused", A2)]
    soon = Failure(Reason.CERT_EXPIRING_SOON, "soon", A1)
    state = run_cycles(
        [
            result(failures=refused),  # two findings, one reason: one cycle
            result(failures=[*refused, soon]),
            result(),
            result(failures=refused[:1]),
        ]
    )
    assert dict(state.failures_total) == {"tcp_refused": 3, "cert_expiring_soon": 1}


def test_backend_tallies_per_address_and_backend_across_cycles() -> None:
    state = run_cycles(
        [
            result(addresses=[served(A1, "web-1", "web-1", "web-2"), served(A2, "web-1")]),
            result(addresses=[served(A1, "web-1", "web-1", "web-1"), served(A2, "web-2", "web-2")]),
        ]
    )
    assert requests(state) == {
        ("10.0.0.1", "web-1"): 5,
        ("10.0.0.1", "web-2"): 1,
        ("10.0.0.2", "web-1"): 1,
        ("10.0.0.2", "web-2"): 2,
    }
    assert state.backends[("10.0.0.1", "web-1")].last_cycle == 2
    assert state.backends[("10.0.0.1", "web-2")].last_cycle == 1


def test_unidentified_responses_are_not_tallied() -> None:
    state = accumulate(None, result(addresses=[served(A1, "web-1"), address(A2, [http_attempt(None)] * 3)]))
    assert requests(state) == {("10.0.0.1", "web-1"): 1}


def test_backend_not_seen_for_stale_after_cycles_is_dropped() -> None:
    first = result(addresses=[served(A1, "web-1", "web-2")])
    without_web_2 = result(addresses=[served(A1, "web-1")])
    # Not seen in the STALE_AFTER_CYCLES - 1 cycles after its last one: still there.
    almost = run_cycles([first] + [without_web_2] * (STALE_AFTER_CYCLES - 1))
    assert ("10.0.0.1", "web-2") in almost.backends
    # Not seen for STALE_AFTER_CYCLES cycles: gone; the one seen every cycle stays.
    stale = accumulate(almost, without_web_2)
    assert ("10.0.0.1", "web-2") not in stale.backends
    assert requests(stale) == {("10.0.0.1", "web-1"): STALE_AFTER_CYCLES + 1}


def test_backend_seen_again_before_going_stale_is_kept() -> None:
    both = result(addresses=[served(A1, "web-1", "web-2")])
    only_web_1 = result(addresses=[served(A1, "web-1")])
    half = STALE_AFTER_CYCLES // 2
    state = run_cycles([both] + [only_web_1] * half + [both] + [only_web_1] * (STALE_AFTER_CYCLES - 1))
    assert requests(state)[("10.0.0.1", "web-2")] == 2


def test_a_dropped_backend_seen_again_starts_from_its_new_count() -> None:
    both = result(addresses=[served(A1, "web-1", "web-2", "web-2")])
    only_web_1 = result(addresses=[served(A1, "web-1")])
    state = run_cycles([both] + [only_web_1] * STALE_AFTER_CYCLES + [both])
    assert requests(state)[("10.0.0.1", "web-2")] == 2


def test_at_most_max_backend_series_least_recently_seen_dropped_first() -> None:
    old = [f"old-{i}" for i in range(40)]
    new = [f"new-{i}" for i in range(30)]
    state = run_cycles([result(addresses=[served(A1, *old)]), result(addresses=[served(A1, *new)])])
    kept = {backend for _, backend in state.backends}
    assert len(state.backends) == MAX_BACKEND_SERIES
    assert set(new) <= kept  # the most recently seen all stay
    assert len(kept & set(old)) == MAX_BACKEND_SERIES - len(new)


def test_a_hostile_server_cannot_grow_the_series_in_one_cycle() -> None:
    names = [f"b{i}" for i in range(MAX_BACKEND_SERIES * 3)]
    state = accumulate(None, result(addresses=[served(A1, *names[::2]), served(A2, *names[1::2])]))
    assert len(state.backends) == MAX_BACKEND_SERIES


def test_phase_histograms_across_cycles() -> None:
    phases = [
        PhaseTimes(connect=0.001, tls=0.02, processing=0.003, transfer=None),
        PhaseTimes(connect=0.003, tls=None, processing=20.0, transfer=0.0001),
    ]
    first = result(addresses=[address(A1, [http_attempt(phases=p) for p in phases])], lookup_seconds=0.004)
    second = result(addresses=[address(A1, [http_attempt(phases=phases[0])])], lookup_seconds=0.3)
    state = run_cycles([first, second], histograms=True)

    def at(bound: float) -> int:
        return BUCKETS.index(bound)

    connect = state.phases["connect"]  # 0.001 (on the first bound), 0.003, 0.001
    assert connect.count == 3
    assert connect.total == pytest.approx(0.005)
    assert connect.counts[at(0.001)] == 2
    assert connect.counts[at(0.0025)] == 2
    assert connect.counts[at(0.005)] == 3
    assert connect.counts[-1] == 3
    processing = state.phases["processing"]  # 0.003, 20.0 (above the last bound), 0.003
    assert processing.count == 3
    assert processing.counts[-1] == 2
    assert processing.total == pytest.approx(20.006)
    resolve = state.phases["resolve"]  # one lookup per cycle
    assert resolve.count == 2
    assert resolve.counts[at(0.005)] == 1 and resolve.counts[at(0.5)] == 2
    assert state.phases["tls"].count == 2
    assert state.phases["transfer"].count == 1


def test_phases_that_never_happened_have_no_histogram() -> None:
    state = accumulate(None, result(addresses=[address(A1)]), histograms=True)  # no HTTP request at all
    assert set(state.phases) == {"resolve"}


def test_no_histograms_unless_asked() -> None:
    served_once = result(addresses=[address(A1, [http_attempt(phases=PhaseTimes(connect=0.001))])])
    assert run_cycles([served_once] * 2).phases == {}
    on = run_cycles([served_once] * 2, histograms=True)
    assert on.phases["connect"].count == 2
    # Turned off (a reload): the next state has none, the other tallies go on.
    off = accumulate(on, served_once)
    assert off.phases == {}
    assert off.cycles == 3


def test_the_store_renders_each_recorded_state_once_outside_scrapes() -> None:
    rendered: list[int] = []

    def render(state: TargetState) -> tuple[bytes, ...]:
        rendered.append(state.cycles)
        return (f"cycle {state.cycles}\n".encode(),)

    store = ResultStore(["www", "api"], NOW, render=render)
    store.record(result("www"))
    store.record(result("www"))
    store.record(result("api"))
    snapshot = store.snapshot()
    assert rendered == [1, 2, 1]
    assert snapshot.targets["www"].exposition == (b"cycle 2\n",)
    assert snapshot.targets["api"].exposition == (b"cycle 1\n",)
    for _ in range(3):
        store.snapshot()  # reading renders nothing
    assert rendered == [1, 2, 1]


def test_without_a_renderer_nothing_is_stored() -> None:
    store = ResultStore(["www"], NOW)
    store.record(result("www"))
    assert store.snapshot().targets["www"].exposition is None


def test_turning_histograms_off_drops_them_and_renders_again_at_once() -> None:
    rendered: list[tuple[int, int]] = []

    def render(state: TargetState) -> tuple[bytes, ...]:
        rendered.append((state.cycles, len(state.phases)))
        return (b"",)

    store = ResultStore(["www"], NOW, render=render, histograms=True)
    assert store.histograms
    store.record(result("www", addresses=[address(A1, [http_attempt(phases=PhaseTimes(connect=0.001))])]))
    assert set(store.snapshot().targets["www"].phases) == {"resolve", "connect"}
    store.set_histograms(True)  # unchanged: nothing happens
    assert rendered == [(1, 2)]
    store.set_histograms(False)
    state = store.snapshot().targets["www"]
    assert state.phases == {}
    assert state.cycles == 1
    assert rendered == [(1, 2), (1, 0)]
    store.set_histograms(True)  # they start at the next cycle
    assert store.snapshot().targets["www"].phases == {}
    store.record(result("www"))
    assert set(store.snapshot().targets["www"].phases) == {"resolve"}


# --------------------------------------------------------------------------- Histogram


def test_histogram_starts_empty() -> None:
    empty = Histogram()
    assert empty.counts == (0,) * len(BUCKETS)
    assert (empty.total, empty.count) == (0.0, 0)
    assert empty.observe([]) == empty


def test_histogram_counts_are_cumulative() -> None:
    h = Histogram().observe([0.003])
    assert h.counts == tuple(0 if bound < 0.003 else 1 for bound in BUCKETS)


@pytest.mark.parametrize("bound", BUCKETS)
def test_value_on_a_bound_goes_in_that_bucket(bound: float) -> None:
    h = Histogram().observe([bound])
    index = BUCKETS.index(bound)
    assert h.counts[index] == 1
    assert index == 0 or h.counts[index - 1] == 0


def test_every_bound_once() -> None:
    h = Histogram().observe(BUCKETS)
    assert h.counts == tuple(range(1, len(BUCKETS) + 1))
    assert h.count == len(BUCKETS)
    assert h.total == pytest.approx(sum(BUCKETS))


def test_value_above_the_last_bound_only_in_count_and_sum() -> None:
    h = Histogram().observe([BUCKETS[-1] + 0.5])
    assert h.counts == (0,) * len(BUCKETS)
    assert h.count == 1
    assert h.total == BUCKETS[-1] + 0.5


def test_zero_goes_in_every_bucket() -> None:
    assert Histogram().observe([0.0]).counts == (1,) * len(BUCKETS)


def test_observe_returns_a_new_histogram() -> None:
    before = Histogram().observe([0.1])
    after = before.observe([0.2, 30.0])
    assert (before.count, before.total) == (1, 0.1)
    assert after.count == 3
    assert after.total == pytest.approx(30.3)
    assert after.counts[BUCKETS.index(0.25)] == 2


# --------------------------------------------------------------------------- ResultStore


def test_record_returns_the_previous_state() -> None:
    store = ResultStore(["www"], NOW)
    first, second = result(), result(failures=[Failure(Reason.HTTP_STATUS, "503", A1)])
    assert store.record(first) is None
    previous = store.record(second)
    assert previous is not None and previous.result is first and previous.cycles == 1
    state = store.snapshot().targets["www"]
    assert state.result is second and state.cycles == 2
    assert store.record(result()) is state


def test_record_ignores_targets_not_configured() -> None:
    store = ResultStore(["www"], NOW)
    before = store.snapshot()
    assert store.record(result("other")) is None
    assert store.snapshot() == before
    assert "other" not in store.snapshot().targets


def test_initial_snapshot() -> None:
    snapshot = ResultStore(["www", "api"], NOW).snapshot()
    assert snapshot.configured == ("www", "api")
    assert dict(snapshot.targets) == {}
    assert snapshot.reload_successful is True
    assert snapshot.reload_success_timestamp == NOW


def test_configure_keeps_states_of_targets_still_configured() -> None:
    store = ResultStore(["www", "api", "old"], NOW)
    for name in ("www", "api", "old"):
        store.record(result(name))
    kept = store.snapshot().targets["api"]
    store.reload_failed()
    store.configure(["api", "new", "www"], NOW + 60)
    snapshot = store.snapshot()
    assert snapshot.configured == ("api", "new", "www")
    assert set(snapshot.targets) == {"www", "api"}
    assert snapshot.targets["api"] is kept
    assert snapshot.reload_successful is True
    assert snapshot.reload_success_timestamp == NOW + 60


def test_a_removed_target_is_no_longer_recorded() -> None:
    store = ResultStore(["www", "old"], NOW)
    store.configure(["www"], NOW + 1)
    assert store.record(result("old")) is None
    assert "old" not in store.snapshot().targets


def test_a_target_removed_and_added_again_starts_afresh() -> None:
    store = ResultStore(["www"], NOW)
    store.record(result())
    store.record(result())
    store.configure(["api"], NOW + 1)
    store.configure(["api", "www"], NOW + 2)
    assert store.record(result()) is None
    assert store.snapshot().targets["www"].cycles == 1


def test_reload_failed_keeps_everything_but_the_flag() -> None:
    store = ResultStore(["www", "api"], NOW)
    store.record(result())
    before = store.snapshot()
    store.reload_failed()
    after = store.snapshot()
    assert after.reload_successful is False
    assert after.reload_success_timestamp == NOW
    assert after.configured == before.configured
    assert after.targets == before.targets
    assert after.targets["www"] is before.targets["www"]


@pytest.mark.parametrize(
    ("configured", "probed", "ready"),
    [
        (("www", "api"), (), False),
        (("www", "api"), ("www",), False),
        (("www", "api"), ("api", "www"), True),
        ((), (), True),
    ],
)
def test_snapshot_ready(configured: tuple[str, ...], probed: tuple[str, ...], ready: bool) -> None:
    targets = {name: accumulate(None, result(name)) for name in probed}
    assert Snapshot(targets, configured, True, NOW).ready is ready


def test_ready_again_only_after_a_new_target_has_a_result() -> None:
    store = ResultStore(["www"], NOW)
    store.record(result())
    assert store.snapshot().ready
    store.configure(["www", "api"], NOW + 1)
    assert not store.snapshot().ready
    store.record(result("api"))
    assert store.snapshot().ready


def test_a_snapshot_does_not_change_after_a_record() -> None:
    store = ResultStore(["www", "api"], NOW)
    store.record(result(addresses=[served(A1, "web-1")], failures=[Failure(Reason.TCP_REFUSED, "x", A2)]))
    snapshot = store.snapshot()
    state = snapshot.targets["www"]
    failures, backends, phases = dict(state.failures_total), dict(state.backends), dict(state.phases)

    store.record(
        result(addresses=[served(A1, "web-1", "web-2")], failures=[Failure(Reason.TCP_REFUSED, "x")])
    )
    store.record(result("api"))
    store.configure(["api"], NOW + 1)

    assert set(snapshot.targets) == {"www"}
    assert snapshot.configured == ("www", "api")
    assert snapshot.targets["www"] is state
    assert state.cycles == 1
    assert dict(state.failures_total) == failures
    assert dict(state.backends) == backends
    assert dict(state.phases) == phases
    assert store.snapshot() is not snapshot


def test_accumulate_leaves_the_previous_state_alone() -> None:
    previous = accumulate(None, result(addresses=[served(A1, "web-1")]), histograms=True)
    accumulate(
        previous,
        result(addresses=[served(A1, "web-1", "web-2")], failures=[Failure(Reason.TCP_REFUSED, "x")]),
        histograms=True,
    )
    assert previous.cycles == 1
    assert dict(previous.failures_total) == {}
    assert requests(previous) == {("10.0.0.1", "web-1"): 1}
    assert previous.phases["resolve"].count == 1


def test_snapshot_mappings_are_read_only() -> None:
    store = ResultStore(["www"], NOW)
    store.record(result(addresses=[served(A1, "web-1")], failures=[Failure(Reason.TCP_REFUSED, "x")]))
    snapshot = store.snapshot()
    state = snapshot.targets["www"]
    with pytest.raises(TypeError):
        snapshot.targets["evil"] = state  # type: ignore[index]
    with pytest.raises(TypeError):
        state.failures_total["tcp_refused"] = 99  # type: ignore[index]
    with pytest.raises(TypeError):
        state.backends[("10.0.0.1", "x")] = state.backends[("10.0.0.1", "web-1")]  # type: ignore[index]
    with pytest.raises(TypeError):
        state.phases["resolve"] = Histogram()  # type: ignore[index]


# --------------------------------------------------------------------------- state changes


def at(r: TargetResult, started: float) -> TargetResult:
    """``r`` as if its cycle started at ``started`` (it lasts ``r.duration_seconds``)."""
    return replace(r, started_timestamp=started)


REFUSED = Failure(Reason.TCP_REFUSED, "connection refused", A1)
MISSING = Failure(Reason.BACKEND_MISSING, "web-2 did not answer")


def test_the_first_result_is_the_first_state_change() -> None:
    state = accumulate(None, at(result(addresses=[served(A1, "web-1")]), NOW))
    assert len(state.changes) == 1
    change = state.changes[0]
    assert change == StateChange(NOW + 0.1, None, Status.OK, (), (), "")
    assert state.last_change_timestamp == NOW + 0.1  # when the cycle that showed it ended


def test_a_new_status_or_new_reasons_are_changes_the_same_state_is_not() -> None:
    ok = result(addresses=[served(A1, "web-1")])
    refused = result(addresses=[served(A1, "web-1")], failures=[REFUSED])
    both = result(addresses=[served(A1, "web-1")], failures=[REFUSED, MISSING])
    state = run_cycles([at(ok, NOW), at(ok, NOW + 30), at(refused, NOW + 60), at(refused, NOW + 90)])
    state = run_cycles([at(both, NOW + 120), at(ok, NOW + 150)], state)
    assert [(c.previous, c.status, c.reasons) for c in state.changes] == [
        (None, Status.OK, ()),
        (Status.OK, Status.CRITICAL, ("tcp_refused",)),
        (Status.CRITICAL, Status.CRITICAL, ("tcp_refused", "backend_missing")),  # same status, new reason
        (Status.CRITICAL, Status.OK, ()),
    ]
    assert state.changes[1].timestamp == NOW + 60.1
    assert state.changes[1].detail == "tcp_refused 10.0.0.1: connection refused"
    assert state.changes[2].previous_reasons == ("tcp_refused",)
    assert state.last_change_timestamp == NOW + 150.1
    assert state.cycles == 6


def test_the_same_reasons_in_another_order_are_the_same_state() -> None:
    first = result(failures=[REFUSED, MISSING])
    swapped = result(failures=[MISSING, REFUSED])
    assert not state_changed(first, swapped)
    assert len(run_cycles([first, swapped, first]).changes) == 1


def test_the_detail_is_the_first_finding_of_the_worst_severity_shortened() -> None:
    expiring = Failure(Reason.CERT_EXPIRING_SOON, "expires in 5 days", A1)
    long = Failure(Reason.HTTP_BODY_MISMATCH, "x" * 500, A2)
    change = change_of(None, result(failures=[expiring, long]))
    assert change.status is Status.CRITICAL
    assert change.detail.startswith("http_body_mismatch 10.0.0.2: xxx")
    assert len(change.detail) == CHANGE_DETAIL_CHARS and change.detail.endswith("… (529 characters)")


def test_the_history_keeps_the_last_changes_only() -> None:
    ok, bad = result(), result(failures=[REFUSED])
    state = run_cycles([at(ok if n % 2 else bad, NOW + n) for n in range(HISTORY_LENGTH + 15)])
    assert len(state.changes) == HISTORY_LENGTH
    assert [c.timestamp for c in state.changes] == [NOW + n + 0.1 for n in range(15, HISTORY_LENGTH + 15)]
    assert state.changes[0].previous is not None  # the first result fell out of the history


def test_the_history_survives_a_reload_that_keeps_the_target_and_restarts_with_a_changed_one() -> None:
    store = ResultStore(["www", "api"], NOW)
    for name in ("www", "api"):
        store.record(result(name))
        store.record(result(name, failures=[REFUSED]))
    store.set_histograms(True)
    store.set_histograms(False)  # re-rendering the states keeps their history
    store.configure(["www", "api"], NOW + 1, reset=["api"])
    assert len(store.snapshot().targets["www"].changes) == 2
    assert "api" not in store.snapshot().targets
    store.record(result("api"))
    assert [c.previous for c in store.snapshot().targets["api"].changes] == [None]


def test_a_snapshot_is_a_copy_shared_by_reads_until_the_next_change() -> None:
    store = ResultStore(["www", "api"], NOW)
    store.record(result("www"))
    first = store.snapshot()
    assert store.snapshot() is first  # no change: the same copy, nothing built per read
    store.record(result("api"))
    second = store.snapshot()
    assert second is not first
    assert set(first.targets) == {"www"}  # a reader's snapshot never changes under it
    assert set(second.targets) == {"www", "api"}
    assert store.state("api") is second.targets["api"]
    assert store.state("other") is None
    assert {s.result.target.name for s in store.states()} == {"www", "api"}
    store.reload_failed()
    assert store.snapshot().reload_successful is False
    assert first.reload_successful is True


def test_recording_does_not_copy_every_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # One cycle costs the same at 1,000 targets as at one: no per-record copy of the
    # whole mapping (that was 60 µs per cycle at 1,000 targets).
    names = [f"t{i}" for i in range(1000)]
    store = ResultStore(names, NOW)
    for name in names:
        store.record(result(name))
    copies: list[int] = []
    real = store_module.MappingProxyType

    def counting(mapping: Any) -> Any:
        copies.append(len(mapping))
        return real(mapping)

    monkeypatch.setattr(store_module, "MappingProxyType", counting)
    for name in names[:100]:
        store.record(result(name))
    assert [n for n in copies if n >= len(names)] == []
    store.snapshot()
    assert [n for n in copies if n >= len(names)] == [len(names)]  # one copy, at the read
