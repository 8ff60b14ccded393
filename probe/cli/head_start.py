"""The head start of ``probe check URL --resolver R``: its DNS query leaves before the config loads.

:func:`head_start` reads the DNS stage from the arguments alone, with the config's own
parsers (:mod:`probe.config.values`, no pydantic); :func:`check_ahead` sends that query,
loads the configuration in a worker thread meanwhile, and hands the lookup to
:func:`probe.cli.cycles.check_once`, which uses it only when the validated target asks
the same.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from probe.cli.adhoc import config_from_args
from probe.cli.cycles import check_once

if TYPE_CHECKING:
    from probe.model.results import TargetResult
    from probe.stages.dns import DnsPlan


#: Event-loop turns the early query gets before the configuration starts loading: dnspython
#: sends a UDP query within a few (gather, endpoint, send).
_AHEAD_TURNS = 8

#: Ad hoc options that change the DNS stage in ways :func:`head_start` does not read.
_AHEAD_NOT_COVERED = ("resolve", "server_name", "expect_same_addresses_as")

#: The event loop's turn while the configuration loads beside an early DNS query (seconds,
#: ``sys.setswitchinterval``): how late its answer may be read at most, about.
_AHEAD_SWITCH_INTERVAL = 0.0005


def head_start(args: argparse.Namespace) -> DnsPlan | None:
    """The DNS stage of ``probe check URL``, read from the arguments alone.

    Loading pydantic and the config models takes most of the start-up (about 100 ms of
    about 170 ms on the bench machine), so an ad hoc check sends its first query from this
    plan and loads the configuration meanwhile (:func:`check_ahead`). The query counts
    only when the validated target's plan (:meth:`probe.stages.dns.DnsPlan.of`) is equal;
    otherwise it is dropped and the stage starts again, so the verdict is the same either
    way. The addresses, networks and name are read by the config's own parsers
    (:mod:`probe.config.values`).

    Returns:
        The plan; ``None`` without ``--resolver`` (the system's resolvers are not asked
        before the arguments are valid) and for anything this reading does not cover (a
        config file, ``--watch``, a baseline, pinned addresses, an alias name, an
        IP-address URL, text a parser refuses): such a check queries after loading its
        configuration.
    """
    if not _covered(args):
        return None
    host = _name_to_resolve(args.url)
    if host is None:
        return None
    return _dns_plan(args, host)


def _covered(args: argparse.Namespace) -> bool:
    """Whether :func:`head_start` reads every argument that shapes this check's DNS stage.

    True for an ad hoc URL with ``--resolver``, without a config file, ``--watch``, a
    baseline, or an option of :data:`_AHEAD_NOT_COVERED`.
    """
    if args.config or not args.url or args.watch or args.baseline or args.save_baseline:
        return False
    if not args.resolver:
        # The query leaves before the arguments are validated: only to a resolver the user
        # named. Arguments refused afterwards then cost that one query, nothing else.
        return False
    return all(getattr(args, dest) is None for dest in _AHEAD_NOT_COVERED)


def _name_to_resolve(url: str) -> str | None:
    """The host of an ``http://`` or ``https://`` URL when it is a name; ``None`` otherwise.

    The URL is read by the config's own parser (:func:`probe.config.fields.web_url`, no
    pydantic): ``None`` for a URL it refuses, which the configuration then refuses with the
    same message as without the head start, and for an IP address (nothing to resolve).
    """
    from probe.config.fields import web_url
    from probe.config.values import url_ip_literal

    try:
        url = web_url(url, ("https", "http"))
    except ValueError:
        return None
    if url_ip_literal(url) is not None:
        return None
    return urlsplit(url).hostname


def _dns_plan(args: argparse.Namespace, host: str) -> DnsPlan | None:
    """The DNS stage of the target ``args`` describe, ``host`` its name, read by the config's parsers.

    ``None`` when a parser refuses the name, a resolver, a network or ``--timeout``.
    """
    from probe.config import defaults as _defaults
    from probe.config.values import (
        PRIVATE_NETWORKS,
        normalize_hostname,
        parse_network,
        parse_resolver,
        positive_duration,
    )

    try:
        hostname = normalize_hostname(host)
        resolvers = tuple(parse_resolver(text) for text in args.resolver or ())
        networks = tuple(parse_network(text) for text in args.expect_network or ()) or PRIVATE_NETWORKS
        # One check has no interval: the deadline is --timeout or the default, and the
        # unset DNS timeout shrinks to fit it (probe.config.models.Timeouts.fitted).
        deadline = _defaults.DEADLINE if args.timeout is None else positive_duration(args.timeout)
    except ValueError:
        return None
    from probe.stages import dns as dns_stage

    return dns_stage.DnsPlan(
        hostname=hostname,
        resolvers=resolvers,
        ip_family=args.ip_family or _defaults.IP_FAMILY,
        expect_networks=networks,
        timeout=min(_defaults.DNS_TIMEOUT, deadline),
        deadline=deadline,
    )


async def check_ahead(args: argparse.Namespace, ahead: DnsPlan) -> list[TargetResult]:
    """:func:`check_once` with the first DNS query sent before the configuration loads.

    The configuration loads in a worker thread while the event loop runs the query; the
    loop gets the interpreter every :data:`_AHEAD_SWITCH_INTERVAL` seconds meanwhile, so the
    answer is read (and the lookup timed) as it arrives.

    Raises:
        UsageError, ConfigError: as :func:`config_from_args` (the early query is dropped).
    """
    import asyncio

    from probe.stages import dns as dns_stage

    lookup = dns_stage.resolve_early(ahead)
    for _ in range(_AHEAD_TURNS):  # let the query leave before the loading starts
        await asyncio.sleep(0)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(_AHEAD_SWITCH_INTERVAL)
    try:
        config = await asyncio.to_thread(config_from_args, args)
    finally:
        sys.setswitchinterval(previous)
    return await check_once(config, ahead=(ahead, lookup))
