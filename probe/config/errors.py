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
from pydantic_core import ErrorDetails

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


#: Fields of a target derived from its URL (or set by probe): never suggested as keys.
_DERIVED = ("hostname", "port", "path", "pinned_by", "scheme")


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The valid keys of the mapping at ``loc`` inside ``model`` (for suggestions)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        current = _model_in(field.annotation)
    if current is None or not hasattr(current, "model_fields"):
        return []
    return [f for f in current.model_fields if f not in _DERIVED]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``BackendConfig | None``: ``BackendConfig``), ``None`` if none."""
    return next(
        (
            arg
            for arg in (getattr(annotation, "__args__", None) or (annotation,))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ),
        None,
    )


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
    loc, message = _explained(errors[0], _field_loc(errors[0]), model)
    more = f" (and {plural(len(errors) - 1, 'more problem')})" if len(errors) > 1 else ""
    return ConfigError(f"{message}{more}", where=where, field=field_path(prefix + loc))


def _field_loc(error: ErrorDetails) -> tuple[str | int, ...]:
    """The error's path without the tags pydantic puts in it for its own schema steps.

    Those tags name validators and union members; an unknown key is always the last part,
    whatever it is called.
    """
    inner, last = error["loc"][:-1], error["loc"][-1:]
    unknown_key = error["type"] == "extra_forbidden"
    return tuple(p for p in inner if _is_field(p)) + tuple(p for p in last if unknown_key or _is_field(p))


def _is_field(part: str | int) -> bool:
    return isinstance(part, int) or not _SCHEMA_TAG.match(part)


def _explained(
    error: ErrorDetails, loc: tuple[str | int, ...], model: type[BaseModel]
) -> tuple[tuple[str | int, ...], str]:
    """The path (inside ``model``) and the text of one pydantic error, as the user reads them."""
    kind = error["type"]
    if kind == "extra_forbidden" and loc:
        return loc, f"unknown key{suggest(loc[-1], _fields_at(model, loc[:-1]))}"
    if kind == "value_error":
        return _value_error(error, loc, model)
    if kind in _MESSAGES:
        return loc, _standard_message(error, loc)
    return loc, error["msg"][:1].lower() + error["msg"][1:]


def _value_error(
    error: ErrorDetails, loc: tuple[str | int, ...], model: type[BaseModel]
) -> tuple[tuple[str | int, ...], str]:
    """A ``ValueError`` of a validator; a cross-field check names its field as ``field.path: message``."""
    message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head) and head.split(".")[0] in model.model_fields:
        return loc + tuple(head.split(".")), rest
    return loc, message


def _standard_message(error: ErrorDetails, loc: tuple[str | int, ...]) -> str:
    """One of :data:`_MESSAGES` with the limit and the value given (header values are never shown)."""
    kind = error["type"]
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in (error.get("ctx") or {}).items()}
    message = _MESSAGES[kind].format(**ctx)
    if kind != "missing" and "headers" not in loc:  # header values may be secrets
        message += f" (got {shown(error.get('input'))})"
    return message
