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
from probe.config.models import Config, TargetConfig, Timeouts, TlsClientConfig
from probe.model.facts import ClientCertificate, TargetFacts
from probe.model.reasons import Platform
from probe.stages import client_auth
from probe.stages import dns as dns_stage
from probe.stages import http as http_stage
from probe.stages import tls as tls_stage
from probe.stages.plan import TargetPlan

if TYPE_CHECKING:
    from OpenSSL import SSL

#: What the SSL contexts of a target depend on: ``(ca_file, min_tls_version,
#: insecure_skip_verify, http_version, tls_client)``.
ContextsKey = tuple[Path | None, str, bool, str, TlsClientConfig | None]

#: The contexts of a plain ``http://`` target: no handshake, so no trust store (and no
#: client certificate) is loaded.
_PLAIN_CONTEXTS: ContextsKey = (None, "1.2", True, "1.1", None)


def facts_of(target: TargetConfig, client: ClientCertificate | None = None) -> TargetFacts:
    """The facts of a target that its results refer to, built once per config load.

    Secret request header values are shown as ``(secret)``; the backend rule is
    ``("header", name)`` or ``("body_regex", pattern)``; verification counts as off only
    for an ``https://`` target; ``client`` is the client certificate its contexts present.
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
        client_certificate=client,
        grpc_health_service=None if target.grpc_health is None else target.grpc_health.service,
    )


def plan(config: Config) -> tuple[TargetPlan, ...]:
    """Prepare every target of ``config``: resolvers, SSL contexts, clients and facts.

    Contexts are built once per distinct ``(ca_file, min_tls_version,
    insecure_skip_verify, http_version, tls_client)``, and each ``tls_client``'s files are
    read and checked once (:func:`probe.stages.client_auth.load`); loading the system trust
    store costs tens of milliseconds, so it must not happen per probe. One HTTP client
    serves every target with the same contexts and :func:`client_key` (about 2.6 KiB per
    target when each had its own): every request still goes on a new connection with its
    own headers, SNI and timeouts.

    A pinned target without ``expect_same_addresses_as`` resolves nothing and gets no resolvers.
    An ``http://`` target gets non-verifying contexts that no handshake uses (its
    ``ca_file`` is not read).

    Raises:
        ConfigError: a ``ca_file`` or a ``tls_client`` file cannot be loaded (or is
            refused: see :func:`probe.stages.client_auth.load`), or no resolver is configured.
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
        self._credentials: dict[TlsClientConfig, client_auth.ClientCredentials] = {}
        self._ocsp: dict[tuple[Path | None, str, TlsClientConfig | None], SSL.Context] = {}
        self._clients: dict[tuple[object, ...], http_stage.TargetClient] = {}
        self._system: tuple[tuple[str, int], ...] | None = None

    def target_plan(self, index: int, target: TargetConfig) -> TargetPlan:
        """The plan of ``targets[index]``, with one plan per direct backend.

        Problems are found in this order: the ``tls_client`` files, the ``ca_file``, the
        stapling context, the resolvers, then each direct backend's ``tls_client``,
        ``ca_file`` and resolvers.
        """
        where = f"targets[{index}]"
        key = _PLAIN_CONTEXTS if target.plain else _contexts_key(target)
        contexts = self.contexts(key, f"{where}.ca_file", f"{where}.tls_client")
        ocsp = self._ocsp_context(target, contexts, where) if target.ocsp == "staple" else None
        resolvers = self._resolvers(target, where)
        client = self._client(target, key)
        direct = tuple(self._hop_plan(target, number, where) for number in range(len(target.direct_backends)))
        return TargetPlan(
            target=target,
            facts=facts_of(target, _facts(contexts)),
            resolvers=resolvers,
            contexts=contexts,
            ocsp=ocsp,
            http=client,
            direct=direct,
        )

    def _hop_plan(self, target: TargetConfig, number: int, where: str) -> TargetPlan:
        """The plan of one direct backend: the target's settings for the backend's URL."""
        backend = target.direct_backends[number]
        hop = target.direct_target(backend)
        key = _contexts_key(hop)
        own = f"{where}.direct_backends[{number}]"
        client_field = f"{own}.tls_client" if backend.tls_client is not None else f"{where}.tls_client"
        contexts = self.contexts(key, f"{own}.ca_file", client_field)
        resolvers: tuple[tuple[str, int], ...] = ()
        if hop.pinned_by is None:  # a DNS name in the backend's URL
            resolvers = target.resolvers or self._system_resolvers(f"{where}.resolvers")
        return TargetPlan(
            target=hop,
            facts=facts_of(hop, _facts(contexts)),
            resolvers=tuple(resolvers),
            contexts=contexts,
            http=self._client(hop, key),
        )

    def contexts(
        self, key: ContextsKey, field: str, client_field: str = "tls_client"
    ) -> tls_stage.TlsContexts:
        """The SSL contexts for ``key``, built once.

        Raises:
            ConfigError: a ``tls_client`` file is refused (``client_field`` and the file's
                setting name it), or the ``ca_file`` cannot be loaded (``field`` names it).
        """
        if key not in self._contexts:
            ca_file, min_tls_version, skip_verify, http_version, client = key
            credentials = self._client_credentials(client, client_field) if client is not None else None
            try:
                self._contexts[key] = tls_stage.build_contexts(
                    ca_file, min_tls_version, skip_verify, http_version, credentials
                )
            except client_auth.ClientCertError as exc:
                raise ConfigError(str(exc), where=self.where, field=f"{client_field}.{exc.field}") from None
            except ValueError as exc:
                raise ConfigError(str(exc), where=self.where, field=field) from None
        return self._contexts[key]

    def _client_credentials(self, client: TlsClientConfig, field: str) -> client_auth.ClientCredentials:
        """The files of a ``tls_client`` setting, read and checked once.

        Raises:
            ConfigError: a file is refused (the message says why; the field names the setting).
        """
        if client not in self._credentials:
            try:
                self._credentials[client] = client_auth.load(client)
            except client_auth.ClientCertError as exc:
                raise ConfigError(str(exc), where=self.where, field=f"{field}.{exc.field}") from None
        return self._credentials[client]

    def _ocsp_context(self, target: TargetConfig, contexts: tls_stage.TlsContexts, where: str) -> SSL.Context:
        from probe.stages import ocsp as ocsp_stage  # pyOpenSSL: imported only for targets that staple

        key = (target.ca_file, target.min_tls_version, target.tls_client)
        if key not in self._ocsp:
            try:
                self._ocsp[key] = ocsp_stage.build_context(
                    target.ca_file, target.min_tls_version, contexts.client
                )
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
    return (
        target.ca_file,
        target.min_tls_version,
        target.insecure_skip_verify,
        target.http_version,
        target.tls_client,
    )


def _facts(contexts: tls_stage.TlsContexts) -> ClientCertificate | None:
    """The facts of the client certificate the contexts present, ``None`` without one."""
    return contexts.client.facts if contexts.client is not None else None
