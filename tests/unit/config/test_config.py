"""Config loading: every error message, checked against data files, and the parsed values.

Each ``tests/data/config/invalid-*.yaml`` starts with ``# error: <message>``; loading it
must fail with exactly ``<path>: <message>`` (blackbox_exporter style).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from probe.config.errors import ConfigError
from probe.config.fields import LinearRegex
from probe.config.load import load_config, parse_config
from probe.config.models import Config, HeaderValue, Timeouts
from probe.config.values import parse_resolver

DATA = Path(__file__).resolve().parents[2] / "data" / "config"
GOOD = DATA / "good.yaml"
INVALID = sorted(DATA.glob("invalid-*.yaml"))

# Files whose expected message is the correct one but probe/ does not produce it yet;
# strict, so the marker must go once the bug is fixed.
KNOWN_BUGS: dict[str, str] = {}


def _cases() -> list[object]:
    return [
        pytest.param(
            path,
            id=path.stem,
            marks=pytest.mark.xfail(
                strict=True, raises=(AssertionError, pytest.fail.Exception), reason=KNOWN_BUGS[path.name]
            ),
        )
        if path.name in KNOWN_BUGS
        else pytest.param(path, id=path.stem)
        for path in INVALID
    ]


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must start with '# error: <message>'"
    return first.removeprefix("# error: ")


def test_every_invalid_file_is_found_and_has_an_expected_message() -> None:
    assert len(INVALID) >= 40
    assert set(KNOWN_BUGS) <= {p.name for p in INVALID}
    for path in INVALID:
        assert _expected(path)


@pytest.mark.parametrize("path", _cases())
def test_invalid_config_message(path: Path) -> None:
    expected = _expected(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {expected}"
    assert "\n" not in str(caught.value)
    assert caught.value.where == str(path)


def test_unreadable_file() -> None:
    missing = DATA / "no-such-file.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: no such file"


def test_shipped_example_config_loads() -> None:
    example = DATA.parent.parent.parent / "config" / "probe.example.yaml"
    assert [t.name for t in load_config(example).targets]


def test_error_without_a_file_names_config() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("targets: []\n")
    assert str(caught.value) == "config: targets: must be a non-empty list of targets"
    assert caught.value.field == "targets"
    assert caught.value.message == "must be a non-empty list of targets"


# --------------------------------------------------------------------------- good.yaml


@pytest.fixture(scope="module")
def good() -> Config:
    return load_config(GOOD)


def test_good_targets_and_listen(good: Config) -> None:
    assert good.path == GOOD
    assert good.listen == "[::1]:9798"
    assert [t.name for t in good.targets] == ["www", "api.corp.example"]


def test_metrics_histograms_are_opt_in(good: Config) -> None:
    assert good.metrics.histograms is True
    plain = parse_config("targets: [{url: 'https://a.corp.example/'}]")
    assert plain.metrics.histograms is False
    empty = parse_config("metrics:\ntargets: [{url: 'https://a.corp.example/'}]")
    assert empty.metrics.histograms is False


def test_hostname_is_normalized_and_port_and_path_come_from_the_url(good: Config) -> None:
    www, api = good.targets
    assert www.url == "https://WWW.Corp.Example.:8443/health?full=1"
    assert (www.hostname, www.port, www.path) == ("www.corp.example", 8443, "/health?full=1")
    assert (api.hostname, api.port, api.path) == ("api.corp.example", 443, "/")
    # A target without a name is named after its (normalized) hostname.
    assert api.name == "api.corp.example"
    assert api.expect_same_addresses_as == "api-lb.corp.example"


def test_timeouts_merge_key_by_key(good: Config) -> None:
    www, api = good.targets
    assert www.timeouts == Timeouts(dns=1, connect=2, tls=5, http=4, deadline=50)
    assert api.timeouts == Timeouts(dns=1, connect=2, tls=5, http=5, deadline=15)


def test_headers_merge_key_by_key(good: Config) -> None:
    www, api = good.targets
    assert www.headers == {
        "Authorization": HeaderValue(value="Bearer not-a-real-token"),
        "X-Api-Key": HeaderValue(value="k-123", secret=True),
        "X-Env": HeaderValue(value="production"),
        "X-Retry": HeaderValue(value="3"),
    }
    assert api.headers["X-Env"] == HeaderValue(value="staging")
    assert set(api.headers) == {"Authorization", "X-Api-Key", "X-Env"}


def test_scalar_defaults_apply_unless_overridden(good: Config) -> None:
    www, api = good.targets
    assert (www.interval, api.interval) == (60, 20)
    assert (www.ip_family, api.ip_family) == ("both", "ipv4")
    assert www.cert_expiry_warning_days == api.cert_expiry_warning_days == 21
    assert www.requests_per_address == api.requests_per_address == 6
    assert (www.reuse_connections, api.reuse_connections) == (False, True)
    assert (www.max_body_bytes, api.max_body_bytes) == (4096, 64 * 1024)
    assert www.ca_file is None and api.ca_file == Path("/etc/probe/corp-root.pem")
    assert www.insecure_skip_verify is False


def test_min_tls_version_from_a_yaml_float(good: Config) -> None:
    www, api = good.targets
    assert www.min_tls_version == "1.3"
    assert api.min_tls_version == "1.2"


def test_ocsp_off_unquoted_is_off() -> None:
    # YAML 1.1 reads an unquoted off (and no, false) as a boolean; it is the documented value.
    config = parse_config(
        "targets:\n"
        "  - {name: a, url: 'https://a.corp.example/', ocsp: off}\n"
        "  - {name: b, url: 'https://b.corp.example/', ocsp: 'off'}\n"
        "  - {name: c, url: 'https://c.corp.example/', ocsp: staple}\n"
        "defaults: {ocsp: no}\n"
    )
    assert [t.ocsp for t in config.targets] == ["off", "off", "staple"]


def test_resolvers_and_networks(good: Config) -> None:
    www, _ = good.targets
    assert www.resolvers == (("10.0.0.53", 53), ("10.0.1.53", 5353), ("fd00::53", 53))
    assert www.expect_networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_defaults_when_nothing_is_set() -> None:
    target = parse_config("targets:\n  - url: https://www.corp.example\n").targets[0]
    assert target.path == "/"
    assert target.resolvers is None
    assert [str(n) for n in target.expect_networks] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ]
    assert target.min_tls_version == "1.2"
    assert target.valid_status_codes == ((200, 299),)
    assert target.status_codes_text() == "200-299"
    assert target.timeouts == Timeouts(dns=2, connect=3, tls=5, http=5, deadline=25)


def test_status_codes(good: Config) -> None:
    www, _ = good.targets
    assert www.valid_status_codes == ((200, 299), (301, 301))
    assert www.status_codes_text() == "200-299, 301"
    assert [code for code in (199, 200, 299, 300, 301, 302) if www.status_accepted(code)] == [200, 299, 301]


def test_expect_backends_as_list_and_as_count(good: Config) -> None:
    www, api = good.targets
    assert www.backend is not None and www.backend.header == "X-Backend"
    assert www.expected_backend_names == ("web-1", "web-2", "web-3")
    assert www.expected_backend_count == 3
    assert api.backend is not None and api.backend.body_regex is not None
    assert api.backend.body_regex.pattern == r"served-by: (\S+)"
    assert api.expected_backend_names == ()
    assert api.expected_backend_count == 2


def test_body_regex_is_compiled(good: Config) -> None:
    www, api = good.targets
    assert isinstance(www.body_regex, LinearRegex)  # RE2: linear time
    assert www.body_regex.search(b'{"status": "ok"}') is not None
    assert api.body_regex is None


def test_secret_headers(good: Config) -> None:
    www, _ = good.targets
    assert www.is_secret_header("X-Api-Key") is True
    assert www.is_secret_header("X-Env") is False
    assert www.is_secret_header("X-Not-Configured") is False
    # Always secret, whatever the config says and whatever the case.
    assert www.is_secret_header("Authorization") is True
    assert www.is_secret_header("authorization") is True
    assert www.is_secret_header("Proxy-Authorization") is True
    assert www.is_secret_header("Cookie") is True


def test_secret_header_lookup_ignores_case(good: Config) -> None:
    www, _ = good.targets
    assert www.is_secret_header("x-api-key") is True


# --------------------------------------------------------------------------- select


def test_select_keeps_the_order_given(good: Config) -> None:
    selected = good.select(["api.corp.example", "www"])
    assert [t.name for t in selected.targets] == ["api.corp.example", "www"]
    assert selected.listen == good.listen


def test_select_unknown_target_suggests_a_name(good: Config) -> None:
    with pytest.raises(ConfigError) as caught:
        good.select(["www", "wwww"])
    assert str(caught.value) == (
        f"{GOOD}: no target named 'wwww' (did you mean 'www'?); targets: www, api.corp.example"
    )


def test_select_unknown_target_without_a_close_name() -> None:
    config = parse_config("targets:\n  - url: https://www.corp.example/\n")
    with pytest.raises(ConfigError) as caught:
        config.select(["database"])
    assert str(caught.value) == "config: no target named 'database'; targets: www.corp.example"


# --------------------------------------------------------------------------- resolvers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        (" 10.0.0.53 ", ("10.0.0.53", 53)),
        ("10.0.0.53:5353", ("10.0.0.53", 5353)),
        ("fd00::53", ("fd00::53", 53)),
        ("FD00:0:0::0053", ("fd00::53", 53)),
        ("[fd00::53]", ("fd00::53", 53)),
        ("[fd00::53]:5353", ("fd00::53", 5353)),
        # One reading only: what precedes the last ':' is no IPv6 address.
        ("2001:4860:4860::8888", ("2001:4860:4860::8888", 53)),
        ("1:2:3:4:5:6:7:53", ("1:2:3:4:5:6:7:53", 53)),
        ("::53", ("::53", 53)),
        ("::1:0", ("::1:0", 53)),  # port 0 is no port
        ("[::1:53]", ("::1:53", 53)),
        ("[::1]:53", ("::1", 53)),
    ],
)
def test_parse_resolver(text: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ns1.corp.example", "'ns1.corp.example' is not an IP address (resolvers are given by address)"),
        (
            "10.0.0.53:0",
            "'10.0.0.53:0' has no valid port (1-65535) after ':' (resolvers are given by address)",
        ),
        (
            "10.0.0.53:dns",
            "'10.0.0.53:dns' has no valid port (1-65535) after ':' (resolvers are given by address)",
        ),
        (
            "[fd00::53]:65536",
            "'[fd00::53]:65536' has no valid port (1-65535) after ':' (resolvers are given by address)",
        ),
        ("[fd00::53]53", "'[fd00::53]53' is not IP, IP:port or [IPv6]:port (resolvers are given by address)"),
        ("[fd00::53", "'[fd00::53' is not IP, IP:port or [IPv6]:port (resolvers are given by address)"),
        (
            "::1:53",
            "'::1:53' is ambiguous: the IPv6 address ::1:53, or port 53 on ::1? "
            "Write [::1]:53 for the port, or [::1:53] for the address",
        ),
        (
            "fd00::a:5353",
            "'fd00::a:5353' is ambiguous: the IPv6 address fd00::a:5353, or port 5353 on fd00::a? "
            "Write [fd00::a]:5353 for the port, or [fd00::a:5353] for the address",
        ),
        (
            "::1:053",
            "'::1:053' is ambiguous: the IPv6 address ::1:53, or port 53 on ::1? "
            "Write [::1]:53 for the port, or [::1:53] for the address",
        ),
    ],
)
def test_parse_resolver_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_resolver(text)
    assert str(caught.value) == message


def test_header_names_differing_in_case_are_one_header() -> None:
    with pytest.raises(ConfigError, match="'X-A' and 'x-a' are the same header"):
        parse_config("targets: [{url: 'https://a.corp.example/', headers: {X-A: '1', x-a: '2'}}]")
    config = parse_config(
        "defaults: {headers: {X-Token: a, X-Keep: k}}\n"
        "targets: [{url: 'https://a.corp.example/', headers: {x-token: b}}]"
    )
    assert {k: v.value for k, v in config.targets[0].headers.items()} == {"X-Keep": "k", "x-token": "b"}


def test_header_value_must_be_text() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("targets: [{url: 'https://a.corp.example/', headers: {X-Y: true}}]")
    assert (
        str(caught.value) == "config: targets[0].headers.X-Y: must be a string, or {value: ..., secret: true}"
    )


def test_ca_file_must_be_a_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("targets: [{url: 'https://a.corp.example/', ca_file: [a]}]")
    assert str(caught.value) == "config: targets[0].ca_file: must be the path of a PEM file"


def test_internationalized_hostname_uses_idna_2008() -> None:
    config = parse_config("targets: [{url: 'https://straße.corp.example/'}]")
    assert config.targets[0].hostname == "xn--strae-oqa.corp.example"


def test_relative_ca_file_is_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "probe.yaml").write_text(
        "targets: [{url: 'https://a.corp.example/', ca_file: certs/ca.pem}]\n"
    )
    assert load_config(tmp_path / "probe.yaml").targets[0].ca_file == tmp_path / "certs" / "ca.pem"


def test_merge_keys_may_override(tmp_path: Path) -> None:
    config = parse_config(
        "targets:\n"
        "  - &base {name: a, url: 'https://a.corp.example/', requests_per_address: 2}\n"
        "  - <<: *base\n"
        "    name: b\n"
    )
    assert [(t.name, t.requests_per_address) for t in config.targets] == [("a", 2), ("b", 2)]


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: larger than 1 MiB; is it the right file?"


def test_listen_needs_an_ip_and_a_port() -> None:
    for listen, message in [
        (":9798", "':9798' is not an IP address with a port"),
        ("::1", "'::1' needs a port, as in 127.0.0.1:9798"),
        ("localhost:9798", "'localhost:9798' is not an IP address with a port"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_config(f"listen: '{listen}'\ntargets: [{{url: 'https://a.corp.example/'}}]")
        assert str(caught.value) == f"config: listen: {message} (0.0.0.0:9798 listens on all interfaces)"


# --------------------------------------------------------------------------- pinned addresses


def test_addresses_pin_the_name() -> None:
    config = parse_config(
        "targets:\n  - url: https://www.corp.example:8443/health\n"
        "    addresses: [10.0.2.31, 'fd00::5', 10.0.1.17]\n"
    )
    target = config.targets[0]
    assert target.hostname == "www.corp.example" and target.port == 8443 and target.name == "www.corp.example"
    assert target.addresses == tuple(ipaddress.ip_address(a) for a in ("10.0.2.31", "fd00::5", "10.0.1.17"))
    assert target.pinned_by == "addresses" and target.server_name is None


def test_a_resolved_target_is_not_pinned() -> None:
    target = parse_config("targets:\n  - url: https://www.corp.example/\n").targets[0]
    assert target.addresses is None and target.pinned_by is None


def test_ip_literal_url_with_server_name() -> None:
    config = parse_config(
        "targets:\n  - url: https://[fd00::1]:8443/health\n    server_name: WWW.Corp.Example.\n"
    )
    target = config.targets[0]
    assert target.hostname == "www.corp.example" and target.name == "www.corp.example"
    assert target.port == 8443 and target.path == "/health"
    assert target.addresses == (ipaddress.ip_address("fd00::1"),)
    assert target.pinned_by == "server_name"
    assert target.url == "https://[fd00::1]:8443/health"


@pytest.mark.parametrize(
    ("url", "hostname", "name"),
    [
        ("https://10.0.1.17/health", "10.0.1.17", "10.0.1.17"),
        ("https://[FD00:0::1]:8443/", "fd00::1", "fd00::1"),
        ("https://[::1]:8443/", "::1", "0::1"),
    ],
)
def test_ip_literal_url_without_server_name_is_its_own_hostname(url: str, hostname: str, name: str) -> None:
    """The address itself is verified (as curl does); no DNS query, no SNI."""
    target = parse_config(f"targets:\n  - url: '{url}'\n").targets[0]
    assert target.hostname == hostname and target.name == name and target.server_name is None
    assert target.addresses == (ipaddress.ip_address(hostname),) and target.pinned_by == "url"
    again = Config(targets=(target,)).targets[0]
    assert again.hostname == hostname and again.pinned_by == "url"


def test_pinned_target_survives_revalidation() -> None:
    """Config validates its targets again; the derived pin must not turn into an error."""
    target = parse_config(
        "targets:\n  - url: https://10.0.1.17/\n    server_name: www.corp.example\n"
    ).targets[0]
    again = Config(targets=(target,)).targets[0]
    assert again.addresses == (ipaddress.ip_address("10.0.1.17"),) and again.pinned_by == "server_name"


def test_a_url_longer_than_httpx_can_send_is_refused_at_load() -> None:
    longest = "https://www.corp.example/" + "a" * (65_000 - len("https://www.corp.example/"))
    assert parse_config(f"targets: [{{url: '{longest}'}}]").targets[0].path == longest[24:]
    with pytest.raises(ConfigError) as caught:
        parse_config(f"targets: [{{url: '{longest}a'}}]")
    assert (
        str(caught.value)
        == "config: targets[0].url: is 65,001 characters long; a URL may have at most 65,000"
    )


def test_non_ascii_in_the_path_is_kept_for_httpx_to_percent_encode() -> None:
    target = parse_config("targets: [{url: 'https://straße.example/café?q=ü'}]").targets[0]
    assert (target.hostname, target.path) == ("xn--strae-oqa.example", "/café?q=ü")
