"""The metrics probe exposes, declared once: each family's name, type, labels and help.

Names and meanings follow blackbox_exporter where they match (``probe_success``,
``probe_http_duration_seconds``, ``probe_ssl_earliest_cert_expiry`` …) so dashboards and
alerts carry over; every series has a ``target`` label, per-address series an ``address``
label. Values come from the last completed cycle unless the name ends in ``_total`` or is
a histogram (accumulated since the target was configured). An unknown value is an absent
series, never a sentinel.

:data:`SPECS` is the one list: :mod:`probe.daemon.metrics` renders the families in its
order, ``probe check --push`` reserves its labels, and the tests check the docs' metrics
table, the dashboard and a real Prometheus against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram", "info"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family: its exposed name, type, labels and help text."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str

    @property
    def family(self) -> str:
        """The family name in OpenMetrics: without a counter's ``_total`` or an info's ``_info``."""
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        if self.kind == "info":
            return self.name.removesuffix("_info")
        return self.name

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The names its samples carry (a histogram's ``_bucket``, ``_count`` and ``_sum``)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)


_T = ("target",)
_TA = ("target", "address")

#: Every metric probe exposes. The table in docs/metrics-and-alerts.md is checked against this.
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
        "probe_interval_seconds",
        "gauge",
        _T,
        "Seconds between the starts of the target's cycles (interval; probe run only).",
    ),
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
        "1 if certificate verification is turned off for the target (insecure_skip_verify); "
        "absent otherwise.",
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
        "1 if the addresses were pinned (addresses, --resolve, an IP-address URL): "
        "no DNS query for the name; absent for a resolved name.",
    ),
    Spec("probe_backends_seen", "gauge", _T, "Distinct backends that answered in the last cycle."),
    Spec("probe_backends_expected", "gauge", _T, "Backends expected (expect_backends)."),
    Spec(
        "probe_backend_up",
        "gauge",
        (*_T, "backend"),
        "1 if the backend answered in the last cycle; 0 for an expected backend that did not "
        "(with balancing weighted_random or least_outstanding_requests: 0 only once reported missing).",
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
        "Latency per phase (resolve, connect, tls, processing, transfer) across cycles, in seconds "
        "(only with metrics: {histograms: true}).",
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
    # ssl_exporter's file prober (ssl_file_cert_not_after) for the client certificate (tls_client)
    Spec(
        "probe_ssl_file_cert_not_after",
        "gauge",
        (*_T, "file", "cn", "issuer_cn", "serial_no"),
        "Not-after of the client certificate presented to listeners that ask (tls_client), "
        "Unix time; one series per file (a direct backend's own too).",
    ),
    # the direct checks of direct_backends, per backend (present only when configured)
    Spec(
        "probe_direct_backend_success",
        "gauge",
        (*_T, "backend"),
        "1 if the backend's direct check (TCP, TLS, one request, bypassing the load balancer) "
        "passed in the last cycle, 0 if not.",
    ),
    Spec(
        "probe_direct_backend_http_status_code",
        "gauge",
        (*_T, "backend"),
        "Status code of the direct check's request to the backend.",
    ),
    Spec(
        "probe_direct_backend_duration_seconds",
        "gauge",
        (*_T, "backend"),
        "Duration of the backend's direct check in the last cycle, in seconds.",
    ),
    Spec(
        "probe_direct_backend_tls_version_info",
        "info",
        (*_T, "backend", "version"),
        "TLS version negotiated with the backend directly, as blackbox_exporter names it.",
    ),
    Spec(
        "probe_direct_backend_ssl_earliest_cert_expiry",
        "gauge",
        (*_T, "backend"),
        "Earliest not-after among the certificates the backend sent directly, Unix time.",
    ),
    Spec(
        "probe_direct_backend_ssl_last_chain_info",
        "info",
        (*_T, "backend", "fingerprint_sha256", "subject", "issuer", "subjectalternative", "serialnumber"),
        "Leaf certificate the backend sent directly (also when verification or the pin failed).",
    ),
    Spec(
        "probe_direct_backend_cert_pin_match",
        "gauge",
        (*_T, "backend"),
        "1 if the backend's leaf matches its fingerprint_sha256 pin, 0 if not (pinned backends only).",
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
    Spec(
        "probe_event_loop_lag_seconds",
        "gauge",
        (),
        "Largest lateness of the event loop's 100 ms timer over the last 60 s, in seconds; "
        "every timing probe reports can be inflated by up to this much.",
    ),
    # gRPC (grpc_health, or any application/grpc response): blackbox_exporter's names
    Spec(
        "probe_grpc_status_code",
        "gauge",
        _TA,
        "grpc-status of the last gRPC response from the address (0 OK); absent without one.",
    ),
    Spec(
        "probe_grpc_healthcheck_response",
        "gauge",
        (*_TA, "serving_status"),
        "1 for the serving status the last Health/Check at the address answered, 0 for the others "
        "(grpc_health); absent without an answer.",
    ),
)
