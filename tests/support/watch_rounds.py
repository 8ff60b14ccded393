"""Rounds of hand-built results for the tests of ``probe --watch`` (judge and report).

Target ``www`` at two addresses, A and B; the watch starts :data:`T0`, 10 s before the first
round's cycle (at ``NOW``); each round's cycle takes 0.5 s.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from probe.model.reasons import Reason
from probe.model.results import AddressResult, Failure, TargetResult
from tests.support.builders import NOW, address_result, cert, target_result, tls_result, unconnected_tls

A = IPv4Address("10.0.2.31")
B = IPv4Address("10.0.2.32")
LEAF = cert("www.corp.example", NOW + 90 * 86400)
T0 = NOW - 10  # the watch starts 10 s before the first round's cycle


def healthy(ip: IPv4Address) -> AddressResult:
    """An address whose handshake verified, with no finding."""
    return address_result(ip, tls_result(ip, (LEAF,), (LEAF,)))


def refused(ip: IPv4Address, reason: Reason = Reason.TCP_TIMEOUT) -> AddressResult:
    """An address that gave no connection (``reason``, detail ``"{reason} at {ip}"``)."""
    return address_result(ip, unconnected_tls(ip, Failure(reason, f"{reason} at {ip}", ip)))


def mismatched(ip: IPv4Address) -> AddressResult:
    """An address whose certificate is for another name."""
    failure = Failure(Reason.CERT_HOSTNAME_MISMATCH, "valid for other.corp.example", ip)
    return address_result(ip, tls_result(ip, (LEAF,), verified=False, failures=(failure,)))


def round_of(*addresses: AddressResult, at: float, name: str = "www", **kwargs: Any) -> TargetResult:
    """One target's result in a round: its cycle starts at ``at`` and takes 0.5 s."""
    return target_result(name, addresses, started=at, duration=0.5, **kwargs)
