"""One probe cycle of one target: DNS, then every address concurrently, then the judgement.

:func:`run_cycle` gathers the stages' results (:func:`_gather`: the concurrent address-probes
and direct checks, the early DNS answer, the backstop), hands them to the one pure
judgement (:func:`probe.judge.judgement.judge_cycle`) and builds the result. It owns the
overall deadline and never raises: a bug becomes an ``internal_error`` finding (logged with
its traceback), a cycle cut by the deadline a ``cycle_deadline_exceeded`` one, and the
results gathered so far are kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from probe._text import shorten
from probe.config.models import DirectBackendConfig
from probe.judge import direct_backends
from probe.judge.judgement import Gathered, Judgement, judge_cycle
from probe.model.deadline import Deadline
from probe.model.reasons import Reason, Status
from probe.model.results import (
    AddressResult,
    DirectBackendResult,
    DnsResult,
    Failure,
    HttpAttempt,
    IPAddress,
    OcspResult,
    Rotation,
    TargetResult,
    TlsResult,
)
from probe.stages import client_auth, http_rules
from probe.stages import dns as dns_stage
from probe.stages import http as http_stage
from probe.stages import tls as tls_stage
from probe.stages.plan import TargetPlan

log = logging.getLogger("probe.cycle")

#: How long past its deadline a cycle may run before the backstop cancels it (seconds).
BACKSTOP_GRACE = 0.5

#: Addresses of one target probed at the same time (an ALB has one per zone).
MAX_CONCURRENT_ADDRESSES = 16


@dataclass(frozen=True, slots=True)
class _Clock:
    """When a cycle started and when it must end.

    Attributes:
        started: Unix time of the start (the lookup's, for an early DNS answer).
        start: ``time.monotonic()`` of the start, for the duration.
        deadline: the overall deadline the stages clip to.
        backstop: seconds after which the gathering is cancelled.
    """

    started: float
    start: float
    deadline: Deadline
    backstop: float

    @classmethod
    def of(cls, plan: TargetPlan, clock: Callable[[], float], early: dns_stage.EarlyLookup | None) -> _Clock:
        """The cycle's clock; with an ``early`` lookup, it started with the lookup.

        The seconds between the lookup's end and now (imports, not probing) are left out of
        the duration and the deadline.
        """
        seconds = plan.target.timeouts.deadline
        if early is None:
            return cls(clock(), time.monotonic(), Deadline.after(seconds), seconds + BACKSTOP_GRACE)
        paused = 0.0 if early.answered is None else max(0.0, time.monotonic() - early.answered)
        deadline = Deadline(early.deadline.expires + paused, early.deadline.seconds)
        return cls(early.started, early.start + paused, deadline, deadline.remaining() + BACKSTOP_GRACE)


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
    timing = _Clock.of(plan, clock, early)
    gathered, interruption, complete = await _gather(plan, timing, clock, early)
    judgement = _judge(gathered, plan, clock(), memory)
    failures = judgement.failures
    if interruption is not None and complete:  # otherwise the unfinished addresses carry it
        failures = (*failures, interruption)
    return TargetResult(
        target=plan.facts,
        started_timestamp=timing.started,
        duration_seconds=time.monotonic() - timing.start,
        dns=gathered.dns,
        addresses=judgement.addresses,
        failures=failures,
        direct_backends=gathered.direct,
        rotation=judgement.rotation,
        interval_seconds=interval,
    )


async def _gather(
    plan: TargetPlan,
    timing: _Clock,
    clock: Callable[[], float],
    early: dns_stage.EarlyLookup | None = None,
) -> tuple[Gathered, Failure | None, bool]:
    """Run the stages of one cycle: the direct checks beside DNS, then every address concurrently.

    Bounded by the backstop; a stage result that did not arrive in time (or a bug) leaves
    an address or direct check *unfinished*, carrying the interruption as its finding.

    Returns:
        ``(gathered, interruption, complete)``: the stages' results; the
        ``cycle_deadline_exceeded`` or ``internal_error`` finding that cut the gathering
        short, ``None`` when nothing did; and whether every address finished.
    """
    target = plan.target
    dns_result: DnsResult | None = None
    done: dict[IPAddress, AddressResult] = {}
    checked: dict[int, DirectBackendResult] = {}
    interruption: Failure | None = None
    try:
        async with asyncio.timeout(timing.backstop):
            async with asyncio.TaskGroup() as group:
                for number, hop in enumerate(plan.direct):
                    group.create_task(_check_into(checked, number, plan, hop, timing.deadline, clock))
                dns_result = await _resolve(plan, timing.deadline, early)
                slots = asyncio.Semaphore(MAX_CONCURRENT_ADDRESSES)
                for address in dns_result.probe_addresses:
                    group.create_task(_probe_into(done, slots, address, plan, timing.deadline, clock))
    except TimeoutError:
        interruption = Failure(
            Reason.CYCLE_DEADLINE_EXCEEDED,
            f"the cycle did not finish within its {target.timeouts.deadline:g}s deadline",
        )
    except Exception as exc:
        interruption = _bug(exc, target.name)
    if dns_result is None:
        dns_result = DnsResult(
            name=target.hostname,
            answers=(),
            cname_chain=(),
            resolver=None,
            rcode=None,
            queries=(),
            lookup_seconds=time.monotonic() - timing.start,
            alias=None,
            failures=(),
            pinned_by=target.pinned_by,
        )
    unfinished = interruption or Failure(Reason.CYCLE_DEADLINE_EXCEEDED, "not probed")
    addresses = tuple(
        done.get(address) or _unfinished(address, target.port, unfinished, target.plain)
        for address in dns_result.probe_addresses
    )
    direct = tuple(
        checked.get(number) or direct_backends.unfinished(backend, hop.facts, unfinished)
        for number, (backend, hop) in enumerate(zip(target.direct_backends, plan.direct, strict=True))
    )
    gathered = Gathered(dns=dns_result, addresses=addresses, direct=direct)
    return gathered, interruption, len(done) == len(addresses)


async def _resolve(plan: TargetPlan, deadline: Deadline, early: dns_stage.EarlyLookup | None) -> DnsResult:
    """The DNS stage: the early lookup's answer when there is one, else a lookup now."""
    if early is not None and early.task is not None:
        return await early.task
    return await dns_stage.resolve(dns_stage.DnsPlan.of(plan.target, plan.resolvers), deadline)


def _judge(gathered: Gathered, plan: TargetPlan, now: float, memory: Rotation | None) -> Judgement:
    """:func:`~probe.judge.judgement.judge_cycle`, with a bug in it turned into ``internal_error``.

    On a bug the stages' facts and findings are kept and the rotation memory is left as it was.
    """
    try:
        return judge_cycle(gathered, plan.facts, now, memory)
    except Exception as exc:
        failures = (
            *gathered.dns.failures,
            *(f for a in gathered.addresses for f in a.failures),
            _bug(exc, plan.target.name),
        )
        return Judgement(addresses=gathered.addresses, failures=failures, rotation=memory)


async def probe_address(
    plan: TargetPlan,
    address: IPAddress,
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

    A refused client certificate is a finding of the TLS stage with TLS 1.2 and of the
    requests with TLS 1.3 (the listener says so on the first read); either way it is
    explained (:func:`probe.stages.client_auth.explained`).
    """
    target = plan.target
    try:
        tls, connection = await tls_stage.handshake_open(plan, address, deadline, clock)
    except Exception as exc:
        return _unfinished(address, target.port, _bug(exc, target.name, address), target.plain)
    if tls_check is not None and tls.version is not None:
        tls = dataclasses.replace(tls, failures=tls.failures + tls_check(tls))
    # Warnings (a weak cipher, a deprecated version) do not stop HTTP or OCSP; critical ones do.
    if not tls.connected or tls.status is Status.CRITICAL:
        if connection is not None:
            connection.close()
        return AddressResult(address=address, tls=tls, attempts=(), failures=tls.failures)
    attempts, http_bugs = await _requests(plan, address, deadline, connection, tls)
    ocsp, ocsp_bugs = await _staple(plan, address, deadline, clock)
    ocsp_failures = ocsp.failures if ocsp is not None else ()
    # A TLS 1.3 listener refuses a client certificate on the first read, not in the handshake.
    summary = http_rules.summarise(attempts, address)
    summary = await client_auth.explained(summary, plan, address, deadline, clock())
    failures = tls.failures + ocsp_failures + summary + ocsp_bugs + http_bugs
    return AddressResult(address=address, tls=tls, attempts=attempts, failures=failures, ocsp=ocsp)


async def _requests(
    plan: TargetPlan,
    address: IPAddress,
    deadline: Deadline,
    connection: tls_stage.OpenConnection | None,
    tls: TlsResult,
) -> tuple[tuple[HttpAttempt, ...], tuple[Failure, ...]]:
    """The HTTP stage at one address, the first request over the TLS stage's connection.

    Returns:
        ``(attempts, bugs)``: the requests, and an ``internal_error`` finding for a bug
        (the TLS facts gathered so far are kept).
    """
    try:
        return await http_stage.request_rounds(plan, address, deadline, connection, tls), ()
    except Exception as exc:
        return (), (_bug(exc, plan.target.name, address),)
    finally:
        if connection is not None:
            connection.close()  # a no-op when a request took it


async def _staple(
    plan: TargetPlan, address: IPAddress, deadline: Deadline, clock: Callable[[], float]
) -> tuple[OcspResult | None, tuple[Failure, ...]]:
    """The stapled OCSP response with ``ocsp: staple``: ``(result or None, bugs)``.

    After HTTP, so that the TLS stage's connection is closed before the stapling handshake:
    a server that serves one connection at a time (openssl s_server) would not answer it
    while that connection is open.
    """
    if plan.ocsp is None:
        return None, ()
    from probe.stages import ocsp as ocsp_stage

    try:
        result = await ocsp_stage.staple(plan, address, deadline, clock)
    except Exception as exc:  # the TLS facts gathered so far are kept
        return None, (_bug(exc, plan.target.name, address),)
    return result, ()


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
            hop,
            dns_result.probe_addresses[0],
            deadline,
            clock,
            tls_check=lambda tls: direct_backends.pin_findings(tls, backend),
        )
    return direct_backends.hop_result(
        backend, hop.facts, dns_result, address_result, time.monotonic() - start, clock()
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
        checked[number] = direct_backends.unfinished(backend, hop.facts, _bug(exc, plan.target.name))


async def _probe_into(
    done: dict[IPAddress, AddressResult],
    slots: asyncio.Semaphore,
    address: IPAddress,
    plan: TargetPlan,
    deadline: Deadline,
    clock: Callable[[], float],
) -> None:
    async with slots:
        done[address] = await probe_address(plan, address, deadline, clock)


def _unfinished(address: IPAddress, port: int, why: Failure, plain: bool = False) -> AddressResult:
    failure = Failure(why.reason, why.detail, address)
    tls = TlsResult(
        address=address,
        port=port,
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
        plain=plain,
    )
    return AddressResult(address=address, tls=tls, attempts=(), failures=(failure,))
