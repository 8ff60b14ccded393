"""Loading a configuration: the YAML file, its size limits, and plain data into a :class:`Config`.

``defaults`` merge into each target (``timeouts`` and ``headers`` key by key), a relative
``ca_file`` (or ``tls_client`` file) names a file next to the config file, and every
problem becomes one :class:`~probe.config.errors.ConfigError` naming the file, the field
path and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeGuard

from pydantic import BaseModel, ValidationError

from probe._files import MAX_CONFIG_BYTES, FileRefused, read_text_capped
from probe._text import shown
from probe.config.defaults import DEFAULT_LISTEN
from probe.config.errors import ConfigError, field_path, first_error, suggest
from probe.config.models import Config, MetricsConfig, TargetConfig, TargetFields
from probe.config.values import split_host_port

_TOP_LEVEL_KEYS = ("listen", "defaults", "targets", "metrics")

#: Settings a target must give itself: ``defaults`` may not hold them.
_PER_TARGET_KEYS = ("name", "url", "addresses", "server_name", "direct_backends", "expect_redirect")


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file.

    Returns:
        The validated config.

    Raises:
        ConfigError: the file cannot be read, is not a regular file of at most 1 MiB
            (:data:`probe._files.MAX_CONFIG_BYTES`), is not UTF-8 YAML, or any value is
            invalid; the message is one line naming the file, the field path and the problem.
    """
    path = Path(path)
    try:
        text = read_text_capped(path, MAX_CONFIG_BYTES)
    except FileRefused as exc:
        raise ConfigError(str(exc), where=str(path)) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path | None = None) -> Config:
    """Validate configuration given as YAML text; see :func:`load_config`.

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    import yaml  # PyYAML: only a config file needs it, not ``probe check URL``

    from probe.config.yaml_loader import StrictLoader, yaml_problem

    where = str(path) if path else "config"
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(exc), where=where) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", where=where) from None
    if _too_big(data, MAX_VALUES):
        raise ConfigError(
            f"the document holds more than {MAX_VALUES} values once YAML aliases are expanded",
            where=where,
        )
    return build_config(data, path)


#: A config holds a few hundred values; more means an alias bomb or a mistake.
MAX_VALUES = 100_000


def _too_big(data: Any, budget: int) -> bool:
    """Whether ``data`` has more than ``budget`` values, counting shared ones each time."""
    stack = [data]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def build_config(
    data: Any, path: Path | None = None, where: str | None = None, *, interval_bound: bool = True
) -> Config:
    """Validate configuration given as plain data (as parsed from YAML).

    Args:
        data: the parsed document.
        path: the file it came from, if any.
        where: how to name the source in messages (default: the path, else ``config``).
        interval_bound: whether ``timeouts.deadline`` must fit in ``interval``; ``False``
            for ``probe check URL``, which runs once and has no interval (its deadline is
            then 25 s unless ``--timeout`` says otherwise, up to 1h).

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    where = where or (str(path) if path else "config")
    _check_top_level(data, where)
    defaults = _defaults(data, where)
    targets = _targets(data, defaults, path, where, interval_bound)
    _check_unique_names(targets, where)
    listen = _listen(data, where)
    with _reported(where, ("metrics",), MetricsConfig):
        raw_metrics = data.get("metrics")
        metrics = MetricsConfig.model_validate({} if raw_metrics is None else raw_metrics)
    # Everything is validated; constructing without validation keeps pydantic from running
    # the targets' after-validators again without this call's context (interval_bound).
    return Config.model_construct(path=path, listen=listen, targets=targets, metrics=metrics)


@contextmanager
def _reported(where: str, loc: tuple[str | int, ...], model: type[BaseModel]) -> Iterator[None]:
    """Turn the validation of ``model`` at ``loc`` inside the block into one :class:`ConfigError`.

    Raises:
        ConfigError: the first problem of a ``ValidationError``, or ``nested too deeply``
            for a ``RecursionError``.
    """
    try:
        yield
    except ValidationError as exc:
        raise first_error(where, loc, exc, model) from None
    except RecursionError:
        raise ConfigError("nested too deeply", where=where, field=field_path(loc)) from None


def _check_top_level(data: Any, where: str) -> None:
    """The document is a mapping of the known top-level keys."""
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping with a 'targets' list", where=where)
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise ConfigError(f"unknown key{suggest(key, _TOP_LEVEL_KEYS)}", where=where, field=str(key))


def _defaults(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The ``defaults`` section (``{}`` when left out), validated as target settings.

    Raises:
        ConfigError: not a mapping, a setting that is per target, or an invalid setting.
    """
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError("must be a mapping of target settings", where=where, field="defaults")
    for key in _PER_TARGET_KEYS:
        if key in defaults:
            raise ConfigError(
                f"set '{key}' per target, not in defaults", where=where, field=f"defaults.{key}"
            )
    with _reported(where, ("defaults",), TargetFields):
        TargetFields.model_validate(defaults)
    return defaults


def _targets(
    data: Mapping[str, Any], defaults: Mapping[str, Any], path: Path | None, where: str, interval_bound: bool
) -> tuple[TargetConfig, ...]:
    """Each of ``targets`` over ``defaults``, validated, in the order given.

    Raises:
        ConfigError: ``targets`` is not a non-empty list, or the first target with a problem.
    """
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ConfigError("must be a non-empty list of targets", where=where, field="targets")
    targets = []
    for index, raw in enumerate(raw_targets):
        loc: tuple[str | int, ...] = ("targets", index)
        if not isinstance(raw, Mapping):
            raise ConfigError("must be a mapping with at least 'url'", where=where, field=field_path(loc))
        context = {
            "interval_bound": interval_bound,
            "inherited_timeouts": _inherited(defaults.get("timeouts"), raw.get("timeouts")),
        }
        with _reported(where, loc, TargetConfig):
            merged = _relative_to(path, _merge(defaults, raw))
            targets.append(TargetConfig.model_validate(merged, context=context))
    return tuple(targets)


def _check_unique_names(targets: tuple[TargetConfig, ...], where: str) -> None:
    """No two targets have the same name; the second one is reported."""
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            raise ConfigError(
                f"{target.name!r} is also the name of targets[{seen[target.name]}]",
                where=where,
                field=f"targets[{index}].name",
            )
        seen[target.name] = index


def _listen(data: Mapping[str, Any], where: str) -> Any:
    """``listen`` as given (the default when left out), once :func:`parse_listen` accepts it."""
    listen = data.get("listen", DEFAULT_LISTEN)
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, field="listen") from None
    return listen


def parse_listen(value: Any) -> tuple[str, int]:
    """Parse the endpoint address: ``IP:port`` or ``[IPv6]:port``.

    ``0.0.0.0`` or ``[::]`` listen on every interface; the address must be given, so
    exposing the endpoint is always a visible choice.

    Raises:
        ValueError: not an IP address with a port.
    """
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} must be IP:port, as in {DEFAULT_LISTEN}")
    try:
        return split_host_port(value, None)
    except ValueError as exc:
        raise ValueError(f"{exc} (0.0.0.0:9798 listens on all interfaces)") from None


def _relative_to(path: Path | None, target: dict[str, Any]) -> dict[str, Any]:
    """A relative ``ca_file`` names a file next to the config file, not in the working folder.

    The same holds for the files of ``tls_client`` and for each ``direct_backends`` entry's
    ``ca_file`` and ``tls_client``.
    """
    if path is None:
        return target
    ca_file = target.get("ca_file")
    if _is_relative(ca_file):
        target = {**target, "ca_file": str(path.parent / ca_file)}
    client = target.get("tls_client")
    if isinstance(client, Mapping):
        files = {key: str(path.parent / value) for key, value in client.items() if _is_relative(value)}
        target = {**target, "tls_client": {**client, **files}}
    direct = target.get("direct_backends")
    if _any_file(direct):
        target = {
            **target,
            "direct_backends": [_relative_to(path, dict(b)) if isinstance(b, Mapping) else b for b in direct],
        }
    return target


def _is_relative(file: Any) -> TypeGuard[str]:
    """Whether a file setting's value is a relative path (anything else is left to validation)."""
    return isinstance(file, str) and bool(file.strip()) and not Path(file).is_absolute()


def _any_file(direct_backends: Any) -> TypeGuard[list[Any]]:
    """Whether a ``direct_backends`` value is a list with an entry that sets ``ca_file`` or ``tls_client``."""
    return isinstance(direct_backends, list) and any(
        isinstance(b, Mapping) and ("ca_file" in b or "tls_client" in b) for b in direct_backends
    )


def _inherited(defaults: Any, own: Any) -> frozenset[str]:
    """The ``timeouts`` keys a target takes from ``defaults`` (for messages)."""
    if not isinstance(defaults, Mapping):
        return frozenset()
    mine = set(own) if isinstance(own, Mapping) else set()
    return frozenset(str(key) for key in defaults if key not in mine)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Target settings over defaults; ``timeouts`` and ``headers`` merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(key, merged.get(key), value)
    return merged


def _merged(key: str, below: Any, value: Any) -> Any:
    """A target's setting over the default's; two ``timeouts`` or ``headers`` mappings merge."""
    if not isinstance(value, Mapping) or not isinstance(below, Mapping):
        return value
    if key == "timeouts":
        return {**below, **value}
    if key == "headers":
        # Header names are case-insensitive: the target's spelling replaces the default's.
        names = {str(name).lower() for name in value}
        return {**{k: v for k, v in below.items() if str(k).lower() not in names}, **value}
    return value
