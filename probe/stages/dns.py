"""DNS stage: resolve a target's name at its resolvers and check the answers.

Each resolver is queried directly, so that the rcode of every resolver is known: over UDP
on a non-blocking socket of the stage's own, connected to the resolver and driven by the
event loop (``add_reader``), with dnspython building and parsing the messages; over TCP,
on a connection of its own, when the UDP answer is truncated (TC). An answer of more than
a few KiB is parsed in a worker thread (dnspython takes ~0.5 s for 64 KiB). The next resolver is
tried after a timeout, an error, SERVFAIL or REFUSED, as a stub resolver does. CNAME
chains in the answer are followed and re-queried when they end without data.

As glibc's stub resolver and dig do, the UDP socket is connected (RFC 5452 section 9.1:
accept answers only from the address and port the query went to): the kernel drops
datagrams from any other source, and an ICMP port unreachable from the resolver's
address ends the query at once as "connection refused".
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from probe._text import host_port
from probe.config.values import IPNetwork
from probe.model.deadline import Deadline
from probe.model.reasons import Reason
from probe.model.results import AliasResult, DnsAnswer, DnsQuery, DnsResult, Failure, IPAddress
from probe.stages._sockets import expire, fd_limit, wake

if TYPE_CHECKING:
    import dns.rrset

    from probe.config.models import TargetConfig

Resolver = tuple[str, int]

#: CNAME links followed (in one answer and across re-queries) before calling it a loop.
MAX_CNAME_LINKS = 16
#: Addresses of one record type (A or AAAA) probed: the lowest ones, the rest are not
#: connected to (``dns_too_many_addresses``). A load balancer's name has a few (an ALB at
#: most 8), but an answer over TCP can hold 4,000, each an address-probe every cycle.
MAX_ADDRESSES = 64
#: Addresses named in one finding's detail before "and N more".
_NAMED = 8

_FAMILIES = {"ipv4": ("A",), "ipv6": ("AAAA",), "both": ("A", "AAAA")}

# When every resolver failed, the reason reported is the most informative one seen:
# an actual answer beats silence.
_FAILURE_PRIORITY = (
    Reason.CYCLE_FD_LIMIT,  # not the resolvers' failure: this host could not ask
    Reason.DNS_SERVFAIL,
    Reason.DNS_REFUSED,
    Reason.DNS_MALFORMED,
    Reason.DNS_ERROR,
    Reason.DNS_TIMEOUT,
    Reason.CYCLE_DEADLINE_EXCEEDED,
)


def system_resolvers() -> tuple[Resolver, ...]:
    """The resolvers of the system configuration (``/etc/resolv.conf``).

    Raises:
        LookupError: no resolver is configured.
    """
    import dns.resolver  # only here: a query needs none of it

    try:
        resolver = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        raise LookupError("no 'resolvers' configured and /etc/resolv.conf lists none") from None
    servers = tuple((str(ns), resolver.port) for ns in resolver.nameservers)
    if not servers:
        raise LookupError("no 'resolvers' configured and /etc/resolv.conf lists none")
    return servers


@dataclass(frozen=True, slots=True)
class DnsPlan:
    """What the DNS stage of one target needs: its name, resolvers, checks and time limits.

    Built from a validated target with :meth:`of`; ``probe check`` also builds one from its
    arguments before the configuration is loaded (:func:`probe.cli.head_start.head_start`) and uses
    that early query only when it equals the validated target's plan.

    Attributes:
        hostname: the name to resolve (lower case, A-labels, no trailing dot).
        resolvers: ``(ip, port)`` of the resolvers to ask, in order.
        ip_family: ``ipv4`` (A), ``ipv6`` (AAAA) or ``both``.
        expect_networks: the networks every answer must lie in.
        alias: the name that must resolve to the same addresses
            (``expect_same_addresses_as``), or ``None``.
        timeout: seconds one query to one resolver may take (``timeouts.dns``).
        deadline: seconds the whole cycle may take (``timeouts.deadline``).
        pinned: the pinned addresses (no query for ``hostname``), or ``None``.
        pinned_by: what pinned them (``addresses``, ``--resolve``, ``server_name``, ``url`` ...).
    """

    hostname: str
    resolvers: tuple[Resolver, ...]
    ip_family: str
    expect_networks: tuple[IPNetwork, ...]
    timeout: float
    deadline: float
    alias: str | None = None
    pinned: tuple[IPAddress, ...] | None = None
    pinned_by: str | None = None

    @classmethod
    def of(cls, target: TargetConfig, resolvers: Sequence[Resolver]) -> DnsPlan:
        """The plan of a validated target asking ``resolvers``."""
        return cls(
            hostname=target.hostname,
            resolvers=tuple(resolvers),
            ip_family=target.ip_family,
            expect_networks=tuple(target.expect_networks),
            timeout=target.timeouts.dns,
            deadline=target.timeouts.deadline,
            alias=target.expect_same_addresses_as,
            pinned=target.addresses if target.pinned_by is not None else None,
            pinned_by=target.pinned_by,
        )


@dataclass(slots=True)
class EarlyLookup:
    """A cycle's DNS stage started before the rest of the cycle is ready.

    ``probe check`` sends its first query before it imports the TLS and HTTP stages (httpx,
    h2, cryptography); :func:`probe.engine.cycle.run_cycle` then takes the answer from ``task``.
    The cycle's clock starts with this lookup; the time between the lookup's end
    (``answered``) and the start of :func:`~probe.engine.cycle.run_cycle` (imports, SSL contexts)
    is not counted in the cycle's duration nor in its deadline.

    Attributes:
        started: Unix time the lookup (and so the cycle) started.
        start: ``time.monotonic()`` at the start.
        deadline: the cycle's deadline, from ``start``.
        task: the running :func:`resolve`.
        answered: ``time.monotonic()`` when ``task`` ended, ``None`` while it runs.
    """

    started: float
    start: float
    deadline: Deadline
    task: asyncio.Task[DnsResult] | None = None
    answered: float | None = None


def resolve_early(plan: DnsPlan, clock: Callable[[], float] = time.time) -> EarlyLookup:
    """Start :func:`resolve` of ``plan`` now, as the first step of its cycle.

    Must be called inside a running event loop. The task never raises for network faults
    (as :func:`resolve`); a bug surfaces when the cycle awaits it.
    """
    lookup = EarlyLookup(started=clock(), start=time.monotonic(), deadline=Deadline.after(plan.deadline))

    async def run() -> DnsResult:
        try:
            return await resolve(plan, lookup.deadline)
        finally:
            lookup.answered = time.monotonic()

    lookup.task = asyncio.create_task(run())
    return lookup


def format_resolver(resolver: Resolver) -> str:
    """``IP:port``, with IPv6 in brackets."""
    return host_port(*resolver)


@dataclass(frozen=True, slots=True)
class _Lookup:
    """The outcome of resolving one name for one record type."""

    qtype: str
    answers: tuple[tuple[IPAddress, int], ...]
    cname_chain: tuple[str, ...]
    resolver: str | None
    rcode: str | None
    queries: tuple[DnsQuery, ...]
    failure: Failure | None
    #: ``time.monotonic()`` when the lookup's outcome was known: when the loop saw the
    #: last answer arrive, or when the last query failed.
    ended: float


async def resolve(plan: DnsPlan, deadline: Deadline) -> DnsResult:
    """Resolve ``plan.hostname`` (and its alias name, if configured) and judge the answers.

    A pinned target (``addresses``, ``--resolve``, an IP URL with ``server_name``) sends no
    query for its name: the pinned addresses are the answers, judged against
    ``expect_networks`` like resolved ones, and compared with the alias name's answer
    when ``expect_same_addresses_as`` is set (the alias is still resolved).

    Args:
        plan: the target's name, resolvers, checks and query timeout (:meth:`DnsPlan.of`).
        deadline: the cycle's deadline; no query outlives it.

    Returns:
        The DNS result. Network faults are findings in ``failures``; nothing is raised
        for them.
    """
    start = time.monotonic()
    qtypes = _FAMILIES[plan.ip_family]
    names = [] if plan.pinned is not None else [plan.hostname]
    if plan.alias:
        names.append(plan.alias)
    asks = [(name, q) for name in names for q in qtypes]
    if len(asks) == 1:  # the usual case: no task for one lookup
        lookups = [await _lookup(asks[0][0], asks[0][1], plan.resolvers, plan.timeout, deadline)]
    else:
        lookups = await asyncio.gather(
            *(_lookup(n, q, plan.resolvers, plan.timeout, deadline) for n, q in asks)
        )
    return _dns_result(plan, lookups, len(qtypes), start)


def _dns_result(plan: DnsPlan, lookups: list[_Lookup], per_name: int, start: float) -> DnsResult:
    """Judge the lookups of ``plan``: the name's (``per_name``, none when pinned), then the alias's.

    Findings in this order: no address (or a family that failed outright), resolver
    failovers, addresses outside the expected networks, the alias comparison.
    """
    pinned = plan.pinned
    if pinned is None:
        main_lookups, alias_lookups = lookups[:per_name], lookups[per_name:]
        answers = _answers(main_lookups, plan.expect_networks)
    else:
        main_lookups, alias_lookups = [], lookups
        answers = pinned_answers(pinned, plan.expect_networks)
    failures = [
        *_address_failures(plan.hostname, answers, main_lookups),
        *_failover_warnings(main_lookups),
        *_too_many_addresses(plan.hostname, main_lookups),
        *_unexpected_addresses(plan, answers),
    ]
    alias_result = None
    if plan.alias:
        alias_result, alias_failure = _compare_alias(
            plan.alias, alias_lookups, tuple(a.address for a in answers), plan.hostname, plan.pinned_by
        )
        if alias_failure is not None and answers:
            failures.append(alias_failure)
    # The answer used is the name's; for a pinned name, the alias's (if it was looked up).
    resolver, rcode = _answered_by(main_lookups if pinned is None else alias_lookups)
    return DnsResult(
        name=plan.hostname,
        answers=answers,
        cname_chain=tuple(dict.fromkeys(name for lk in main_lookups for name in lk.cname_chain)),
        resolver=resolver,
        rcode=rcode,
        queries=tuple(q for lk in lookups for q in lk.queries),
        lookup_seconds=_lookup_seconds(lookups, start),
        alias=alias_result,
        failures=tuple(failures),
        pinned_by=plan.pinned_by,
    )


def _address_failures(
    hostname: str, answers: Sequence[DnsAnswer], lookups: Sequence[_Lookup]
) -> list[Failure]:
    """Why there is no address; or, with answers, the lookups that failed outright (not just empty)."""
    if not answers:
        return [_no_address_failure(hostname, lookups)]
    # With both families, a family that failed outright (not just empty) is still a finding.
    return [
        lk.failure
        for lk in lookups
        if lk.failure is not None and lk.failure.reason is not Reason.DNS_NO_ANSWER
    ]


def _unexpected_addresses(plan: DnsPlan, answers: Sequence[DnsAnswer]) -> list[Failure]:
    """``dns_unexpected_address`` for each answer outside the expected networks (never connected to)."""
    failures = []
    for answer in answers:
        if answer.expected:
            continue
        if plan.pinned_by == "url":
            where = f"the URL's address {answer.address} is"
        elif plan.pinned is not None:
            where = f"{plan.hostname} is pinned to {answer.address} (with {plan.pinned_by}),"
        else:
            where = f"{plan.hostname} resolves to {answer.address},"
        failures.append(
            Failure(
                Reason.DNS_UNEXPECTED_ADDRESS,
                f"{where} outside the expected networks "
                f"({_networks_text(plan.expect_networks)}); not connected to",
                answer.address,
            )
        )
    return failures


def _answered_by(asked: Sequence[_Lookup]) -> tuple[str | None, str | None]:
    """``(resolver, rcode)`` of the first lookup answered by a resolver (else of the first lookup)."""
    used = next((lk for lk in asked if lk.resolver is not None), asked[0] if asked else None)
    if used is None:
        return None, None
    return used.resolver, used.rcode


def _lookup_seconds(lookups: Sequence[_Lookup], start: float) -> float:
    """From ``start`` to when the loop saw the last answer arrive, not after the work that followed."""
    return (max(lk.ended for lk in lookups) if lookups else time.monotonic()) - start


def pinned_answers(addresses: Sequence[IPAddress], networks: Sequence[IPNetwork]) -> tuple[DnsAnswer, ...]:
    """Pinned addresses as answers without a TTL, each judged against ``networks``.

    Sorted as resolved answers are (IPv4 first), so reports are stable; duplicates dropped.
    """
    unique = sorted(set(addresses), key=lambda a: (a.version, a))
    return tuple(
        DnsAnswer(address=address, ttl=None, expected=address_expected(address, networks))
        for address in unique
    )


def _answers(lookups: Sequence[_Lookup], networks: Sequence[IPNetwork]) -> tuple[DnsAnswer, ...]:
    seen: dict[IPAddress, DnsAnswer] = {}
    for lookup in lookups:
        for address, ttl in _probed(lookup.answers):
            if address not in seen:
                seen[address] = DnsAnswer(
                    address=address, ttl=ttl, expected=address_expected(address, networks)
                )
    return tuple(sorted(seen.values(), key=lambda a: (a.address.version, a.address)))


def _probed(answers: tuple[tuple[IPAddress, int], ...]) -> tuple[tuple[IPAddress, int], ...]:
    """The answers of one lookup that are probed: all, or the MAX_ADDRESSES lowest addresses."""
    if len(answers) <= MAX_ADDRESSES:
        return answers
    return tuple(sorted(answers, key=lambda answer: answer[0])[:MAX_ADDRESSES])


def _too_many_addresses(hostname: str, lookups: Sequence[_Lookup]) -> list[Failure]:
    """``dns_too_many_addresses`` for each lookup whose answer held more than MAX_ADDRESSES."""
    return [
        Failure(
            Reason.DNS_TOO_MANY_ADDRESSES,
            f"{hostname} has {len(lookup.answers)} {lookup.qtype} records, more than the "
            f"{MAX_ADDRESSES} that probe probes: the {MAX_ADDRESSES} lowest addresses were probed, "
            "the others not connected to",
        )
        for lookup in lookups
        if len(lookup.answers) > MAX_ADDRESSES
    ]


def _named(addresses: Sequence[IPAddress]) -> str:
    """Addresses for a detail: the first eight, then how many more."""
    text = ", ".join(map(str, addresses[:_NAMED]))
    return text + (f" and {len(addresses) - _NAMED} more" if len(addresses) > _NAMED else "")


def address_expected(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """Whether ``address`` lies in one of ``networks`` (IPv4-mapped IPv6 counts as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _networks_text(networks: Sequence[IPNetwork]) -> str:
    text = ", ".join(str(n) for n in networks[:5])
    return text + (f" and {len(networks) - 5} more" if len(networks) > 5 else "")


def _no_address_failure(hostname: str, lookups: Sequence[_Lookup]) -> Failure:
    failed = [lk.failure for lk in lookups if lk.failure is not None]
    hard = [f for f in failed if f.reason is not Reason.DNS_NO_ANSWER]
    if hard:
        return hard[0]
    if failed:
        qtypes = " or ".join(lk.qtype for lk in lookups)
        first = failed[0]
        return Failure(
            Reason.DNS_NO_ANSWER,
            first.detail
            if len(lookups) == 1
            else (f"{hostname} has no {qtypes} record (NOERROR, empty answer)"),
        )
    return Failure(Reason.DNS_NO_ANSWER, f"{hostname} has no address")  # pragma: no cover


def _failover_warnings(lookups: Sequence[_Lookup]) -> list[Failure]:
    """``dns_resolver_failover`` for each resolver that failed before another answered.

    A query this host could not send (``cycle_fd_limit``) is not the resolver's
    failure: it is reported as that, once.
    """
    warnings: dict[str, Failure] = {}
    for lookup in lookups:
        if lookup.resolver is None:
            continue
        for query in lookup.queries:
            if query.error is Reason.CYCLE_FD_LIMIT:
                detail = f"{query.resolver}: {query.detail}; the answer came from {lookup.resolver}"
                warnings.setdefault("", Failure(query.error, detail))
            elif query.error is not None and query.resolver != lookup.resolver:
                warnings.setdefault(
                    query.resolver,
                    Failure(
                        Reason.DNS_RESOLVER_FAILOVER,
                        f"resolver {query.resolver} failed ({query.detail}); "
                        f"the answer came from {lookup.resolver}",
                    ),
                )
    return list(warnings.values())


def _compare_alias(
    alias_name: str,
    lookups: Sequence[_Lookup],
    addresses: tuple[IPAddress, ...],
    hostname: str,
    pinned_by: str | None = None,
) -> tuple[AliasResult, Failure | None]:
    alias_addresses = tuple(
        sorted({a for lk in lookups for a, _ in _probed(lk.answers)}, key=lambda a: (a.version, a))
    )
    resolved = bool(alias_addresses)
    matches = resolved and set(alias_addresses) == set(addresses)
    result = AliasResult(name=alias_name, addresses=alias_addresses, resolved=resolved, matches=matches)
    if matches:
        return result, None
    if not resolved:
        failed = next((lk.failure for lk in lookups if lk.failure is not None), None)
        why = failed.detail if failed else "no address"
        return result, Failure(Reason.DNS_ALIAS_MISMATCH, f"cannot compare with {alias_name}: {why}")
    only_name = sorted(set(addresses) - set(alias_addresses), key=str)
    only_alias = sorted(set(alias_addresses) - set(addresses), key=str)
    ours = hostname if pinned_by is None else "the pinned set"
    parts = []
    if only_name:
        parts.append(f"only {ours} has {_named(only_name)}")
    if only_alias:
        parts.append(f"only {alias_name} has {_named(only_alias)}")
    if pinned_by is not None:
        head = (
            f"the addresses pinned for {hostname} (with {pinned_by}) differ from "
            f"those {alias_name} resolves to"
        )
    else:
        head = f"{hostname} and {alias_name} resolve to different addresses"
    return result, Failure(Reason.DNS_ALIAS_MISMATCH, f"{head}: {'; '.join(parts)}")


# --------------------------------------------------------------------------- lookups


async def _lookup(
    name: str, qtype: str, resolvers: Sequence[Resolver], timeout: float, deadline: Deadline
) -> _Lookup:
    """Resolve ``name``/``qtype``, following CNAMEs, asking resolvers in order."""
    queries: list[DnsQuery] = []
    chain: list[str] = []
    qname = name
    resolver: str | None = None
    rcode: str | None = None
    ended = 0.0

    def done(failure: Failure | None = None, answers: tuple[tuple[IPAddress, int], ...] = ()) -> _Lookup:
        return _Lookup(
            qtype=qtype,
            answers=answers,
            cname_chain=tuple(chain),
            resolver=resolver,
            rcode=rcode,
            queries=tuple(queries),
            failure=failure,
            ended=ended,
        )

    while True:
        response, resolver, asked, answered = await _ask(qname, qtype, resolvers, timeout, deadline)
        ended = answered if answered is not None else time.monotonic()
        queries.extend(asked)
        if response is None:
            return done(_all_failed(name, qtype, asked, deadline))
        rcode = dns.rcode.to_text(response.rcode())
        outcome = _read_answer(response, name, qtype, qname, chain, resolver)
        if isinstance(outcome, Failure):
            return done(outcome)
        if isinstance(outcome, str):  # the chain left the resolver's data: ask for its last name
            qname = outcome
            continue
        return done(answers=outcome)


def _read_answer(
    response: dns.message.Message, name: str, qtype: str, qname: str, chain: list[str], resolver: str | None
) -> Failure | tuple[tuple[IPAddress, int], ...] | str:
    """What one answer to ``qname`` says, the CNAME links it holds added to ``chain``.

    Returns:
        A finding (malformed, a CNAME loop, NXDOMAIN, no record), the addresses with their
        TTL, or the name to ask next when the CNAME chain ends without data.
    """
    if not isinstance(response, dns.message.QueryMessage):  # pragma: no cover - dnspython types
        return Failure(Reason.DNS_MALFORMED, f"{resolver} sent no query answer")
    try:
        chaining = response.resolve_chaining()
    except dns.message.ChainTooLong:
        return Failure(Reason.DNS_CNAME_LOOP, f"the CNAME chain of {name} is too long or loops")
    except dns.exception.DNSException as exc:
        return Failure(Reason.DNS_MALFORMED, f"{resolver} sent an inconsistent answer: {exc}")
    loop = _follow_cnames(chaining.cnames, name, chain)
    if loop is not None:
        return loop
    canonical = chaining.canonical_name.to_text(omit_final_dot=True).lower()
    via = f" ({' → '.join([name, *chain])})" if chain else ""
    if response.rcode() == dns.rcode.NXDOMAIN:
        return Failure(Reason.DNS_NXDOMAIN, f"{canonical} does not exist{via}: NXDOMAIN from {resolver}")
    if chaining.answer is not None:
        return tuple((ipaddress.ip_address(rdata.address), chaining.answer.ttl) for rdata in chaining.answer)
    if canonical != qname and chain:
        return canonical
    return Failure(
        Reason.DNS_NO_ANSWER, f"{name} has no {qtype} record{via} (NOERROR, empty answer from {resolver})"
    )


def _follow_cnames(cnames: Sequence[dns.rrset.RRset], name: str, chain: list[str]) -> Failure | None:
    """Add the targets of ``cnames`` to ``chain``; ``dns_cname_loop`` at a loop or past MAX_CNAME_LINKS."""
    for cname in cnames:
        target = cname[0].target.to_text(omit_final_dot=True).lower()
        if target in chain or target == name or len(chain) >= MAX_CNAME_LINKS:
            chain.append(target)
            return Failure(
                Reason.DNS_CNAME_LOOP,
                f"the CNAME chain of {name} loops or is too long: {' → '.join([name, *chain])}",
            )
        chain.append(target)
    return None


async def _ask(
    qname: str, qtype: str, resolvers: Sequence[Resolver], timeout: float, deadline: Deadline
) -> tuple[dns.message.Message | None, str | None, list[DnsQuery], float | None]:
    """Ask resolvers in order until one gives NOERROR or NXDOMAIN.

    Returns:
        ``(response or None, its resolver, every query sent, when the loop saw the
        response arrive (time.monotonic()) or None)``.
    """
    asked: list[DnsQuery] = []
    for resolver in resolvers:
        if deadline.expired:
            break
        where = format_resolver(resolver)
        query = dns.message.make_query(qname, dns.rdatatype.from_text(qtype))
        response: dns.message.Message | None = None
        tcp = False
        error: Reason | None
        limit = deadline.clip(timeout)
        start = time.monotonic()
        answered = start
        try:
            response, tcp, answered = await _exchange(query, resolver, limit)
        except (TimeoutError, dns.exception.DNSException, OSError, ValueError) as exc:
            error, detail = classify_dns_error(exc, limit)
            if error is Reason.DNS_TIMEOUT:
                error = deadline.timeout_reason(error)
            answered = time.monotonic()
        else:
            error, detail = classify_rcode(response.rcode())
        rcode = dns.rcode.to_text(response.rcode()) if response is not None else None
        asked.append(
            DnsQuery(
                resolver=where,
                qname=qname,
                qtype=qtype,
                rcode=rcode,
                tcp=tcp,
                duration_seconds=answered - start,
                error=error,
                detail=detail,
            )
        )
        if error is None:
            return response, where, asked, answered
    return None, None, asked, None


#: The largest UDP payload read (a datagram's maximum; dnspython reads as much).
_UDP_MAX = 65535
#: Answers up to this size (bytes) are parsed on the event loop (see :func:`_parsed`).
_PARSE_INLINE = 4096


async def _exchange(
    query: dns.message.Message, resolver: Resolver, timeout: float
) -> tuple[dns.message.Message, bool, float]:
    """Send ``query`` to ``resolver`` over UDP (TCP when the answer is truncated) and parse the answer.

    The UDP query goes out on a new non-blocking socket connected to the resolver (so the
    kernel takes datagrams from the resolver's address and port only, RFC 5452 section
    9.1, and reports its ICMP port unreachable), and the loop's ``add_reader`` says when
    the answer arrived. The first datagram from the resolver decides, as with
    ``dns.asyncquery.udp``: it must parse and answer the query (id and question,
    ``Message.is_response``). With TC set the query is sent again over TCP
    (:func:`_tcp`), within what is left of ``timeout``. Every socket is closed
    on every path.

    Args:
        query: the query (``dns.message.make_query``).
        resolver: ``(IP, port)``; IPv4 or IPv6.
        timeout: seconds the whole exchange may take.

    Returns:
        ``(response, over_tcp, answered)``: ``answered`` is when the loop saw the UDP answer
        readable, or when the TCP answer was read (``time.monotonic()``).

    Raises:
        TimeoutError or dns.exception.Timeout: no answer within ``timeout``.
        dns.exception.DNSException: an answer that does not parse (``dns.message`` errors)
            or does not answer the query (``dns.query.BadResponse``).
        ValueError: some wire garbage (from dnspython's parser).
        OSError: the query could not be sent, or the resolver's host refused it
            (``ConnectionRefusedError``, from its ICMP port unreachable).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    host, port = resolver
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    wire = query.to_wire()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((host, port))  # no packet: fixes the peer, as dig and glibc do
        sock.send(wire)
        fd = sock.fileno()
        while True:
            waiter: asyncio.Future[float] = loop.create_future()
            loop.add_reader(fd, wake, waiter)
            timer = loop.call_at(end, expire, waiter)
            try:
                answered = await waiter
            finally:
                timer.cancel()
                loop.remove_reader(fd)
            try:
                data = sock.recv(_UDP_MAX)  # or the pending ICMP error, e.g. ECONNREFUSED
                break
            except (BlockingIOError, InterruptedError):  # pragma: no cover - a spurious wake-up
                continue
    finally:
        sock.close()
    try:
        response = await _parsed(query, data, raise_on_truncation=True)
    except dns.message.Truncated:
        return await _tcp(query, resolver, max(0.0, end - loop.time())), True, time.monotonic()
    return response, False, answered


async def _parsed(
    query: dns.message.Message, data: bytes, *, raise_on_truncation: bool = False
) -> dns.message.Message:
    """The answer to ``query`` in ``data``, parsed by dnspython: in a worker thread when large.

    dnspython parses some 10,000 records a second, so the largest answer (64 KiB, ~4,000
    records) would hold the event loop for half a second; one of more than
    :data:`_PARSE_INLINE` bytes (a few hundred records; an honest answer without EDNS
    fits in 512) is parsed in a worker thread, where the loop gets its turns.

    Raises:
        dns.message.Truncated: TC is set and ``raise_on_truncation``.
        dns.exception.DNSException, ValueError: the data does not parse, or does not
            answer ``query`` (``dns.query.BadResponse``).
    """

    def parse() -> dns.message.Message:
        return dns.message.from_wire(
            data, keyring=query.keyring, request_mac=query.mac, raise_on_truncation=raise_on_truncation
        )

    response = parse() if len(data) <= _PARSE_INLINE else await asyncio.to_thread(parse)
    if not query.is_response(response):
        raise _bad_response()
    return response


def _bad_response() -> dns.exception.DNSException:
    import dns.query  # dnspython's own exception for this case, as dns.asyncquery.udp raises

    return dns.query.BadResponse()  # type: ignore[no-untyped-call]


async def _tcp(query: dns.message.Message, resolver: Resolver, timeout: float) -> dns.message.Message:
    """The answer over TCP (after a truncated UDP one): one length-prefixed message each way.

    RFC 1035 §4.2.2 (RFC 7766): the query and the answer each preceded by their length in
    two bytes; the connection is closed after the answer. The bytes are read on the loop,
    the answer parsed by :func:`_parsed`.

    Raises:
        TimeoutError: no whole answer within ``timeout``.
        OSError: the connection failed, or closed before the whole answer.
        dns.exception.DNSException, ValueError: as :func:`_parsed`.
    """
    wire = query.to_wire()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(resolver[0], resolver[1])
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            data = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ConnectionResetError(
                0, "the resolver closed the TCP connection before its answer"
            ) from None
        finally:
            writer.close()
    return await _parsed(query, data)


def classify_dns_error(exc: BaseException, limit: float) -> tuple[Reason, str]:
    """Map an exception from one query to one resolver to a reason and a sentence.

    Chosen by exception type only (dnspython's exceptions are structured), most specific
    first: a timeout (asyncio's or dnspython's), any other dnspython error or a
    ``ValueError`` from wire parsing (garbage, or an answer to another question), and
    socket errors: ``cycle_fd_limit`` when this host is out of file descriptors
    (:func:`probe.stages._sockets.fd_limit`), else ``dns_error``.

    Args:
        exc: the exception raised by the query.
        limit: the time the query was allowed (seconds), for the timeout sentence.

    Returns:
        ``(reason, detail)``.
    """
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return Reason.DNS_TIMEOUT, f"no answer within {limit:.3g}s"
    if isinstance(exc, dns.exception.DNSException):
        return Reason.DNS_MALFORMED, f"malformed response: {type(exc).__name__}"
    if isinstance(exc, OSError):
        no_fd = fd_limit(exc)
        if no_fd is not None:  # this host's limit, not the resolver's fault
            return Reason.CYCLE_FD_LIMIT, f"cannot query: {no_fd}"
        return Reason.DNS_ERROR, f"cannot query: {exc.strerror or exc}"
    if isinstance(exc, ValueError):  # dnspython raises ValueError for some wire garbage
        return Reason.DNS_MALFORMED, f"malformed response: {exc}"
    return Reason.DNS_ERROR, f"cannot query: {type(exc).__name__}: {exc}"


def classify_rcode(rcode: dns.rcode.Rcode) -> tuple[Reason | None, str]:
    """Map a response code to ``(reason or None when the answer is usable, detail)``."""
    text = dns.rcode.to_text(rcode)
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return None, text
    if rcode == dns.rcode.SERVFAIL:
        return Reason.DNS_SERVFAIL, "SERVFAIL"
    if rcode == dns.rcode.REFUSED:
        return Reason.DNS_REFUSED, "REFUSED"
    return Reason.DNS_ERROR, f"rcode {text}"


def _all_failed(name: str, qtype: str, asked: Sequence[DnsQuery], deadline: Deadline) -> Failure:
    if not asked:
        return Failure(
            Reason.CYCLE_DEADLINE_EXCEEDED,
            f"the {deadline.seconds:g}s deadline passed before {name} was resolved",
        )
    errors = [q.error for q in asked if q.error is not None]
    reason = next((r for r in _FAILURE_PRIORITY if r in errors), Reason.DNS_ERROR)
    attempts = "; ".join(f"{q.resolver}: {q.detail}" for q in asked)
    return Failure(reason, f"no usable answer for {name} {qtype}: {attempts}")
