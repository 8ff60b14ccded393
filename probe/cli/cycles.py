"""The cycles of ``probe check`` and ``probe demo``: every target once, the DNS queries first.

:func:`check_once` starts every target's DNS lookup before the TLS and HTTP stages are
imported and the SSL contexts built, then runs the cycles (:func:`probe.engine.cycle.run_cycle`);
:func:`run_all` runs them with the rotation memory of the previous round (``--watch``,
the demo). :func:`plan_targets` names the option, not the config field, in an ad hoc
check's errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from probe._files import MAX_PEM_BYTES, FileRefused, check_capped
from probe.cli.adhoc import flag_message
from probe.cli.errors import UsageError

if TYPE_CHECKING:
    from probe.config.models import Config
    from probe.model.results import TargetResult
    from probe.stages import dns as dns_stage
    from probe.stages.dns import DnsPlan
    from probe.stages.plan import TargetPlan


async def check_once(
    config: Config, ahead: tuple[DnsPlan, dns_stage.EarlyLookup] | None = None
) -> list[TargetResult]:
    """One cycle of every target of ``config``, the DNS queries sent first.

    Each target's DNS stage starts (:func:`probe.stages.dns.resolve_early`; dnspython only)
    before the TLS and HTTP stages are imported and the SSL contexts built, so the first
    query leaves about as soon as the config is read. The imports wait until every early
    lookup has ended, so that they never delay reading an answer (the lookup times stay
    honest); the cycles then take the answers, and their durations and deadlines leave
    the time in between out (see :func:`probe.engine.cycle.run_cycle`). A target that sends no
    query (pinned addresses) or has no resolver to ask resolves in its cycle as before.

    Args:
        config: the checked targets.
        ahead: a lookup :func:`probe.cli.head_start.check_ahead` started before the config
            loaded, with its plan: it is the first target's lookup when the plans are
            equal, and is cancelled otherwise.
    """
    import asyncio

    early = _start_lookups(config, ahead)
    # Refused at once, not after the lookups (up to the deadline with a silent resolver).
    _refuse_unreadable_files(config)
    if early:
        longest = max(lookup.deadline.remaining() for lookup in early.values())
        tasks = [lookup.task for lookup in early.values() if lookup.task is not None]
        await asyncio.wait(tasks, timeout=longest)
    plans = plan_targets(config)  # on an error, asyncio.run cancels what is left
    from probe.engine.cycle import run_cycle

    return list(
        await asyncio.gather(*(run_cycle(p, early=early.get(index)) for index, p in enumerate(plans)))
    )


def _start_lookups(
    config: Config, ahead: tuple[DnsPlan, dns_stage.EarlyLookup] | None
) -> dict[int, dns_stage.EarlyLookup]:
    """Start the DNS lookup of every target that sends a query; the lookups by target index.

    A target with pinned addresses (and no alias to compare) sends none. From the first
    target with no resolver to ask (none given, none in the system's configuration) on, no
    lookup starts: :func:`probe.engine.plan.plan` reports it. ``ahead`` is used or
    cancelled as :func:`check_once` says.
    """
    from probe.stages import dns as dns_stage

    early: dict[int, dns_stage.EarlyLookup] = {}
    system: tuple[tuple[str, int], ...] | None = None
    for index, target in enumerate(config.targets):
        if target.pinned_by is not None and target.expect_same_addresses_as is None:
            continue  # nothing to resolve
        resolvers = target.resolvers
        if resolvers is None:
            if system is None:
                try:
                    system = dns_stage.system_resolvers()
                except LookupError:
                    break  # probe.engine.plan.plan reports it
            resolvers = system
        early[index] = _lookup(dns_stage.DnsPlan.of(target, resolvers), index, ahead)
    if ahead is not None and early.get(0) is not ahead[1] and ahead[1].task is not None:
        ahead[1].task.cancel()  # it asked something else: dropped
    return early


def _lookup(
    plan: DnsPlan, index: int, ahead: tuple[DnsPlan, dns_stage.EarlyLookup] | None
) -> dns_stage.EarlyLookup:
    """The lookup of target ``index``: the one sent ``ahead`` when it asks the same, else a new one."""
    from probe.stages import dns as dns_stage

    if ahead is not None and index == 0 and ahead[0] == plan:
        return ahead[1]  # the query sent before the config loaded is this one
    return dns_stage.resolve_early(plan)


def _refuse_unreadable_files(config: Config) -> None:
    """Refuse a ``ca_file`` or ``tls_client`` file that cannot be opened, as ``plan`` would.

    ``probe check`` builds its plans (and so loads the trust anchors) only after its DNS
    lookups have ended, so that loading them never delays reading an answer; a missing or
    unreadable file, the usual typo, is found here first, in microseconds, so the user
    does not wait out a silent resolver to be told. The messages and fields are those of
    :func:`probe.stages.tls.build_contexts` and :func:`probe.stages.client_auth.load` in
    :func:`probe.engine.plan.plan` (both from :func:`probe._files.check_capped`, which never
    blocks on a FIFO nor reads a device); a file that opens but holds no certificates (or a
    key others may read …) is still refused there.

    Raises:
        ConfigError: a verifying target's (or direct backend's) ``ca_file``, or a file of
            an ``https://`` target's ``tls_client``, does not exist, cannot be opened, is not
            a regular file or is larger than 4 MiB; ``UsageError`` naming the option in an
            ad hoc check.
    """
    from probe.config.errors import ConfigError

    where = str(config.path) if config.path else "config"
    seen: set[Path] = set()
    for path, field in _files(config):
        if path in seen:
            continue
        seen.add(path)
        try:
            check_capped(path, MAX_PEM_BYTES)
        except FileRefused as exc:
            error = ConfigError(f"{path}: {exc}", where=where, field=field)
            if config.path is None:  # ad hoc: name the option, as plan_targets does
                raise UsageError(flag_message(error)) from None
            raise error from None


def _files(config: Config) -> Iterator[tuple[Path, str]]:
    """The files :func:`probe.engine.plan.plan` reads, each with its field.

    As plan: no trust store is loaded for a plain target or without verification, and no
    client certificate for a plain target.
    """
    for index, target in enumerate(config.targets):
        checked = [(target, f"targets[{index}]")]
        for number, backend in enumerate(target.direct_backends):
            own = f"targets[{index}].direct_backends[{number}]"
            checked.append((target.direct_target(backend), own))
        for one, field in checked:
            if one.plain:
                continue
            if one.ca_file is not None and not one.insecure_skip_verify:
                yield one.ca_file, f"{field}.ca_file"
            client = one.tls_client
            if client is not None:
                yield client.cert_file, f"{field}.tls_client.cert_file"
                for name in ("key_file", "key_password_file"):
                    path = getattr(client, name)
                    if path is not None:
                        yield path, f"{field}.tls_client.{name}"


def plan_targets(config: Config) -> tuple[TargetPlan, ...]:
    """:func:`probe.engine.plan.plan`; in an ad hoc check its errors name the option."""
    from probe.config.errors import ConfigError
    from probe.engine.plan import plan

    try:
        return plan(config)
    except ConfigError as exc:
        if config.path is None:  # ad hoc: name the option, not a config field
            raise UsageError(flag_message(exc)) from None
        raise


async def run_all(plans: Sequence[TargetPlan], previous: Sequence[TargetResult] = ()) -> list[TargetResult]:
    """One cycle of every target; ``previous`` results hand on their rotation memory."""
    import asyncio

    from probe.engine.cycle import run_cycle

    memory = {r.target.name: r.rotation for r in previous}
    return list(await asyncio.gather(*(run_cycle(p, memory=memory.get(p.target.name)) for p in plans)))
