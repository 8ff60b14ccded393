"""A small authoritative DNS responder (UDP and TCP) for the loopback lab.

It answers from an in-memory zone and can be told to misbehave per name (SERVFAIL,
REFUSED, silence, truncation, garbage) so that every DNS failure has a real peer.
Runs on the asyncio loop of the lab thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from enum import StrEnum

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class Behaviour(StrEnum):
    """How the server treats a query for a name."""

    ANSWER = "answer"  # answer from the zone; NXDOMAIN for unknown names
    SERVFAIL = "servfail"
    REFUSED = "refused"
    NXDOMAIN = "nxdomain"
    NOTIMP = "notimp"  # rcode NOTIMP, as from a server that does not do recursion for us
    DROP = "drop"  # never answer (a dead or filtered resolver)
    TRUNCATE = "truncate"  # over UDP answer with TC set and no records; TCP answers fully
    GARBAGE = "garbage"  # bytes that are not a DNS message
    WRONG_NAME = "wrong_name"  # a response whose question is another name
    # Over UDP, first a forged answer (FORGED_ADDRESS) from another port of the server's
    # address and from another address (FORGED_SOURCE), then the real answer 50 ms later.
    OTHER_SOURCE = "other_source"


#: The address in the forged answers of ``Behaviour.OTHER_SOURCE``.
FORGED_ADDRESS = "127.0.40.99"
#: The other source address of ``Behaviour.OTHER_SOURCE``'s forged answer (loopback).
FORGED_SOURCE = "127.0.53.254"
#: Seconds between the forged answers of ``Behaviour.OTHER_SOURCE`` and the real one.
FORGED_LEAD = 0.05


class DnsServer:
    """Authoritative responder for the names added to it.

    Args:
        address: the loopback address to listen on.
        port: the UDP and TCP port (0 picks a free one, the same for both).
    """

    def __init__(self, address: str = "127.0.53.1", port: int = 0) -> None:
        self.address = address
        self.port = port
        self.default = Behaviour.ANSWER
        self._records: dict[str, list[tuple[str, str, int]]] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self._delays: dict[str, float] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.queries: list[tuple[str, str, str]] = []
        self.forged_from: list[tuple[str, int]] = []

    @property
    def where(self) -> str:
        """``IP:port`` to put in a probe's ``resolvers``."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def add(self, name: str, rdtype: str, value: str, ttl: int = 60) -> None:
        """Add a record (``A``, ``AAAA`` or ``CNAME``) for ``name``."""
        self._records.setdefault(_key(name), []).append((rdtype.upper(), value, ttl))

    def set(self, name: str, *records: tuple[str, str]) -> None:
        """Replace the records of ``name`` with ``(type, value)`` pairs (TTL 60)."""
        self._records[_key(name)] = [(t.upper(), v, 60) for t, v in records]

    def remove(self, name: str) -> None:
        """Forget ``name`` (it becomes NXDOMAIN)."""
        self._records.pop(_key(name), None)

    def behave(self, name: str, behaviour: Behaviour | str) -> None:
        """Make queries for ``name`` get ``behaviour``."""
        self._behaviours[_key(name)] = Behaviour(behaviour)

    def delay(self, name: str, seconds: float) -> None:
        """Answer UDP queries for ``name`` ``seconds`` late (0: at once again)."""
        if seconds > 0:
            self._delays[_key(name)] = seconds
        else:
            self._delays.pop(_key(name), None)

    def delay_of(self, wire: bytes) -> float:
        """Seconds to hold the answer to this query (0 for most names)."""
        if not self._delays:
            return 0.0
        try:
            question = dns.message.from_wire(wire).question
        except Exception:
            return 0.0
        return self._delays.get(_key(question[0].name.to_text()), 0.0) if question else 0.0

    async def start(self) -> None:
        """Listen on UDP and TCP."""
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port)
        self.port = self._tcp.sockets[0].getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.address, self.port)
        )
        self._udp = transport

    async def stop(self) -> None:
        """Stop listening."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1)

    # ------------------------------------------------------------------ answering

    def respond(self, wire: bytes, tcp: bool) -> bytes | None:
        """The response to one query in wire format, or ``None`` for no response."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype, "tcp" if tcp else "udp"))
        behaviour = self._behaviours.get(name, self.default)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if behaviour is Behaviour.DROP:
            return None
        if behaviour is Behaviour.GARBAGE:
            return b"\x00\x01this is not DNS" + bytes(range(32))
        if behaviour is Behaviour.SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif behaviour is Behaviour.REFUSED:
            response.set_rcode(dns.rcode.REFUSED)
        elif behaviour is Behaviour.NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif behaviour is Behaviour.NOTIMP:
            response.set_rcode(dns.rcode.NOTIMP)
        elif behaviour is Behaviour.TRUNCATE and not tcp:
            response.flags |= dns.flags.TC
        elif behaviour is Behaviour.WRONG_NAME:
            response.question = [
                dns.rrset.RRset(dns.name.from_text("wrong.invalid."), question.rdclass, question.rdtype)
            ]
        else:
            self._answer(response, name, rdtype)
        return response.to_wire()

    def behaviour_of(self, wire: bytes) -> Behaviour:
        """How the query in ``wire`` is treated (the default when it does not parse)."""
        try:
            question = dns.message.from_wire(wire).question
        except Exception:
            return self.default
        return (
            self._behaviours.get(_key(question[0].name.to_text()), self.default) if question else self.default
        )

    def forged(self, wire: bytes) -> bytes:
        """A well-formed answer to the query in ``wire`` with ``FORGED_ADDRESS`` in it."""
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", FORGED_ADDRESS))
        return response.to_wire()

    def send_forged(self, wire: bytes, addr: tuple[str, int]) -> None:
        """Send :meth:`forged` to ``addr`` from other sources than this server's.

        From another port of this address, and (IPv4) from ``FORGED_SOURCE``; ``addr`` is
        the loopback peer that asked.
        """
        forged = self.forged(wire)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sources = [(self.address, 0)]
        if family == socket.AF_INET:
            sources.append((FORGED_SOURCE, 0))
        for source in sources:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.bind(source)
                self.forged_from.append(sock.getsockname()[:2])
                sock.sendto(forged, addr)

    def _answer(self, response: dns.message.Message, name: str, rdtype: str) -> None:
        seen: set[str] = set()
        current = name
        while current not in seen:
            seen.add(current)
            records = self._records.get(current)
            if records is None:
                if current == name:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                return
            cnames = [r for r in records if r[0] == "CNAME"]
            if cnames and rdtype != "CNAME":
                _, target, ttl = cnames[0]
                response.answer.append(
                    dns.rrset.from_text(current + ".", ttl, "IN", "CNAME", _key(target) + ".")
                )
                current = _key(target)
                continue
            matching = [r for r in records if r[0] == rdtype]
            if matching:
                rrset = dns.rrset.from_text_list(
                    current + ".", matching[0][2], "IN", rdtype, [v for _, v, _ in matching]
                )
                response.answer.append(rrset)
            return

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(2)
                wire = await reader.readexactly(struct.unpack("!H", header)[0])
                answer = self.respond(wire, tcp=True)
                if answer is None:
                    await asyncio.sleep(30)
                    return
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = self.server.respond(data, tcp=False)
        if answer is None or self.transport is None:
            return
        late = self.server.delay_of(data)
        if self.server.behaviour_of(data) is Behaviour.OTHER_SOURCE:
            self.server.send_forged(data, addr)
            late = max(late, FORGED_LEAD)
        if late:
            asyncio.get_running_loop().call_later(late, self.transport.sendto, answer, addr)
        else:
            self.transport.sendto(answer, addr)


def _key(name: str) -> str:
    return name.lower().rstrip(".")
