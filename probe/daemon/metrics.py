"""Prometheus metrics: each target rendered once per cycle, a scrape concatenates the text.

The families, their names, labels and help are declared in :mod:`probe.daemon.metric_specs`
(:data:`~probe.daemon.metric_specs.SPECS`); this module renders them.

How a scrape stays cheap: when the scheduler records a cycle, the store calls
:func:`render_target`, which turns the target's state into its sample lines, one byte
string per family of :data:`SPECS`. The lines are the same in the classic text format
(0.0.4) and in OpenMetrics 1.0 (labels sorted by name, values as prometheus_client and Go
print them); only the ``# HELP``/``# TYPE`` headers differ. :func:`exposition` then writes,
per family, its header once and every target's stored lines, plus the few process-wide
series (targets, reload status, build info). Per-target rendering is split into one
function per section (verdict, DNS, backends, phase histograms; per address: the address,
TLS, certificates, OCSP, HTTP), as ssl_exporter's collectors are.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING

from probe._version import __version__
from probe.daemon.metric_specs import SPECS, Spec
from probe.daemon.store import BUCKETS, Exposition, ResultStore, Snapshot, TargetState
from probe.model.reasons import Status
from probe.model.results import AddressResult, CertInfo, DirectBackendResult, OcspResult, TargetResult
from probe.stages.certs import common_name_of

if TYPE_CHECKING:
    from prometheus_client.core import Metric

# --------------------------------------------------------------------------- headers

#: Position of each family in SPECS, and so in an :data:`~probe.daemon.store.Exposition`.
_INDEX = {spec.name: index for index, spec in enumerate(SPECS)}


def _text_header(spec: Spec) -> bytes:
    """``# HELP``/``# TYPE`` in the classic text format: info families are gauges there."""
    help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
    kind = "gauge" if spec.kind == "info" else spec.kind
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {kind}\n".encode()


def _openmetrics_header(spec: Spec) -> bytes:
    """``# HELP``/``# TYPE`` in OpenMetrics: the family name without ``_total``/``_info``."""
    help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return f"# HELP {spec.family} {help_text}\n# TYPE {spec.family} {spec.kind}\n".encode()


_TEXT_HEADERS = tuple(_text_header(spec) for spec in SPECS)
_OPENMETRICS_HEADERS = tuple(_openmetrics_header(spec) for spec in SPECS)

#: Media type of the classic text format, sent unless the client asks for something else.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ESCAPINGS = ("allow-utf-8", "underscores", "dots", "values")


def negotiate(accept: str | None) -> tuple[bool, str]:
    """Choose the format from an ``Accept`` header, as prometheus_client's ``choose_encoder`` does.

    The first acceptable entry wins (Prometheus lists them in its order of preference):
    ``application/openmetrics-text`` without a version or at version 1.0.0 or later, or
    ``text/plain`` at version 1.0.0 or later; otherwise the text format 0.0.4. The
    ``escaping`` parameter is echoed (``underscores`` by default): probe's metric and label
    names are valid under every scheme, so the body is the same.

    Returns:
        ``(openmetrics, content_type)``: whether to send OpenMetrics, and the
        ``Content-Type`` header value.
    """
    for entry in (accept or "").split(","):
        media, *parameters = (part.strip() for part in entry.split(";"))
        if media not in ("application/openmetrics-text", "text/plain"):
            continue
        params = dict(p.split("=", 1) for p in parameters if "=" in p)
        version = params.get("version", "")
        escaping = params.get("escaping", "underscores")
        escaping = escaping if escaping in _ESCAPINGS else "underscores"
        if media == "application/openmetrics-text" and not version:
            return True, "application/openmetrics-text; version=1.0.0; charset=utf-8"
        if not _at_least_1(version):
            continue
        if media == "application/openmetrics-text":
            return True, f"{media}; version={version}; charset=utf-8; escaping={escaping}"
        return False, f"{media}; version=1.0.0; charset=utf-8; escaping={escaping}"
    return False, TEXT_CONTENT_TYPE


def _at_least_1(version: str) -> bool:
    """Whether a dotted version is 1.0.0 or later (``""`` or a non-number is not)."""
    try:
        return tuple(int(part) for part in version.split(".")) >= (1, 0, 0)
    except ValueError:
        return False


# --------------------------------------------------------------------------- scrape


def exposition(
    snapshot: Snapshot,
    openmetrics: bool = False,
    names: Collection[str] | None = None,
    loop_lag: float | None = None,
) -> bytes:
    """The whole ``/metrics`` body for a snapshot, from each target's stored text (pure).

    ``b"".join(exposition_parts(...))``; see :func:`exposition_parts`.
    """
    return b"".join(exposition_parts(snapshot, openmetrics, names, loop_lag))


def exposition_parts(
    snapshot: Snapshot,
    openmetrics: bool = False,
    names: Collection[str] | None = None,
    loop_lag: float | None = None,
) -> list[bytes]:
    """The ``/metrics`` body for a snapshot as the stored pieces it is made of, in order (pure).

    The endpoint compresses or writes them a batch at a time, so that a scrape never holds
    the whole body (3.5 MB at 1,000 targets) beside its compressed copy.

    Every family of :data:`SPECS` appears once, in that order, with its ``# HELP`` and
    ``# TYPE`` lines, followed by the lines of every target (in config order) and of the
    process-wide families. A target whose state was recorded without a renderer (tests,
    embedding) is rendered here.

    Args:
        snapshot: the store's snapshot.
        openmetrics: OpenMetrics 1.0.0 (ending in ``# EOF``) instead of the text format 0.0.4.
        names: only samples with these names (``name[]`` of the request, as prometheus_client
            filters); a family without such samples is left out.
        loop_lag: ``probe_event_loop_lag_seconds`` (seconds), left out when ``None``.

    Returns:
        The UTF-8 body's pieces (the stored ``bytes`` themselves, not copies).
    """
    rows = []
    for name in snapshot.configured:
        state = snapshot.targets.get(name)
        if state is not None:
            rows.append(state.exposition if state.exposition is not None else render_target(state))
    rows.append(_process_wide(snapshot, loop_lag))
    headers = _OPENMETRICS_HEADERS if openmetrics else _TEXT_HEADERS
    parts: list[bytes] = []
    if names is None:
        for header, column in zip(headers, zip(*rows, strict=True), strict=True):
            parts.append(header)
            parts.extend(column)
    else:
        wanted = set(names)
        for spec, header, column in zip(SPECS, headers, zip(*rows, strict=True), strict=True):
            if wanted.isdisjoint(spec.sample_names):
                continue
            lines = [
                line
                for line in b"".join(column).splitlines(keepends=True)
                if line.partition(b"{")[0].partition(b" ")[0].decode() in wanted
            ]
            if lines:
                parts.append(header)
                parts.extend(lines)
    if openmetrics:
        parts.append(b"# EOF\n")
    return parts


def target_text(state: TargetState) -> bytes:
    """One target's series in the classic text format (0.0.4), for a Pushgateway (pure).

    The same lines as the target's part of ``/metrics`` (:func:`render_target`, the one
    source of truth), each family with its ``# HELP``/``# TYPE`` header; families without
    a sample for this target are left out, and so are the process-wide families
    (``probe_targets``, reload status, build info, loop lag), which describe a daemon.

    Args:
        state: the target's state, e.g. ``accumulate(None, result)`` for one check.

    Returns:
        The UTF-8 body, empty only if the target has no series at all.
    """
    rendered = state.exposition if state.exposition is not None else render_target(state)
    return b"".join(header + lines for header, lines in zip(_TEXT_HEADERS, rendered, strict=True) if lines)


_BUILD_INFO = {"version": __version__, "python_version": platform.python_version()}


def _process_wide(snapshot: Snapshot, loop_lag: float | None = None) -> Exposition:
    """The families without a ``target`` label, rendered at each scrape (four or five lines)."""
    out = _Lines()
    out.add("probe_targets", len(snapshot.configured))
    out.add("probe_config_last_reload_successful", 1 if snapshot.reload_successful else 0)
    out.add("probe_config_last_reload_success_timestamp_seconds", snapshot.reload_success_timestamp)
    out.add("probe_build_info", 1, _BUILD_INFO)
    if loop_lag is not None:
        out.add("probe_event_loop_lag_seconds", loop_lag)
    return out.exposition()


# --------------------------------------------------------------------------- per target

_STATUS_VALUE = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2}


def render_target(state: TargetState) -> Exposition:
    """A target's sample lines, per family of :data:`SPECS` (pure).

    The store calls it once per recorded cycle (the daemon passes it as the store's
    renderer), so scrapes only concatenate. Counters come from the state's tallies, which
    only grow while the target stays configured.

    Returns:
        One UTF-8 byte string per family, ``b""`` where the target has no series.
    """
    out = _Lines()
    result = state.result
    target = {"target": result.target.name}
    _verdict_section(out, state, target)
    _dns_section(out, result, target)
    _backend_section(out, state, target)
    _phase_section(out, state, target)
    for address in result.addresses:
        where = {"target": result.target.name, "address": str(address.address)}
        _address_section(out, address, where)
        _tls_section(out, result, address, where)
        _certificate_section(out, result, address, where)
        if address.ocsp is not None:
            _ocsp_section(out, address.ocsp, where)
        _http_section(out, result, address, where)
        _grpc_section(out, address, where)
    for check in result.direct_backends:
        _direct_section(out, check, {"target": result.target.name, "backend": check.name[:64]})
    _client_section(out, result, target)
    return out.exposition()


def _verdict_section(out: _Lines, state: TargetState, target: dict[str, str]) -> None:
    """Verdict, timing, cycle and failure counters, findings of the last cycle."""
    result = state.result
    out.add("probe_success", 0 if result.status is Status.CRITICAL else 1, target)
    out.add("probe_status", _STATUS_VALUE[result.status], target)
    out.add("probe_duration_seconds", result.duration_seconds, target)
    out.add("probe_last_cycle_timestamp_seconds", result.started_timestamp + result.duration_seconds, target)
    out.add("probe_cycles_total", state.cycles, target)
    if result.interval_seconds is not None:  # the daemon's; a one-shot check has none
        out.add("probe_interval_seconds", result.interval_seconds, target)
    for reason, count in sorted(state.failures_total.items()):
        out.add("probe_failures_total", count, {**target, "reason": reason})
    # Two findings can share every label (e.g. two missing backends): one series each set.
    findings = {
        (f.stage.value, f.reason.value, f.severity.value, str(f.address) if f.address is not None else "")
        for f in result.failures
    }
    for stage, reason, severity, where in sorted(findings):
        labels = {**target, "stage": stage, "reason": reason, "severity": severity, "address": where}
        out.add("probe_failure_info", 1, labels)
    # Present only when verification is off (an alert on == 1 works the same), which keeps a
    # 2-address target within its 40 samples; never for plain HTTP (no TLS stage at all).
    if result.target.insecure_skip_verify and not result.target.plain:
        out.add("probe_tls_insecure_skip_verify", 1, target)


def _dns_section(out: _Lines, result: TargetResult, target: dict[str, str]) -> None:
    """The DNS stage: lookup time (none when pinned), answers, the answer set's hash, the alias check."""
    if not result.dns.pinned:  # no lookup happened: no lookup time
        out.add("probe_dns_lookup_time_seconds", result.dns.lookup_seconds, target)
    answers = result.dns.answers
    if result.dns.pinned:  # present only for a pinned target: it keeps the default budget
        out.add("probe_dns_pinned", 1, target)
    out.add("probe_dns_answers", len(answers), target)
    out.add("probe_dns_unexpected_answers", sum(not a.expected for a in answers), target)
    if answers:
        out.add("probe_dns_addresses_hash", address_set_hash(str(a.address) for a in answers), target)
    if result.dns.alias is not None:
        out.add("probe_dns_alias_match", 1 if result.dns.alias.matches else 0, target)


def _backend_section(out: _Lines, state: TargetState, target: dict[str, str]) -> None:
    """Backends seen, expected and up in the last cycle; responses per backend across cycles."""
    result = state.result
    counts = result.backend_counts
    if result.target.expected_backend_count is not None or counts:
        out.add("probe_backends_seen", len(counts), target)
    if result.target.expected_backend_count is not None:
        out.add("probe_backends_expected", result.target.expected_backend_count, target)
    memory = result.rotation  # weighted_random, least_outstanding_requests: 0 only once missing
    for backend in sorted(set(result.target.expected_backends) | set(counts)):
        up = backend in counts if memory is None else not memory.is_missing(backend)
        out.add("probe_backend_up", 1 if up else 0, {**target, "backend": backend})
    for (where, backend), tally in sorted(state.backends.items()):
        labels = {**target, "address": where, "backend": backend}
        out.add("probe_backend_requests_total", tally.requests, labels)


_LE = (*(repr(bound) for bound in BUCKETS), "+Inf")


def _phase_section(out: _Lines, state: TargetState, target: dict[str, str]) -> None:
    """Phase latency histograms across cycles (only with ``metrics.histograms``)."""
    for phase, histogram in sorted(state.phases.items()):
        labels = {**target, "phase": phase}
        for le, count in zip(_LE, (*histogram.counts, histogram.count), strict=True):
            out.add("probe_phase_duration_seconds", count, {**labels, "le": le}, "_bucket")
        out.add("probe_phase_duration_seconds", histogram.count, labels, "_count")
        out.add("probe_phase_duration_seconds", histogram.total, labels, "_sum")


def _address_section(out: _Lines, address: AddressResult, where: dict[str, str]) -> None:
    """The address itself: IP protocol and its own verdict."""
    out.add("probe_ip_protocol", address.address.version, where)
    out.add("probe_address_success", 0 if address.status is Status.CRITICAL else 1, where)


def _tls_section(out: _Lines, result: TargetResult, address: AddressResult, where: dict[str, str]) -> None:
    """The TLS stage: connect and handshake times, version, verification."""
    tls = address.tls
    if tls.connect_seconds is not None:
        out.add("probe_tcp_connect_seconds", tls.connect_seconds, where)
    if tls.handshake_seconds is not None:
        out.add("probe_tls_handshake_seconds", tls.handshake_seconds, where)
    if tls.version:
        out.add("probe_tls_version_info", 1, {**where, "version": blackbox_tls_version(tls.version)})
    if tls.chain and not result.target.insecure_skip_verify:
        out.add("probe_tls_verified", 1 if tls.verified else 0, where)


def _leaf_labels(leaf: CertInfo, where: dict[str, str]) -> dict[str, str]:
    """The labels of a ``*_last_chain_info`` series: the leaf's identity (blackbox_exporter's)."""
    return {
        **where,
        "fingerprint_sha256": leaf.sha256_fingerprint,
        "subject": leaf.subject,
        "issuer": leaf.issuer,
        "subjectalternative": ",".join(leaf.dns_names + leaf.ip_addresses),
        "serialnumber": leaf.serial,
    }


def _certificate_section(
    out: _Lines, result: TargetResult, address: AddressResult, where: dict[str, str]
) -> None:
    """Certificate facts: expiry as sent and as verified, the leaf (also when unverified)."""
    tls = address.tls
    if tls.earliest_expiry_timestamp is not None:
        out.add("probe_ssl_earliest_cert_expiry", tls.earliest_expiry_timestamp, where)
    if tls.verified_chain_expiry_timestamp is not None:
        out.add("probe_ssl_last_chain_expiry_timestamp_seconds", tls.verified_chain_expiry_timestamp, where)
    if tls.leaf is not None:
        out.add("probe_ssl_last_chain_info", 1, _leaf_labels(tls.leaf, where))


_OCSP_STATUS_VALUE = {"good": 0, "revoked": 1, "unknown": 2}


def _ocsp_section(out: _Lines, ocsp: OcspResult, where: dict[str, str]) -> None:
    """ssl_exporter's OCSP gauges; a value that is unknown is an absent series."""
    if ocsp.error is not None:
        return  # the stapling handshake failed: whether the server staples is unknown
    out.add("probe_ssl_ocsp_response_stapled", 1 if ocsp.stapled else 0, where)
    if ocsp.cert_status in _OCSP_STATUS_VALUE:
        out.add("probe_ssl_ocsp_response_status", _OCSP_STATUS_VALUE[ocsp.cert_status], where)
    for name, value in (
        ("produced_at", ocsp.produced_at_timestamp),
        ("this_update", ocsp.this_update_timestamp),
        ("next_update", ocsp.next_update_timestamp),
        ("revoked_at", ocsp.revocation_timestamp),
    ):
        if value is not None:
            out.add(f"probe_ssl_ocsp_response_{name}_timestamp_seconds", value, where)


def _http_section(out: _Lines, result: TargetResult, address: AddressResult, where: dict[str, str]) -> None:
    """The HTTP stage: the last status code, the mean duration of each phase."""
    answered = [a.status_code for a in address.attempts if a.status_code is not None]
    if answered:
        out.add("probe_http_status_code", answered[-1], where)
    if not result.dns.pinned:
        out.add("probe_http_duration_seconds", result.dns.lookup_seconds, {**where, "phase": "resolve"})
    per_phase: dict[str, list[float]] = {}
    for attempt in address.attempts:
        for phase, seconds in attempt.phases.items():
            per_phase.setdefault(phase, []).append(seconds)
    for phase, values in per_phase.items():
        out.add("probe_http_duration_seconds", sum(values) / len(values), {**where, "phase": phase})


# --------------------------------------------------------------------------- gRPC

#: ``HealthCheckResponse.ServingStatus`` values, each a ``serving_status`` label (as blackbox_exporter).
_SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


def _grpc_section(out: _Lines, address: AddressResult, where: dict[str, str]) -> None:
    """gRPC: the last grpc-status, and which serving status the last Health/Check answered."""
    statuses = [a.grpc_status for a in address.attempts if a.grpc_status is not None]
    if statuses:
        out.add("probe_grpc_status_code", statuses[-1], where)
    serving = [a.grpc_serving_status for a in address.attempts if a.grpc_serving_status is not None]
    if serving:
        for name in _SERVING_STATUSES:
            out.add(
                "probe_grpc_healthcheck_response", int(serving[-1] == name), {**where, "serving_status": name}
            )


def _direct_section(out: _Lines, check: DirectBackendResult, where: dict[str, str]) -> None:
    """A backend's direct check: success, status, duration, TLS version, certificate, pin."""
    out.add("probe_direct_backend_success", 1 if check.answered else 0, where)
    if check.attempt is not None and check.attempt.status_code is not None:
        out.add("probe_direct_backend_http_status_code", check.attempt.status_code, where)
    out.add("probe_direct_backend_duration_seconds", check.duration_seconds, where)
    tls = check.tls
    if tls is None:
        return
    if tls.version:
        out.add(
            "probe_direct_backend_tls_version_info",
            1,
            {**where, "version": blackbox_tls_version(tls.version)},
        )
    if tls.earliest_expiry_timestamp is not None:
        out.add("probe_direct_backend_ssl_earliest_cert_expiry", tls.earliest_expiry_timestamp, where)
    if tls.leaf is not None:
        out.add("probe_direct_backend_ssl_last_chain_info", 1, _leaf_labels(tls.leaf, where))
    if check.pin_matches is not None:
        out.add("probe_direct_backend_cert_pin_match", 1 if check.pin_matches else 0, where)


def _client_section(out: _Lines, result: TargetResult, target: dict[str, str]) -> None:
    """The client certificates' expiry, as ssl_exporter's file prober reports a certificate file."""
    clients = [result.target.client_certificate, *(c.client_certificate for c in result.direct_backends)]
    seen: set[str] = set()
    for client in clients:
        if client is None or client.cert_file in seen:
            continue
        seen.add(client.cert_file)
        leaf = client.leaf
        labels = {
            **target,
            "file": client.cert_file,
            "cn": leaf.common_name or "",
            "issuer_cn": common_name_of(leaf.issuer),
            "serial_no": leaf.serial,
        }
        out.add("probe_ssl_file_cert_not_after", leaf.not_after_timestamp, labels)


# --------------------------------------------------------------------------- lines


class _Lines:
    """Sample lines collected per family, in the exposition syntax both formats share.

    A section passes one labels dict to several :meth:`add` calls (a target's, an
    address's): the rendered label text of the last dict is kept and reused while the same
    object comes again, so a dict passed here must not be changed afterwards.
    """

    __slots__ = ("_last_labels", "_last_text", "_lines")

    def __init__(self) -> None:
        self._lines: dict[int, list[str]] = {}
        self._last_labels: dict[str, str] | None = None  # held, so its id cannot be reused
        self._last_text = ""

    def add(self, name: str, value: float, labels: dict[str, str] | None = None, suffix: str = "") -> None:
        """One sample of family ``name`` (a histogram's samples carry a ``suffix``)."""
        if labels:
            if labels is not self._last_labels:
                self._last_labels = labels
                self._last_text = ",".join([f'{key}="{_escape(labels[key])}"' for key in sorted(labels)])
            line = f"{name}{suffix}{{{self._last_text}}} {go_float(value)}\n"
        else:
            line = f"{name}{suffix} {go_float(value)}\n"
        index = _INDEX[name]
        lines = self._lines.get(index)
        if lines is None:
            self._lines[index] = [line]
        else:
            lines.append(line)

    def exposition(self) -> Exposition:
        lines = self._lines
        return tuple("".join(lines[i]).encode() if i in lines else b"" for i in range(len(SPECS)))


def _escape(value: str) -> str:
    """A label value escaped as both formats require: backslash, newline, double quote."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def go_float(value: float) -> str:
    """A sample value as Go (and prometheus_client) print it: ``1.0``, ``1.78e+09``, ``+Inf``.

    Python's ``repr``, except that large positive values switch to an exponent after six
    integer digits as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` does.
    """
    if type(value) is int and -1_000_000 < value < 1_000_000:  # counts, codes: no exponent
        return f"{value}.0"
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- collector


class ProbeCollector:
    """The store's metrics as a prometheus_client collector, for embedding and for tests.

    ``probe run`` does not use it: its endpoint serves :func:`exposition` directly. This
    adapter parses that same OpenMetrics text, so what it yields is exactly what a scrape
    shows. prometheus_client is imported only when it is used.

    Args:
        store: the daemon's store; only :meth:`ResultStore.snapshot` is called.
    """

    def __init__(self, store: ResultStore) -> None:
        self._store = store

    def describe(self) -> Iterator[Metric]:
        """Empty families, so registries know the names without collecting."""
        from prometheus_client.core import Metric

        return iter([Metric(spec.family, spec.help, spec.kind) for spec in SPECS])

    def collect(self) -> Iterator[Metric]:
        """Families parsed from the exposition of the latest snapshot."""
        from prometheus_client.openmetrics.parser import text_string_to_metric_families

        text = exposition(self._store.snapshot(), openmetrics=True).decode()
        return iter(list(text_string_to_metric_families(text)))  # type: ignore[no-untyped-call]
