"""Durations: Prometheus duration strings or seconds, and timeouts that fit the interval.

The fitting rule is Prometheus' rule for an unset ``scrape_timeout`` (capped at the
scrape interval), applied to the deadline and then to each stage timeout.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.cli.adhoc import config_from_args
from probe.cli.argtypes import duration_argument
from probe.cli.errors import UsageError
from probe.cli.parser import build_parser
from probe.config.errors import ConfigError
from probe.config.load import build_config
from probe.config.models import Timeouts
from probe.config.values import format_duration, parse_duration, positive_duration

FORM = "(e.g. 5s, 500ms, 1m30s, or seconds)"


# --------------------------------------------------------------------------- the parser


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("1m30s", 90),
        ("1m", 60),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1s500ms", 1.5),
        ("2d", 172_800),
        ("1w", 604_800),
        ("1y", 31_536_000),
        ("1y1w1d1h1m1s1ms", 31_536_000 + 604_800 + 86_400 + 3600 + 60 + 1.001),
        ("0s", 0),
        ("0", 0),
        (" 5s ", 5),
        ("2.5", 2.5),
        (".5", 0.5),
        ("10", 10),
        ("-1", -1),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_accepts(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "s",
        "ms",
        "5 sec",
        "5sec",
        "5S",
        "5M",
        "30s1m",
        "5m5m",
        "1ms1s",
        "-5s",
        "1e3",
        "inf",
        "nan",
        "5s ago",
    ],
)
def test_parse_duration_refuses(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == f"{value!r} is not a duration {FORM}"


@pytest.mark.parametrize("value", [True, False, None, [5], {"s": 5}])
def test_parse_duration_refuses_other_types(value: Any) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(e\.g\. 5s"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["1.5s", "0.5m", ".5h", "2.500ms"])
def test_a_fraction_inside_a_unit_gets_the_whole_number_form(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == (
        f"{value!r} is not a duration {FORM}: whole numbers per unit, as in 1s500ms, "
        "or plain seconds such as 1.5"
    )


def test_a_huge_number_of_units_is_too_long_not_a_crash() -> None:
    with pytest.raises(ValueError, match=r"^must be at most 1h \(got '9999"):
        positive_duration("9" * 5000 + "s")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be greater than 0 (got 0)"),
        ("0s", "must be greater than 0 (got '0s')"),
        (-1, "must be greater than 0 (got -1)"),
        (float("nan"), "must be greater than 0 (got nan)"),
        ("2h", "must be at most 1h (got '2h')"),
        ("1h1ms", "must be at most 1h (got '1h1ms')"),
        (3600.5, "must be at most 1h (got 3600.5)"),
    ],
)
def test_positive_duration_range(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        positive_duration(value)
    assert str(caught.value) == message


def test_positive_duration_bounds_are_inclusive_at_one_hour() -> None:
    assert positive_duration("1h") == 3600
    assert positive_duration("1ms") == 0.001


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90, "1m30s"),
        (0.5, "500ms"),
        (3600, "1h"),
        (2.5, "2s500ms"),
        (86_400 * 8, "1w1d"),
        (0.0001, "0.0001s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


_UNITS = ("y", "w", "d", "h", "m", "s", "ms")
_UNIT_SECONDS = (31_536_000, 604_800, 86_400, 3600, 60, 1, 0.001)


@given(st.lists(st.one_of(st.none(), st.integers(0, 10_000)), min_size=7, max_size=7))
def test_any_prometheus_duration_parses_to_its_sum(counts: list[int | None]) -> None:
    """Every string of Prometheus' grammar parses; its value is the sum of its parts."""
    text = "".join(f"{n}{unit}" for n, unit in zip(counts, _UNITS, strict=True) if n is not None)
    if not text:
        return
    expected = sum(n * size for n, size in zip(counts, _UNIT_SECONDS, strict=True) if n is not None)
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12, abs=1e-9)


@given(st.integers(1, 3_600_000))
def test_format_then_parse_is_the_identity_in_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@given(st.text(max_size=20))
def test_any_text_parses_or_gives_one_line(text: str) -> None:
    try:
        parse_duration(text)
    except ValueError as exc:
        assert "is not a duration" in str(exc)


# --------------------------------------------------------------------------- fitting


def target(**fields: Any) -> Any:
    return build_config({"targets": [{"url": "https://www.corp.example/", **fields}]}).targets[0]


def seconds(timeouts: Timeouts) -> dict[str, float]:
    return dict(timeouts.as_seconds())


def test_interval_alone_fits_the_deadline_to_it() -> None:
    """The issue's case: ``interval: 5`` was refused with a 25s deadline; now it loads."""
    assert seconds(target(interval=5).timeouts) == {
        "dns": 2,
        "connect": 3,
        "tls": 5,
        "http": 5,
        "deadline": 5,
    }


def test_a_short_interval_shrinks_every_unset_timeout() -> None:
    assert seconds(target(interval="2s").timeouts) == {
        "dns": 2,
        "connect": 2,
        "tls": 2,
        "http": 2,
        "deadline": 2,
    }
    assert set(seconds(target(interval="500ms").timeouts).values()) == {0.5}


def test_a_long_interval_keeps_the_default_deadline() -> None:
    assert target(interval="5m").timeouts.deadline == 25
    assert target().timeouts == Timeouts(dns=2, connect=3, tls=5, http=5, deadline=25)


def test_an_explicit_deadline_shrinks_the_unset_stages_only() -> None:
    timeouts = target(interval=10, timeouts={"deadline": "4s", "dns": "500ms"}).timeouts
    assert seconds(timeouts) == {"dns": 0.5, "connect": 3, "tls": 4, "http": 4, "deadline": 4}
    assert timeouts.model_fields_set == {"deadline", "dns"}


def test_an_explicit_deadline_may_equal_the_interval_and_a_stage_the_deadline() -> None:
    assert seconds(target(interval="10s", timeouts={"deadline": 10, "tls": "10s"}).timeouts)["tls"] == 10


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"interval": 10, "timeouts": {"deadline": "20s"}},
            "targets[0].timeouts.deadline: 20s is longer than the interval (10s)",
        ),
        (
            {"interval": 5, "timeouts": {"tls": 10}},
            "targets[0].timeouts.tls: 10s is longer than timeouts.deadline (5s, fitted to the interval)",
        ),
        (
            {"timeouts": {"deadline": 3, "connect": "3s500ms"}},
            "targets[0].timeouts.connect: 3.5s is longer than timeouts.deadline (3s)",
        ),
        (
            {"timeouts": {"http": "30s"}},
            "targets[0].timeouts.http: 30s is longer than timeouts.deadline (25s, the default)",
        ),
    ],
)
def test_an_explicit_value_that_does_not_fit_names_both(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        target(**fields)
    assert str(caught.value) == f"config: {message}"


def test_fitting_is_idempotent_and_keeps_what_was_set() -> None:
    timeouts = Timeouts.model_validate({"tls": 1})
    once = timeouts.fitted(0.5 + 1)
    assert seconds(once) == {"dns": 1.5, "connect": 1.5, "tls": 1, "http": 1.5, "deadline": 1.5}
    assert once.fitted(1.5) == once and once.fitted(1.5).model_fields_set == {"tls"}


def test_without_an_interval_only_the_stages_fit_the_deadline() -> None:
    assert seconds(Timeouts.model_validate({"deadline": 60}).fitted(None))["deadline"] == 60
    assert seconds(Timeouts.model_validate({"deadline": 1}).fitted(None))["tls"] == 1
    assert Timeouts().fitted(None) == Timeouts()


# --------------------------------------------------------------------------- defaults


def config(defaults: dict[str, Any], *targets: dict[str, Any]) -> Any:
    data = {
        "defaults": defaults,
        "targets": [{"url": f"https://t{i}.corp.example/", **t} for i, t in enumerate(targets)],
    }
    return build_config(data)


def test_an_interval_in_defaults_fits_each_unset_deadline() -> None:
    www, api = config({"interval": 5}, {}, {"interval": "1m"}).targets
    assert (www.timeouts.deadline, api.timeouts.deadline) == (5, 25)


def test_a_short_target_interval_fits_under_long_defaults() -> None:
    (fast,) = config({"interval": "5m"}, {"interval": "2s"}).targets
    assert seconds(fast.timeouts) == {"dns": 2, "connect": 2, "tls": 2, "http": 2, "deadline": 2}


def test_a_deadline_set_in_defaults_stays_explicit_in_each_target() -> None:
    with pytest.raises(ConfigError) as caught:
        config({"timeouts": {"deadline": "20s"}}, {}, {"interval": "10s"})
    assert str(caught.value) == (
        "config: targets[1].timeouts.deadline: 20s (set in defaults) is longer than the interval (10s)"
    )


def test_a_target_may_override_what_defaults_set() -> None:
    (only,) = config(
        {"timeouts": {"deadline": "20s", "tls": 8}}, {"interval": 5, "timeouts": {"deadline": 5, "tls": 4}}
    ).targets
    assert seconds(only.timeouts) == {"dns": 2, "connect": 3, "tls": 4, "http": 5, "deadline": 5}


def test_a_stage_set_in_defaults_is_named_so() -> None:
    with pytest.raises(ConfigError) as caught:
        config({"timeouts": {"tls": 8}}, {"timeouts": {"deadline": 5}})
    assert str(caught.value) == (
        "config: targets[0].timeouts.tls: 8s (set in defaults) is longer than timeouts.deadline (5s)"
    )


def test_defaults_durations_merge_key_by_key() -> None:
    (only,) = config(
        {"timeouts": {"dns": "500ms"}}, {"interval": "1m30s", "timeouts": {"http": "1s"}}
    ).targets
    assert only.interval == 90
    assert seconds(only.timeouts) == {"dns": 0.5, "connect": 3, "tls": 5, "http": 1, "deadline": 25}


# --------------------------------------------------------------------------- probe check URL


def adhoc(*argv: str) -> Any:
    args = build_parser().parse_args(["check", "https://www.corp.example/", *argv])
    return config_from_args(args).targets[0]


def test_adhoc_timeout_takes_a_duration_and_the_stages_fit_it() -> None:
    assert set(seconds(adhoc("--timeout", "500ms").timeouts).values()) == {0.5}
    assert seconds(adhoc("--timeout", "1m30s").timeouts) == {
        "dns": 2,
        "connect": 3,
        "tls": 5,
        "http": 5,
        "deadline": 90,
    }


def test_adhoc_check_is_not_bound_by_an_interval() -> None:
    """One check has no interval: --timeout may exceed the 30s default interval."""
    assert adhoc("--timeout", "2m").timeouts.deadline == 120
    assert adhoc().timeouts.deadline == 25  # the default stays 25 s


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 sec", f"--timeout: '5 sec' is not a duration {FORM}"),
        ("0", "--timeout: must be greater than 0 (got '0')"),
        ("2h", "--timeout: must be at most 1h (got '2h')"),
    ],
)
def test_adhoc_timeout_errors_name_the_flag(value: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        adhoc("--timeout", value)
    assert str(caught.value) == message


def test_duration_argument_for_other_options() -> None:
    assert duration_argument("1m30s") == 90
    assert duration_argument("2.5") == 2.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'soon' is not a duration \(e\.g\. 5s"):
        duration_argument("soon")
