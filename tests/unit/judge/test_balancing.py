"""Rotation judged for the balancing algorithm: the statistics and the memory across cycles."""

from __future__ import annotations

import ipaddress
import math
import random
import re
from typing import Any

import pytest

from probe.engine.plan import facts_of
from probe.judge import balancing as rotation
from probe.judge.balancing import ALPHA, binomial_cdf, chance_unseen, fold, needed, share
from probe.judge.verdict import backend_findings
from probe.model.facts import TargetFacts
from probe.model.reasons import Reason
from probe.model.results import AddressResult, Failure, Rotation
from tests.support import builders
from tests.support.helpers import make_target

A1 = ipaddress.ip_address("10.0.0.1")
A2 = ipaddress.ip_address("10.0.0.2")
URL = "https://www.corp.example/"


def address(ip: Any, *names: str | None) -> AddressResult:
    attempts = [builders.http_attempt(n) for n in names]
    return builders.address_result(ip, builders.tls_result(ip, (), ()), attempts)


def target(**fields: Any) -> TargetFacts:
    fields.setdefault("expect_backends", ["web-1", "web-2"])
    return facts_of(make_target(url=URL, backend={"header": "X-Backend"}, **fields))


def step(previous: Rotation | None, addresses: tuple[AddressResult, ...], t: TargetFacts) -> Rotation:
    memory = fold(
        previous,
        addresses,
        balancing=t.balancing,
        cross_zone=t.cross_zone,
        names=t.expected_backends,
        count=t.expected_backend_count,
        requests_per_address=t.requests_per_address,
    )
    assert memory is not None
    return memory


def judged(
    memory: Rotation | None, addresses: tuple[AddressResult, ...], t: TargetFacts
) -> list[tuple[str, str]]:
    return [(f.reason.value, f.detail) for f in backend_findings(addresses, t, memory)]


# --------------------------------------------------------------------------- statistics


def test_share_is_uniform_for_weighted_random_and_half_of_it_for_least_outstanding() -> None:
    assert share("weighted_random", 2) == 0.5
    assert share("weighted_random", 4) == 0.25
    assert share("least_outstanding_requests", 2) == 0.25
    assert share("least_outstanding_requests", 1) == share("weighted_random", 1) == 1.0
    with pytest.raises(ValueError, match="not judged by counting"):
        share("round_robin", 2)
    with pytest.raises(ValueError, match="at least 1"):
        share("weighted_random", 0)


def test_the_issue_example_two_backends_four_requests_is_12_5_percent() -> None:
    assert chance_unseen("weighted_random", 2, 4) == 0.125
    assert chance_unseen("weighted_random", 2, 8) == 2 * 0.5**8
    assert chance_unseen("weighted_random", 3, 1) == 1.0  # the union bound is capped


@pytest.mark.parametrize(
    ("balancing", "k", "per_evaluation", "expected"),
    [
        ("weighted_random", 2, None, 21),  # 2·0.5^21 ≤ 1e-6 < 2·0.5^20
        ("weighted_random", 2, 8, 24),  # 2·(1+4)·0.5^24 ≤ 1e-6
        ("weighted_random", 3, None, 37),
        ("least_outstanding_requests", 2, None, 51),
        ("least_outstanding_requests", 2, 8, 55),
        ("weighted_random", 1, None, 1),
    ],
)
def test_needed_is_the_least_count_within_alpha(
    balancing: str, k: int, per_evaluation: int | None, expected: int
) -> None:
    n = needed(balancing, k, per_evaluation)
    assert n == expected
    p = share(balancing, k)
    factor = 1 if per_evaluation is None else 1 + per_evaluation * p
    if p < 1:
        assert k * factor * (1 - p) ** n <= ALPHA < k * factor * (1 - p) ** (n - 1)


def test_needed_grows_as_alpha_shrinks_by_log() -> None:
    assert needed("weighted_random", 2, alpha=0.001) == 11  # the issue's "--requests 11"
    assert needed("weighted_random", 2, alpha=1e-9) == 31


def test_binomial_cdf_matches_the_exact_sum_and_survives_large_counts() -> None:
    exact = sum(math.comb(10, i) * 0.3**i * 0.7 ** (10 - i) for i in range(4))
    assert binomial_cdf(3, 10, 0.3) == pytest.approx(exact)
    assert binomial_cdf(0, 8, 0.5) == pytest.approx(1 / 256)
    assert binomial_cdf(10, 10, 0.5) == 1.0
    assert binomial_cdf(-1, 10, 0.5) == 0.0
    assert 0 < binomial_cdf(300, 1600, 0.5) < 1e-100  # no overflow in log space


def test_the_threshold_holds_its_false_alarm_rate_in_a_simulation() -> None:
    # 20,000 cycles of 8 responses from 2 healthy backends, weighted_random at α = 10⁻²:
    # new backend_missing episodes stay within α per cycle (here about 0.3 % expected).
    rng = random.Random(7)
    t = target(balancing="weighted_random")
    alpha = 1e-2
    threshold = needed("weighted_random", 2, 8, alpha=alpha)
    runs = {"web-1": 0, "web-2": 0}
    alarms, cycles = 0, 20_000
    for _ in range(cycles):
        picks = [rng.choice(("web-1", "web-2")) for _ in range(8)]
        before = {b for b, r in runs.items() if r >= threshold}
        for b in runs:
            runs[b] = 0 if b in picks else runs[b] + 8
        alarms += len({b for b, r in runs.items() if r >= threshold} - before)
    assert t.balancing == "weighted_random"
    assert alarms / cycles <= alpha


# --------------------------------------------------------------------------- one check


def test_single_check_that_cannot_decide_is_a_warning_with_advice() -> None:
    t = target(balancing="weighted_random")
    results = (address(A1, "web-1", "web-1", "web-1", "web-1"),)
    memory = step(None, results, t)
    assert judged(memory, results, t) == [
        (
            "backend_undecided",
            "web-2 not seen in 4 identified responses; with weighted_random this is expected "
            "12.5 % of the time; use --requests 21 (requests_per_address) to decide (seen: web-1 4)",
        )
    ]


def test_single_check_advice_divides_by_the_addresses() -> None:
    t = target(balancing="weighted_random")
    results = (address(A1, *["web-1"] * 4), address(A2, *["web-1"] * 4))
    [(reason, detail)] = judged(step(None, results, t), results, t)
    assert reason == "backend_undecided"
    assert "not seen in 8 identified responses" in detail
    assert "expected 0.781 % of the time; use --requests 11 (requests_per_address)" in detail


def test_single_check_with_enough_requests_decides_missing() -> None:
    t = target(balancing="weighted_random", requests_per_address=21)
    results = (address(A1, *["web-1"] * 21),)
    assert judged(step(None, results, t), results, t) == [
        (
            "backend_missing",
            "backend web-2 answered none of the last 21 identified responses; with weighted_random "
            "a healthy backend goes unseen that long less than one in a million times (seen: web-1 21)",
        )
    ]


def test_least_outstanding_requests_says_up_to_and_needs_more() -> None:
    t = target(balancing="least_outstanding_requests")
    results = (address(A1, *["web-1"] * 4),)
    [(reason, detail)] = judged(step(None, results, t), results, t)
    assert reason == "backend_undecided"
    assert "expected up to 63.3 % of the time; use --requests 51 (requests_per_address)" in detail


def test_advice_beyond_the_request_limit_points_to_counting_across_cycles() -> None:
    t = target(balancing="least_outstanding_requests", expect_backends=["a", "b", "c", "d"])
    results = (address(A1, "a", "b", "c", "a"),)
    [(reason, detail)] = judged(step(None, results, t), results, t)
    assert reason == "backend_undecided" and detail.startswith("d not seen in 4")
    assert "one check cannot decide (114 requests per address needed): watch it" in detail


def test_any_never_reports_missing_nor_imbalance() -> None:
    t = target(balancing="any")
    results = (address(A1, *["web-1"] * 40, "web-9"),)
    memory = fold(None, results, balancing="any", cross_zone=True, names=(), count=2, requests_per_address=4)
    assert memory is None
    assert [r for r, _ in judged(None, results, t)] == ["backend_unexpected"]


def test_round_robin_stays_todays_rule() -> None:
    t = target()
    results = (address(A1, "web-1", "web-1", "web-1", "web-1"),)
    assert judged(None, results, t) == [
        ("backend_missing", "backend web-2 answered none of the 4 identified responses (seen: web-1 4)")
    ]


# --------------------------------------------------------------------------- across cycles


def test_daemon_counts_across_cycles_and_a_seen_backend_stays_ok() -> None:
    t = target(balancing="weighted_random", requests_per_address=4)
    both = (address(A1, "web-1", "web-2", "web-1", "web-1"), address(A2, "web-1", "web-1", "web-2", "web-1"))
    only_1 = (address(A1, *["web-1"] * 4), address(A2, *["web-1"] * 4))
    memory = step(None, both, t)
    assert judged(memory, both, t) == []
    # Two cycles without web-2: 16 responses, below the 24 a continuing count needs: no finding.
    for _ in range(2):
        memory = step(memory, only_1, t)
        assert judged(memory, only_1, t) == []
    # The third: 24 responses without web-2.
    memory = step(memory, only_1, t)
    assert memory.missing == ("web-2",)
    assert judged(memory, only_1, t) == [
        (
            "backend_missing",
            "backend web-2 answered none of the last 24 identified responses (3 cycles); with "
            "weighted_random a healthy backend goes unseen that long less than one in a million "
            "times (seen: web-1 8)",
        )
    ]
    memory = step(memory, both, t)
    assert judged(memory, both, t) == [] and memory.missing == ()


def test_daemon_first_cycle_undecided_then_missing_at_the_threshold() -> None:
    t = target(balancing="weighted_random")
    only_1 = (address(A1, *["web-1"] * 4), address(A2, *["web-1"] * 4))
    memory = step(None, only_1, t)
    assert [r for r, _ in judged(memory, only_1, t)] == ["backend_undecided"]
    memory = step(memory, only_1, t)
    [(reason, detail)] = judged(memory, only_1, t)
    assert reason == "backend_undecided"
    assert detail == (
        "web-2 not seen in the 16 identified responses since probing began; with weighted_random "
        "this is expected 0.00305 % of the time; it is reported missing after 24 identified "
        "responses without it (seen: web-1 8)"
    )
    memory = step(memory, only_1, t)
    assert [r for r, _ in judged(memory, only_1, t)] == ["backend_missing"]


def test_cycles_without_identified_responses_do_not_count() -> None:
    t = target(balancing="weighted_random")
    only_1 = (address(A1, *["web-1"] * 4),)
    nothing = (address(A1, None, None),)
    memory = step(None, only_1, t)
    memory = step(memory, nothing, t)
    assert [(s.responses, s.evaluations) for s in memory.scopes] == [(4, 1)]
    assert judged(memory, nothing, t) == []  # nothing identified: nothing judged


def test_changed_settings_start_the_memory_afresh() -> None:
    t = target(balancing="weighted_random")
    only_1 = (address(A1, *["web-1"] * 8),)
    memory = step(step(None, only_1, t), only_1, t)
    other = target(balancing="weighted_random", expect_backends=["web-1", "web-2", "web-3"])
    again = step(memory, only_1, other)
    assert [s.responses for s in again.scopes] == [8]


def test_count_only_expectation_across_cycles() -> None:
    t = target(balancing="weighted_random", expect_backends=2, requests_per_address=8)
    only_1 = (address(A1, *["web-1"] * 8),)
    memory = step(None, only_1, t)
    [(reason, detail)] = judged(memory, only_1, t)
    assert reason == "backend_undecided"
    assert detail.startswith("2 backends expected, 1 seen in 8 identified responses;")
    for _ in range(2):
        memory = step(memory, only_1, t)
    [(reason, detail)] = judged(memory, only_1, t)
    assert reason == "backend_missing"
    assert detail.startswith("2 backends expected, 1 answered within the last 24 identified responses;")


def test_cross_zone_off_counts_per_address_and_missing_means_at_every_address() -> None:
    t = target(balancing="least_outstanding_requests", cross_zone=False)
    zones = (address(A1, *["web-1"] * 4), address(A2, *["web-2"] * 4))
    memory = None
    for _ in range(30):
        memory = step(memory, zones, t)
        assert judged(memory, zones, t) == []  # web-2 never at A1, web-1 never at A2: expected
    assert [s.name for s in memory.scopes] == ["10.0.0.1", "10.0.0.2"]
    zone_b_down = (address(A1, *["web-1"] * 4), address(A2, None, None, None, None))
    for _ in range(13):  # 53 responses without web-2 at A2 are needed (4 per cycle, r = 4)
        memory = step(memory, zone_b_down, t)
    assert memory.missing == ()  # A2 identified nothing: its count stands still
    a2_to_zone_a = (address(A1, *["web-1"] * 4), address(A2, *["web-1"] * 4))
    cycles = 0
    while not memory.missing and cycles < 20:
        memory = step(memory, a2_to_zone_a, t)
        cycles += 1
    assert memory.missing == ("web-2",) and cycles == 14  # 56 ≥ 53 at A2; A1 never saw it
    [(reason, detail)] = judged(memory, a2_to_zone_a, t)
    assert reason == "backend_missing"
    assert "(cross_zone: false: at no address)" in detail


def test_imbalance_only_when_the_split_is_unlikely_by_chance() -> None:
    t = target(balancing="weighted_random", requests_per_address=20)
    # 3 of 20: below half the fair share (5) but a chance split (P ≈ 0.13 %).
    results = (address(A1, *["web-1"] * 17, *["web-2"] * 3),)
    assert [r for r, _ in judged(step(None, results, t), results, t)] == []
    t = target(balancing="weighted_random", requests_per_address=100)
    results = (address(A1, *["web-1"] * 90, *["web-2"] * 10),)
    assert judged(step(None, results, t), results, t) == [
        (
            "backend_imbalance",
            "backend web-2 answered 10 of 100 requests; its fair share is 50, and with "
            "weighted_random a split this uneven happens by chance less than one in a million "
            "times (seen: web-1 90, web-2 10)",
        )
    ]
    # Round robin keeps today's rule: 3 of 20 is an imbalance.
    rr = target(requests_per_address=20)
    results = (address(A1, *["web-1"] * 17, *["web-2"] * 3),)
    assert [r for r, _ in judged(None, results, rr)] == ["backend_imbalance"]


def test_round_robin_with_cross_zone_off_judges_imbalance_per_address() -> None:
    t = target(cross_zone=False, expect_backends=["web-1", "web-2", "web-3"])
    # Zone A: web-1 alone; zone B: web-2 and web-3. Over all, web-1 has 4 of 8, web-2 and
    # web-3 2 each: fine either way; zone B alone 3/1 is an imbalance there.
    results = (address(A1, *["web-1"] * 4), address(A2, "web-2", "web-3", "web-2", "web-3"))
    assert judged(None, results, t) == []
    skewed = (address(A1, *["web-1"] * 4), address(A2, "web-2", "web-2", "web-2", "web-2", "web-2", "web-3"))
    assert judged(None, skewed, t) == [
        (
            "backend_imbalance",
            "at 10.0.0.2, backend web-3 answered 1 of 6 requests; its fair share is 3 "
            "(seen: web-2 5, web-3 1)",
        )
    ]


def test_count_only_memory_is_bounded() -> None:
    t = target(balancing="weighted_random", expect_backends=2)
    memory = None
    for i in range(100):
        results = (address(A1, f"b{i}", f"c{i}"),)
        memory = step(memory, results, t)
    assert len(memory.unseen) <= rotation.MAX_TRACKED and len(memory.seen) <= rotation.MAX_TRACKED


def test_failure_type_is_the_public_reason() -> None:
    t = target(balancing="weighted_random")
    results = (address(A1, "web-1"),)
    [finding] = backend_findings(results, t, step(None, results, t))
    assert isinstance(finding, Failure) and finding.reason is Reason.BACKEND_UNDECIDED


def test_classic_load_balancer_example_config() -> None:
    from pathlib import Path

    from probe.config.load import load_config

    path = Path(__file__).resolve().parents[3] / "config" / "classic-load-balancer.yaml"
    [clb] = load_config(path).targets
    assert clb.expect_same_addresses_as is not None
    assert re.fullmatch(
        r"internal-[a-z0-9-]+-\d{10}\.[a-z0-9-]+\.elb\.amazonaws\.com", clb.expect_same_addresses_as
    )
    assert (clb.balancing, clb.cross_zone) == ("least_outstanding_requests", False)
    assert clb.expected_backend_names == ("web-a1", "web-b1")
    text = path.read_text()
    assert "cross-zone load balancing may be off" in text.lower().replace("\n#   ", " ").replace("\n# ", " ")
