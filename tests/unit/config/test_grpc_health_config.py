"""The ``grpc_health`` block: what it sets, and the settings it cannot be combined with."""

from __future__ import annotations

import pytest

from probe.config.errors import ConfigError
from probe.config.load import parse_config


def target(text: str) -> str:
    return f"targets: [{{url: 'https://grpc.corp.example/', {text}}}]"


def test_grpc_health_speaks_http2_alone_and_asks_for_the_service() -> None:
    config = parse_config(target("grpc_health: {service: shop.Cart}, backend: {header: x-backend}"))
    (checked,) = config.targets
    assert checked.grpc_health is not None and checked.grpc_health.service == "shop.Cart"
    assert checked.http_version == "2"  # both stages offer h2 alone in ALPN, as gRPC clients


def test_an_empty_block_asks_for_the_whole_server() -> None:
    (checked,) = parse_config(target("grpc_health: {}")).targets
    assert checked.grpc_health is not None and checked.grpc_health.service == ""


def test_grpc_health_from_defaults() -> None:
    config = parse_config(
        "defaults: {grpc_health: {service: x}}\ntargets: [{url: 'https://g.corp.example/'}]"
    )
    assert config.targets[0].grpc_health is not None and config.targets[0].http_version == "2"


@pytest.mark.parametrize(
    ("fields", "url", "message"),
    [
        ("http_version: '1.1'", "https://g.corp.example/", "gRPC needs HTTP/2, not http_version: 1.1"),
        ("", "http://g.corp.example/", "needs an https:// URL (gRPC over plain TCP, h2c, is not supported)"),
        ("", "https://g.corp.example/api", "the URL's path must be / (it is '/api')"),
        ("body_regex: ok", "https://g.corp.example/", "the answers are protobuf, not text"),
        ("backend: {body_regex: 'by (.+)'}", "https://g.corp.example/", "the answers are protobuf, not text"),
    ],
)
def test_grpc_health_refuses_what_grpc_cannot_do(fields: str, url: str, message: str) -> None:
    extra = f", {fields}" if fields else ""
    with pytest.raises(ConfigError) as caught:
        parse_config(f"targets: [{{url: '{url}', grpc_health: {{service: x}}{extra}}}]")
    assert message in str(caught.value)
    assert "grpc_health" in str(caught.value)


def test_a_service_name_with_control_characters_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not hold control characters"):
        parse_config(target('grpc_health: {service: "a\\x1bb"}'))
