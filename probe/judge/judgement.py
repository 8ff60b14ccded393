"""The judgement of one cycle: the one place where a target's stage results become findings.

:func:`judge_cycle` folds the rotation memory (:mod:`probe.judge.balancing`), adds the
findings across addresses (:func:`probe.judge.verdict.evaluate`), correlates the direct
checks (:mod:`probe.judge.direct_backends`) and gives each address the findings about it.
Pure: stage results, the target's facts and ``now`` in, findings out; no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.judge import balancing, direct_backends
from probe.judge.verdict import evaluate, with_cycle_findings
from probe.model.facts import TargetFacts
from probe.model.results import AddressResult, DirectBackendResult, DnsResult, Failure, Rotation


@dataclass(frozen=True, slots=True)
class Gathered:
    """What the stages of one cycle returned, before it is judged.

    Attributes:
        dns: the DNS stage.
        addresses: one result per probed address, in DNS answer order.
        direct: the direct checks of ``direct_backends``, in config order.
    """

    dns: DnsResult
    addresses: tuple[AddressResult, ...]
    direct: tuple[DirectBackendResult, ...] = ()


@dataclass(frozen=True, slots=True)
class Judgement:
    """A judged cycle.

    Attributes:
        addresses: the addresses, each with the cycle's findings about it (see
            :func:`with_cycle_findings`).
        failures: every finding of the cycle, in stage order.
        rotation: the rotation memory after this cycle (:func:`probe.judge.balancing.fold`).
    """

    addresses: tuple[AddressResult, ...]
    failures: tuple[Failure, ...]
    rotation: Rotation | None


def judge_cycle(
    gathered: Gathered, target: TargetFacts, now: float, memory: Rotation | None = None
) -> Judgement:
    """Judge one cycle: fold the rotation memory, evaluate, correlate the direct checks.

    Args:
        gathered: the stages' results.
        target: the target's facts (its rules).
        now: the current Unix time (certificate expiry).
        memory: the previous cycle's rotation memory (the daemon, ``--watch``); ``None``
            for a single check.

    Returns:
        The findings, the addresses with theirs, and the memory for the next cycle.
    """
    folded = balancing.fold(
        memory,
        gathered.addresses,
        balancing=target.balancing,
        cross_zone=target.cross_zone,
        names=target.expected_backends,
        count=target.expected_backend_count if target.backend_rule is not None else None,
        requests_per_address=target.requests_per_address,
    )
    failures = evaluate(gathered.dns, gathered.addresses, target, now, folded)
    if gathered.direct:
        failures = direct_backends.correlate(gathered.direct, gathered.addresses, target, failures, folded)
    return Judgement(
        addresses=with_cycle_findings(gathered.addresses, failures), failures=failures, rotation=folded
    )
