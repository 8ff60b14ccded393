"""Targets prepared once per config load: resolvers, SSL contexts, HTTP clients and facts.

:func:`plan` turns a :class:`~probe.config.models.Config` into one
:class:`~probe.stages.plan.TargetPlan` per target. Everything a cycle would otherwise rebuild
is made here once: the SSL contexts (loading a trust store costs tens of milliseconds), the
HTTP clients (shared by targets with equal client settings), and the target's
:class:`~probe.model.facts.TargetFacts` that every result of the target refers to.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from probe.config.errors import ConfigError
from probe.config.models import Config, TargetConfig, Timeouts
from probe.model.facts import TargetFacts
from probe.model.reasons import Platform
from probe.stages import dns as dns_stage
from probe.stages import http as http_stage
from probe.stages import tls as tls_stage
from probe.stages.plan import TargetPlan

if TYPE_CHECKING:
    from OpenSSL import SSL

#: What the SSL contexts of a target depend on: ``(ca_file, min_tls_version,
#: insecure_skip_verify, http_version)``.
ContextsKey = tuple[Path | None, str, bool, str]

#: The contexts of a plain ``http://`` target: no handshake, so no trust store is loaded.
_PLAIN_CONTEXTS: ContextsKey = (None, "1.2", True, "1.1")


def facts_of(target: TargetConfig) -> TargetFacts:
    """The facts of a target that its results refer to, built once per config load.

    Secret request header values are shown as ``(secret)``; the backend rule is
    ``("header", name)`` or ``("body_regex", pattern)``; verification counts as off only
    for an ``https://`` target.
    """
    rule: tuple[str, str] | None = None
    if target.backend is not None and target.backend.header is not None:
        rule = ("header", target.backend.header)
    elif target.backend is not None and target.backend.body_regex is not None:
        rule = ("body_regex", target.backend.body_regex.pattern)
    return TargetFacts(
        name=target.name,
        url=target.url,
        hostname=target.hostname,
        port=target.port,
        scheme=target.scheme,
        expected_backends=target.expected_backend_names,
        expected_backend_count=target.expected_backend_count,
        backend_rule=rule,
        insecure_skip_verify=target.insecure_skip_verify and not target.plain,
        request_headers=tuple(
            (name, "(secret)" if target.is_secret_header(name) else value.value)
            for name, value in target.headers.items()
        ),
        reuse_connections=target.reuse_connections,
        platform=Platform(target.platform),
        timeouts_seconds=_timeouts_seconds(target.timeouts),
        balancing=target.balancing,
        cross_zone=target.cross_zone,
        expect_redirect=target.expect_redirect,
        cert_expiry_warning_days=target.cert_expiry_warning_days,
        requests_per_address=target.requests_per_address,
        grpc_health_service=None if target.grpc_health is None else target.grpc_health.service,
    )


def plan(config: Config) -> tuple[TargetPlan, ...]:
    """Prepare every target of ``config``: resolvers, SSL contexts, clients and facts.

    Contexts are built once per distinct ``(ca_file, min_tls_version,
    insecure_skip_verify, http_version)``; loading the system trust store costs tens of
    milliseconds, so it must not happen per probe. One HTTP client serves every target with
    the same contexts and :func:`client_key` (about 2.6 KiB per target when each had its
    own): every request still goes on a new connection with its own headers, SNI and
    timeouts.

    A pinned target without ``expect_same_addresses_as`` resolves nothing and gets no resolvers.
    An ``http://`` target gets non-verifying contexts that no handshake uses (its
    ``ca_file`` is not read).

    Raises:
        ConfigError: a ``ca_file`` cannot be loaded, or no resolver is configured.
    """
    builder = _Builder(str(config.path) if config.path else "config")
    return tuple(builder.target_plan(index, target) for index, target in enumerate(config.targets))


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


class _Builder:
    """The things one :func:`plan` call shares between its targets, each built on first need.

    Args:
        where: the config file (or ``"config"``), for error messages.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self._contexts: dict[ContextsKey, tls_stage.TlsContexts] = {}
        self._ocsp: dict[tuple[Path | None, str], SSL.Context] = {}
        self._clients: dict[tuple[object, ...], http_stage.TargetClient] = {}
        self._system: tuple[tuple[str, int], ...] | None = None

    def target_plan(self, index: int, target: TargetConfig) -> TargetPlan:
        """The plan of ``targets[index]``, with one plan per direct backend.

        Problems are found in this order: the ``ca_file``, the stapling context, the
        resolvers, then each direct backend's ``ca_file`` and resolvers.
        """
        where = f"targets[{index}]"
        key = _PLAIN_CONTEXTS if target.plain else _contexts_key(target)
        contexts = self.contexts(key, f"{where}.ca_file")
        ocsp = self._ocsp_context(target, where) if target.ocsp == "staple" else None
        resolvers = self._resolvers(target, where)
        client = self._client(target, key)
        direct = tuple(self._hop_plan(target, number, where) for number in range(len(target.direct_backends)))
        return TargetPlan(
            target=target,
            facts=facts_of(target),
            resolvers=resolvers,
            contexts=contexts,
            ocsp=ocsp,
            http=client,
            direct=direct,
        )

    def _hop_plan(self, target: TargetConfig, number: int, where: str) -> TargetPlan:
        """The plan of one direct backend: the target's settings for the backend's URL."""
        hop = target.direct_target(target.direct_backends[number])
        key = _contexts_key(hop)
        contexts = self.contexts(key, f"{where}.direct_backends[{number}].ca_file")
        resolvers: tuple[tuple[str, int], ...] = ()
        if hop.pinned_by is None:  # a DNS name in the backend's URL
            resolvers = target.resolvers or self._system_resolvers(f"{where}.resolvers")
        return TargetPlan(
            target=hop,
            facts=facts_of(hop),
            resolvers=tuple(resolvers),
            contexts=contexts,
            http=self._client(hop, key),
        )

    def contexts(self, key: ContextsKey, field: str) -> tls_stage.TlsContexts:
        """The SSL contexts for ``key``, built once.

        Raises:
            ConfigError: the ``ca_file`` cannot be loaded (``field`` names it).
        """
        if key not in self._contexts:
            try:
                self._contexts[key] = tls_stage.build_contexts(*key)
            except ValueError as exc:
                raise ConfigError(str(exc), where=self.where, field=field) from None
        return self._contexts[key]

    def _ocsp_context(self, target: TargetConfig, where: str) -> SSL.Context:
        from probe.stages import ocsp as ocsp_stage  # pyOpenSSL: imported only for targets that staple

        key = (target.ca_file, target.min_tls_version)
        if key not in self._ocsp:
            try:
                self._ocsp[key] = ocsp_stage.build_context(*key)
            except ValueError as exc:
                raise ConfigError(str(exc), where=self.where, field=f"{where}.ca_file") from None
        return self._ocsp[key]

    def _resolvers(self, target: TargetConfig, where: str) -> tuple[tuple[str, int], ...]:
        if target.pinned_by is not None and target.expect_same_addresses_as is None:
            return ()  # nothing to resolve: no resolver needed, none read from resolv.conf
        if target.resolvers is not None:
            return tuple(target.resolvers)
        return self._system_resolvers(f"{where}.resolvers")

    def _system_resolvers(self, field: str) -> tuple[tuple[str, int], ...]:
        """The system's resolvers (``/etc/resolv.conf``), read once per :func:`plan`."""
        if self._system is None:
            try:
                self._system = dns_stage.system_resolvers()
            except LookupError as exc:
                raise ConfigError(str(exc), where=self.where, field=field) from None
        return self._system

    def _client(self, target: TargetConfig, key: ContextsKey) -> http_stage.TargetClient:
        client = (key, *client_key(target))
        if client not in self._clients:
            self._clients[client] = http_stage.TargetClient(target, self._contexts[key].http)
        return self._clients[client]


@functools.lru_cache(maxsize=256)
def _timeouts_seconds(timeouts: Timeouts) -> tuple[tuple[str, float], ...]:
    """``timeouts.as_seconds()``, one tuple shared by the facts of every target with equal timeouts."""
    return timeouts.as_seconds()


def _contexts_key(target: TargetConfig) -> ContextsKey:
    return (target.ca_file, target.min_tls_version, target.insecure_skip_verify, target.http_version)
