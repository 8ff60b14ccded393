"""Property tests: any YAML gives a valid config or one clear line, never a traceback."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.config.errors import ConfigError
from probe.config.load import parse_config
from probe.config.models import Config

GOOD = (Path(__file__).resolve().parents[2] / "data" / "config" / "good.yaml").read_text()
KEYS = [
    "targets",
    "defaults",
    "listen",
    "name",
    "url",
    "resolvers",
    "expect_networks",
    "timeouts",
    "dns",
    "connect",
    "tls",
    "http",
    "deadline",
    "interval",
    "backend",
    "header",
    "body_regex",
    "expect_backends",
    "headers",
    "value",
    "secret",
    "valid_status_codes",
    "max_body_bytes",
    "ip_family",
    "ca_file",
    "min_tls_version",
    "requests_per_address",
    "insecure_skip_verify",
    "body_size_limit",
    "http_version",
]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["https://www.corp.example/", "10.0.0.0/8", "127.0.0.1:53", "2xx", "1.3", "X-Backend"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), children, max_size=6),
    ),
    max_leaves=40,
)


def check(text: str) -> None:
    try:
        result = parse_config(text, Path("fuzz.yaml"))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml"), message
        assert "\n" not in message, message
        assert "Traceback" not in message
        return
    assert isinstance(result, Config)
    assert result.targets


@SETTINGS
@given(st.text(alphabet=string.printable, max_size=400))
def test_random_text(text: str) -> None:
    check(text)


@SETTINGS
@given(documents)
def test_random_documents(document: Any) -> None:
    check(yaml.safe_dump(document))


@SETTINGS
@given(documents.map(lambda d: {"targets": [d] if not isinstance(d, list) else d}))
def test_random_targets(document: Any) -> None:
    check(yaml.safe_dump(document))


@SETTINGS
@given(st.data())
def test_mutated_good_config(data: st.DataObject) -> None:
    text = GOOD
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "duplicate-line"]))
        if action == "delete":
            text = text[:position] + text[position + data.draw(st.integers(1, 20)) :]
        elif action == "insert":
            text = text[:position] + data.draw(st.text(string.printable, max_size=10)) + text[position:]
        elif action == "replace":
            text = (
                text[:position]
                + data.draw(st.sampled_from(list(":-[]{}'\"#&*!|> \n\t0")))
                + text[position + 1 :]
            )
        else:
            lines = text.splitlines(keepends=True)
            index = data.draw(st.integers(0, len(lines) - 1))
            lines.insert(index, lines[index])
            text = "".join(lines)
    check(text)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 10)}]")
    lines.append("targets: [{url: 'https://www.corp.example/', resolvers: *i}]")  # 10**9 values
    with pytest.raises(ConfigError) as caught:
        parse_config("\n".join(lines), Path("bomb.yaml"))
    assert str(caught.value) == (
        "bomb.yaml: the document holds more than 100000 values once YAML aliases are expanded"
    )
