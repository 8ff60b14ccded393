"""Hand-built stage results for unit tests: one builder per result type.

Every field has a plain default and can be given as a keyword, so a test module keeps its
own values (its ``NOW``, serials, timings) by passing them. The defaults describe a healthy
HTTPS target ``www.corp.example`` on port 443 probed at ``NOW``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from probe.config.models import TargetConfig
from probe.model.facts import TargetFacts
from probe.model.reasons import Status
from probe.model.results import (
    AddressResult,
    AliasResult,
    CertInfo,
    DnsAnswer,
    DnsResult,
    Failure,
    HttpAttempt,
    IPAddress,
    PhaseTimes,
    TargetResult,
    TlsResult,
)
from probe.stages.http_rules import judge_answer

DAY = 86400.0
NOW = 1_780_000_000.0
NO_PHASES = PhaseTimes()


def worst(failures: Iterable[Failure]) -> Status:
    """The status of some findings: the worst severity, ``OK`` when there are none."""
    return Status.worst(f.severity for f in failures)


def cert(
    cn: str,
    not_after: float,
    *,
    issuer: str = "Corp Intermediate CA",
    serial: str = "1",
    not_before: float = NOW - 100 * DAY,
    fingerprint: str = "",
    dns_names: tuple[str, ...] | None = None,
    ip_addresses: tuple[str, ...] = (),
    is_ca: bool | None = None,
) -> CertInfo:
    """A certificate ``CN=cn``: a leaf for ``cn`` when it is a DNS name, else a CA.

    Unless given, the fingerprint is derived from ``cn``, a DNS name is its own only SAN and
    a name without a dot is a CA.
    """
    leaf = "." in cn
    return CertInfo(
        subject=f"CN={cn}",
        issuer=f"CN={issuer}",
        serial=serial,
        not_before_timestamp=not_before,
        not_after_timestamp=not_after,
        sha256_fingerprint=fingerprint or (cn.encode().hex() * 8)[:64],
        dns_names=dns_names if dns_names is not None else ((cn,) if leaf else ()),
        ip_addresses=ip_addresses,
        common_name=cn,
        is_ca=is_ca if is_ca is not None else not leaf,
        key="EC P-256",
        signature_algorithm="ecdsa-with-SHA256",
    )


def tls_result(
    ip: IPAddress,
    chain: tuple[CertInfo, ...] = (),
    verified_chain: tuple[CertInfo, ...] = (),
    *,
    verified: bool | None = None,
    verify_code: int | None = None,
    verify_message: str | None = None,
    connect_seconds: float = 0.001,
    handshake_seconds: float = 0.002,
    version: str = "TLSv1.3",
    cipher: str | None = "TLS_AES_128_GCM_SHA256",
    alpn: str | None = "http/1.1",
    failures: tuple[Failure, ...] = (),
) -> TlsResult:
    """A completed handshake with ``ip`` on port 443; verified when ``verified_chain`` is not empty."""
    return TlsResult(
        address=ip,
        port=443,
        connect_seconds=connect_seconds,
        handshake_seconds=handshake_seconds,
        version=version,
        cipher=cipher,
        alpn=alpn,
        verified=verified if verified is not None else bool(verified_chain),
        verify_code=verify_code,
        verify_message=verify_message,
        chain=chain,
        verified_chain=verified_chain,
        failures=failures,
    )


def unconnected_tls(ip: IPAddress, failure: Failure) -> TlsResult:
    """No TCP connection to ``ip`` on port 443 (``failure`` says why), so no handshake either."""
    return TlsResult(
        address=ip,
        port=443,
        connect_seconds=None,
        handshake_seconds=None,
        version=None,
        cipher=None,
        alpn=None,
        verified=False,
        verify_code=None,
        verify_message=None,
        chain=(),
        verified_chain=(),
        failures=(failure,),
    )


def http_attempt(
    backend: str | None = None,
    *,
    status: int | None = 200,
    phases: PhaseTimes = NO_PHASES,
    duration: float = 0.01,
    body_bytes: int = 2,
    failures: tuple[Failure, ...] = (),
) -> HttpAttempt:
    """One HTTP/1.1 request answered by ``backend``; ``status=None`` means no response."""
    return HttpAttempt(
        status_code=status,
        http_version="HTTP/1.1" if status is not None else None,
        backend=backend,
        body_bytes=body_bytes,
        body_truncated=False,
        phases=phases,
        duration_seconds=duration,
        failures=failures,
    )


def address_result(
    ip: IPAddress,
    tls: TlsResult,
    attempts: Sequence[HttpAttempt] = (),
    *,
    failures: Sequence[Failure] | None = None,
) -> AddressResult:
    """One address's results; unless given, its findings are those of its TLS result and requests."""
    if failures is None:
        failures = (*tls.failures, *(f for a in attempts for f in a.failures))
    return AddressResult(address=ip, tls=tls, attempts=tuple(attempts), failures=tuple(failures))


def dns_result(
    answers: Sequence[IPAddress] = (),
    *,
    name: str = "www.corp.example",
    unexpected: Sequence[IPAddress] = (),
    resolver: str | None = "10.0.0.53:53",
    rcode: str | None = "NOERROR",
    lookup_seconds: float = 0.001,
    alias: AliasResult | None = None,
    failures: tuple[Failure, ...] = (),
) -> DnsResult:
    """A lookup of ``name`` answering ``answers`` (TTL 60); those in ``unexpected`` are not expected."""
    return DnsResult(
        name=name,
        answers=tuple(DnsAnswer(a, 60, a not in unexpected) for a in answers),
        cname_chain=(),
        resolver=resolver,
        rcode=rcode,
        queries=(),
        lookup_seconds=lookup_seconds,
        alias=alias,
        failures=failures,
    )


def facts(name: str = "www", **fields: Any) -> TargetFacts:
    """The facts of target ``name`` (``https://{name}.corp.example/``); any field can be given."""
    fields.setdefault("url", f"https://{name}.corp.example/")
    fields.setdefault("hostname", f"{name}.corp.example")
    fields.setdefault("port", 443)
    return TargetFacts(name=name, **fields)


def target_result(
    name: str = "www",
    addresses: Sequence[AddressResult] = (),
    *,
    dns: DnsResult | None = None,
    failures: Sequence[Failure] | None = None,
    extra: Sequence[Failure] = (),
    started: float = NOW,
    duration: float = 0.1,
    expected_backends: tuple[str, ...] = (),
    expected_backend_count: int | None = None,
    **target: Any,
) -> TargetResult:
    """A cycle of target ``name`` (``https://{name}.corp.example/``) started at ``started``.

    Unless given: the DNS result answers the addresses, the findings are those of the DNS
    result and the addresses followed by ``extra``, and the expected backend count is the
    number of ``expected_backends`` (``None`` for none). Other keywords are fields of the
    target's facts (:func:`facts`). The status is always the worst of the findings.
    """
    if dns is None:
        dns = dns_result([a.address for a in addresses])
    if failures is None:
        failures = (*dns.failures, *(f for a in addresses for f in a.failures))
    failures = (*failures, *extra)
    return TargetResult(
        target=facts(
            name,
            expected_backends=expected_backends,
            expected_backend_count=(
                expected_backend_count
                if expected_backend_count is not None
                else len(expected_backends) or None
            ),
            **target,
        ),
        started_timestamp=started,
        duration_seconds=duration,
        dns=dns,
        addresses=tuple(addresses),
        failures=tuple(failures),
    )


def judge_response(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    body: bytes,
    target: TargetConfig,
    address: IPAddress | None = None,
    *,
    undecodable: str | None = None,
) -> tuple[str | None, tuple[Failure, ...]]:
    """``http_rules.judge_answer`` without the load balancer's answer: ``(backend, failures)``."""
    backend, failures, _ = judge_answer(status, headers, body, target, address, undecodable=undecodable)
    return backend, failures
