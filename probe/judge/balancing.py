"""Rotation judged for the balancing algorithm: when is an unseen backend missing?

Pure: statistics, and a memory of identified responses carried from one evaluation (a
daemon cycle, a ``--watch`` round) to the next as a frozen value inside the result. No
clock, no I/O; :func:`fold` is called by ``probe.engine.cycle`` with the previous result's memory
and :func:`findings` by ``probe.judge.verdict``.

``round_robin`` (the default) needs none of this: every expected backend must answer in
each cycle, as before. ``any`` makes no claim about the spread, so nothing is missing or
imbalanced by rotation. For ``weighted_random`` and ``least_outstanding_requests`` a
healthy backend may go unseen by chance, so probe counts identified responses without a
backend across evaluations and reports it missing only after so many that a healthy
backend would have answered but for a chance of at most :data:`ALPHA` per evaluation.

The model (stated in docs/how-a-check-works.md): with ``k`` expected backends, each identified response
comes from backend ``b`` with probability at least ``p``, independently;
``p = 1/k`` for ``weighted_random`` (equal weights assumed: probe has no weights), and
``p = 1/(2k)`` for ``least_outstanding_requests`` (a healthy backend is assumed to get at
least half its fair share over time; from an idle balancer's point of view the choice
between equally idle targets is up to its tie-breaking). Then ``P(b unseen in n) =
(1-p)^n``. Union bound over the ``k`` backends:

* one evaluation with fresh memory (``probe check``): a false ``backend_missing`` has
  probability at most ``k·(1-p)^n``; the threshold ``n`` is the least with
  ``k·(1-p)^n ≤ α``;
* continued counting (the daemon, ``--watch``): in an evaluation adding ``r`` responses,
  a run of ``n`` unseen responses *begins to be reported* with probability at most
  ``(1 + r·p)·(1-p)^n`` per backend (a run of exactly ``n`` may end at each of the ``r``
  responses, after a response from ``b``, or at the start); the threshold is the least
  ``n`` with ``k·(1 + r·p)·(1-p)^n ≤ α``.

Counting is per evaluation: a backend seen in an evaluation has an unseen run of zero
after it (slightly in favour of the backend, never against it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from probe._text import plural
from probe.model.reasons import Reason
from probe.model.results import AddressResult, Failure, Rotation, Scope, Unseen

#: The false-alarm probability allowed per evaluation (one in a million): for the daemon at
#: a 30 s interval (2,880 evaluations a day) at most one false ``backend_missing`` per
#: target in about 347 days.
ALPHA = 1e-6

#: :data:`ALPHA` in words, for findings.
ALPHA_TEXT = "one in a million"

#: The settings of ``balancing``.
BALANCING = ("round_robin", "least_outstanding_requests", "weighted_random", "any")

#: The settings judged by counting across evaluations.
COUNTED = ("least_outstanding_requests", "weighted_random")

#: At most this many backend names are remembered per scope when only a count is expected.
MAX_TRACKED = 64

#: The highest ``requests_per_address`` (the config's bound), for advice.
MAX_REQUESTS = 100


def share(balancing: str, k: int) -> float:
    """The least share of identified responses a healthy backend is assumed to get.

    Args:
        balancing: ``weighted_random`` (``1/k``) or ``least_outstanding_requests``
            (``1/(2k)``; ``1`` when ``k`` is 1).
        k: the number of expected backends (at least 1).

    Raises:
        ValueError: ``balancing`` is not counted, or ``k`` < 1.
    """
    if balancing not in COUNTED:
        raise ValueError(f"balancing {balancing!r} is not judged by counting")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if k == 1:
        return 1.0
    return 1 / k if balancing == "weighted_random" else 1 / (2 * k)


def chance_unseen(balancing: str, k: int, n: int) -> float:
    """Upper bound of the probability that some healthy backend answers none of ``n`` responses.

    ``min(1, k·(1-p)^n)`` with ``p`` from :func:`share`; exact for two backends with
    ``weighted_random`` (both cannot go unseen): 2 backends, 4 responses → 0.125.
    """
    p = share(balancing, k)
    return min(1.0, k * (1 - p) ** n)


def needed(balancing: str, k: int, per_evaluation: int | None = None, alpha: float = ALPHA) -> int:
    """Identified responses without a backend after which it is reported missing.

    Args:
        balancing: ``weighted_random`` or ``least_outstanding_requests``.
        k: the number of expected backends.
        per_evaluation: ``None`` for one evaluation with fresh memory (``probe check``):
            the least ``n`` with ``k·(1-p)^n ≤ alpha``; else the responses each evaluation
            adds (``r``): the least ``n`` with ``k·(1 + r·p)·(1-p)^n ≤ alpha``.
        alpha: the false-alarm probability allowed per evaluation.

    Returns:
        At least 1. Two backends, ``weighted_random``, α = 10⁻⁶: 21 for one check, 24
        when counting 8 responses per cycle.
    """
    p = share(balancing, k)
    if p >= 1:
        return 1
    factor = 1.0 if per_evaluation is None else 1 + per_evaluation * p
    bound = alpha / (k * factor)
    # The least n with (1-p)^n <= bound; computed, then corrected for rounding.
    n = max(1, math.ceil(math.log(bound) / math.log(1 - p)))
    while n > 1 and (1 - p) ** (n - 1) <= bound:
        n -= 1
    while (1 - p) ** n > bound:
        n += 1
    return n


def binomial_cdf(count: int, total: int, p: float) -> float:
    """``P(X ≤ count)`` for ``X ~ Binomial(total, p)``, summed in log space (no overflow)."""
    if count >= total or p <= 0:
        return 1.0
    if count < 0:
        return 0.0
    if p >= 1:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma
    total_lg = lg(total + 1)
    return min(
        1.0,
        sum(
            math.exp(total_lg - lg(i + 1) - lg(total - i + 1) + i * log_p + (total - i) * log_q)
            for i in range(count + 1)
        ),
    )


def percent(probability: float) -> str:
    """``"12.5 %"``, ``"0.781 %"``, ``"0.000095 %"``: three significant digits."""
    return f"{probability * 100:.3g} %"


def _scopes(addresses: Sequence[AddressResult], cross_zone: bool) -> dict[str, tuple[int, dict[str, int]]]:
    """Per scope: addresses in it and responses per backend in this evaluation."""
    if cross_zone:
        total: dict[str, int] = {}
        for address in addresses:
            for name, count in address.backend_counts.items():
                total[name] = total.get(name, 0) + count
        return {"": (len(addresses), total)}
    return {str(a.address): (1, a.backend_counts) for a in addresses}


def fold(
    previous: Rotation | None,
    addresses: Sequence[AddressResult],
    *,
    balancing: str,
    cross_zone: bool,
    names: tuple[str, ...],
    count: int | None,
    requests_per_address: int,
) -> Rotation | None:
    """The memory after this evaluation's responses (pure).

    Args:
        previous: the memory after the previous evaluation, ``None`` to begin afresh. A
            memory for other settings (balancing, cross_zone, expected backends) is not
            continued.
        addresses: this evaluation's per-address results.
        balancing: the target's ``balancing``.
        cross_zone: the target's ``cross_zone``.
        names: the expected backend names (empty when a count or unset).
        count: the expected backend count, ``None`` when unset.
        requests_per_address: the target's requests per address.

    Returns:
        ``None`` when the setting is not judged by counting or no backend is expected;
        ``previous`` unchanged when there is no address (nothing was counted).
    """
    if balancing not in COUNTED or not count:
        return None
    previous = _continued(previous, (balancing, cross_zone, names, count))
    if not addresses:
        # No address to probe (DNS failed, or named none): nothing to count, and the
        # count so far goes on when addresses come back (the DNS finding says why).
        return previous
    memory = _Memory.of(previous)
    scopes, unseen = [], []
    for name, (in_scope, counts) in _scopes(addresses, cross_zone).items():
        before = memory.scopes.get(name)
        scopes.append(
            _scope(name, in_scope, counts, before, balancing, count, requests_per_address * in_scope)
        )
        unseen.extend(_runs(name, counts, names, before, memory))
    kept_seen = tuple(memory.seen)[-MAX_TRACKED:]
    return Rotation(
        balancing=balancing,
        cross_zone=cross_zone,
        expected=count,
        names=names,
        scopes=tuple(scopes),
        unseen=tuple(unseen),
        seen=kept_seen,
    )


@dataclass(slots=True)
class _Memory:
    """The previous memory, looked up by scope and by ``(scope, backend)``.

    Attributes:
        scopes: the previous scopes by name.
        unseen: the previous unseen runs by ``(scope, backend)``, in their order.
        seen: the backends seen so far, oldest first (a dict as an ordered set); grows
            with this evaluation's.
    """

    scopes: dict[str, Scope]
    unseen: dict[tuple[str, str], Unseen]
    seen: dict[str, None]

    @classmethod
    def of(cls, previous: Rotation | None) -> _Memory:
        """The memory of ``previous``; empty when ``None``."""
        if previous is None:
            return cls({}, {}, {})
        return cls(
            {s.name: s for s in previous.scopes},
            {(u.scope, u.backend): u for u in previous.unseen},
            dict.fromkeys(previous.seen),
        )


def _continued(
    previous: Rotation | None, settings: tuple[str, bool, tuple[str, ...], int]
) -> Rotation | None:
    """``previous`` if counted with ``settings`` (balancing, cross_zone, names, count), else ``None``."""
    if previous is None:
        return None
    counted = (previous.balancing, previous.cross_zone, previous.names, previous.expected)
    return previous if counted == settings else None


def _scope(
    name: str,
    in_scope: int,
    counts: Mapping[str, int],
    before: Scope | None,
    balancing: str,
    count: int,
    per_evaluation: int,
) -> Scope:
    """One scope's totals after this evaluation, with its thresholds (see :func:`needed`)."""
    identified = sum(counts.values())
    responses = (before.responses if before else 0) + identified
    evaluations = (before.evaluations if before else 0) + (1 if identified else 0)
    first = evaluations <= 1
    threshold = needed(balancing, count, None if first else per_evaluation)
    decide = math.ceil(needed(balancing, count) / in_scope)
    return Scope(
        name=name,
        addresses=in_scope,
        responses=responses,
        evaluations=evaluations,
        last_responses=identified,
        threshold=threshold,
        decide_requests=decide,
    )


def _runs(
    scope: str, counts: Mapping[str, int], names: tuple[str, ...], before: Scope | None, memory: _Memory
) -> list[Unseen]:
    """The unseen run of each tracked backend in one scope; adds those that answered to ``memory.seen``.

    Without expected names only the :data:`MAX_TRACKED` shortest runs are kept.
    """
    identified = sum(counts.values())
    runs = []
    for backend in _tracked(scope, counts, names, memory):
        if counts.get(backend):
            runs.append(Unseen(scope=scope, backend=backend, responses=0, evaluations=0))
            memory.seen[backend] = None
        else:
            runs.append(_still_unseen(scope, backend, identified, before, memory))
    if not names and len(runs) > MAX_TRACKED:
        runs = sorted(runs, key=lambda u: u.responses)[:MAX_TRACKED]
    return runs


def _tracked(scope: str, counts: Mapping[str, int], names: tuple[str, ...], memory: _Memory) -> Iterable[str]:
    """The backends whose runs a scope keeps: the expected names, else those unseen before and seen now."""
    if names:
        return names
    earlier = [u.backend for u in memory.unseen.values() if u.scope == scope]
    return dict.fromkeys([*earlier, *counts])


def _still_unseen(scope: str, backend: str, identified: int, before: Scope | None, memory: _Memory) -> Unseen:
    """The run of a backend that did not answer in the scope, grown by this evaluation's responses."""
    old = memory.unseen.get((scope, backend))
    if old is not None:
        base = (old.responses, old.evaluations)
    else:  # never seen in this scope: unseen since the scope began
        base = (before.responses, before.evaluations) if before else (0, 0)
    return Unseen(
        scope=scope,
        backend=backend,
        responses=base[0] + identified,
        evaluations=base[1] + (1 if identified else 0),
    )


def findings(rotation: Rotation, addresses: Sequence[AddressResult]) -> list[Failure]:
    """``backend_missing`` and ``backend_undecided`` from the memory (see :func:`imbalance`).

    Args:
        rotation: the memory after this evaluation (from :func:`fold`).
        addresses: this evaluation's per-address results (for the counts in the details).

    Returns:
        The findings, in the order of the expected names.
    """
    found: list[Failure] = []
    total = _seen_text(_counts(addresses))
    how = f"with {rotation.balancing}"
    if rotation.names:
        for name in rotation.names:
            if rotation.is_missing(name):
                found.append(
                    Failure(Reason.BACKEND_MISSING, _missing_text(rotation, name, total), backend=name)
                )
            elif name not in rotation.seen:
                found.append(Failure(Reason.BACKEND_UNDECIDED, _undecided_text(rotation, name, total)))
    else:
        fresh = rotation.fresh
        if len(fresh) < rotation.expected and rotation.decided:
            runs = _scope_runs(rotation)
            found.append(
                Failure(
                    Reason.BACKEND_MISSING,
                    f"{rotation.expected} backends expected, {len(fresh)} answered within the last "
                    f"{runs} identified responses; {how} a healthy backend goes unseen that long "
                    f"less than {ALPHA_TEXT} times (seen: {total})",
                )
            )
        elif len(rotation.seen) < rotation.expected and not rotation.decided:
            found.append(
                Failure(
                    Reason.BACKEND_UNDECIDED,
                    f"{rotation.expected} backends expected, {len(rotation.seen)} seen in "
                    f"{_responses(rotation)}; {how} this is expected "
                    f"{_chance(rotation)} of the time; {_advice(rotation)} (seen: {total})",
                )
            )
    return found


def imbalance(
    balancing: str,
    cross_zone: bool,
    names: tuple[str, ...],
    expected: int | None,
    addresses: Sequence[AddressResult],
) -> list[Failure]:
    """``backend_imbalance`` only for a split the algorithm would rarely produce by chance.

    In each scope (all addresses together, or each address with ``cross_zone: false``), a
    backend that answered gets the finding when it got less than half its fair share of
    this evaluation's identified responses (the responses divided by the expected backends,
    or by the backends seen in the scope when none are expected) and a split this uneven or
    worse has a probability of at most ``ALPHA / k`` under :func:`share` (binomial tail).
    A backend outside ``names`` is not judged (it is ``backend_unexpected``).
    """
    found = []
    for name, (_, counts) in _scopes(addresses, cross_zone).items():
        identified = sum(counts.values())
        if not identified:
            continue
        k = expected or len(counts)
        p = share(balancing, k)
        where = f"at {name}, " if name else ""
        fair = identified / k
        for backend, answered in sorted(counts.items()):
            if names and backend not in names:
                continue
            if answered < fair / 2 and binomial_cdf(answered, identified, p) <= ALPHA / k:
                found.append(
                    Failure(
                        Reason.BACKEND_IMBALANCE,
                        f"{where}backend {backend} answered {answered} of {identified} requests; its "
                        f"fair share is {fair:g}, and with {balancing} a split this uneven "
                        f"happens by chance less than {ALPHA_TEXT} times (seen: {_seen_text(counts)})",
                    )
                )
    return found


def _counts(addresses: Sequence[AddressResult]) -> dict[str, int]:
    total: dict[str, int] = {}
    for address in addresses:
        for name, count in address.backend_counts.items():
            total[name] = total.get(name, 0) + count
    return total


def _seen_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


def _scope_runs(rotation: Rotation) -> str:
    if rotation.cross_zone:
        return str(rotation.scopes[0].threshold)
    return ", ".join(f"{s.threshold} at {s.name}" for s in rotation.scopes)


def _missing_text(rotation: Rotation, name: str, total: str) -> str:
    runs = rotation.runs(name)
    if rotation.cross_zone:
        scope, run = runs[0]
        unseen = {(u.scope, u.backend): u for u in rotation.unseen}.get((scope.name, name))
        cycles = unseen.evaluations if unseen else scope.evaluations
        span = f" ({plural(cycles, 'cycle')})" if not rotation.first else ""
        where = f"none of the last {run} identified responses{span}"
    else:
        where = (
            "none of the last "
            + ", ".join(f"{run} at {s.name}" for s, run in runs)
            + (" identified responses (cross_zone: false: at no address)")
        )
    return (
        f"backend {name} answered {where}; with {rotation.balancing} a healthy backend goes "
        f"unseen that long less than {ALPHA_TEXT} times (seen: {total})"
    )


def _responses(rotation: Rotation) -> str:
    if rotation.first:
        counted = ", ".join(str(s.responses) for s in rotation.scopes)
        where = "" if rotation.cross_zone else " at each address"
        return f"{counted} identified responses{where}"
    counted = ", ".join(str(s.responses) for s in rotation.scopes)
    return f"the {counted} identified responses since probing began"


def _chance(rotation: Rotation) -> str:
    least = min(s.responses for s in rotation.scopes)
    chance = chance_unseen(rotation.balancing, rotation.expected, least)
    exact = rotation.balancing == "weighted_random" and rotation.expected == 2
    return ("" if exact else "up to ") + percent(chance)


def _advice(rotation: Rotation) -> str:
    if rotation.first:
        decide = max(s.decide_requests for s in rotation.scopes)
        if decide <= MAX_REQUESTS:
            return f"use --requests {decide} (requests_per_address) to decide"
        return (
            f"one check cannot decide ({decide} requests per address needed): watch it "
            "(probe check --watch) or let the daemon count across cycles"
        )
    threshold = max(s.threshold for s in rotation.scopes)
    return f"it is reported missing after {threshold} identified responses without it"


def _undecided_text(rotation: Rotation, name: str, total: str) -> str:
    return (
        f"{name} not seen in {_responses(rotation)}; with {rotation.balancing} this is "
        f"expected {_chance(rotation)} of the time; {_advice(rotation)} (seen: {total})"
    )
