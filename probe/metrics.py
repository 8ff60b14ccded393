"""Prometheus metrics: a custom collector that renders the store's latest snapshot.

Names and meanings follow blackbox_exporter where they match (``probe_success``,
``probe_http_duration_seconds``, ``probe_ssl_earliest_cert_expiry`` …) so dashboards and
alerts carry over; every series has a ``target`` label, per-address series an ``address``
label. Values come from the last completed cycle unless the name ends in ``_total`` or is
a histogram (accumulated since the target was configured). An unknown value is an absent
series, never a sentinel.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from probe import __version__
from probe.reasons import Status
from probe.results import AddressResult, OcspResult, TargetResult
from probe.store import BUCKETS, ResultStore, Snapshot, TargetState

Kind = Literal["gauge", "counter", "histogram", "info"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family: its exposed name, type, labels and help text."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


_T = ("target",)
_TA = ("target", "address")

#: Every metric probe exposes. The README's metrics table is checked against this.
SPECS: tuple[Spec, ...] = (
    # blackbox_exporter names and meanings
    Spec("probe_success", "gauge", _T, "1 if the last cycle's verdict was ok or warning, 0 if critical."),
    Spec("probe_duration_seconds", "gauge", _T, "Duration of the last cycle in seconds."),
    Spec(
        "probe_dns_lookup_time_seconds",
        "gauge",
        _T,
        "DNS stage duration of the last cycle in seconds (absent when the addresses are pinned).",
    ),
    Spec("probe_ip_protocol", "gauge", _TA, "IP protocol of the address: 4 or 6."),
    Spec("probe_http_status_code", "gauge", _TA, "Status code of the last response from the address."),
    Spec(
        "probe_http_duration_seconds",
        "gauge",
        (*_TA, "phase"),
        "Mean duration per HTTP phase over the last cycle's requests to the address, in seconds "
        "(phase resolve is the DNS lookup, absent when the addresses are pinned).",
    ),
    Spec(
        "probe_ssl_earliest_cert_expiry",
        "gauge",
        _TA,
        "Earliest not-after among the certificates the address sent, Unix time.",
    ),
    Spec(
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "gauge",
        _TA,
        "Earliest not-after in the verified chain, Unix time (absent when not verified).",
    ),
    Spec(
        "probe_tls_version_info",
        "info",
        (*_TA, "version"),
        "TLS version negotiated with the address, as blackbox_exporter names it (TLS 1.3).",
    ),
    Spec(
        "probe_ssl_last_chain_info",
        "info",
        (*_TA, "fingerprint_sha256", "subject", "issuer", "subjectalternative", "serialnumber"),
        "Leaf certificate the address sent (also when verification failed).",
    ),
    # what only probe knows
    Spec("probe_status", "gauge", _T, "Verdict of the last cycle: 0 ok, 1 warning, 2 critical."),
    Spec("probe_last_cycle_timestamp_seconds", "gauge", _T, "When the last cycle ended, Unix time."),
    Spec("probe_cycles_total", "counter", _T, "Cycles completed since the target was configured."),
    Spec(
        "probe_failures_total",
        "counter",
        (*_T, "reason"),
        "Cycles in which each reason code was found, since the target was configured.",
    ),
    Spec(
        "probe_failure_info",
        "info",
        (*_T, "stage", "reason", "severity", "address"),
        "One series per distinct finding of the last cycle (address empty when not per address).",
    ),
    Spec("probe_address_success", "gauge", _TA, "1 if the address's own verdict was not critical."),
    Spec("probe_tcp_connect_seconds", "gauge", _TA, "TCP connect time of the TLS stage, in seconds."),
    Spec("probe_tls_handshake_seconds", "gauge", _TA, "TLS handshake time of the TLS stage, in seconds."),
    Spec("probe_tls_verified", "gauge", _TA, "1 if the address's chain and name verified, 0 if not."),
    Spec(
        "probe_tls_insecure_skip_verify",
        "gauge",
        _T,
        "1 if certificate verification is turned off for the target (insecure_skip_verify).",
    ),
    Spec("probe_dns_answers", "gauge", _T, "Addresses in the last DNS answer."),
    Spec(
        "probe_dns_unexpected_answers",
        "gauge",
        _T,
        "Addresses in the last DNS answer outside expect_networks (never connected to).",
    ),
    Spec(
        "probe_dns_addresses_hash",
        "gauge",
        _T,
        "FNV-1a hash of the sorted answer set: changes when the load balancer's addresses change.",
    ),
    Spec(
        "probe_dns_alias_match",
        "gauge",
        _T,
        "1 if the name resolved to the same addresses as expect_same_addresses_as, else 0.",
    ),
    Spec(
        "probe_dns_pinned",
        "gauge",
        _T,
        "1 if the addresses were pinned (addresses, --resolve, an IP URL with server_name): "
        "no DNS query for the name; else 0.",
    ),
    Spec("probe_backends_seen", "gauge", _T, "Distinct backends that answered in the last cycle."),
    Spec("probe_backends_expected", "gauge", _T, "Backends expected (expect_backends)."),
    Spec(
        "probe_backend_up",
        "gauge",
        (*_T, "backend"),
        "1 if the backend answered in the last cycle; 0 for an expected backend that did not.",
    ),
    Spec(
        "probe_backend_requests_total",
        "counter",
        (*_TA, "backend"),
        "Responses from each backend at each address, since the series appeared.",
    ),
    Spec(
        "probe_phase_duration_seconds",
        "histogram",
        (*_T, "phase"),
        "Latency per phase (resolve, connect, tls, processing, transfer) across cycles, in seconds.",
    ),
    # ssl_exporter's ssl_ocsp_response_* with probe_ names and units (ocsp: staple only)
    Spec(
        "probe_ssl_ocsp_response_stapled",
        "gauge",
        _TA,
        "1 if the address stapled an OCSP response to its handshake, 0 if not (ocsp: staple).",
    ),
    Spec(
        "probe_ssl_ocsp_response_status",
        "gauge",
        _TA,
        "Certificate status in the stapled OCSP response: 0 good, 1 revoked, 2 unknown.",
    ),
    Spec(
        "probe_ssl_ocsp_response_produced_at_timestamp_seconds",
        "gauge",
        _TA,
        "producedAt of the stapled OCSP response, Unix time.",
    ),
    Spec(
        "probe_ssl_ocsp_response_this_update_timestamp_seconds",
        "gauge",
        _TA,
        "thisUpdate of the stapled OCSP response, Unix time.",
    ),
    Spec(
        "probe_ssl_ocsp_response_next_update_timestamp_seconds",
        "gauge",
        _TA,
        "nextUpdate of the stapled OCSP response, Unix time (absent when it has none).",
    ),
    Spec(
        "probe_ssl_ocsp_response_revoked_at_timestamp_seconds",
        "gauge",
        _TA,
        "revocationTime in the stapled OCSP response, Unix time (only when revoked).",
    ),
    Spec("probe_targets", "gauge", (), "Configured targets."),
    Spec(
        "probe_config_last_reload_successful",
        "gauge",
        (),
        "1 if the last configuration (re)load succeeded, 0 if it was refused.",
    ),
    Spec(
        "probe_config_last_reload_success_timestamp_seconds",
        "gauge",
        (),
        "When the configuration was last loaded successfully, Unix time.",
    ),
    Spec("probe_build_info", "info", ("version", "python_version"), "Version of probe and of Python."),
)

_STATUS_VALUE = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2}


class ProbeCollector(Collector):
    """Renders a :class:`ResultStore` snapshot as metric families on each scrape.

    Args:
        store: the daemon's store; only :meth:`ResultStore.snapshot` is called.
    """

    def __init__(self, store: ResultStore) -> None:
        self._store = store

    def describe(self) -> Iterator[Metric]:
        """Empty families, so registries know the names without collecting."""
        return iter(_Families().families.values())

    def collect(self) -> Iterator[Metric]:
        """Families built from the latest snapshot."""
        return iter(render(self._store.snapshot()).values())


def render(snapshot: Snapshot) -> dict[str, Metric]:
    """All families for a snapshot, keyed by exposed name (pure)."""
    out = _Families()
    for name in snapshot.configured:
        state = snapshot.targets.get(name)
        if state is not None:
            _render_target(out, state)
    out.gauge("probe_targets", (), len(snapshot.configured))
    out.gauge("probe_config_last_reload_successful", (), 1 if snapshot.reload_successful else 0)
    out.gauge("probe_config_last_reload_success_timestamp_seconds", (), snapshot.reload_success_timestamp)
    out.info("probe_build_info", {"version": __version__, "python_version": platform.python_version()})
    return out.families


class _Families:
    """One empty family per spec, and typed ways to add samples to them."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {spec.name: _family(spec) for spec in SPECS}

    def gauge(self, name: str, labels: tuple[str, ...], value: float) -> None:
        family = self.families[name]
        assert isinstance(family, GaugeMetricFamily)
        family.add_metric(labels, value)

    def counter(self, name: str, labels: tuple[str, ...], value: float) -> None:
        family = self.families[name]
        assert isinstance(family, CounterMetricFamily)
        family.add_metric(labels, value)

    def info(self, name: str, labels: dict[str, str]) -> None:
        family = self.families[name]
        assert isinstance(family, InfoMetricFamily)
        family.add_metric([], labels)

    def histogram(
        self, name: str, labels: tuple[str, ...], buckets: list[tuple[str, float]], total: float
    ) -> None:
        family = self.families[name]
        assert isinstance(family, HistogramMetricFamily)
        family.add_metric(labels, buckets, total)


def _render_target(out: _Families, state: TargetState) -> None:
    result = state.result
    t = (result.name,)
    out.gauge("probe_success", t, 0 if result.status is Status.CRITICAL else 1)
    out.gauge("probe_status", t, _STATUS_VALUE[result.status])
    out.gauge("probe_duration_seconds", t, result.duration_seconds)
    if not result.dns.pinned:  # no lookup happened: no lookup time
        out.gauge("probe_dns_lookup_time_seconds", t, result.dns.lookup_seconds)
    out.gauge("probe_last_cycle_timestamp_seconds", t, result.started_timestamp + result.duration_seconds)
    out.counter("probe_cycles_total", t, state.cycles)
    for reason, count in sorted(state.failures_total.items()):
        out.counter("probe_failures_total", (*t, reason), count)
    # Two findings can share every label (e.g. two missing backends): one series each set.
    findings = {
        (f.stage.value, f.reason.value, f.severity.value, str(f.address) if f.address is not None else "")
        for f in result.failures
    }
    for stage, reason, severity, where in sorted(findings):
        out.info(
            "probe_failure_info",
            {"target": result.name, "stage": stage, "reason": reason, "severity": severity, "address": where},
        )
    out.gauge("probe_tls_insecure_skip_verify", t, 1 if result.insecure_skip_verify else 0)
    answers = result.dns.answers
    out.gauge("probe_dns_pinned", t, 1 if result.dns.pinned else 0)
    out.gauge("probe_dns_answers", t, len(answers))
    out.gauge("probe_dns_unexpected_answers", t, sum(not a.expected for a in answers))
    if answers:
        out.gauge("probe_dns_addresses_hash", t, address_set_hash(str(a.address) for a in answers))
    if result.dns.alias is not None:
        out.gauge("probe_dns_alias_match", t, 1 if result.dns.alias.matches else 0)
    counts = result.backend_counts
    if result.expected_backend_count is not None or counts:
        out.gauge("probe_backends_seen", t, len(counts))
    if result.expected_backend_count is not None:
        out.gauge("probe_backends_expected", t, result.expected_backend_count)
    for backend in sorted(set(result.expected_backends) | set(counts)):
        out.gauge("probe_backend_up", (*t, backend), 1 if backend in counts else 0)
    for (where, backend), tally in sorted(state.backends.items()):
        out.counter("probe_backend_requests_total", (*t, where, backend), tally.requests)
    for phase, histogram in sorted(state.phases.items()):
        buckets = [(repr(bound), float(n)) for bound, n in zip(BUCKETS, histogram.counts, strict=True)]
        buckets.append(("+Inf", float(histogram.count)))
        out.histogram("probe_phase_duration_seconds", (*t, phase), buckets, histogram.total)
    for address in result.addresses:
        _render_address(out, result, address)


def _render_address(out: _Families, result: TargetResult, address: AddressResult) -> None:
    ta = (result.name, str(address.address))
    tls = address.tls
    out.gauge("probe_ip_protocol", ta, address.address.version)
    out.gauge("probe_address_success", ta, 0 if address.status is Status.CRITICAL else 1)
    if tls.connect_seconds is not None:
        out.gauge("probe_tcp_connect_seconds", ta, tls.connect_seconds)
    if tls.handshake_seconds is not None:
        out.gauge("probe_tls_handshake_seconds", ta, tls.handshake_seconds)
    labels = {"target": ta[0], "address": ta[1]}
    if tls.version:
        out.info("probe_tls_version_info", {**labels, "version": blackbox_tls_version(tls.version)})
    if tls.chain and not result.insecure_skip_verify:
        out.gauge("probe_tls_verified", ta, 1 if tls.verified else 0)
    if tls.earliest_expiry_timestamp is not None:
        out.gauge("probe_ssl_earliest_cert_expiry", ta, tls.earliest_expiry_timestamp)
    if tls.verified_chain_expiry_timestamp is not None:
        out.gauge("probe_ssl_last_chain_expiry_timestamp_seconds", ta, tls.verified_chain_expiry_timestamp)
    leaf = tls.leaf
    if leaf is not None:
        out.info(
            "probe_ssl_last_chain_info",
            {
                **labels,
                "fingerprint_sha256": leaf.sha256_fingerprint,
                "subject": leaf.subject,
                "issuer": leaf.issuer,
                "subjectalternative": ",".join(leaf.dns_names + leaf.ip_addresses),
                "serialnumber": leaf.serial,
            },
        )
    if address.ocsp is not None:
        _render_ocsp(out, ta, address.ocsp)
    answered = [a.status_code for a in address.attempts if a.status_code is not None]
    if answered:
        out.gauge("probe_http_status_code", ta, answered[-1])
    if not result.dns.pinned:
        out.gauge("probe_http_duration_seconds", (*ta, "resolve"), result.dns.lookup_seconds)
    per_phase: dict[str, list[float]] = {}
    for attempt in address.attempts:
        for phase, seconds in attempt.phases.items():
            per_phase.setdefault(phase, []).append(seconds)
    for phase, values in per_phase.items():
        out.gauge("probe_http_duration_seconds", (*ta, phase), sum(values) / len(values))


_OCSP_STATUS_VALUE = {"good": 0, "revoked": 1, "unknown": 2}


def _render_ocsp(out: _Families, ta: tuple[str, str], ocsp: OcspResult) -> None:
    """ssl_exporter's OCSP gauges; a value that is unknown is an absent series."""
    if ocsp.error is not None:
        return  # the stapling handshake failed: whether the server staples is unknown
    out.gauge("probe_ssl_ocsp_response_stapled", ta, 1 if ocsp.stapled else 0)
    if ocsp.cert_status in _OCSP_STATUS_VALUE:
        out.gauge("probe_ssl_ocsp_response_status", ta, _OCSP_STATUS_VALUE[ocsp.cert_status])
    for name, value in (
        ("produced_at", ocsp.produced_at_timestamp),
        ("this_update", ocsp.this_update_timestamp),
        ("next_update", ocsp.next_update_timestamp),
        ("revoked_at", ocsp.revocation_timestamp),
    ):
        if value is not None:
            out.gauge(f"probe_ssl_ocsp_response_{name}_timestamp_seconds", ta, value)


def blackbox_tls_version(openssl_name: str) -> str:
    """OpenSSL's ``TLSv1.3`` as blackbox_exporter's ``TLS 1.3`` (``TLSv1`` → ``TLS 1.0``)."""
    if openssl_name == "TLSv1":
        return "TLS 1.0"
    return openssl_name.replace("TLSv", "TLS ", 1) if openssl_name.startswith("TLSv") else openssl_name


def address_set_hash(addresses: Iterable[str]) -> int:
    """FNV-1a (32 bit) of the sorted, comma-joined addresses: a change signal for the set."""
    value = 0x811C9DC5
    for byte in ",".join(sorted(addresses)).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _family(spec: Spec) -> Metric:
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=spec.labels)
    if spec.kind == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    return InfoMetricFamily(spec.name.removesuffix("_info"), spec.help)
