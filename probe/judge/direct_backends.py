"""Pure logic of the direct backend checks (``direct_backends``).

The pin, the hop's result, and the verdict that correlates the direct view with the view
through the load balancer.

A direct check runs the ordinary stages (``tls_stage``, ``http_stage``) against a
backend's own URL; this module only judges what they returned. It reads no clock and
opens no socket.

The correlation names the hop that fails, one finding per backend:

=============================  ======================  ==============================
behind the load balancer       directly                finding
=============================  ======================  ==============================
missing                        fails                   ``backend_down`` (critical)
missing                        answers                 ``backend_not_in_rotation`` (critical)
seen, or unknown               no TCP connection       ``backend_direct_blocked`` (warning)
seen, or unknown               fails past TCP          ``backend_direct_failed`` (warning)
seen, or unknown               answers                 nothing
any                            not run (this host)     ``cycle_fd_limit``
=============================  ======================  ==============================

"Missing" follows the target's ``balancing`` (see :func:`correlate`). "Unknown" means the
load balancer's view cannot tell: no backend rule, no response identified in the cycle (the
load balancer's own failure is then reported already), a backend unseen but not yet
missing under a random balancer (undecided), or ``balancing: any``. A
``backend_missing`` finding that a direct check explains is replaced by the correlated
one, so a backend never gets two contradictory findings.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe._text import shorten
from probe.config.models import DirectBackendConfig
from probe.judge.verdict import client_expiry_warnings, expiry_warnings, missing_certificate_facts
from probe.model.facts import TargetFacts
from probe.model.reasons import Reason
from probe.model.results import (
    AddressResult,
    DirectBackendResult,
    DnsResult,
    Failure,
    Rotation,
    TlsResult,
)
from probe.stages.certs import label_of

#: A direct check's own findings the target's verdict carries as they are.
_LIFTED = frozenset({Reason.BACKEND_CERT_EXPIRING_SOON, Reason.TLS_CLIENT_CERT_EXPIRING_SOON})

#: Direct-check failures that are this host's own limit: they say nothing of the backend.
_LOCAL = frozenset({Reason.CYCLE_FD_LIMIT})

#: Direct-check failures meaning the backend could not even be reached over TCP.
_UNREACHED = frozenset({Reason.TCP_TIMEOUT, Reason.TCP_REFUSED, Reason.TCP_ERROR})


def colon_hex(fingerprint: str) -> str:
    """A hex fingerprint as OpenSSL prints it: ``AB:CD:…`` (upper case, colon-separated)."""
    upper = fingerprint.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def pin_findings(tls: TlsResult, backend: DirectBackendConfig) -> tuple[Failure, ...]:
    """``backend_cert_pin_mismatch`` when the leaf's SHA-256 (of its DER) is not the pin.

    Checked right after a completed handshake, before any HTTP request (as curl's
    ``--pinnedpubkey`` aborts before sending); the handshake itself did not verify, as for
    an SSH host key the pin is the whole trust. Nothing without a pin or a leaf.

    Args:
        tls: the TLS stage's result at the backend's address.
        backend: the backend's configuration (``fingerprint_sha256`` in lowercase hex).

    Returns:
        The finding naming both fingerprints, or ``()``.
    """
    pin, leaf = backend.fingerprint_sha256, tls.leaf
    if pin is None or leaf is None or tls.version is None or leaf.sha256_fingerprint == pin:
        return ()
    return (
        Failure(
            Reason.BACKEND_CERT_PIN_MISMATCH,
            f"{backend.name}: the certificate '{label_of(leaf)}' has SHA-256 fingerprint "
            f"{colon_hex(leaf.sha256_fingerprint)}, not the pinned {colon_hex(pin)}; no request was sent",
            tls.address,
            backend.name,
        ),
    )


def hop_result(
    backend: DirectBackendConfig,
    hop: TargetFacts,
    dns: DnsResult,
    address: AddressResult | None,
    duration_seconds: float,
    now: float,
) -> DirectBackendResult:
    """The direct check's result from its stages' results.

    Args:
        backend: the backend's configuration.
        hop: the facts of the settings the check ran with (:meth:`TargetConfig.direct_target`).
        dns: the DNS stage (pinned for an IP-literal URL).
        address: the address-probe of the first address, ``None`` when no address could
            be probed (the DNS findings say why).
        duration_seconds: how long the check took.
        now: Unix time, for the expiry warning.

    Returns:
        The hop's result: its own findings (stage findings, the pin, a lost-facts
        ``internal_error``, ``backend_cert_expiring_soon`` and, for a ``tls_client`` of its
        own, ``tls_client_cert_expiring_soon``) and status.
    """
    failures = list(dns.failures)
    if address is not None:
        failures.extend(address.failures)
        failures.extend(missing_certificate_facts((address,)))
        failures.extend(expiry_findings(backend.name, address, hop.cert_expiry_warning_days, now))
    elif not failures:
        failures.append(Failure(Reason.DNS_NO_ANSWER, f"{hop.hostname} gave no address to check"))
    if backend.tls_client is not None:  # its own; the target's is the target's finding
        failures.extend(
            client_expiry_warnings(hop.client_certificate, hop.cert_expiry_warning_days, now, backend.name)
        )
    return DirectBackendResult(
        name=backend.name,
        url=backend.url,
        server_name=hop.hostname,
        trust=backend.trust,
        pinned_fingerprint=backend.fingerprint_sha256,
        dns=dns,
        address=address.address if address is not None else None,
        tls=address.tls if address is not None else None,
        attempt=address.attempts[0] if address is not None and address.attempts else None,
        failures=tuple(failures),
        duration_seconds=duration_seconds,
        client_certificate=hop.client_certificate if backend.tls_client is not None else None,
    )


def expiry_findings(name: str, address: AddressResult, warning_days: float, now: float) -> list[Failure]:
    """``backend_cert_expiring_soon`` for a backend whose certificate expires within ``warning_days``.

    The chain as sent counts when the hop does not verify (a pin, ``insecure_skip_verify``),
    so an expired self-signed certificate is reported too; 0 days turns the warning off.
    """
    if warning_days <= 0:
        return []
    return [
        Failure(Reason.BACKEND_CERT_EXPIRING_SOON, f"{name}: {f.detail}", f.address, name)
        for f in expiry_warnings((address,), warning_days, now)
    ]


def correlate(
    direct: tuple[DirectBackendResult, ...],
    addresses: tuple[AddressResult, ...],
    target: TargetFacts,
    failures: tuple[Failure, ...],
    memory: Rotation | None = None,
) -> tuple[Failure, ...]:
    """The cycle's findings with the direct checks correlated in (see the module's table).

    "Missing behind the load balancer" follows the target's ``balancing``: with
    ``round_robin``, no identified response of the cycle came from the backend; with
    ``weighted_random`` or ``least_outstanding_requests``, the rotation memory reports it
    missing (:meth:`probe.judge.balancing.Rotation.is_missing`; before that the load balancer's
    view is undecided, as ``backend_undecided`` says); with ``any``, never (unknown).

    Args:
        direct: the direct checks, in config order.
        addresses: the load balancer's addresses (their identified responses).
        target: the target's facts (its backend rule, ``balancing`` and ``expect_backends``).
        failures: the cycle's findings from :func:`probe.judge.verdict.evaluate`.
        memory: the rotation memory after this cycle (:func:`probe.judge.balancing.fold`);
            ``None`` for ``round_robin`` and ``any``, or without ``expect_backends``.

    Returns:
        ``failures`` without the ``backend_missing`` findings a direct check explains,
        followed by one correlated finding per backend that needs one and the
        ``backend_cert_expiring_soon`` and ``tls_client_cert_expiring_soon`` findings.
    """
    if not direct:
        return failures
    view = _BalancerView.of(addresses, target, memory)
    added: list[Failure] = []
    explained: set[str] = set()
    for check in direct:
        local = _local_limit(check)
        if local is not None:  # the check did not run: the load balancer's view stands alone
            added.append(local)
            continue
        missing = view.missing(check.name)
        if missing is not None:
            explained.add(check.name)
        finding = _correlated(check, missing, view)
        if finding is not None:
            added.append(finding)
        added.extend(f for f in check.failures if f.reason in _LIFTED)
    kept = [f for f in failures if not _explained(f, explained, view.seen, target)]
    return (*kept, *added)


@dataclass(frozen=True, slots=True)
class _BalancerView:
    """What the cycle saw of the backends through the load balancer.

    Attributes:
        counts: identified responses per backend, over every address.
        identified: their sum.
        known: the view can tell a backend's absence: a backend rule, and at least one
            identified response.
        target: the target's facts.
        memory: the rotation memory after the cycle, ``None`` when not counted.
    """

    counts: dict[str, int]
    identified: int
    known: bool
    target: TargetFacts
    memory: Rotation | None

    @classmethod
    def of(
        cls, addresses: tuple[AddressResult, ...], target: TargetFacts, memory: Rotation | None
    ) -> _BalancerView:
        """The view of the load balancer's addresses in this cycle."""
        counts: dict[str, int] = {}
        for result in addresses:
            for name, count in result.backend_counts.items():
                counts[name] = counts.get(name, 0) + count
        identified = sum(counts.values())
        known = target.backend_rule is not None and identified > 0
        return cls(counts, identified, known, target, memory)

    @property
    def seen(self) -> int:
        """How many backends answered: recently (the rotation memory), else in this cycle."""
        return len(self.memory.fresh) if self.memory is not None else len(self.counts)

    def missing(self, name: str) -> str | None:
        """How ``name`` is missing behind the load balancer; ``None`` if not, or if the view cannot tell."""
        return _missing_behind(name, self.counts, self.target, self.memory) if self.known else None


def _correlated(check: DirectBackendResult, missing: str | None, view: _BalancerView) -> Failure | None:
    """The correlated finding of one direct check, ``None`` when it answers and is not missing.

    Args:
        check: the direct check.
        missing: how the backend is missing behind the load balancer
            (:meth:`_BalancerView.missing`), ``None`` when it is not, or the view cannot tell.
        view: the load balancer's view of the cycle.
    """
    cause, where = check.first_critical, _where(check)
    if missing is not None and cause is None:
        reason = Reason.BACKEND_NOT_IN_ROTATION
        detail = (
            f"{check.name} answers directly ({_answer(check)}{where}) but {missing}: the load "
            "balancer does not send to it: check its registration, the health check path, "
            "and the security group from the load balancer to the target"
        )
    elif missing is not None and cause is not None:
        reason = Reason.BACKEND_DOWN
        detail = (
            f"{check.name} does not answer directly either ({cause.reason.value}{where}: "
            f"{shorten(cause.detail)}) and {missing}: the instance or its service is down"
        )
    elif cause is None:
        return None
    elif cause.reason in _UNREACHED:
        reason = Reason.BACKEND_DIRECT_BLOCKED
        detail = (
            f"{_through(check.name, view)}, but this host gets no connection to it "
            f"({cause.reason.value}{where}): the path from this host to the backend is blocked; "
            "clients go through the load balancer, so this is a warning"
        )
    else:
        reason = Reason.BACKEND_DIRECT_FAILED
        detail = (
            f"{_through(check.name, view)}, but its direct check fails ({cause.reason.value}{where}: "
            f"{shorten(cause.detail)}); clients go through the load balancer, which does "
            "not verify the backend's certificate, so this is a warning"
        )
    return Failure(reason, detail, check.address, check.name)


def _local_limit(check: DirectBackendResult) -> Failure | None:
    """The direct check's ``cycle_fd_limit`` as the target's finding, ``None`` without one.

    A check this host could not run (no file descriptor for its socket) tells nothing of
    the backend, so it is neither ``backend_down`` nor ``backend_direct_blocked``, and a
    ``backend_missing`` it would have explained stays.
    """
    cause = next((f for f in check.failures if f.reason in _LOCAL), None)
    if cause is None:
        return None
    detail = f"{check.name}: the direct check could not run: {cause.detail}"
    return Failure(cause.reason, detail, cause.address, check.name)


def _through(name: str, view: _BalancerView) -> str:
    """What the load balancer's view says of a backend that is not missing."""
    if view.known and name in view.counts:
        return f"{name} answers through the load balancer ({view.counts[name]} of {view.identified})"
    if view.known:
        return f"whether {name} answers through the load balancer is " + _unknown(
            name, view.identified, view.target, view.memory
        )
    return f"whether {name} answers through the load balancer is unknown ({_unidentified(view.target)})"


def _unidentified(target: TargetFacts) -> str:
    """Why the cycle identified no backend through the load balancer."""
    if target.backend_rule is None:
        return "no backend rule"
    if target.expect_redirect is not None:
        return "expect_redirect: the listener answers itself"
    return "no identified response"


def _missing_behind(
    name: str, counts: dict[str, int], target: TargetFacts, memory: Rotation | None
) -> str | None:
    """How ``name`` is missing behind the load balancer under the target's ``balancing``, or ``None``.

    Only called when the cycle identified responses (so ``counts`` is not empty).
    """
    if name in counts or target.balancing == "any":
        return None
    identified = sum(counts.values())
    if target.balancing == "round_robin":
        return f"none of the {identified} identified responses through the load balancer came from it"
    if memory is None or not memory.is_missing(name):
        return None
    runs = memory.runs(name)
    if memory.cross_zone:
        return f"none of the last {runs[0][1]} identified responses through the load balancer came from it"
    each = ", ".join(f"{run} at {scope.name}" for scope, run in runs)
    return f"none of the last identified responses through the load balancer came from it ({each})"


def _unknown(name: str, identified: int, target: TargetFacts, memory: Rotation | None) -> str:
    """Why the load balancer's view of an unseen, not missing backend decides nothing."""
    if target.balancing == "any":
        return "unknown (balancing: any)"
    if memory is None:
        return (
            f"undecided (not among this cycle's {identified} identified responses; with "
            f"{target.balancing} that needs expect_backends to be judged)"
        )
    runs = memory.runs(name)
    unseen = ", ".join(str(run) for _, run in runs)
    threshold = max(scope.threshold for scope, _ in runs)
    return (
        f"undecided (not seen in the last {unseen} identified responses; with {target.balancing} "
        f"it is missing after {threshold})"
    )


def _explained(failure: Failure, explained: set[str], seen: int, target: TargetFacts) -> bool:
    """Whether a ``backend_missing`` finding is said better by a correlated finding."""
    if failure.reason is not Reason.BACKEND_MISSING or not explained:
        return False
    if failure.backend is not None:
        return failure.backend in explained
    # The count form ("3 backends expected, 2 answered"): explained when the direct checks
    # account for every backend missing.
    expected = target.expected_backend_count
    return expected is not None and seen + len(explained) >= expected


def _where(check: DirectBackendResult) -> str:
    if check.address is None or check.tls is None:
        return ""
    host = f"[{check.address}]" if check.address.version == 6 else str(check.address)
    return f" at {host}:{check.tls.port}"


def _answer(check: DirectBackendResult) -> str:
    attempt = check.attempt
    if attempt is None or attempt.status_code is None:
        return "TLS only"
    return f"status {attempt.status_code}"


def unfinished(backend: DirectBackendConfig, hop: TargetFacts, why: Failure) -> DirectBackendResult:
    """The result of a direct check the cycle could not finish (deadline, or a bug)."""
    failure = Failure(why.reason, why.detail, None, backend.name)
    return DirectBackendResult(
        name=backend.name,
        url=backend.url,
        server_name=hop.hostname,
        trust=backend.trust,
        pinned_fingerprint=backend.fingerprint_sha256,
        dns=None,
        address=None,
        tls=None,
        attempt=None,
        failures=(failure,),
        duration_seconds=0.0,
        client_certificate=hop.client_certificate if backend.tls_client is not None else None,
    )
