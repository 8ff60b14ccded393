"""One probe cycle of one target: DNS, then every address concurrently, then the verdict.

:func:`run_cycle` owns the overall deadline and never raises: a bug becomes an
``internal_error`` finding (logged with its traceback), a cycle cut by the deadline a
``cycle_deadline_exceeded`` one, and the results gathered so far are kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from probe._text import shorten
from probe.config.errors import ConfigError
from probe.config.models import Config, DirectBackendConfig, TargetConfig, Timeouts
from probe.judge import balancing as rotation
from probe.judge import direct_backends as direct
from probe.judge.balancing import Rotation
from probe.judge.verdict import evaluate, status_of, with_cycle_findings
from probe.model.deadline import Deadline
from probe.model.reasons import Platform, Reason, Status
from probe.model.results import (
    AddressResult,
    DirectBackendResult,
    DnsResult,
    Failure,
    HttpAttempt,
    IPAddress,
    OcspResult,
    TargetResult,
    TlsResult,
)
from probe.stages import dns as dns_stage
from probe.stages import http as http_stage
from probe.stages import http_rules
from probe.stages import tls as tls_stage

if TYPE_CHECKING:
    from OpenSSL import SSL

log = logging.getLogger("probe.cycle")

#: How long past its deadline a cycle may run before the backstop cancels it (seconds).
BACKSTOP_GRACE = 0.5

#: Addresses of one target probed at the same time (an ALB has one per zone).
MAX_CONCURRENT_ADDRESSES = 16


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What a cycle needs besides the config, prepared once per config load.

    Attributes:
        target: the target's configuration.
        resolvers: ``(ip, port)`` pairs to ask, in order.
        contexts: SSL contexts, shared by targets with the same trust configuration.
        ocsp: the pyOpenSSL context of the stapling handshake, ``None`` unless ``ocsp: staple``.
        http: the target's httpx client, kept across cycles (built from ``contexts.http``
            when not given) and shared by the plan's targets with equal client settings
            (:func:`client_key`); :func:`close_plans` closes it.
        direct: one plan per entry of ``direct_backends``, in order: the settings of
            :meth:`TargetConfig.direct_target` with their own contexts and client.
    """

    target: TargetConfig
    resolvers: tuple[tuple[str, int], ...]
    contexts: tls_stage.TlsContexts
    ocsp: SSL.Context | None = None
    http: http_stage.TargetClient | None = None
    direct: tuple[TargetPlan, ...] = ()

    def http_client(self) -> http_stage.TargetClient:
        """The target's HTTP client (a new one for a plan built without)."""
        return (
            self.http if self.http is not None else http_stage.TargetClient(self.target, self.contexts.http)
        )


def plan(config: Config) -> tuple[TargetPlan, ...]:
    """Prepare every target of ``config``: resolvers and SSL contexts.

    Contexts are built once per distinct ``(ca_file, min_tls_version,
    insecure_skip_verify, http_version)``; loading the system trust store costs tens of milliseconds,
    so it must not happen per probe. One HTTP client serves every target with the same
    contexts and :func:`client_key` (about 2.6 KiB per target when each had its own): every
    request still goes on a new connection with its own headers, SNI and timeouts.

    A pinned target without ``expect_same_addresses_as`` resolves nothing and gets no resolvers.
    An ``http://`` target gets non-verifying contexts that no handshake uses (its
    ``ca_file`` is not read).

    Raises:
        ConfigError: a ``ca_file`` cannot be loaded, or no resolver is configured.
    """
    where = str(config.path) if config.path else "config"
    contexts: dict[tuple[Path | None, str, bool, str], tls_stage.TlsContexts] = {}
    ocsp_contexts: dict[tuple[Path | None, str], SSL.Context] = {}
    system: tuple[tuple[str, int], ...] | None = None
    clients: dict[tuple[object, ...], http_stage.TargetClient] = {}

    def client(
        target: TargetConfig, contexts_key: tuple[Path | None, str, bool, str]
    ) -> http_stage.TargetClient:
        key = (contexts_key, *client_key(target))
        if key not in clients:
            clients[key] = http_stage.TargetClient(target, contexts[contexts_key].http)
        return clients[key]

    plans = []
    for index, target in enumerate(config.targets):
        key = (target.ca_file, target.min_tls_version, target.insecure_skip_verify, target.http_version)
        if target.plain:
            # No handshake: no trust store to load (and a ca_file from defaults is not read).
            key = (None, "1.2", True, "1.1")
        if key not in contexts:
            try:
                contexts[key] = tls_stage.build_contexts(*key)
            except ValueError as exc:
                raise ConfigError(str(exc), where=where, field=f"targets[{index}].ca_file") from None
        ocsp_context = None
        if target.ocsp == "staple":
            from probe.stages import ocsp as ocsp_stage  # pyOpenSSL: imported only for targets that staple

            ocsp_key = (target.ca_file, target.min_tls_version)
            if ocsp_key not in ocsp_contexts:
                try:
                    ocsp_contexts[ocsp_key] = ocsp_stage.build_context(*ocsp_key)
                except ValueError as exc:
                    raise ConfigError(str(exc), where=where, field=f"targets[{index}].ca_file") from None
            ocsp_context = ocsp_contexts[ocsp_key]
        resolvers = target.resolvers
        if target.pinned_by is not None and target.expect_same_addresses_as is None:
            resolvers = ()  # nothing to resolve: no resolver needed, none read from resolv.conf
        elif resolvers is None:
            if system is None:
                try:
                    system = dns_stage.system_resolvers()
                except LookupError as exc:
                    raise ConfigError(str(exc), where=where, field=f"targets[{index}].resolvers") from None
            resolvers = system
        http_client = client(target, key)
        direct_plans = []
        for number, backend in enumerate(target.direct_backends):
            hop = target.direct_target(backend)
            hop_key = (hop.ca_file, hop.min_tls_version, hop.insecure_skip_verify, hop.http_version)
            if hop_key not in contexts:
                try:
                    contexts[hop_key] = tls_stage.build_contexts(*hop_key)
                except ValueError as exc:
                    field = f"targets[{index}].direct_backends[{number}].ca_file"
                    raise ConfigError(str(exc), where=where, field=field) from None
            hop_resolvers: tuple[tuple[str, int], ...] = ()
            if hop.pinned_by is None:  # a DNS name in the backend's URL
                if target.resolvers is None and system is None:
                    try:
                        system = dns_stage.system_resolvers()
                    except LookupError as exc:
                        raise ConfigError(
                            str(exc), where=where, field=f"targets[{index}].resolvers"
                        ) from None
                hop_resolvers = tuple(target.resolvers or system or ())
            hop_client = client(hop, hop_key)
            direct_plans.append(TargetPlan(hop, hop_resolvers, contexts[hop_key], None, hop_client))
        plans.append(
            TargetPlan(
                target, tuple(resolvers), contexts[key], ocsp_context, http_client, tuple(direct_plans)
            )
        )
    return tuple(plans)


def client_key(target: TargetConfig) -> tuple[Timeouts, str, bool, bool]:
    """What :func:`probe.stages.http.build_client` reads of a target, besides its SSL context.

    Targets of one :func:`plan` with equal keys and contexts share one
    :class:`~probe.stages.http.TargetClient`.
    """
    return (target.timeouts, target.http_version, target.plain, target.reuse_connections)


async def close_plans(plans: Iterable[TargetPlan]) -> None:
    """Close the HTTP clients of ``plans`` (each once no address-probe uses it any more).

    A client shared by several plans is closed once; closing it again does nothing.
    """
    for target_plan in plans:
        if target_plan.http is not None:
            await target_plan.http.aclose()
        await close_plans(target_plan.direct)


async def run_cycle(
    plan: TargetPlan,
    clock: Callable[[], float] = time.time,
    memory: Rotation | None = None,
    early: dns_stage.EarlyLookup | None = None,
    interval: float | None = None,
) -> TargetResult:
    """Probe one target once.

    Args:
        plan: the prepared target.
        clock: Unix time (for the start timestamp and certificate dates).
        memory: the previous cycle's ``rotation`` (the daemon, ``--watch``), so that with
            ``balancing: weighted_random`` or ``least_outstanding_requests`` responses are
            counted across cycles; ``None`` for a single check.
        early: the target's DNS stage, already started by
            :func:`~probe.stages.dns.resolve_early` (``probe check`` sends its query before
            importing this module). The cycle's start time is the lookup's; the seconds
            between the lookup's end and this call are left out of the duration and the
            deadline, so both count probing only, never imports. ``None``: the cycle
            resolves the name itself.
        interval: the daemon's interval for the target (seconds), carried in the result
            for ``probe_interval_seconds``; ``None`` for a single check.

    Returns:
        The target's result. Never raises (except for cancellation of the caller).
    """
    target = plan.target
    if early is None:
        started = clock()
        start = time.monotonic()
        deadline = Deadline.after(target.timeouts.deadline)
        backstop = target.timeouts.deadline + BACKSTOP_GRACE
    else:
        # Not probing between the lookup's end and now (imports): move the clock past it.
        paused = 0.0 if early.answered is None else max(0.0, time.monotonic() - early.answered)
        started = early.started
        start = early.start + paused
        deadline = Deadline(early.deadline.expires + paused, early.deadline.seconds)
        backstop = deadline.remaining() + BACKSTOP_GRACE
    dns_result: DnsResult | None = None
    done: dict[IPAddress, AddressResult] = {}
    checked: dict[int, DirectBackendResult] = {}
    extra: list[Failure] = []
    try:
        async with asyncio.timeout(backstop):
            async with asyncio.TaskGroup() as group:
                # Direct backend checks run beside the DNS stage and the addresses.
                for number, hop in enumerate(plan.direct):
                    group.create_task(_check_into(checked, number, plan, hop, deadline, clock))
                if early is not None and early.task is not None:
                    dns_result = await early.task
                else:
                    dns_result = await dns_stage.resolve(
                        dns_stage.DnsPlan.of(target, plan.resolvers), deadline
                    )
                slots = asyncio.Semaphore(MAX_CONCURRENT_ADDRESSES)
                for address in dns_result.probe_addresses:
                    group.create_task(_probe_into(done, slots, address, plan, deadline, clock))
    except TimeoutError:
        extra.append(
            Failure(
                Reason.CYCLE_DEADLINE_EXCEEDED,
                f"the cycle did not finish within its {target.timeouts.deadline:g}s deadline",
            )
        )
    except Exception as exc:
        extra.append(_bug(exc, target.name))
    if dns_result is None:
        dns_result = DnsResult(
            target.hostname, (), (), None, None, (), time.monotonic() - start, None, (), target.pinned_by
        )
    unfinished = extra[0] if extra else Failure(Reason.CYCLE_DEADLINE_EXCEEDED, "not probed")
    addresses = tuple(
        done.get(address) or _unfinished(address, target.port, unfinished, target.plain)
        for address in dns_result.probe_addresses
    )
    direct_results = tuple(
        checked.get(number) or direct.unfinished(backend, hop.target, unfinished)
        for number, (backend, hop) in enumerate(zip(target.direct_backends, plan.direct, strict=True))
    )
    try:
        folded = rotation.fold(
            memory,
            addresses,
            balancing=target.balancing,
            cross_zone=target.cross_zone,
            names=target.expected_backend_names,
            count=target.expected_backend_count if target.backend is not None else None,
            requests_per_address=target.requests_per_address,
        )
        failures, status = evaluate(dns_result, addresses, target, clock(), folded)
        if direct_results:
            failures = direct.correlate(direct_results, addresses, target, failures, folded)
            status = status_of(failures)
        addresses = with_cycle_findings(addresses, failures)
        memory = folded
    except Exception as exc:  # a bug in the verdict: the stages' facts and findings are kept
        failures = (
            *dns_result.failures,
            *(f for a in addresses for f in a.failures),
            _bug(exc, target.name),
        )
        status = status_of(failures)
    if extra and len(done) == len(addresses):  # otherwise the unfinished addresses carry it
        failures = (*failures, *extra)
        status = status_of(failures)
    return TargetResult(
        name=target.name,
        url=target.url,
        hostname=target.hostname,
        port=target.port,
        started_timestamp=started,
        duration_seconds=time.monotonic() - start,
        dns=dns_result,
        addresses=addresses,
        failures=failures,
        status=status,
        expected_backends=target.expected_backend_names,
        expected_backend_count=target.expected_backend_count,
        insecure_skip_verify=target.insecure_skip_verify and not target.plain,
        request_headers=tuple(
            (name, "(secret)" if target.is_secret_header(name) else value.value)
            for name, value in target.headers.items()
        ),
        backend_rule=_backend_rule(target),
        reuse_connections=target.reuse_connections,
        platform=Platform(target.platform),
        timeouts_seconds=_timeouts_seconds(target.timeouts),
        direct_backends=direct_results,
        balancing=target.balancing,
        cross_zone=target.cross_zone,
        rotation=memory,
        scheme=target.scheme,
        expect_redirect=target.expect_redirect,
        interval_seconds=interval,
    )


@functools.lru_cache(maxsize=256)
def _timeouts_seconds(timeouts: Timeouts) -> tuple[tuple[str, float], ...]:
    """``timeouts.as_seconds()``, one tuple shared by every result of equal timeouts.

    Each result kept in the daemon's store carries it; built per cycle it cost about
    0.7 KiB per target and a microsecond per cycle.
    """
    return timeouts.as_seconds()


def _backend_rule(target: TargetConfig) -> tuple[str, str] | None:
    """The backend rule as ``(kind, value)`` for the result, ``None`` without one.

    Also ``None`` with ``expect_redirect``, under which no backend is identified.
    """
    if target.backend is None or target.expect_redirect is not None:
        return None
    if target.backend.header is not None:
        return ("header", target.backend.header)
    assert target.backend.body_regex is not None
    return ("body_regex", target.backend.body_regex.pattern)


async def probe_address(
    address: IPAddress,
    plan: TargetPlan,
    deadline: Deadline,
    clock: Callable[[], float] = time.time,
    tls_check: Callable[[TlsResult], tuple[Failure, ...]] | None = None,
) -> AddressResult:
    """TLS, then HTTP, then the stapled OCSP response (with ``ocsp: staple``) at one address.

    An ``http://`` target has no TLS stage: a TCP connect (``tls.plain``), then HTTP/1.1
    over that connection for the first request.

    HTTP requests are sent only after a handshake that verified (or with
    ``insecure_skip_verify``): like curl, probe does not talk HTTP to a server whose
    certificate failed, and the TLS finding says why. The stapling handshake follows the
    same rule. The first request goes over the TLS stage's own connection, so an
    address-probe costs one TCP connect and one verified handshake (plus one per further
    request); its ``connect`` and ``tls`` phases are the TLS stage's.

    ``tls_check`` adds findings about a completed handshake before any request is sent
    (a direct backend's fingerprint pin); a critical one stops the address-probe there.
    """
    target = plan.target
    try:
        if target.plain:
            tls, connection = await tls_stage.connect_plain(address, target.port, target.timeouts, deadline)
        else:
            tls, connection = await tls_stage.handshake_open(
                address, target.port, target.hostname, plan.contexts, target.timeouts, deadline, clock
            )
    except Exception as exc:
        return _unfinished(address, target.port, _bug(exc, target.name, address), target.plain)
    if tls_check is not None and tls.version is not None:
        tls = dataclasses.replace(tls, failures=tls.failures + tls_check(tls))
    # Warnings (a weak cipher, a deprecated version) do not stop HTTP or OCSP; critical ones do.
    if not tls.connected or status_of(tls.failures) is Status.CRITICAL:
        if connection is not None:
            connection.close()
        return AddressResult(address, tls, (), tls.failures, status_of(tls.failures), None)
    attempts: tuple[HttpAttempt, ...] = ()
    http_bugs: tuple[Failure, ...] = ()
    ocsp_bugs: tuple[Failure, ...] = ()
    ocsp: OcspResult | None = None
    try:
        # The first request goes over the TLS stage's connection (one handshake per address).
        async with plan.http_client().session() as client:
            attempts = await http_stage.request_rounds(client, address, target, deadline, connection, tls)
    except Exception as exc:  # the TLS facts gathered so far are kept
        http_bugs = (_bug(exc, target.name, address),)
    finally:
        if connection is not None:
            connection.close()  # a no-op when a request took it
    if plan.ocsp is not None:
        # After HTTP, so that the TLS stage's connection is closed before the stapling
        # handshake: a server that serves one connection at a time (openssl s_server)
        # would not answer it while that connection is open.
        from probe.stages import ocsp as ocsp_stage

        try:
            ocsp = await ocsp_stage.staple(
                address, target.port, target.hostname, plan.ocsp, target.timeouts, deadline, clock
            )
        except Exception as exc:  # the TLS facts gathered so far are kept
            ocsp_bugs = (_bug(exc, target.name, address),)
    ocsp_failures = ocsp.failures if ocsp is not None else ()
    failures = tls.failures + ocsp_failures + http_rules.summarise(attempts, address) + ocsp_bugs + http_bugs
    return AddressResult(address, tls, attempts, failures, status_of(failures), ocsp)


def _bug(exc: Exception, target: str, address: IPAddress | None = None) -> Failure:
    """Log a bug with its traceback and turn it into an ``internal_error`` finding."""
    log.error(
        "internal error",
        exc_info=exc,
        extra={"target": target, "address": str(address) if address is not None else ""},
    )
    first = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) else exc
    return Failure(
        Reason.INTERNAL_ERROR,
        f"bug in probe: {type(first).__name__}: {shorten(str(first))} (traceback in the log)",
        address,
    )


async def check_direct(
    backend: DirectBackendConfig,
    hop: TargetPlan,
    deadline: Deadline,
    clock: Callable[[], float] = time.time,
) -> DirectBackendResult:
    """Check one backend directly: DNS (none for an IP literal), TCP, TLS, one HTTP request.

    The ordinary stages run with the hop's settings (:meth:`TargetConfig.direct_target`);
    a fingerprint pin is checked after the handshake, before the request. Only the first
    address of a DNS-name URL is checked.

    Returns:
        The hop's result; network faults are findings in it.
    """
    start = time.monotonic()
    dns_result = await dns_stage.resolve(dns_stage.DnsPlan.of(hop.target, hop.resolvers), deadline)
    address_result = None
    if dns_result.probe_addresses:
        address_result = await probe_address(
            dns_result.probe_addresses[0],
            hop,
            deadline,
            clock,
            tls_check=lambda tls: direct.pin_findings(tls, backend),
        )
    return direct.hop_result(
        backend, hop.target, dns_result, address_result, time.monotonic() - start, clock()
    )


async def _check_into(
    checked: dict[int, DirectBackendResult],
    number: int,
    plan: TargetPlan,
    hop: TargetPlan,
    deadline: Deadline,
    clock: Callable[[], float],
) -> None:
    backend = plan.target.direct_backends[number]
    try:
        checked[number] = await check_direct(backend, hop, deadline, clock)
    except Exception as exc:  # a bug: the other checks and the addresses go on
        checked[number] = direct.unfinished(backend, hop.target, _bug(exc, plan.target.name))


async def _probe_into(
    done: dict[IPAddress, AddressResult],
    slots: asyncio.Semaphore,
    address: IPAddress,
    plan: TargetPlan,
    deadline: Deadline,
    clock: Callable[[], float],
) -> None:
    async with slots:
        done[address] = await probe_address(address, plan, deadline, clock)


def _unfinished(address: IPAddress, port: int, why: Failure, plain: bool = False) -> AddressResult:
    failure = Failure(why.reason, why.detail, address)
    tls = TlsResult(address, port, None, None, None, None, None, False, None, None, (), (), (failure,), plain)
    return AddressResult(address, tls, (), (failure,), status_of((failure,)))
