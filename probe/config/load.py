"""Loading a configuration: the YAML file, its size limits, and plain data into a :class:`Config`.

``defaults`` merge into each target (``timeouts`` and ``headers`` key by key), a relative
``ca_file`` names a file next to the config file, and every problem becomes one
:class:`~probe.config.errors.ConfigError` naming the file, the field path and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from probe._text import shown
from probe.config.defaults import DEFAULT_LISTEN
from probe.config.errors import ConfigError, field_path, first_error, suggest
from probe.config.models import Config, MetricsConfig, TargetConfig, TargetFields
from probe.config.values import split_host_port

_TOP_LEVEL_KEYS = ("listen", "defaults", "targets", "metrics")


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file.

    Returns:
        The validated config.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or any value is invalid; the
            message is one line naming the file, the field path and the problem.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read config: {reason}", where=str(path)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"larger than {MAX_CONFIG_BYTES // 1024} KiB; is it the right file?", where=str(path)
        )
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

#: Config files larger than this are refused before parsing (bytes).
MAX_CONFIG_BYTES = 1024 * 1024


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
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping with a 'targets' list", where=where)
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise ConfigError(f"unknown key{suggest(key, _TOP_LEVEL_KEYS)}", where=where, field=str(key))
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError("must be a mapping of target settings", where=where, field="defaults")
    for key in ("name", "url", "addresses", "server_name", "direct_backends", "expect_redirect"):
        if key in defaults:
            raise ConfigError(
                f"set '{key}' per target, not in defaults", where=where, field=f"defaults.{key}"
            )
    try:
        TargetFields.model_validate(defaults)
    except ValidationError as exc:
        raise first_error(where, ("defaults",), exc, TargetFields) from None
    except RecursionError:
        raise ConfigError("nested too deeply", where=where, field="defaults") from None
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
        try:
            merged = _relative_to(path, _merge(defaults, raw))
            targets.append(TargetConfig.model_validate(merged, context=context))
        except ValidationError as exc:
            raise first_error(where, loc, exc, TargetConfig) from None
        except RecursionError:
            raise ConfigError("nested too deeply", where=where, field=field_path(loc)) from None
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            raise ConfigError(
                f"{target.name!r} is also the name of targets[{seen[target.name]}]",
                where=where,
                field=f"targets[{index}].name",
            )
        seen[target.name] = index
    listen = data.get("listen", DEFAULT_LISTEN)
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, field="listen") from None
    try:
        raw_metrics = data.get("metrics")
        metrics = MetricsConfig.model_validate({} if raw_metrics is None else raw_metrics)
    except ValidationError as exc:
        raise first_error(where, ("metrics",), exc, MetricsConfig) from None
    # Everything is validated; constructing without validation keeps pydantic from running
    # the targets' after-validators again without this call's context (interval_bound).
    return Config.model_construct(path=path, listen=listen, targets=tuple(targets), metrics=metrics)


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

    The same holds for each ``direct_backends`` entry's ``ca_file``.
    """
    if path is None:
        return target
    ca_file = target.get("ca_file")
    if isinstance(ca_file, str) and ca_file.strip() and not Path(ca_file).is_absolute():
        target = {**target, "ca_file": str(path.parent / ca_file)}
    direct = target.get("direct_backends")
    if isinstance(direct, list) and any(isinstance(b, Mapping) and "ca_file" in b for b in direct):
        target = {
            **target,
            "direct_backends": [_relative_to(path, dict(b)) if isinstance(b, Mapping) else b for b in direct],
        }
    return target


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
        below = merged.get(key)
        if key == "timeouts" and isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = {**below, **value}
        elif key == "headers" and isinstance(value, Mapping) and isinstance(below, Mapping):
            # Header names are case-insensitive: the target's spelling replaces the default's.
            names = {str(name).lower() for name in value}
            merged[key] = {**{k: v for k, v in below.items() if str(k).lower() not in names}, **value}
        else:
            merged[key] = value
    return merged
