"""DNS stage against the lab's real DNS server: every DNS reason code and the ok path."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from probe.config.models import TargetConfig
from probe.lab import Behaviour, DnsServer, Lab
from probe.lab.dns_server import FORGED_ADDRESS, FORGED_LEAD, FORGED_SOURCE
from probe.model.deadline import Deadline
from probe.model.reasons import Reason, Status
from probe.model.results import DnsResult
from probe.stages import dns as dns_stage
from tests.support.helpers import make_target, reasons, run

_N = itertools.count(1)


def name() -> str:
    return f"d{next(_N)}.corp.example"


def resolve(server: DnsServer | list[str], hostname: str, **fields: Any) -> DnsResult:
    resolvers = server if isinstance(server, list) else [server.where]
    fields.setdefault("expect_networks", ["127.0.0.0/8"])
    target = make_target(url=f"https://{hostname}/", resolvers=resolvers, **fields)
    result = asyncio.run(
        dns_stage.resolve(dns_stage.DnsPlan.of(target, target.resolvers or ()), Deadline.after(5))
    )
    # Every DNS fault ends within its bound: one timeout per resolver asked, per link of a
    # CNAME chain followed (at most two here), plus an allowance for a loaded machine.
    bound = target.timeouts.dns * len(resolvers) * (1 + len(result.cname_chain)) + 0.5
    assert result.lookup_seconds <= bound, (result.lookup_seconds, bound)
    return result


def codes(result: DnsResult) -> set[str]:
    return {f.reason.value for f in result.failures}


def test_answers_with_ttl_resolver_and_rcode(dns: DnsServer) -> None:
    host = name()
    dns.set(host, ("A", "127.0.40.2"), ("A", "127.0.40.1"))
    result = resolve(dns, host)

    assert result.failures == ()
    assert [str(a.address) for a in result.answers] == ["127.0.40.1", "127.0.40.2"]
    assert all(a.ttl == 60 and a.expected for a in result.answers)
    assert result.resolver == dns.where and result.rcode == "NOERROR"
    assert result.lookup_seconds > 0


def test_cname_chain_is_recorded(dns: DnsServer) -> None:
    host, canonical = name(), name()
    dns.set(host, ("CNAME", canonical))
    dns.set(canonical, ("A", "127.0.40.3"))
    result = resolve(dns, host)

    assert result.cname_chain == (canonical,)
    assert [str(a.address) for a in result.answers] == ["127.0.40.3"]


def test_cname_to_a_name_outside_the_answer_is_requeried(dns: DnsServer, lab: Lab) -> None:
    other = lab.start_dns("127.0.53.3")
    try:
        host, far = name(), "far.elsewhere.example"
        dns.set(host, ("CNAME", far))
        result = resolve(dns, host)
        # dns has no data for far: the re-query for it gets NXDOMAIN, with the chain in the detail.
        assert codes(result) == {"dns_nxdomain"}
        assert f"{host} → {far}" in result.failures[0].detail
        assert [q.qname for q in result.queries] == [host, far]
    finally:
        lab.stop(other)


def test_cname_loop(dns: DnsServer) -> None:
    first, second = name(), name()
    dns.set(first, ("CNAME", second))
    dns.set(second, ("CNAME", first))
    assert codes(resolve(dns, first)) == {Reason.DNS_CNAME_LOOP.value}


def test_nxdomain(dns: DnsServer) -> None:
    result = resolve(dns, name())
    assert codes(result) == {Reason.DNS_NXDOMAIN.value}
    assert result.rcode == "NXDOMAIN"


def test_no_answer_for_the_family(dns: DnsServer) -> None:
    host = name()
    dns.set(host, ("AAAA", "::1"))
    result = resolve(dns, host)
    assert codes(result) == {Reason.DNS_NO_ANSWER.value}
    assert "no A record" in result.failures[0].detail


def test_both_families_probe_a_and_aaaa(dns: DnsServer) -> None:
    host = name()
    dns.set(host, ("A", "127.0.40.4"), ("AAAA", "::1"))
    result = resolve(dns, host, ip_family="both", expect_networks=["127.0.0.0/8", "::1/128"])
    assert [str(a) for a in result.probe_addresses] == ["127.0.40.4", "::1"]
    assert {q.qtype for q in result.queries} == {"A", "AAAA"}


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (Behaviour.SERVFAIL, Reason.DNS_SERVFAIL),
        (Behaviour.REFUSED, Reason.DNS_REFUSED),
        (Behaviour.GARBAGE, Reason.DNS_MALFORMED),
        (Behaviour.WRONG_NAME, Reason.DNS_MALFORMED),
    ],
)
def test_resolver_misbehaving(dns: DnsServer, behaviour: Behaviour, reason: Reason) -> None:
    host = name()
    dns.behave(host, behaviour)
    result = resolve(dns, host)
    assert codes(result) == {reason.value}
    assert dns.where in result.failures[0].detail


def test_timeout(lab: Lab) -> None:
    silent = lab.start_dns("127.0.53.4")
    silent.default = Behaviour.DROP
    try:
        result = resolve(silent, name(), timeouts={"dns": 0.3, "deadline": 5})
    finally:
        lab.stop(silent)
    assert codes(result) == {Reason.DNS_TIMEOUT.value}
    assert result.queries[0].duration_seconds == pytest.approx(0.3, abs=0.15)


def test_a_silent_resolver_cut_by_the_cycle_deadline_blames_the_deadline(lab: Lab) -> None:
    silent = lab.start_dns("127.0.53.6")
    silent.default = Behaviour.DROP
    target = make_target(url=f"https://{name()}/", resolvers=[silent.where], timeouts={"dns": 2})
    try:
        result = asyncio.run(
            dns_stage.resolve(dns_stage.DnsPlan.of(target, target.resolvers or ()), Deadline.after(0.3))
        )
    finally:
        lab.stop(silent)
    # The query's own 2 s timeout never fired: the cycle's 0.3 s deadline cut it short.
    assert codes(result) == {Reason.CYCLE_DEADLINE_EXCEEDED.value}
    assert result.queries[0].error is Reason.CYCLE_DEADLINE_EXCEEDED
    assert result.lookup_seconds < 1.0


def test_other_rcode_is_a_dns_error(dns: DnsServer) -> None:
    host = name()
    dns.behave(host, Behaviour.NOTIMP)
    result = resolve(dns, host)
    assert codes(result) == {Reason.DNS_ERROR.value}
    assert "rcode NOTIMP" in result.failures[0].detail


def test_truncated_udp_answer_is_retried_over_tcp(dns: DnsServer) -> None:
    host = name()
    dns.set(host, ("A", "127.0.40.5"))
    dns.behave(host, Behaviour.TRUNCATE)
    result = resolve(dns, host)
    assert result.failures == ()
    assert result.queries[0].tcp is True
    assert [str(a.address) for a in result.answers] == ["127.0.40.5"]


def test_failover_to_the_next_resolver_is_a_warning(dns: DnsServer, lab: Lab) -> None:
    dead = lab.start_dns("127.0.53.6")
    dead.default = Behaviour.DROP
    host = name()
    dns.set(host, ("A", "127.0.40.6"))
    try:
        result = resolve([dead.where, dns.where], host, timeouts={"dns": 0.3, "deadline": 5})
    finally:
        lab.stop(dead)
    assert codes(result) == {Reason.DNS_RESOLVER_FAILOVER.value}
    assert result.resolver == dns.where
    assert [q.error for q in result.queries] == [Reason.DNS_TIMEOUT, None]
    assert dead.where in result.failures[0].detail


def test_address_outside_expected_networks_is_never_connected(dns: DnsServer, scene: Any) -> None:
    s = scene()
    # 10.200.0.1 is data only: the loopback guard in conftest fails any attempt to reach it.
    dns.set(s.hostname, ("A", s.nodes[0].address), ("A", "10.200.0.1"))
    result = run(s.target)

    assert reasons(result) == {Reason.DNS_UNEXPECTED_ADDRESS.value}
    assert [str(a.address) for a in result.addresses] == [s.nodes[0].address]
    failure = result.failures[0]
    assert str(failure.address) == "10.200.0.1" and "not connected" in failure.detail
    assert result.status is Status.CRITICAL


def test_default_expected_networks_are_private_ranges(dns: DnsServer) -> None:
    host = name()
    dns.set(host, ("A", "10.1.2.3"), ("A", "100.64.0.9"), ("A", "192.0.2.10"))
    target = make_target(url=f"https://{host}/", resolvers=[dns.where])
    result = asyncio.run(
        dns_stage.resolve(dns_stage.DnsPlan.of(target, target.resolvers or ()), Deadline.after(5))
    )

    assert {str(a.address): a.expected for a in result.answers} == {
        "10.1.2.3": True,
        "100.64.0.9": True,
        "192.0.2.10": False,
    }
    assert codes(result) == {Reason.DNS_UNEXPECTED_ADDRESS.value}


@pytest.fixture
def alias_pair(dns: DnsServer) -> Iterator[tuple[str, str]]:
    host, alias = name(), name()
    yield host, alias


def test_alias_with_the_same_addresses_matches(dns: DnsServer, alias_pair: tuple[str, str]) -> None:
    host, alias = alias_pair
    dns.set(host, ("A", "127.0.40.7"), ("A", "127.0.40.8"))
    dns.set(alias, ("A", "127.0.40.8"), ("A", "127.0.40.7"))
    result = resolve(dns, host, expect_same_addresses_as=alias)
    assert result.failures == ()
    assert result.alias is not None and result.alias.matches


def test_alias_mismatch(dns: DnsServer, alias_pair: tuple[str, str]) -> None:
    host, alias = alias_pair
    dns.set(host, ("A", "127.0.40.7"), ("A", "127.0.40.9"))
    dns.set(alias, ("A", "127.0.40.7"), ("A", "127.0.40.8"))
    result = resolve(dns, host, expect_same_addresses_as=alias)
    assert codes(result) == {Reason.DNS_ALIAS_MISMATCH.value}
    detail = result.failures[0].detail
    assert f"only {host} has 127.0.40.9" in detail and f"only {alias} has 127.0.40.8" in detail


def test_alias_that_does_not_resolve_is_a_mismatch(dns: DnsServer, alias_pair: tuple[str, str]) -> None:
    host, alias = alias_pair
    dns.set(host, ("A", "127.0.40.7"))
    result = resolve(dns, host, expect_same_addresses_as=alias)
    assert codes(result) == {Reason.DNS_ALIAS_MISMATCH.value}
    assert "NXDOMAIN" in result.failures[0].detail


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_mixed_families_with_an_unreachable_aaaa(dns: DnsServer, scene: Any) -> None:
    s = scene()
    dns.set(s.hostname, ("A", s.nodes[0].address), ("AAAA", "::1"))  # nothing listens on ::1 there
    target = {**s.target, "expect_networks": ["127.0.0.0/8", "::1/128"]}

    ipv4_only = run(target)  # the default family: the AAAA answer is not even asked for
    assert ipv4_only.status is Status.OK, ipv4_only.failures
    assert [q.qtype for q in ipv4_only.dns.queries] == ["A"]

    both = run({**target, "ip_family": "both"})
    assert both.status is Status.CRITICAL
    by_address = {str(a.address): a for a in both.addresses}
    assert by_address[s.nodes[0].address].status is Status.OK
    assert {f.reason for f in by_address["::1"].failures} == {Reason.TCP_REFUSED}


def _plan(target: TargetConfig) -> dns_stage.DnsPlan:
    return dns_stage.DnsPlan.of(target, target.resolvers or ())


# --------------------------------------------------------------------------- the UDP exchange


def _closed_udp_port(address: str) -> str:
    """``IP:port`` of a UDP port on ``address`` that nothing listens on (bound, then closed)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        port = sock.getsockname()[1]
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_answers_from_another_address_or_port_are_not_taken(dns: DnsServer) -> None:
    host = name()
    dns.set(host, ("A", "127.0.40.10"))
    dns.behave(host, Behaviour.OTHER_SOURCE)
    forged_before = len(dns.forged_from)
    result = resolve(dns, host)

    # Two forged answers (FORGED_ADDRESS) arrived first, from another port of the resolver's
    # address and from another address; the socket is connected to the resolver, so the
    # kernel dropped them and the real answer, 50 ms later, is the one used.
    sources = dns.forged_from[forged_before:]
    assert len(sources) == 2 and sources[0][0] == dns.address and sources[1][0] == FORGED_SOURCE
    assert all(source != (dns.address, dns.port) for source in sources)
    assert result.failures == ()
    assert [str(a.address) for a in result.answers] == ["127.0.40.10"]
    assert FORGED_ADDRESS not in {str(a.address) for a in result.answers}
    assert [q.error for q in result.queries] == [None]
    assert FORGED_LEAD <= result.lookup_seconds < FORGED_LEAD + 0.25


def test_a_resolver_port_nobody_listens_on_is_refused_at_once(lab: Lab) -> None:
    closed = _closed_udp_port("127.0.53.7")
    result = resolve([closed], name(), timeouts={"dns": 2, "deadline": 5})

    # The host's ICMP port unreachable ends the query at once ("connection refused", as
    # dig reports it), long before the 2 s query timeout.
    assert codes(result) == {Reason.DNS_ERROR.value}
    assert result.queries[0].error is Reason.DNS_ERROR
    assert result.failures[0].detail.endswith(f"{closed}: cannot query: Connection refused")
    assert result.lookup_seconds < 0.5


def test_a_refused_resolver_fails_over_to_the_next_at_once(dns: DnsServer) -> None:
    closed = _closed_udp_port("127.0.53.7")
    host = name()
    dns.set(host, ("A", "127.0.40.11"))
    result = resolve([closed, dns.where], host, timeouts={"dns": 2, "deadline": 5})

    assert codes(result) == {Reason.DNS_RESOLVER_FAILOVER.value}
    assert result.resolver == dns.where
    assert [str(a.address) for a in result.answers] == ["127.0.40.11"]
    assert f"resolver {closed} failed (cannot query: Connection refused)" in result.failures[0].detail
    assert result.lookup_seconds < 0.5


@pytest.mark.parametrize("late", [0.2, 0.4])
def test_the_lookup_time_of_a_late_answer_is_its_delay(dns: DnsServer, late: float) -> None:
    host = name()
    dns.set(host, ("A", "127.0.40.12"))
    dns.delay(host, late)
    try:
        result = resolve(dns, host)
    finally:
        dns.delay(host, 0)

    assert result.failures == ()
    query = result.queries[0]
    # From just before the send to when the loop saw the answer: the delay, plus the lab's
    # own turn-around (well under a millisecond idle; the margin is for a loaded machine).
    assert late <= query.duration_seconds < late + 0.1
    assert late <= result.lookup_seconds < late + 0.1
    assert result.lookup_seconds >= query.duration_seconds


def test_the_answer_is_timed_when_it_arrived_not_after_other_work_in_that_loop_turn(
    dns: DnsServer,
) -> None:
    host = name()
    dns.set(host, ("A", "127.0.40.13"))
    dns.delay(host, 0.15)
    target = make_target(url=f"https://{host}/", resolvers=[dns.where], expect_networks=["127.0.0.0/8"])

    async def main() -> DnsResult:
        loop = asyncio.get_running_loop()
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as poke,
        ):
            busy.bind(("127.0.53.8", 0))
            busy.setblocking(False)

            def hog() -> None:  # another task's CPU work in the turn that delivers the answer
                busy.recv(16)
                time.sleep(0.2)

            def block_then_poke() -> None:
                time.sleep(0.1)  # the loop is busy while the answer arrives (at 0.15 s) ...
                poke.sendto(b"x", busy.getsockname())  # ... and the hog's datagram after it

            loop.add_reader(busy.fileno(), hog)
            loop.call_later(0.1, block_then_poke)
            try:
                return await dns_stage.resolve(_plan(target), Deadline.after(5))
            finally:
                loop.remove_reader(busy.fileno())

    try:
        result = asyncio.run(main())
    finally:
        dns.delay(host, 0)
    assert result.failures == ()
    # The loop saw the answer at about 0.2 s (after the blocking call); the hog's 0.2 s in
    # the same turn, before the stage's coroutine resumed, is not in the lookup time.
    assert 0.15 <= result.lookup_seconds < 0.35, result.lookup_seconds


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_resolver(lab: Lab) -> None:
    server = lab.start_dns("::1")
    try:
        host, truncated, late = name(), name(), name()
        server.set(host, ("A", "127.0.40.14"))
        server.set(truncated, ("A", "127.0.40.15"))
        server.behave(truncated, Behaviour.TRUNCATE)
        server.set(late, ("A", "127.0.40.16"))
        server.delay(late, 0.2)
        plain = resolve(server, host)
        over_tcp = resolve(server, truncated)
        delayed = resolve(server, late)
        refused = resolve([_closed_udp_port("::1")], host, timeouts={"dns": 2, "deadline": 5})
    finally:
        lab.stop(server)
    assert server.where.startswith("[::1]:")
    assert plain.failures == () and plain.resolver == server.where
    assert [str(a.address) for a in plain.answers] == ["127.0.40.14"]
    assert over_tcp.failures == () and over_tcp.queries[0].tcp is True
    assert [str(a.address) for a in over_tcp.answers] == ["127.0.40.15"]
    assert delayed.failures == () and 0.2 <= delayed.lookup_seconds < 0.3
    assert codes(refused) == {Reason.DNS_ERROR.value} and refused.lookup_seconds < 0.5
    assert "Connection refused" in refused.failures[0].detail


def test_every_socket_is_closed_on_every_path(dns: DnsServer, lab: Lab) -> None:
    silent = lab.start_dns("127.0.53.9")
    silent.default = Behaviour.DROP
    closed = _closed_udp_port("127.0.53.7")
    hosts = {}
    for behaviour in Behaviour:
        hosts[behaviour] = host = name()
        dns.set(host, ("A", "127.0.40.17"))
        dns.behave(host, behaviour)
    quick = {"dns": 0.2, "deadline": 5}

    def round_() -> None:
        for behaviour, host in hosts.items():
            if behaviour is not Behaviour.DROP:
                resolve(dns, host, ip_family="both", expect_networks=["127.0.0.0/8", "::1/128"])
        resolve([closed, dns.where], hosts[Behaviour.ANSWER], timeouts=quick)
        resolve([silent.where], name(), timeouts=quick)
        target = make_target(url=f"https://{name()}/", resolvers=[silent.where])

        async def cancelled() -> None:  # a lookup abandoned while it waits
            task = asyncio.create_task(dns_stage.resolve(_plan(target), Deadline.after(5)))
            await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        asyncio.run(dns_stage.resolve(_plan(target), Deadline.after(0.1)))  # cut by the deadline

    try:
        round_()  # first use: imports, the lab's own sockets
        before = _open_fds()
        for _ in range(3):
            round_()
        after = _open_fds()
    finally:
        lab.stop(silent)
    assert after == before, (before, after)
