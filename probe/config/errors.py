"""The one error of configuration: :class:`ConfigError`, and how a pydantic error becomes one.

Every problem of a config file, of ``probe check``'s options or of a web form becomes one
:class:`ConfigError` whose text names the file, the field path and what is wrong, e.g.
``probe.yaml: targets[1].timeouts.tls: must be greater than 0 (got -1)``.
:func:`first_error` writes that text for the first problem of a pydantic ``ValidationError``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from probe._text import plural, shown

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ConfigError(Exception):
    """Bad configuration or arguments; ``str()`` is the one-line message for the user.

    Attributes:
        message: what is wrong.
        where: the file (or ``"arguments"``), ``None`` when unknown.
        field: the field path such as ``targets[1].timeouts.tls``, ``None`` for the whole.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.where = where
        self.field = field
        text = ": ".join(part for part in (where, field, message) if part)
        # One line, whatever the input held: control characters are shown escaped.
        super().__init__(_CONTROL.sub(lambda m: repr(m.group())[1:-1], text))


def field_path(loc: tuple[str | int, ...]) -> str:
    """A field path as messages show it: ``("targets", 1, "timeouts")`` -> ``targets[1].timeouts``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_:-]+", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)!r}]"  # a key with dots, spaces or stranger characters
    return text


def suggest(key: object, choices: Any) -> str:
    """`` (did you mean 'url'?)`` for the closest of ``choices`` to a wrong key, else ``""``."""
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The valid keys of the mapping at ``loc`` inside ``model`` (for suggestions)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        current = next(
            (
                arg
                for arg in (getattr(annotation, "__args__", None) or (annotation,))
                if isinstance(arg, type) and issubclass(arg, BaseModel)
            ),
            None,
        )
    if current is None or not hasattr(current, "model_fields"):
        return []
    return [f for f in current.model_fields if f not in ("hostname", "port", "path", "pinned_by", "scheme")]


_MESSAGES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "missing": "required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number of seconds",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "literal_error": "must be one of {expected}",
}


_SCHEMA_TAG = re.compile(
    r"^(function-(after|before|wrap|plain)|lax-or-strict|json-or-python|is-instance|chain|nullable|"
    r"tagged-union|union|model|dataclass)(\[.*\])?$|^(int|str|float|bool|tuple\[str, \.\.\.\])$"
)


def first_error(
    where: str, prefix: tuple[str | int, ...], exc: ValidationError, model: type[BaseModel]
) -> ConfigError:
    """The first problem of a pydantic error as a :class:`ConfigError`; the others are counted.

    Args:
        where: the file (or ``"config"``, ``"arguments"``) for the message.
        prefix: the field path of the validated value inside the document, e.g. ``("targets", 1)``.
        exc: the error of validating ``model``.
        model: the model validated (its fields are suggested for an unknown key).

    Returns:
        The error to raise, e.g. ``probe.yaml: targets[1].timeouts.tls: must be greater than
        0 (got -1)``.
    """
    errors = exc.errors(include_url=False)
    error = errors[0]
    kind = error["type"]
    # Drop the tags pydantic puts in a path for its own schema steps (validators, unions);
    # an unknown key is always the last part, whatever it is called.
    inner, last = error["loc"][:-1], error["loc"][-1:]
    loc = tuple(p for p in inner if isinstance(p, int) or not _SCHEMA_TAG.match(p))
    loc += tuple(
        p for p in last if kind == "extra_forbidden" or isinstance(p, int) or not _SCHEMA_TAG.match(p)
    )
    full = prefix + loc
    if kind == "extra_forbidden" and loc:
        message = f"unknown key{suggest(loc[-1], _fields_at(model, loc[:-1]))}"
    elif kind == "value_error":
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        # Cross-field checks name their field as "field.path: message".
        head, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head) and head.split(".")[0] in model.model_fields:
            full, message = full + tuple(head.split(".")), rest
    elif kind in _MESSAGES:
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (error.get("ctx") or {}).items()}
        message = _MESSAGES[kind].format(**ctx)
        if kind != "missing" and "headers" not in loc:  # header values may be secrets
            message += f" (got {_short(error.get('input'))})"
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    more = f" (and {plural(len(errors) - 1, 'more problem')})" if len(errors) > 1 else ""
    return ConfigError(f"{message}{more}", where=where, field=field_path(full))


def _short(value: Any) -> str:
    return shown(value)
