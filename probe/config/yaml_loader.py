"""The YAML loader of config files: safe, and strict about duplicate keys.

Its own module so that ``probe check URL`` (no config file) never imports PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from probe._text import shown


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: invalid YAML: <problem>``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"
    return f"invalid YAML: {problem}"


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader (libyaml's when present) that rejects duplicate keys.

    PyYAML keeps the last of two equal keys silently; a config with ``url`` twice is a
    mistake worth one line. Keys brought in by a merge (``<<: *base``) may be overridden.
    """


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}", key_node.start_mark
            )
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> Any:
    """An integer, or one line for one of more digits than Python converts (4300 by default)."""
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(node.value)} characters is too long", node.start_mark
        ) from None


StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
