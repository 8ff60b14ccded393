"""The Prometheus collector on hand-built results: names, labels, values and absences."""

from __future__ import annotations

import ipaddress
import platform
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from probe._version import __version__
from probe.daemon.metric_specs import SPECS
from probe.daemon.metrics import (
    TEXT_CONTENT_TYPE,
    ProbeCollector,
    address_set_hash,
    exposition,
    go_float,
    negotiate,
    render_target,
)
from probe.daemon.store import BUCKETS, STALE_AFTER_CYCLES, ResultStore, Snapshot
from probe.model.facts import ClientCertificate
from probe.model.reasons import Reason, Status
from probe.model.results import (
    AddressResult,
    AliasResult,
    CertInfo,
    DirectBackendResult,
    DnsResult,
    Failure,
    HttpAttempt,
    IPAddress,
    OcspResult,
    PhaseTimes,
    TargetResult,
    TlsResult,
)
from tests.support import builders
from tests.support.builders import DAY, NOW, judge_response
from tests.support.helpers import make_target

A1 = ipaddress.ip_address("10.0.0.1")
A2 = ipaddress.ip_address("10.0.0.2")
A6 = ipaddress.ip_address("fd00::1")
OUTSIDE = ipaddress.ip_address("192.0.2.7")
GLOBAL = {
    "probe_targets",
    "probe_config_last_reload_successful",
    "probe_config_last_reload_success_timestamp_seconds",
    "probe_build_info",
    "probe_event_loop_lag_seconds",
}
#: Families only the daemon produces (not from results): the event loop's lag.
DAEMON_ONLY = {"probe_event_loop_lag_seconds"}
SPEC = {spec.name: spec for spec in SPECS}


# --------------------------------------------------------------------------- builders

SERIAL = "0a1b"  # of the CA certificates
LEAF = builders.cert(
    "www.corp.example",
    NOW + 60 * DAY,
    serial="1f",
    dns_names=("www.corp.example", "alt.www.corp.example"),
    ip_addresses=("10.0.0.1",),
)
INTERMEDIATE = builders.cert("Corp Intermediate CA", NOW + 400 * DAY, issuer="Corp Root CA", serial=SERIAL)
ROOT = builders.cert("Corp Root CA", NOW + 3000 * DAY, issuer="Corp Root CA", serial=SERIAL)


def tls(
    ip: IPAddress,
    chain: tuple[CertInfo, ...] = (LEAF, INTERMEDIATE),
    *,
    verified: bool = True,
    failures: tuple[Failure, ...] = (),
) -> TlsResult:
    return builders.tls_result(
        ip,
        chain,
        (*chain, ROOT) if verified else (),
        verified=verified,
        verify_code=None if verified else 19,
        verify_message=None if verified else "self-signed certificate in certificate chain",
        connect_seconds=0.0011,
        handshake_seconds=0.0042,
        version="TLS 1.3",
        failures=failures,
    )


def refused_tls(ip: IPAddress) -> TlsResult:
    return builders.unconnected_tls(ip, Failure(Reason.TCP_REFUSED, "connection refused (port 443)", ip))


PHASES = PhaseTimes(connect=0.001, tls=0.004, processing=0.01, transfer=0.0005)


def attempt(
    status: int | None = 200,
    backend: str | None = None,
    phases: PhaseTimes = PHASES,
    failures: tuple[Failure, ...] = (),
) -> HttpAttempt:
    return builders.http_attempt(backend, status=status, phases=phases, duration=0.02, failures=failures)


def address(
    ip: IPAddress,
    attempts: Sequence[HttpAttempt] | None = None,
    *,
    tls_result: TlsResult | None = None,
) -> AddressResult:
    """``ip`` with one answered request, or none when the handshake failed."""
    tls_result = tls_result or tls(ip)
    if attempts is None:
        attempts = [attempt()] if tls_result.connected and not tls_result.failures else []
    return builders.address_result(ip, tls_result, attempts)


def served(ip: IPAddress, *backends: str) -> AddressResult:
    return address(ip, [attempt(backend=b) for b in backends])


def dns(
    answers: Sequence[IPAddress] = (A1, A2), *, lookup_seconds: float = 0.0042, **fields: Any
) -> DnsResult:
    return builders.dns_result(answers, lookup_seconds=lookup_seconds, **fields)


def result(
    name: str = "www",
    addresses: Sequence[AddressResult] | None = None,
    *,
    dns_result: DnsResult | None = None,
    duration: float = 0.25,
    insecure: bool = False,
    **fields: Any,
) -> TargetResult:
    """``name`` answered on A1 and A2 unless ``addresses`` are given."""
    if addresses is None:
        addresses = [address(A1), address(A2)]
    if dns_result is None:
        dns_result = dns([a.address for a in addresses])
    return builders.target_result(
        name, addresses, dns=dns_result, duration=duration, insecure_skip_verify=insecure, **fields
    )


def scrape(
    *results: TargetResult, configured: Sequence[str] | None = None, histograms: bool = True
) -> Scrape:
    """A store as the daemon wires it (rendered when recorded), histograms on unless told."""
    names = configured if configured is not None else list(dict.fromkeys(r.target.name for r in results))
    store = ResultStore(names, NOW - 3600, render=render_target, histograms=histograms)
    for r in results:
        store.record(r)
    return Scrape(store)


class Scrape:
    """A registry holding a :class:`ProbeCollector`, with short ways to read samples."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        self.registry.register(ProbeCollector(store))

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def samples(self) -> Iterator[tuple[str, Sample]]:
        for family in self.registry.collect():
            for sample in family.samples:
                yield family.name, sample

    def named(self, name: str) -> list[Sample]:
        return [s for _, s in self.samples() if s.name == name]

    def with_label(self, label: str, value: str) -> list[str]:
        return [s.name for _, s in self.samples() if s.labels.get(label) == value]


def spec_of(family: str, sample: str) -> str:
    """The SPECS name of a collected family (counters drop ``_total``, info ``_info``)."""
    for candidate in (family, f"{family}_total", f"{family}_info", sample):
        if candidate in SPEC:
            return candidate
    raise AssertionError(f"{family} / {sample} is not in SPECS")


# --------------------------------------------------------------------------- blackbox names


@pytest.mark.parametrize(
    ("extra", "status", "success", "status_value"),
    [
        ((), Status.OK, 1, 0),
        ((Failure(Reason.CERT_EXPIRING_SOON, "soon", A1),), Status.WARNING, 1, 1),
        ((Failure(Reason.BACKEND_MISSING, "web-3 missing"),), Status.CRITICAL, 0, 2),
    ],
)
def test_success_and_status(
    extra: tuple[Failure, ...], status: Status, success: int, status_value: int
) -> None:
    r = result(extra=extra)
    assert r.status is status
    s = scrape(r)
    assert s.value("probe_success", target="www") == success
    assert s.value("probe_status", target="www") == status_value


def test_durations_and_timestamps() -> None:
    s = scrape(result(duration=0.375, dns_result=dns(lookup_seconds=0.0125)))
    assert s.value("probe_duration_seconds", target="www") == 0.375
    assert s.value("probe_dns_lookup_time_seconds", target="www") == 0.0125
    assert s.value("probe_last_cycle_timestamp_seconds", target="www") == NOW + 0.375
    assert s.value("probe_cycles_total", target="www") == 1


def test_interval_only_for_the_daemon() -> None:
    # The scheduler sets the interval (the stalled-cycles alert divides by it); a one-shot
    # check's result has none, so a pushed or embedded result never looks overdue.
    assert scrape(result()).value("probe_interval_seconds", target="www") is None
    daemon = scrape(replace(result(), interval_seconds=30.0))
    assert daemon.value("probe_interval_seconds", target="www") == 30.0


def test_ip_protocol() -> None:
    s = scrape(result(addresses=[address(A1), address(A6)]))
    assert s.value("probe_ip_protocol", target="www", address="10.0.0.1") == 4
    assert s.value("probe_ip_protocol", target="www", address="fd00::1") == 6


def test_http_status_code_is_the_last_response_per_address() -> None:
    timeout = Failure(Reason.HTTP_TIMEOUT, "no complete response", A1)
    a1 = address(A1, [attempt(200), attempt(503), attempt(None, failures=(timeout,))])
    a2 = address(A2, [attempt(503), attempt(204)])
    s = scrape(result(addresses=[a1, a2]))
    assert s.value("probe_http_status_code", target="www", address="10.0.0.1") == 503
    assert s.value("probe_http_status_code", target="www", address="10.0.0.2") == 204


def test_http_duration_is_the_mean_per_phase_and_resolve_is_the_lookup() -> None:
    attempts = [
        attempt(phases=PhaseTimes(connect=0.001, tls=0.003, processing=0.01, transfer=0.002)),
        attempt(phases=PhaseTimes(connect=0.003, tls=0.005, processing=0.03, transfer=0.004)),
    ]
    s = scrape(result(addresses=[address(A1, attempts)], dns_result=dns([A1], lookup_seconds=0.007)))

    def phase(name: str) -> float | None:
        return s.value("probe_http_duration_seconds", target="www", address="10.0.0.1", phase=name)

    assert phase("connect") == pytest.approx(0.002)
    assert phase("tls") == pytest.approx(0.004)
    assert phase("processing") == pytest.approx(0.02)
    assert phase("transfer") == pytest.approx(0.003)
    assert phase("resolve") == 0.007


def test_http_duration_of_a_phase_that_did_not_happen_is_absent() -> None:
    reused = [attempt(phases=PhaseTimes(processing=0.01, transfer=0.001))] * 2
    s = scrape(result(addresses=[address(A1, reused)]))
    phases = {x.labels["phase"] for x in s.named("probe_http_duration_seconds")}
    assert phases == {"resolve", "processing", "transfer"}


def test_earliest_cert_expiry_is_over_the_chain_as_sent() -> None:
    short_intermediate = builders.cert(
        "Corp Intermediate CA", NOW + 5 * DAY, issuer="Corp Root CA", serial=SERIAL
    )
    a1 = address(A1, tls_result=tls(A1, (LEAF, short_intermediate)))
    s = scrape(result(addresses=[a1, address(A2)]))
    assert s.value("probe_ssl_earliest_cert_expiry", target="www", address="10.0.0.1") == NOW + 5 * DAY
    assert s.value("probe_ssl_earliest_cert_expiry", target="www", address="10.0.0.2") == NOW + 60 * DAY


def test_last_chain_expiry_is_over_the_verified_chain() -> None:
    short_root = builders.cert("Corp Root CA", NOW + 20 * DAY, issuer="Corp Root CA", serial=SERIAL)
    verified = replace(tls(A1), verified_chain=(LEAF, INTERMEDIATE, short_root))
    s = scrape(result(addresses=[address(A1, tls_result=verified)]))
    assert (
        s.value("probe_ssl_last_chain_expiry_timestamp_seconds", target="www", address="10.0.0.1")
        == NOW + 20 * DAY
    )
    # The root is not sent, so the earliest expiry as sent is the leaf's.
    assert s.value("probe_ssl_earliest_cert_expiry", target="www", address="10.0.0.1") == NOW + 60 * DAY


@pytest.mark.parametrize(
    ("openssl", "blackbox"),
    [("TLSv1.3", "TLS 1.3"), ("TLSv1.2", "TLS 1.2"), ("TLSv1.1", "TLS 1.1"), ("TLSv1", "TLS 1.0")],
)
def test_tls_version_info_as_blackbox_names_it(openssl: str, blackbox: str) -> None:
    s = scrape(result(addresses=[address(A1, tls_result=replace(tls(A1), version=openssl))]))
    [sample] = s.named("probe_tls_version_info")
    assert sample.labels == {"target": "www", "address": "10.0.0.1", "version": blackbox}
    assert sample.value == 1


def test_last_chain_info_describes_the_leaf() -> None:
    s = scrape(result())
    [sample] = [x for x in s.named("probe_ssl_last_chain_info") if x.labels["address"] == "10.0.0.1"]
    assert sample.value == 1
    assert sample.labels == {
        "target": "www",
        "address": "10.0.0.1",
        "fingerprint_sha256": LEAF.sha256_fingerprint,
        "subject": "CN=www.corp.example",
        "issuer": "CN=Corp Intermediate CA",
        "subjectalternative": "www.corp.example,alt.www.corp.example,10.0.0.1",
        "serialnumber": "1f",
    }


def test_tcp_and_tls_times() -> None:
    s = scrape(result())
    assert s.value("probe_tcp_connect_seconds", target="www", address="10.0.0.1") == 0.0011
    assert s.value("probe_tls_handshake_seconds", target="www", address="10.0.0.1") == 0.0042


# --------------------------------------------------------------------------- absent, not sentinel


def test_no_certificate_means_no_certificate_or_response_series() -> None:
    s = scrape(result(addresses=[address(A1, tls_result=refused_tls(A1)), address(A2)]))
    absent = {
        "probe_ssl_earliest_cert_expiry",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "probe_ssl_last_chain_info",
        "probe_tls_version_info",
        "probe_tls_verified",
        "probe_http_status_code",
        "probe_tcp_connect_seconds",
        "probe_tls_handshake_seconds",
    }
    at_a1 = set(s.with_label("address", "10.0.0.1"))
    assert not at_a1 & absent
    assert at_a1 >= {"probe_ip_protocol", "probe_address_success", "probe_http_duration_seconds"}
    assert s.value("probe_address_success", target="www", address="10.0.0.1") == 0
    assert s.value("probe_address_success", target="www", address="10.0.0.2") == 1
    # The other address is unaffected.
    assert set(s.with_label("address", "10.0.0.2")) >= absent


def test_no_response_means_no_status_code() -> None:
    timeout = Failure(Reason.HTTP_TIMEOUT, "no complete response", A1)
    s = scrape(result(addresses=[address(A1, [attempt(None, failures=(timeout,))] * 2)]))
    assert s.value("probe_http_status_code", target="www", address="10.0.0.1") is None
    assert s.value("probe_success", target="www") == 0


def test_failed_verification_keeps_the_certificate_facts_but_no_chain_expiry() -> None:
    untrusted = Failure(Reason.CERT_UNTRUSTED, "untrusted root", A1)
    a1 = address(A1, tls_result=tls(A1, (LEAF, INTERMEDIATE), verified=False, failures=(untrusted,)))
    s = scrape(result(addresses=[a1]))
    where = {"target": "www", "address": "10.0.0.1"}
    assert s.value("probe_ssl_last_chain_expiry_timestamp_seconds", **where) is None
    assert s.value("probe_ssl_earliest_cert_expiry", **where) == NOW + 60 * DAY
    assert [x.labels["fingerprint_sha256"] for x in s.named("probe_ssl_last_chain_info")] == [
        LEAF.sha256_fingerprint
    ]
    assert s.value("probe_tls_verified", **where) == 0


def test_verified() -> None:
    s = scrape(result())
    assert s.value("probe_tls_verified", target="www", address="10.0.0.1") == 1
    assert s.value("probe_tls_insecure_skip_verify", target="www") is None  # present only when 1


def test_insecure_skip_verify() -> None:
    unverified = address(A1, tls_result=tls(A1, verified=False))
    s = scrape(result(addresses=[unverified], insecure=True))
    assert s.value("probe_tls_insecure_skip_verify", target="www") == 1
    assert s.value("probe_tls_verified", target="www", address="10.0.0.1") is None  # not checked: unknown
    assert s.value("probe_ssl_earliest_cert_expiry", target="www", address="10.0.0.1") == NOW + 60 * DAY


# --------------------------------------------------------------------------- probe's own families


def test_failure_info_one_series_per_finding() -> None:
    failover = Failure(Reason.DNS_RESOLVER_FAILOVER, "resolver 10.0.0.53:53 failed")
    refused = refused_tls(A2)
    s = scrape(
        result(
            addresses=[address(A1), address(A2, tls_result=refused)],
            dns_result=dns(failures=(failover,)),
        )
    )
    labels = sorted(
        (x.labels["reason"], x.labels["stage"], x.labels["severity"], x.labels["address"], x.labels["target"])
        for x in s.named("probe_failure_info")
    )
    assert labels == [
        ("dns_resolver_failover", "dns", "warning", "", "www"),
        ("tcp_refused", "tcp", "critical", "10.0.0.2", "www"),
    ]
    assert {x.value for x in s.named("probe_failure_info")} == {1}


def test_no_failure_info_when_all_is_well() -> None:
    assert scrape(result()).named("probe_failure_info") == []


def test_no_duplicate_series() -> None:
    s = scrape(rich_result(), rich_result())
    series = Counter((x.name, tuple(sorted(x.labels.items()))) for _, x in s.samples())
    assert [key for key, n in series.items() if n > 1] == []


def test_no_duplicate_series_when_findings_share_a_reason() -> None:
    # probe_failure_info has no detail label: two missing backends are one series.
    missing = [
        Failure(Reason.BACKEND_MISSING, f"backend {name} answered none") for name in ("web-3", "web-4")
    ]
    s = scrape(
        result(
            addresses=[served(A1, "web-1", "web-2")],
            extra=missing,
            expected_backends=("web-1", "web-2", "web-3", "web-4"),
        )
    )
    series = Counter((x.name, tuple(sorted(x.labels.items()))) for _, x in s.samples())
    assert [key for key, n in series.items() if n > 1] == []


def test_failures_total_counts_cycles_per_reason() -> None:
    refused = address(A2, tls_result=refused_tls(A2))
    bad = result(addresses=[address(A1), refused])
    good = result()
    s = scrape(bad, good, bad, result(extra=[Failure(Reason.HTTP_STATUS, "503", A1)]))
    assert s.value("probe_failures_total", target="www", reason="tcp_refused") == 2
    assert s.value("probe_failures_total", target="www", reason="http_status") == 1
    assert s.value("probe_failures_total", target="www", reason="dns_timeout") is None
    assert s.value("probe_cycles_total", target="www") == 4


def test_backend_up_seen_expected_and_missing() -> None:
    r = result(
        addresses=[served(A1, "web-1", "web-2"), served(A2, "web-1", "web-9")],
        expected_backends=("web-1", "web-2", "web-3"),
    )
    s = scrape(r)
    up = {x.labels["backend"]: x.value for x in s.named("probe_backend_up")}
    assert up == {"web-1": 1, "web-2": 1, "web-3": 0, "web-9": 1}
    assert s.value("probe_backends_seen", target="www") == 3
    assert s.value("probe_backends_expected", target="www") == 3


def test_backends_expected_by_count_has_no_zero_series() -> None:
    s = scrape(result(addresses=[served(A1, "web-1")], expected_backend_count=3))
    assert s.value("probe_backends_expected", target="www") == 3
    assert s.value("probe_backends_seen", target="www") == 1
    assert {x.labels["backend"]: x.value for x in s.named("probe_backend_up")} == {"web-1": 1}


def test_no_backend_families_without_a_backend_rule() -> None:
    s = scrape(result())
    for name in ("probe_backends_seen", "probe_backends_expected", "probe_backend_up"):
        assert s.named(name) == [], name
    assert s.named("probe_backend_requests_total") == []


def test_expected_backend_that_nobody_sees_is_zero_even_with_no_response() -> None:
    s = scrape(result(addresses=[address(A1, tls_result=refused_tls(A1))], expected_backends=("web-1",)))
    assert s.value("probe_backend_up", target="www", backend="web-1") == 0
    assert s.value("probe_backends_seen", target="www") == 0


def test_backend_requests_total_accumulates_per_address_and_backend() -> None:
    first = result(addresses=[served(A1, "web-1", "web-1", "web-2"), served(A2, "web-2")])
    second = result(addresses=[served(A1, "web-1"), served(A2, "web-2", "web-2")])
    s = scrape(first, second)
    totals = {
        (x.labels["address"], x.labels["backend"]): x.value for x in s.named("probe_backend_requests_total")
    }
    assert totals == {("10.0.0.1", "web-1"): 3, ("10.0.0.1", "web-2"): 1, ("10.0.0.2", "web-2"): 3}


def test_dns_answers_and_unexpected_answers() -> None:
    s = scrape(result(addresses=[address(A1)], dns_result=dns([A1, OUTSIDE], unexpected=[OUTSIDE])))
    assert s.value("probe_dns_answers", target="www") == 2
    assert s.value("probe_dns_unexpected_answers", target="www") == 1
    # Never connected to, so no per-address series for it.
    assert s.with_label("address", "192.0.2.7") == []


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        (None, None),
        (AliasResult("lb.corp.example", (A1, A2), True, True), 1),
        (AliasResult("lb.corp.example", (A1,), True, False), 0),
        (AliasResult("lb.corp.example", (), False, False), 0),
    ],
)
def test_dns_alias_match_only_when_configured(alias: AliasResult | None, expected: int | None) -> None:
    s = scrape(result(dns_result=dns(alias=alias)))
    assert s.value("probe_dns_alias_match", target="www") == expected


def _hash(answers: Sequence[IPAddress]) -> float | None:
    return scrape(result(addresses=[address(A1)], dns_result=dns(answers))).value(
        "probe_dns_addresses_hash", target="www"
    )


def test_dns_addresses_hash_follows_the_set_not_the_order() -> None:
    base = _hash([A1, A2])
    assert base is not None
    assert _hash([A2, A1]) == base
    assert _hash([A1]) != base
    assert _hash([A1, A2, A6]) != base
    assert _hash([A1, ipaddress.ip_address("10.0.0.3")]) != base
    assert base == address_set_hash(["10.0.0.1", "10.0.0.2"])
    assert 0 <= base < 2**32


def test_dns_addresses_hash_absent_without_answers() -> None:
    timeout = Failure(Reason.DNS_TIMEOUT, "no answer")
    s = scrape(result(addresses=[], dns_result=dns([], failures=(timeout,))))
    assert s.value("probe_dns_addresses_hash", target="www") is None
    assert s.value("probe_dns_answers", target="www") == 0
    assert s.value("probe_success", target="www") == 0


def test_address_set_hash_known_values() -> None:
    assert address_set_hash([]) == 0x811C9DC5  # FNV-1a offset basis
    assert address_set_hash(["a"]) == 0xE40C292C  # FNV-1a 32 test vector


def test_phase_duration_histogram() -> None:
    fast = attempt(phases=PhaseTimes(connect=0.001, tls=0.004, processing=0.01, transfer=None))
    slow = attempt(phases=PhaseTimes(connect=0.02, tls=0.004, processing=12.0, transfer=None))
    s = scrape(result(addresses=[address(A1, [fast, slow])]), result(addresses=[address(A1, [fast])]))

    def bucket(phase: str, le: str) -> float | None:
        return s.value("probe_phase_duration_seconds_bucket", target="www", phase=phase, le=le)

    assert bucket("connect", "0.001") == 2
    assert bucket("connect", "0.0025") == 2
    assert bucket("connect", "0.025") == 3
    assert bucket("connect", "+Inf") == 3
    assert s.value("probe_phase_duration_seconds_count", target="www", phase="connect") == 3
    assert s.value("probe_phase_duration_seconds_sum", target="www", phase="connect") == pytest.approx(0.022)
    assert bucket("processing", "10.0") == 2
    assert bucket("processing", "+Inf") == 3
    assert s.value("probe_phase_duration_seconds_count", target="www", phase="resolve") == 2
    phases = {x.labels["phase"] for x in s.named("probe_phase_duration_seconds_count")}
    assert phases == {"resolve", "connect", "tls", "processing"}
    les = [
        x.labels["le"] for x in s.named("probe_phase_duration_seconds_bucket") if x.labels["phase"] == "tls"
    ]
    assert [float(le) for le in les] == [*BUCKETS, float("inf")]


def test_config_reload_families() -> None:
    store = ResultStore(["www"], NOW - 100)
    s = Scrape(store)
    assert s.value("probe_config_last_reload_successful") == 1
    assert s.value("probe_config_last_reload_success_timestamp_seconds") == NOW - 100
    store.reload_failed()
    assert s.value("probe_config_last_reload_successful") == 0
    assert s.value("probe_config_last_reload_success_timestamp_seconds") == NOW - 100
    store.configure(["www", "api"], NOW)
    assert s.value("probe_config_last_reload_successful") == 1
    assert s.value("probe_config_last_reload_success_timestamp_seconds") == NOW


def test_build_info_and_targets() -> None:
    s = scrape(result(), configured=["www", "api", "waiting"])
    assert s.value("probe_build_info", version=__version__, python_version=platform.python_version()) == 1
    assert s.value("probe_targets") == 3


def test_a_target_without_a_result_has_no_series() -> None:
    s = scrape(result(), configured=["www", "api"])
    assert s.with_label("target", "api") == []
    assert s.value("probe_success", target="www") == 1


def test_every_series_has_the_labels_of_its_spec() -> None:
    s = scrape(rich_result(), rich_result())
    seen = set()
    for family, sample in s.samples():
        spec = SPEC[spec_of(family, sample.name)]
        seen.add(spec.name)
        labels = set(sample.labels) - ({"le"} if spec.kind == "histogram" else set())
        assert labels == set(spec.labels), sample
        if spec.name not in GLOBAL:
            assert sample.labels["target"] == "www", sample
        if "address" in spec.labels and spec.name != "probe_failure_info":
            assert ipaddress.ip_address(sample.labels["address"]), sample
    pinned = rich_result()
    pinned = replace(pinned, dns=replace(pinned.dns, pinned_by="--resolve"))
    seen |= {spec_of(family, sample.name) for family, sample in scrape(pinned).samples()}
    rich = rich_result()
    insecure = replace(rich, target=replace(rich.target, insecure_skip_verify=True))
    seen |= {spec_of(family, sample.name) for family, sample in scrape(insecure).samples()}
    mtls = replace(rich, target=replace(rich.target, client_certificate=CLIENT))
    for family, sample in scrape(mtls).samples():
        seen.add(spec_of(family, sample.name))
        if spec_of(family, sample.name) == "probe_ssl_file_cert_not_after":
            assert set(sample.labels) == set(SPEC["probe_ssl_file_cert_not_after"].labels), sample
    assert seen == set(SPEC) - DAEMON_ONLY  # the rich result shows every family (pinned: probe_dns_pinned)


CLIENT = ClientCertificate(
    "/etc/probe/client.crt",
    builders.cert("probe-client", NOW + 20 * DAY, issuer="Corp Client CA", serial="2a"),
)


def test_client_certificate_expiry_as_ssl_exporter_names_a_certificate_file() -> None:
    """ssl_exporter's file prober: ssl_file_cert_not_after{file, cn, issuer_cn, serial_no}, one per file."""
    rich = rich_result()
    own = replace(rich.direct_backends[0], client_certificate=replace(CLIENT, cert_file="/etc/probe/b.crt"))
    same = replace(rich.direct_backends[0], name="web-9", client_certificate=CLIENT)
    mtls = replace(rich, target=replace(rich.target, client_certificate=CLIENT), direct_backends=(own, same))
    s = scrape(mtls)
    files = sorted(x.labels["file"] for x in s.named("probe_ssl_file_cert_not_after"))
    assert files == ["/etc/probe/b.crt", "/etc/probe/client.crt"]
    assert s.value(
        "probe_ssl_file_cert_not_after",
        target="www",
        file="/etc/probe/client.crt",
        cn="probe-client",
        issuer_cn="Corp Client CA",
        serial_no="2a",
    ) == (NOW + 20 * DAY)
    assert scrape(rich).named("probe_ssl_file_cert_not_after") == []


# --------------------------------------------------------------------------- series disappear


def test_series_of_an_address_that_no_longer_resolves_disappear() -> None:
    both = result(addresses=[served(A1, "web-1"), served(A2, "web-2")])
    only_a1 = result(addresses=[served(A1, "web-1")])
    store = ResultStore(["www"], NOW)
    s = Scrape(store)
    store.record(both)
    assert "probe_ip_protocol" in s.with_label("address", "10.0.0.2")
    store.record(only_a1)
    # The request counter is kept (a counter must not flap) until the series goes stale.
    assert set(s.with_label("address", "10.0.0.2")) == {"probe_backend_requests_total"}
    for _ in range(STALE_AFTER_CYCLES - 1):
        store.record(only_a1)
    assert s.with_label("address", "10.0.0.2") == []


def test_series_of_a_removed_target_disappear() -> None:
    store = ResultStore(["www", "api"], NOW)
    s = Scrape(store)
    store.record(rich_result())
    store.record(result("api"))
    assert s.with_label("target", "www")
    store.configure(["api"], NOW + 1)
    assert s.with_label("target", "www") == []
    assert s.value("probe_success", target="api") == 1
    assert s.value("probe_targets") == 1


def test_backend_no_longer_expected_and_not_seen_disappears() -> None:
    store = ResultStore(["www"], NOW)
    s = Scrape(store)
    store.record(result(addresses=[served(A1, "web-1")], expected_backends=("web-1", "web-2")))
    assert s.value("probe_backend_up", target="www", backend="web-2") == 0
    store.record(result(addresses=[served(A1, "web-1")], expected_backends=("web-1",)))
    assert s.value("probe_backend_up", target="www", backend="web-2") is None
    assert s.value("probe_backends_expected", target="www") == 1


def test_a_backend_seen_once_is_up_only_in_that_cycle() -> None:
    store = ResultStore(["www"], NOW)
    s = Scrape(store)
    store.record(result(addresses=[served(A1, "web-1", "web-9")], expected_backends=("web-1",)))
    assert s.value("probe_backend_up", target="www", backend="web-9") == 1
    store.record(result(addresses=[served(A1, "web-1")], expected_backends=("web-1",)))
    assert s.value("probe_backend_up", target="www", backend="web-9") is None
    assert s.value("probe_backend_requests_total", target="www", address="10.0.0.1", backend="web-9") == 1


# --------------------------------------------------------------------------- OCSP stapling

REVOKED_STAPLE = OcspResult(
    stapled=True,
    handshake_seconds=0.004,
    response_status="successful",
    cert_status="revoked",
    serial="1f",
    responder="CN=Corp Intermediate CA",
    produced_at_timestamp=NOW - 3600,
    this_update_timestamp=NOW - 3600,
    next_update_timestamp=NOW + 6 * DAY,
    revocation_timestamp=NOW - 10 * DAY,
    revocation_reason="keyCompromise",
    signature_valid=True,
    failures=(Failure(Reason.OCSP_REVOKED, "revoked", A1),),
)


def stapled(ocsp: OcspResult | None) -> Scrape:
    return scrape(result(addresses=[replace(served(A1, "web-1"), ocsp=ocsp)]))


def test_ocsp_revoked_staple_as_ssl_exporter_reports_it() -> None:
    s = stapled(REVOKED_STAPLE)
    where = {"target": "www", "address": "10.0.0.1"}
    assert s.value("probe_ssl_ocsp_response_stapled", **where) == 1
    assert s.value("probe_ssl_ocsp_response_status", **where) == 1
    assert s.value("probe_ssl_ocsp_response_produced_at_timestamp_seconds", **where) == NOW - 3600
    assert s.value("probe_ssl_ocsp_response_this_update_timestamp_seconds", **where) == NOW - 3600
    assert s.value("probe_ssl_ocsp_response_next_update_timestamp_seconds", **where) == NOW + 6 * DAY
    assert s.value("probe_ssl_ocsp_response_revoked_at_timestamp_seconds", **where) == NOW - 10 * DAY


@pytest.mark.parametrize(("status", "value"), [("good", 0), ("revoked", 1), ("unknown", 2)])
def test_ocsp_status_values(status: str, value: int) -> None:
    s = stapled(replace(REVOKED_STAPLE, cert_status=status))
    assert s.value("probe_ssl_ocsp_response_status", target="www", address="10.0.0.1") == value


def test_ocsp_no_staple_is_zero_and_no_dates() -> None:
    s = stapled(OcspResult(stapled=False, handshake_seconds=0.004))
    assert s.value("probe_ssl_ocsp_response_stapled", target="www", address="10.0.0.1") == 0
    assert [n for n in s.with_label("address", "10.0.0.1") if "ocsp" in n] == [
        "probe_ssl_ocsp_response_stapled"
    ]


def test_ocsp_series_absent_when_off_or_when_the_stapling_handshake_failed() -> None:
    for ocsp in (None, OcspResult(stapled=False, error="the stapling handshake failed: reset")):
        assert not [n for n in stapled(ocsp).with_label("address", "10.0.0.1") if "ocsp" in n]


def test_ocsp_good_staple_without_next_update_has_no_next_update_series() -> None:
    good = replace(REVOKED_STAPLE, cert_status="good", revocation_timestamp=None, next_update_timestamp=None)
    names = stapled(good).with_label("address", "10.0.0.1")
    assert "probe_ssl_ocsp_response_this_update_timestamp_seconds" in names
    assert "probe_ssl_ocsp_response_next_update_timestamp_seconds" not in names
    assert "probe_ssl_ocsp_response_revoked_at_timestamp_seconds" not in names


# --------------------------------------------------------------------------- exposition and specs


def grpc_served(served_address: AddressResult, serving: str, status: int = 0) -> AddressResult:
    """``served_address`` whose responses were gRPC Health/Check answers."""
    attempts = tuple(
        replace(a, grpc_status=status, grpc_serving_status=serving) for a in served_address.attempts
    )
    return replace(served_address, attempts=attempts)


def test_grpc_status_and_health_check_response_as_blackbox_exporter_names_them() -> None:
    s = scrape(
        result("www", addresses=[grpc_served(served(A1, "web-1"), "NOT_SERVING"), served(A2, "web-1")])
    )
    where = {"target": "www", "address": str(A1)}
    assert s.value("probe_grpc_status_code", **where) == 0
    values = {
        status: s.value("probe_grpc_healthcheck_response", serving_status=status, **where)
        for status in ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
    }
    assert values == {"UNKNOWN": 0, "SERVING": 0, "NOT_SERVING": 1, "SERVICE_UNKNOWN": 0}
    # No gRPC response from A2: no gRPC series (an unknown value is an absent series).
    assert not [n for n in s.with_label("address", str(A2)) if "grpc" in n]


def rich_result(name: str = "www") -> TargetResult:
    """A result that makes every family show at least one series."""
    untrusted = Failure(Reason.CERT_UNTRUSTED, "untrusted root", A2)
    a1 = replace(served(A1, "web-1", "web-2"), ocsp=REVOKED_STAPLE)
    a2 = address(A2, [], tls_result=tls(A2, verified=False, failures=(untrusted,)))
    a6 = grpc_served(served(A6, "web-1"), "SERVING")
    made = result(
        name,
        addresses=[a1, a2, a6],
        dns_result=dns(
            [A1, A2, A6, OUTSIDE],
            unexpected=[OUTSIDE],
            alias=AliasResult("lb.corp.example", (A1, A2, A6), True, False),
            failures=(Failure(Reason.DNS_UNEXPECTED_ADDRESS, "outside", OUTSIDE),),
        ),
        expected_backends=("web-1", "web-2", "web-3"),
        extra=[Failure(Reason.BACKEND_MISSING, "web-3 answered none")],
    )
    assert a1.tls.leaf is not None
    hop = DirectBackendResult(
        name="web-1",
        url="https://10.0.1.10/health",
        server_name="www.corp.example",
        trust="fingerprint_sha256",
        pinned_fingerprint=a1.tls.leaf.sha256_fingerprint,
        dns=None,
        address=a1.address,
        tls=a1.tls,
        attempt=a1.attempts[0],
        failures=(),
        duration_seconds=0.01,
    )
    return replace(made, direct_backends=(hop,), interval_seconds=30.0)  # as the daemon records it


def test_text_exposition_parses_and_every_family_is_specified() -> None:
    s = scrape(rich_result(), rich_result(), result("api"))
    text = generate_latest(s.registry).decode()
    families = list(text_string_to_metric_families(text))
    names = {spec_of(f.name, f.samples[0].name if f.samples else f.name) for f in families}
    assert names == set(SPEC)
    types = {spec_of(f.name, f.name): f.type for f in families}
    for name, spec in SPEC.items():
        assert types[name] == ("gauge" if spec.kind == "info" else spec.kind), name


def test_openmetrics_exposition_parses() -> None:
    s = scrape(rich_result(), result("api"))
    text = generate_openmetrics(s.registry).decode()  # type: ignore[no-untyped-call]
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    for name, spec in SPEC.items():
        family = families[name.removesuffix({"counter": "_total", "info": "_info"}.get(spec.kind, ""))]
        assert family.type == spec.kind, name
        assert family.documentation == spec.help


def test_specs_are_well_formed() -> None:
    assert len(SPEC) == len(SPECS)
    for spec in SPECS:
        assert spec.name.startswith("probe_"), spec
        assert spec.help.strip(), spec
        assert len(set(spec.labels)) == len(spec.labels), spec
        if spec.name in GLOBAL:
            assert "target" not in spec.labels, spec
        else:
            assert spec.labels[0] == "target", spec
        if spec.kind == "counter":
            assert spec.name.endswith("_total"), spec
        if spec.kind == "info":
            assert spec.name.endswith("_info"), spec


def test_describe_names_every_family_without_samples() -> None:
    collector = ProbeCollector(ResultStore(["www"], NOW))
    described = list(collector.describe())
    assert {spec_of(f.name, f.name) for f in described} == set(SPEC)
    assert all(f.samples == [] for f in described)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)  # no clash between the families' names


def test_hostile_backend_name_is_cut_before_it_becomes_a_label() -> None:
    target = make_target(url="https://www.corp.example/", backend={"header": "X-Backend"})
    backend, failures = judge_response(200, {"X-Backend": "w" * 10_000}, b"", target, A1)
    assert failures == ()
    assert backend is not None and len(backend) == 64
    control, _ = judge_response(200, {"X-Backend": 'web\r\n1\x00"x"' + "é" * 80}, b"", target, A1)
    assert control is not None and len(control) <= 64
    assert all(0x21 <= ord(c) <= 0x7E for c in control), control
    s = scrape(result(addresses=[address(A1, [attempt(backend=backend), attempt(backend=control)])]))
    backends = [x.labels["backend"] for x in s.named("probe_backend_requests_total")]
    assert sorted(backends) == sorted([backend, control])
    assert max(len(x.labels.get("backend", "")) for _, x in s.samples()) <= 64


def test_backend_name_from_a_body_regex_is_cut_too() -> None:
    target = make_target(url="https://www.corp.example/", backend={"body_regex": "node=(\\S+)"})
    backend, _ = judge_response(200, {}, b"node=" + b"n" * 10_000, target, A1)
    assert backend == "n" * 63 + "…"


# --------------------------------------------------------------------------- pinned addresses


def test_pinned_addresses_have_no_lookup_time_and_say_pinned() -> None:
    pinned = replace(dns([A1], lookup_seconds=0.0001, resolver=None, rcode=None), pinned_by="--resolve")
    s = scrape(result(addresses=[address(A1)], dns_result=pinned))

    assert s.value("probe_dns_pinned", target="www") == 1
    assert s.value("probe_dns_lookup_time_seconds", target="www") is None
    assert s.named("probe_dns_lookup_time_seconds") == []
    assert "resolve" not in {x.labels["phase"] for x in s.named("probe_http_duration_seconds")}
    assert "connect" in {x.labels["phase"] for x in s.named("probe_http_duration_seconds")}
    assert "resolve" not in {x.labels["phase"] for x in s.named("probe_phase_duration_seconds_count")}
    assert s.value("probe_dns_answers", target="www") == 1
    assert s.value("probe_success", target="www") == 1


def test_resolved_addresses_are_not_pinned() -> None:
    s = scrape(result(dns_result=dns(lookup_seconds=0.0125)))
    assert s.value("probe_dns_pinned", target="www") is None  # present only when pinned
    assert s.value("probe_dns_lookup_time_seconds", target="www") == 0.0125


# --------------------------------------------------------------------------- rendered once, scraped as text


def sample_lines(body: bytes) -> list[str]:
    return [line for line in body.decode().splitlines() if line and not line.startswith("#")]


def test_default_settings_expose_at_most_40_samples_per_two_address_target() -> None:
    # As the daemon makes its store with default settings: histograms off; 4 requests per address.
    store = ResultStore(["www"], NOW, render=render_target)
    two_addresses = result(addresses=[address(A1, [attempt()] * 4), address(A2, [attempt()] * 4)])
    two_addresses = replace(two_addresses, interval_seconds=30.0)  # as the scheduler records it
    for _ in range(3):
        store.record(two_addresses)
    samples = sample_lines(exposition(store.snapshot()))
    per_target = [line for line in samples if 'target="www"' in line]
    assert 30 <= len(per_target) <= 40, per_target
    assert not [line for line in samples if line.startswith("probe_phase_duration_seconds")]
    assert store.snapshot().targets["www"].phases == {}  # not even accumulated


def test_histograms_on_add_their_samples() -> None:
    off = len(sample_lines(exposition(scrape(result(), histograms=False).store.snapshot())))
    on = len(sample_lines(exposition(scrape(result(), histograms=True).store.snapshot())))
    # resolve, connect, tls, processing, transfer: 13 buckets, +Inf, _count, _sum each
    assert on - off == 5 * (len(BUCKETS) + 3)


def test_a_scrape_concatenates_the_text_stored_when_the_cycle_was_recorded() -> None:
    store = scrape(result("www"), result("api")).store
    snapshot = store.snapshot()
    www = snapshot.targets["www"]
    assert www.exposition is not None
    index = [spec.name for spec in SPECS].index("probe_success")
    marked = list(www.exposition)
    marked[index] = b'probe_success{target="www"} 42.0\n'
    stored = Snapshot(
        MappingProxyType({**snapshot.targets, "www": replace(www, exposition=tuple(marked))}),
        snapshot.configured,
        snapshot.reload_successful,
        snapshot.reload_success_timestamp,
    )
    body = exposition(stored).decode()
    # What was stored is served as it is (nothing is rendered again), in config order.
    block = body.split("# TYPE probe_success gauge\n", 1)[1].split("#", 1)[0]
    assert block == 'probe_success{target="www"} 42.0\nprobe_success{target="api"} 1.0\n'


@pytest.mark.parametrize("openmetrics", [False, True])
def test_help_and_type_once_per_family_and_each_family_in_one_block(openmetrics: bool) -> None:
    body = exposition(scrape(rich_result(), result("api"), rich_result("db")).store.snapshot(), openmetrics)
    lines = body.decode().splitlines()
    assert sum(line.startswith("# TYPE ") for line in lines) == len(SPECS)
    assert sum(line.startswith("# HELP ") for line in lines) == len(SPECS)
    family = {name: i for i, spec in enumerate(SPECS) for name in spec.sample_names}
    order = [family[line.split("{")[0].split(" ")[0]] for line in lines if not line.startswith("#")]
    assert order == sorted(order)  # a family's series are never interleaved with another's
    assert len({line for line in lines if not line.startswith("#")}) == len(order)
    assert body.endswith(b"# EOF\n") is openmetrics


def test_both_formats_carry_the_same_samples() -> None:
    snapshot = scrape(rich_result(), rich_result(), result("api")).store.snapshot()

    def samples(families: Any) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples}

    text = samples(text_string_to_metric_families(exposition(snapshot).decode()))
    om = samples(parse_openmetrics(exposition(snapshot, openmetrics=True).decode()))  # type: ignore[no-untyped-call]
    assert text == om
    assert len(text) > 100


def test_counters_in_the_stored_text_grow_cycle_by_cycle() -> None:
    store = ResultStore(["www"], NOW, render=render_target)
    refused = result(addresses=[address(A1), address(A2, tls_result=refused_tls(A2))])
    seen = []
    for r in (refused, result(), refused, refused):
        store.record(r)
        families = text_string_to_metric_families(exposition(store.snapshot()).decode())
        values = {(s.name, s.labels.get("reason")): s.value for f in families for s in f.samples}
        seen.append((values[("probe_cycles_total", None)], values[("probe_failures_total", "tcp_refused")]))
    assert seen == [(1, 1), (2, 1), (3, 2), (4, 3)]


def test_name_filter_keeps_only_the_named_samples() -> None:
    snapshot = scrape(result()).store.snapshot()
    body = exposition(snapshot, names=["probe_phase_duration_seconds_count", "probe_cycles_total"]).decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert set(families) == {"probe_phase_duration_seconds", "probe_cycles"}
    assert {s.name for s in families["probe_phase_duration_seconds"].samples} == {
        "probe_phase_duration_seconds_count"
    }
    assert exposition(snapshot, names=["no_such_metric"]) == b""
    assert exposition(snapshot, openmetrics=True, names=[]) == b"# EOF\n"


ACCEPT_HEADERS = [
    None,
    "",
    "*/*",
    "text/plain",
    "text/plain;version=0.0.4",
    "text/plain; version=1.0.0",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=bogus",
    "application/json, text/html",
]


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_format_negotiation_as_prometheus_client(accept: str | None) -> None:
    encoder, content_type = choose_encoder(accept)  # type: ignore[arg-type]
    assert negotiate(accept) == (getattr(encoder, "func", encoder) is generate_openmetrics, content_type)


def test_a_version_that_is_not_a_number_falls_back_to_the_text_format() -> None:
    # prometheus_client raises TypeError on this one; the endpoint answers in the text format.
    assert negotiate("application/openmetrics-text; version=abc") == (False, TEXT_CONTENT_TYPE)


@given(st.floats() | st.integers(min_value=-(2**53), max_value=2**53))
def test_values_are_printed_as_prometheus_client_prints_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


def test_event_loop_lag_is_one_unlabelled_gauge_when_given() -> None:
    store = ResultStore(["www"], NOW, render=render_target)
    store.record(rich_result())
    without = exposition(store.snapshot()).decode()
    assert "\nprobe_event_loop_lag_seconds " not in without  # no monitor (check, embedding): no series
    text = exposition(store.snapshot(), loop_lag=0.0123).decode()
    assert "# TYPE probe_event_loop_lag_seconds gauge\n" in text
    assert "\nprobe_event_loop_lag_seconds 0.0123\n" in text
    assert exposition(store.snapshot(), names=["probe_event_loop_lag_seconds"], loop_lag=0.5).decode() == (
        "# HELP probe_event_loop_lag_seconds "
        + SPEC["probe_event_loop_lag_seconds"].help
        + "\n# TYPE probe_event_loop_lag_seconds gauge\nprobe_event_loop_lag_seconds 0.5\n"
    )
