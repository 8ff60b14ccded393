"""Pure parts of the direct backend checks: config, the pin, the hop's result, the correlation."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from probe.config.errors import ConfigError
from probe.config.load import build_config, parse_config
from probe.config.models import TargetConfig
from probe.engine.plan import facts_of
from probe.judge.direct_backends import colon_hex, correlate, hop_result, pin_findings
from probe.model.reasons import Reason, Status
from probe.model.results import AddressResult, CertInfo, DirectBackendResult, Failure, IPAddress, Rotation
from tests.support.builders import DAY, NOW, address_result, cert, dns_result, http_attempt, tls_result

A1 = ipaddress.ip_address("10.0.1.17")
B1 = ipaddress.ip_address("10.0.1.10")
B2 = ipaddress.ip_address("10.0.2.10")
PIN = "ab" * 32


def target(**fields: object) -> TargetConfig:
    data = {
        "url": "https://www.corp.example/",
        "resolvers": ["10.0.0.2"],
        "backend": {"header": "X-Backend"},
        "expect_backends": ["web-1", "web-2"],
        "direct_backends": [
            {"name": "web-1", "url": "https://10.0.1.10/health", "fingerprint_sha256": PIN},
            {"name": "web-2", "url": "https://10.0.2.10:8443/health", "insecure_skip_verify": True},
        ],
        **fields,
    }
    return build_config({"targets": [data]}).targets[0]


def test_fingerprint_is_case_insensitive_and_colons_are_allowed() -> None:
    colons = ":".join(["AB"] * 32)
    t = target(direct_backends=[{"name": "web-1", "url": "https://10.0.1.10/", "fingerprint_sha256": colons}])
    assert t.direct_backends[0].fingerprint_sha256 == PIN
    assert colon_hex(PIN) == colons


def test_direct_target_keeps_the_targets_rules_for_the_backends_url() -> None:
    t = target(requests_per_address=4, valid_status_codes=[200], headers={"X-Probe": "1"})
    hop = t.direct_target(t.direct_backends[1])
    assert (hop.hostname, hop.port, hop.path) == ("www.corp.example", 8443, "/health")
    assert hop.addresses == (B2,) and hop.pinned_by == "direct_backends"
    assert hop.requests_per_address == 1 and hop.expect_backends is None
    assert hop.insecure_skip_verify and hop.ca_file is None
    assert hop.status_codes_text() == "200" and "X-Probe" in hop.headers
    assert hop.cert_expiry_warning_days == 30
    pinned = t.direct_target(t.direct_backends[0])
    assert pinned.insecure_skip_verify  # a pin is a non-verifying handshake, compared afterwards


def test_relative_ca_file_of_a_direct_backend_is_next_to_the_config(tmp_path: Path) -> None:
    text = """
targets:
  - url: https://www.corp.example/
    direct_backends:
      - {name: web-1, url: "https://10.0.1.10/", ca_file: instance-ca.pem}
"""
    config = parse_config(text, tmp_path / "probe.yaml")
    assert config.targets[0].direct_backends[0].ca_file == tmp_path / "instance-ca.pem"


def test_a_ca_file_that_cannot_be_loaded_names_the_direct_backend(tmp_path: Path) -> None:
    from probe.engine.plan import plan

    config = build_config(
        {
            "targets": [
                {
                    "url": "https://www.corp.example/",
                    "resolvers": ["10.0.0.2"],
                    "direct_backends": [
                        {"name": "w", "url": "https://10.0.1.10/", "ca_file": str(tmp_path / "no")}
                    ],
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"targets\[0\]\.direct_backends\[0\]\.ca_file: .*no such file"):
        plan(config)


def leaf(fingerprint: str = PIN, not_after: float = NOW + 365 * DAY) -> CertInfo:
    return cert("web-1.internal", not_after, issuer="web-1.internal", fingerprint=fingerprint)


def test_pin_mismatch_names_both_fingerprints() -> None:
    t = target()
    other = "cd" * 32
    tls = tls_result(B1, (leaf(other),), verified=False)
    (found,) = pin_findings(tls, t.direct_backends[0])
    assert found.reason is Reason.BACKEND_CERT_PIN_MISMATCH and found.backend == "web-1"
    assert colon_hex(other) in found.detail and colon_hex(PIN) in found.detail
    assert pin_findings(tls_result(B1, (leaf(),), verified=False), t.direct_backends[0]) == ()
    assert pin_findings(tls, t.direct_backends[1]) == ()  # no pin


def hop(name: str, failures: tuple[Failure, ...] = (), ip: IPAddress = B1) -> DirectBackendResult:
    return DirectBackendResult(
        name=name,
        url=f"https://{ip}/",
        server_name="www.corp.example",
        trust="insecure_skip_verify",
        pinned_fingerprint=None,
        dns=None,
        address=ip,
        tls=tls_result(ip),
        attempt=None if failures else http_attempt(name),
        failures=failures,
        duration_seconds=0.01,
    )


def lb(*names: str) -> tuple[AddressResult, ...]:
    return (address_result(A1, tls_result(A1), [http_attempt(n) for n in names]),)


def test_each_correlation_and_the_missing_finding_it_replaces() -> None:
    t = target()
    missing = Failure(Reason.BACKEND_MISSING, "backend web-2 answered none", backend="web-2")
    refused = Failure(Reason.TCP_REFUSED, "refused", B2, "web-2")
    down = correlate((hop("web-2", (refused,), B2),), lb("web-1", "web-1"), facts_of(t), (missing,))
    assert [f.reason for f in down] == [Reason.BACKEND_DOWN]
    assert down[0].detail.startswith("web-2 does not answer directly either (tcp_refused at 10.0.2.10:443")
    rotation = correlate((hop("web-2", ip=B2),), lb("web-1", "web-1"), facts_of(t), (missing,))
    assert [f.reason for f in rotation] == [Reason.BACKEND_NOT_IN_ROTATION]
    blocked = correlate((hop("web-2", (refused,), B2),), lb("web-1", "web-2"), facts_of(t), ())
    assert [f.reason for f in blocked] == [Reason.BACKEND_DIRECT_BLOCKED]
    status = Failure(Reason.HTTP_STATUS, "1 of 1 requests: status 503", B2)
    failed = correlate((hop("web-2", (status,), B2),), lb("web-1", "web-2"), facts_of(t), ())
    assert [f.reason for f in failed] == [Reason.BACKEND_DIRECT_FAILED]
    assert correlate((hop("web-2", ip=B2),), lb("web-1", "web-2"), facts_of(t), ()) == ()


def test_a_direct_check_this_host_could_not_open_a_socket_for_blames_no_backend() -> None:
    t = target()
    missing = Failure(Reason.BACKEND_MISSING, "backend web-2 answered none", backend="web-2")
    no_fd = Failure(Reason.CYCLE_FD_LIMIT, "no file descriptor (EMFILE: RLIMIT_NOFILE 1024)", B2, "web-2")
    found = correlate((hop("web-2", (no_fd,), B2),), lb("web-1", "web-1"), facts_of(t), (missing,))
    assert [f.reason for f in found] == [Reason.BACKEND_MISSING, Reason.CYCLE_FD_LIMIT]
    assert (
        found[1].detail
        == "web-2: the direct check could not run: no file descriptor (EMFILE: RLIMIT_NOFILE 1024)"
    )
    assert found[1].backend == "web-2"
    seen = correlate((hop("web-2", (no_fd,), B2),), lb("web-1", "web-2"), facts_of(t), ())
    assert [f.reason for f in seen] == [Reason.CYCLE_FD_LIMIT]


def test_a_missing_backend_without_a_direct_check_keeps_backend_missing() -> None:
    t = target()
    other = Failure(Reason.BACKEND_MISSING, "backend web-3 answered none", backend="web-3")
    kept = correlate((hop("web-2", ip=B2),), lb("web-1", "web-2"), facts_of(t), (other,))
    assert kept == (other,)


def test_count_form_missing_is_replaced_only_when_direct_checks_account_for_it() -> None:
    t = target(expect_backends=3)
    count = Failure(Reason.BACKEND_MISSING, "3 backends expected, 1 answered (seen: web-1 2)")
    one = correlate((hop("web-2", ip=B2),), lb("web-1", "web-1"), facts_of(t), (count,))
    assert count in one  # web-3 is still unexplained
    both = correlate(
        (hop("web-2", ip=B2), hop("web-3", ip=B1)),
        lb("web-1", "web-1"),
        facts_of(t),
        (count,),
    )
    assert count not in both and [f.reason for f in both] == [Reason.BACKEND_NOT_IN_ROTATION] * 2


def test_hop_result_warns_before_expiry_and_zero_days_turns_it_off() -> None:
    t = target()
    backend = t.direct_backends[0]
    soon = leaf(not_after=NOW + 5 * DAY)
    address = address_result(B1, tls_result(B1, (soon,), verified=False), [http_attempt("web-1")])
    settings = t.direct_target(backend)
    result = hop_result(backend, facts_of(settings), dns_result([B1]), address, 0.01, NOW)
    assert [f.reason for f in result.failures] == [Reason.BACKEND_CERT_EXPIRING_SOON]
    assert result.answered and result.status is Status.WARNING and result.pin_matches is True
    quiet = settings.model_copy(update={"cert_expiry_warning_days": 0.0})
    assert hop_result(backend, facts_of(quiet), dns_result([B1]), address, 0.01, NOW).failures == ()


def test_alb_https_targets_example_is_valid() -> None:
    from probe.config.load import load_config

    example = Path(__file__).resolve().parents[3] / "config" / "alb-https-targets.yaml"
    shop = load_config(example).targets[0]
    assert [b.name for b in shop.direct_backends] == ["web-1", "web-2"]
    assert all(b.trust == "fingerprint_sha256" for b in shop.direct_backends)
    assert (
        shop.direct_backends[0].fingerprint_sha256
        == "5e9a07c13bd244186f0ca1972eb8536d41f08c297ae315b6c40d92681fa73e55"
    )


def test_counted_balancing_correlates_with_the_rotation_memory() -> None:
    """weighted_random in the daemon: a backend seen in earlier cycles and unseen in this one
    is not missing; a direct failure is then a warning, never backend_down, until the memory
    reports it missing (24 responses at 4 per cycle and one address: 8 per cycle needs 25)."""
    from probe.judge import balancing as rotation

    t = target(balancing="weighted_random")
    refused = Failure(Reason.TCP_REFUSED, "refused", B2, "web-2")

    def fold(memory: Rotation | None, *names: str) -> Rotation | None:
        return rotation.fold(
            memory,
            lb(*names),
            balancing="weighted_random",
            cross_zone=True,
            names=("web-1", "web-2"),
            count=2,
            requests_per_address=4,
        )

    memory = fold(None, "web-1", "web-2", "web-1", "web-2")
    memory = fold(memory, "web-1", "web-1", "web-1", "web-1")
    assert memory is not None and not memory.is_missing("web-2")
    early = correlate((hop("web-2", (refused,), B2),), lb("web-1"), facts_of(t), (), memory)
    assert [f.reason for f in early] == [Reason.BACKEND_DIRECT_BLOCKED]
    assert early[0].detail.startswith(
        "whether web-2 answers through the load balancer is undecided (not seen in the last 4 "
        "identified responses; with weighted_random it is missing after"
    )
    while not memory.is_missing("web-2"):
        memory = fold(memory, "web-1", "web-1", "web-1", "web-1")
    missing = Failure(Reason.BACKEND_MISSING, "backend web-2 answered none", backend="web-2")
    down = correlate((hop("web-2", (refused,), B2),), lb("web-1"), facts_of(t), (missing,), memory)
    assert [f.reason for f in down] == [Reason.BACKEND_DOWN]
    run = memory.runs("web-2")[0][1]
    assert f"none of the last {run} identified responses through the load balancer" in down[0].detail
    # With any, never missing.
    assert [
        f.reason
        for f in correlate((hop("web-2", ip=B2),), lb("web-1"), facts_of(target(balancing="any")), ())
    ] == []
