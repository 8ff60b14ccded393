"""The ad hoc options of ``probe check``: one table drives the parser, the target and messages."""

from __future__ import annotations

import io
import ipaddress
from contextlib import redirect_stdout

import pytest

from probe.cli.adhoc import ADHOC, _flag_for_field, config_from_args
from probe.cli.check import _check_watch_options
from probe.cli.errors import UsageError
from probe.cli.parser import build_parser
from probe.config.models import TargetConfig

A1, A2 = ipaddress.ip_address("127.0.10.1"), ipaddress.ip_address("127.0.10.2")

# A value for each option, and the target field value it must produce.
SAMPLES = {
    "--resolver": (["127.0.53.1:5353"], "resolvers", ("127.0.53.1", 5353)),
    "--resolve": (["www.corp.example:443:127.0.10.1,127.0.10.2"], "addresses", (A1, A2)),
    "--server-name": ("www.corp.example", "server_name", "www.corp.example"),
    "--ca-file": (None, "ca_file", None),
    "--cert": ("client.crt", "tls_client", None),
    "--key": ("client.key", "tls_client", None),
    "--key-password-file": ("client.pass", "tls_client", None),
    "--expect-network": (["127.0.0.0/8"], "expect_networks", None),
    "--expect-same-addresses-as": ("alb.corp.example", "expect_same_addresses_as", "alb.corp.example"),
    "--expect-backends": ("web-1, web-2", "expect_backends", ("web-1", "web-2")),
    "--backend-header": ("X-Backend", "backend", None),
    "--backend-regex": (r"served by (\S+)", "backend", None),
    "--requests": ("7", "requests_per_address", 7),
    "--ip-family": ("both", "ip_family", "both"),
    "--min-tls-version": ("1.3", "min_tls_version", "1.3"),
    "--http-version": ("2", "http_version", "2"),
    "--header": (["X-Probe: 1"], "headers", None),
    "--timeout": ("4", "timeouts", None),
    "--insecure": (True, "insecure_skip_verify", True),
    "--ocsp": ("staple", "ocsp", "staple"),
    "--balancing": ("weighted_random", "balancing", "weighted_random"),
    "--expect-redirect": ("https", "expect_redirect", "https"),
    "--grpc-health": (True, "grpc_health", None),
    "--grpc-service": ("shop.Cart", "grpc_health", None),
}


def test_every_option_of_the_table_is_in_the_help() -> None:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as done:
        build_parser().parse_args(["check", "--help"])
    assert done.value.code == 0
    for option in ADHOC:
        assert option.flag in out.getvalue()
    assert {o.flag for o in ADHOC} == set(SAMPLES)  # a new option needs a sample here


def argv_for(flag: str) -> list[str]:
    value = SAMPLES[flag][0]
    if value is True:
        return [flag]
    if isinstance(value, list):
        return [part for item in value for part in (flag, item)]
    return [flag, value]


@pytest.mark.parametrize("flag", [f for f in SAMPLES if f != "--ca-file"])
def test_each_option_fills_its_target_field(flag: str) -> None:
    extra = ["--backend-header", "X-Backend"] if flag == "--expect-backends" else []
    if flag in ("--key", "--key-password-file"):  # a key belongs to a certificate
        extra = ["--cert", "client.crt"]
    # --server-name is for a URL whose host is an IP address.
    url = "https://127.0.10.1/" if flag == "--server-name" else "https://www.corp.example/"
    if flag == "--expect-redirect":  # for the plain HTTP listener
        url = "http://www.corp.example/"
    args = build_parser().parse_args(["check", url, *argv_for(flag), *extra])
    target = config_from_args(args).targets[0]
    _, field, expected = SAMPLES[flag]
    if expected is not None:
        value = getattr(target, field)
        if field == "resolvers":
            value = value[0]
        assert value == expected
    if flag == "--backend-header":
        assert target.backend is not None and target.backend.header == "X-Backend"
    if flag == "--header":
        assert target.headers["X-Probe"].value == "1"
    if flag == "--timeout":
        assert target.timeouts.deadline == 4 and target.timeouts.tls == 4
    if field == "tls_client":
        assert target.tls_client is not None and str(target.tls_client.cert_file) == "client.crt"
        key = {"--key": "key_file", "--key-password-file": "key_password_file"}.get(flag)
        if key is not None:
            assert str(getattr(target.tls_client, key)) == SAMPLES[flag][0]
    if flag in ("--grpc-health", "--grpc-service"):
        assert target.grpc_health is not None and target.http_version == "2"
        assert target.grpc_health.service == ("shop.Cart" if flag == "--grpc-service" else "")


def test_grpc_service_with_grpc_health_asks_for_that_service() -> None:
    target = adhoc("https://www.corp.example/", "--grpc-health", "--grpc-service", "shop.Cart")
    assert target.grpc_health is not None and target.grpc_health.service == "shop.Cart"


def test_grpc_health_refusals_name_the_flags() -> None:
    with pytest.raises(
        UsageError, match=r"^--grpc-health/--grpc-service: gRPC needs HTTP/2, not http_version: 1.1$"
    ):
        adhoc("https://www.corp.example/", "--grpc-health", "--http-version", "1.1")


@pytest.mark.parametrize("flag", list(SAMPLES))
def test_each_option_is_refused_with_config(flag: str) -> None:
    argv = argv_for(flag) if SAMPLES[flag][0] is not None else [flag, "ca.pem"]
    args = build_parser().parse_args(["check", "--config", "probe.yaml", *argv])
    with pytest.raises(UsageError, match=f"^{flag} cannot be combined with --config"):
        config_from_args(args)


def test_backend_header_and_regex_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="not allowed with argument --backend-header"):
        build_parser().parse_args(
            ["check", "https://a.corp.example/", "--backend-header", "X", "--backend-regex", "(x)"]
        )


def test_errors_name_the_option_that_filled_the_field() -> None:
    assert _flag_for_field("backend") == "--backend-header/--backend-regex"
    assert _flag_for_field("requests_per_address") == "--requests"
    assert _flag_for_field("url") == "URL"
    assert _flag_for_field("listen") is None


# --------------------------------------------------------------------------- --resolve


def adhoc(*argv: str) -> TargetConfig:
    args = build_parser().parse_args(["check", *argv])
    return config_from_args(args).targets[0]


def test_resolve_entries_add_up_each_address_once_and_name_the_flag() -> None:
    target = adhoc(
        "https://WWW.corp.example.:8443/",
        "--resolve",
        "www.corp.example:8443:127.0.10.2,[::1]",
        "--resolve",
        "www.CORP.example.:8443:127.0.10.1,127.0.10.2",
    )
    assert target.addresses == (A2, ipaddress.ip_address("::1"), A1)
    assert target.pinned_by == "--resolve"


def test_resolve_default_port_is_443() -> None:
    target = adhoc("https://www.corp.example/", "--resolve", "www.corp.example:443:127.0.10.1")
    assert target.port == 443 and target.addresses == (A1,)


def test_cert_and_key_fill_one_tls_client() -> None:
    target = adhoc(
        "https://www.corp.example/", "--key", "k.pem", "--cert", "c.pem", "--key-password-file", "p"
    )
    assert target.tls_client is not None
    assert (str(target.tls_client.cert_file), str(target.tls_client.key_file)) == ("c.pem", "k.pem")
    assert str(target.tls_client.key_password_file) == "p"


def test_key_without_cert_names_the_missing_flag() -> None:
    with pytest.raises(UsageError, match=r"^--cert: required$"):
        adhoc("https://www.corp.example/", "--key", "k.pem")


def test_server_name_names_the_flag() -> None:
    target = adhoc("https://127.0.10.1/", "--server-name", "www.corp.example")
    assert target.pinned_by == "--server-name" and target.hostname == "www.corp.example"


def test_server_name_with_a_dns_url_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^--server-name: only for a URL whose host is an IP address"):
        adhoc("https://www.corp.example/", "--server-name", "www.corp.example")


def test_resolve_with_an_ip_url_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^--resolve: cannot be combined with an IP-address URL"):
        adhoc(
            "https://127.0.10.1/",
            "--server-name",
            "www.corp.example",
            "--resolve",
            "127.0.10.1:443:127.0.10.2",
        )


def test_resolve_with_a_bad_url_reports_the_url() -> None:
    with pytest.raises(UsageError, match=r"^URL: 'https://www.corp.example:0/' has an invalid port"):
        adhoc("https://www.corp.example:0/", "--resolve", "www.corp.example:443:127.0.10.1")


@pytest.mark.parametrize("flag", ["--baseline", "--save-baseline"])
def test_baselines_are_refused_with_watch(flag: str) -> None:
    args = build_parser().parse_args(["check", "https://www.corp.example/", "--watch", flag, "b.json"])
    with pytest.raises(UsageError, match=f"^{flag} cannot be combined with --watch"):
        _check_watch_options(args)


@pytest.mark.parametrize(
    ("flag", "text", "seconds"), [("--every", "1m30s", 90.0), ("--max-time", "2h", 7200.0)]
)
def test_watch_durations_take_prometheus_durations(flag: str, text: str, seconds: float) -> None:
    args = build_parser().parse_args(["check", "https://www.corp.example/", "--watch", flag, text])
    assert getattr(args, flag.removeprefix("--").replace("-", "_")) == seconds


def test_abbreviated_options_are_refused_as_curl_refuses_them() -> None:
    # '--watc' once started a watch: a typo must be one line with the closest option.
    with pytest.raises(UsageError, match=r"unrecognized arguments: --watc; did you mean --watch\?"):
        build_parser().parse_args(["check", "https://www.corp.example/", "--watc"])


def test_http_url_ad_hoc_defaults_to_port_80() -> None:
    target = adhoc("http://www.corp.example/health", "--expect-redirect", "https")
    assert (target.scheme, target.port, target.path, target.expect_redirect) == (
        "http",
        80,
        "/health",
        "https",
    )
    assert target.plain


def test_expect_redirect_refused_for_an_https_url() -> None:
    args = build_parser().parse_args(["check", "https://www.corp.example/", "--expect-redirect", "https"])
    with pytest.raises(UsageError, match=r"^--expect-redirect: only for an http:// URL"):
        config_from_args(args)
