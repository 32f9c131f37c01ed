"""Turn pydantic's validation errors into :class:`~protocol.errors.FieldError`.

One place decides how a broken rule reads, so that a bad field reads the same
whether it was built in Python (``LocalProtocolError``) or arrived in a frame
(``RemoteProtocolError``): the wire path first (``controlNet[0].endStep``),
then the Python path, the value, and the rule in plain words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .errors import FieldError

__all__ = ["RuleError", "field_errors"]


class RuleError(ValueError):
    """A rule across fields, raised from a model validator, that names its field.

    ``field`` is a wire path relative to the model that raised it.
    """

    def __init__(self, field: str, value: Any, rule: str) -> None:
        super().__init__(rule)
        self.field = field
        self.value = value
        self.rule = rule


_RULES: Final[dict[str, str]] = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this message",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be an array",
    "tuple_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be greater than {gt}",
    "less_than": "must be less than {lt}",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
    "literal_error": "must be {expected}",
}

# Wire name by Python name and back, for every field of this package's models;
# the snake_case of a wire name is unique across the protocol, so one map serves all.
_to_wire: dict[str, str] = {}
_to_python: dict[str, str] = {}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


#: Broken rules reported one by one; past these, one more line counts the rest (a hostile
#: frame can break a rule per item of a long array, and its answer must stay small).
MAX_REPORTED_ERRORS: Final = 8


def field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """Translate a pydantic ``ValidationError`` into field errors named as on the wire
    (the first :data:`MAX_REPORTED_ERRORS`, then a count of the others)."""
    details = exc.errors(include_url=False)
    errors = [_field_error(detail) for detail in details[:MAX_REPORTED_ERRORS]]
    if len(details) > MAX_REPORTED_ERRORS:
        more = len(details) - MAX_REPORTED_ERRORS
        errors.append(FieldError("", "", None, f"... and {more} more broken rule(s)"))
    return tuple(errors)


def _field_error(detail: ErrorDetails) -> FieldError:
    loc: list[str | int] = list(detail["loc"])
    value = detail.get("input")
    rule = _rule(detail)
    ctx_error = detail.get("ctx", {}).get("error")
    if isinstance(ctx_error, RuleError):
        loc.extend(_split_path(ctx_error.field))
        value, rule = ctx_error.value, ctx_error.rule
    return FieldError(_path(loc, wire=True), _path(loc, wire=False), value, rule)


def _rule(detail: ErrorDetails) -> str:
    template = _RULES.get(detail["type"])
    ctx = {k: _plain(v) for k, v in detail.get("ctx", {}).items()}
    if template is not None:
        try:
            return template.format(**ctx)
        except (KeyError, IndexError):
            pass
    message = detail["msg"]
    return message.removeprefix("Value error, ")


def _plain(value: Any) -> Any:
    # Bounds declared as 10 on a float field come back as 10.0; say "at most 10".
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _split_path(path: str) -> Iterable[str | int]:
    for part in re.split(r"\.|\[", path):
        if part.endswith("]"):
            yield int(part[:-1])
        elif part:
            yield part


def _path(loc: Sequence[str | int], *, wire: bool) -> str:
    if not _to_wire:
        _index_models()
    names = _to_wire if wire else _to_python
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = names.get(part, part)
            text += f".{name}" if text else name
    return text


def _index_models() -> None:
    pending: list[type[BaseModel]] = list(BaseModel.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__module__.startswith("protocol."):
            continue
        for name, info in cls.model_fields.items():
            if info.alias and _WORD.fullmatch(info.alias):
                _to_wire.setdefault(name, info.alias)
                _to_python.setdefault(info.alias, name)
