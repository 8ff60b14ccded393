"""The plan of one target: what its stages need, prepared once per config load.

Every stage of an address-probe takes the same arguments, ``(plan, address, deadline)``:
the TLS stage (:func:`probe.stages.tls.handshake`), the HTTP stage
(:func:`probe.stages.http.request_rounds`) and the stapling handshake
(:func:`probe.stages.ocsp.staple`). The DNS stage takes its own
:class:`~probe.stages.dns.DnsPlan` (``probe check`` builds one from the arguments before the
configuration is loaded). :func:`probe.engine.plan.plan` builds the plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.config.models import TargetConfig
from probe.model.facts import TargetFacts

if TYPE_CHECKING:
    from OpenSSL import SSL

    from probe.stages.http import TargetClient
    from probe.stages.tls import TlsContexts


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What a cycle needs besides the config, prepared once per config load.

    Attributes:
        target: the target's configuration.
        facts: what the target is, as its results refer to it (:func:`probe.engine.plan.facts_of`).
        resolvers: ``(ip, port)`` pairs to ask, in order.
        contexts: SSL contexts, shared by targets with the same trust configuration.
        ocsp: the pyOpenSSL context of the stapling handshake, ``None`` unless ``ocsp: staple``.
        http: the target's httpx client, kept across cycles (built from ``contexts.http``
            when not given) and shared by the plan's targets with equal client settings
            (:func:`probe.engine.plan.client_key`); :func:`probe.engine.plan.close_plans` closes it.
        direct: one plan per entry of ``direct_backends``, in order: the settings of
            :meth:`TargetConfig.direct_target` with their own contexts and client.
    """

    target: TargetConfig
    facts: TargetFacts
    resolvers: tuple[tuple[str, int], ...]
    contexts: TlsContexts
    ocsp: SSL.Context | None = None
    http: TargetClient | None = None
    direct: tuple[TargetPlan, ...] = ()

    def http_client(self) -> TargetClient:
        """The target's HTTP client (a new one for a plan built without)."""
        if self.http is not None:
            return self.http
        from probe.stages.http import TargetClient

        return TargetClient(self.target, self.contexts.http)
