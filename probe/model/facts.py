"""What a target is, as every cycle's result refers to it: built once per config load.

A :class:`TargetFacts` holds the settings that reports, metrics and the judge read about a
target (its URL and name, the backend rule and expectations, how rotation is judged, the
timeouts it runs with); ``probe.engine.plan`` builds one per target when the config is
loaded, and every :class:`~probe.model.results.TargetResult` of that target refers to the
same object instead of restating its config each cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.model.reasons import Platform

if TYPE_CHECKING:
    from probe.model.results import CertInfo


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The client certificate probe presents to a listener that asks for one (mutual TLS).

    Read once per config load from ``tls_client.cert_file`` (``--cert``), whose private key
    was checked to match it.

    Attributes:
        cert_file: the file, as configured (the certificate, then the intermediates sent
            with it).
        leaf: the certificate's facts (subject, issuer, validity …).
        chain: the facts of the intermediates in the file, in the order sent.
    """

    cert_file: str
    leaf: CertInfo
    chain: tuple[CertInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """One target's settings as results, reports and the judge read them.

    Attributes:
        name: the configured target name.
        url: the configured URL.
        hostname: the name used for DNS, SNI, Host and name checks (the URL's host, or
            ``server_name`` for an IP-address URL).
        port: the TCP port.
        scheme: ``"https"`` or ``"http"`` (plain HTTP: no TLS stage, no certificate checked).
        expected_backends: the names in ``expect_backends`` (empty when a count or unset).
        expected_backend_count: how many backends should answer, ``None`` when unset.
        backend_rule: how backends are identified, ``("header", name)`` or
            ``("body_regex", pattern)``; ``None`` when no rule is configured.
        insecure_skip_verify: certificate verification is off (never for ``http://``).
        request_headers: the configured request headers, secret values as ``(secret)``.
        reuse_connections: the requests to an address share one connection.
        platform: whose words the findings' hints use in reports (``probe.report.hints``);
            it never changes the verdict.
        timeouts_seconds: the effective timeouts, after unset ones were fitted to the
            interval and the deadline: ``(name, seconds)`` for ``dns``, ``connect``,
            ``tls``, ``http`` and ``deadline``.
        balancing: how an unseen backend is judged (``probe.judge.balancing``).
        cross_zone: ``False`` when each address reaches only its own zone's backends.
        expect_redirect: ``"https"`` when every address must redirect to the ``https://``
            form of the URL (backends and rotation are then not judged), else ``None``.
        cert_expiry_warning_days: a chain expiring within this many days is a warning.
        requests_per_address: HTTP requests sent to each address per cycle.
        client_certificate: the client certificate presented when a listener asks for one
            (``tls_client``), ``None`` without one.
        grpc_health_service: with ``grpc_health``, the service each request's
            ``Health/Check`` asks for (``""``: the server as a whole); ``None`` for GETs.
    """

    name: str
    url: str
    hostname: str
    port: int
    scheme: str = "https"
    expected_backends: tuple[str, ...] = ()
    expected_backend_count: int | None = None
    backend_rule: tuple[str, str] | None = None
    insecure_skip_verify: bool = False
    request_headers: tuple[tuple[str, str], ...] = ()
    reuse_connections: bool = False
    platform: Platform = Platform.GENERIC
    timeouts_seconds: tuple[tuple[str, float], ...] = ()
    balancing: str = "round_robin"
    cross_zone: bool = True
    expect_redirect: str | None = None
    cert_expiry_warning_days: float = 30.0
    requests_per_address: int = 4
    client_certificate: ClientCertificate | None = None
    grpc_health_service: str | None = None

    @property
    def plain(self) -> bool:
        """The target is ``http://``: no TLS stage, no certificate checked."""
        return self.scheme == "http"

    @property
    def identifying_rule(self) -> tuple[str, str] | None:
        """The backend rule as it applies to responses: ``None`` without one or with ``expect_redirect``.

        Under ``expect_redirect`` the listener answers itself, so no backend is identified
        and backends and rotation are not judged.
        """
        return None if self.expect_redirect is not None else self.backend_rule
