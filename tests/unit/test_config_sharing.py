"""Equal config values are one object per loaded config (memory per target), and only those."""

from __future__ import annotations

from pathlib import Path

from probe.config import build_config, parse_config

DEFAULTS = {
    "resolvers": ["127.0.0.53"],
    "expect_networks": ["127.0.0.0/8"],
    "ca_file": "ca.pem",
    "interval": 30,
    "timeouts": {"http": 4},
}


def test_values_inherited_from_defaults_are_shared_between_targets() -> None:
    config = build_config(
        {
            "defaults": DEFAULTS,
            "targets": [{"name": f"t{i}", "url": "https://www.corp.example/"} for i in range(3)],
        },
        Path("/etc/probe/probe.yaml"),
    )
    first, *others = config.targets
    for other in others:
        for field in ("resolvers", "expect_networks", "ca_file", "interval", "timeouts", "url", "hostname"):
            assert getattr(other, field) is getattr(first, field), field
        assert other.model_fields_set is first.model_fields_set
        assert other.name != first.name
    assert first.ca_file == Path("/etc/probe/ca.pem")
    assert first.timeouts.http == 4.0 and first.timeouts.model_fields_set == {"http"}


HEADER = {"backend": {"header": "X-Backend"}}


def test_values_that_differ_in_type_sign_or_given_fields_are_not_shared() -> None:
    config = build_config(
        {
            "targets": [
                {"name": "a", "url": "https://a.corp.example/", "timeouts": {"http": 5}},
                # The same values as a's, but none given: fitted later from other fields.
                {"name": "b", "url": "https://a.corp.example/"},
                {"name": "c", "url": "https://a.corp.example/", "expect_backends": 2, **HEADER},
                {"name": "d", "url": "https://a.corp.example/", "expect_backends": ["2"], **HEADER},
                {"name": "e", "url": "https://a.corp.example/", "cert_expiry_warning_days": 0.0},
                {"name": "f", "url": "https://a.corp.example/", "cert_expiry_warning_days": -0.0},
            ],
        }
    )
    a, b, c, d, e, f = config.targets
    assert a.timeouts == b.timeouts  # equal values …
    assert a.timeouts is not b.timeouts  # … but a gave http, b did not
    assert a.timeouts.model_fields_set == {"http"} and b.timeouts.model_fields_set == set()
    assert (c.expect_backends, d.expect_backends) == (2, ("2",))
    assert a.url is b.url
    assert repr(e.cert_expiry_warning_days) == "0.0" and repr(f.cert_expiry_warning_days) == "-0.0"


def test_a_copy_with_an_update_leaves_the_other_targets_alone() -> None:
    config = build_config(
        {"targets": [{"name": f"t{i}", "url": "https://www.corp.example/"} for i in range(2)]}
    )
    first, second = config.targets
    assert first.model_fields_set is second.model_fields_set
    copied = first.model_copy(update={"platform": "aws"})
    assert copied.platform == "aws" and "platform" in copied.model_fields_set
    assert "platform" not in first.model_fields_set and "platform" not in second.model_fields_set
    assert second.platform == "generic"


def test_sharing_keeps_targets_equal_across_loads_and_different_when_changed() -> None:
    text = (
        "defaults: {resolvers: ['127.0.0.53'], timeouts: {http: 4}}\n"
        "targets:\n  - {name: a, url: 'https://a.corp.example/'}\n  - {name: b, url: 'https://b.corp.example/'}\n"
    )
    once, again = parse_config(text), parse_config(text)
    assert once.targets == again.targets  # a reload sees them unchanged
    assert once.targets[0].timeouts is once.targets[1].timeouts
    assert once.targets[0].timeouts is not again.targets[0].timeouts  # one config's values only
    changed = parse_config(text.replace("http: 4", "http: 3"))
    assert changed.targets[0] != once.targets[0]
    assert changed.targets[0].timeouts.http == 3.0 and once.targets[0].timeouts.http == 4.0
