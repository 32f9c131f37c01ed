"""How the specs' names map to the protocol's: table choices by name, and errors in spec names.

A choice from one of the seed's tables is given by id or by name (``model="SDXL v1.0"``,
``size="1024x1024"``); :func:`by_name` turns a name into its id, or refuses it naming the
field and the rule. :func:`in_spec_names` renames the fields of a message's validation
error to the spec's (``guidance``, not ``g_scale``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from protocol.errors import FieldError, LocalProtocolError
from protocol.tables import (
    LANGUAGES,
    MODELS,
    SCHEDULERS,
    SIZES,
    STYLES,
    language_id_for,
    model_id_for,
    scheduler_id_for,
    size_id_for,
    style_id_for,
)

__all__ = ["CHOICES", "by_name", "in_spec_names"]


def _size_by_name(name: str) -> int:
    width, _, height = name.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise LookupError(name)
    return size_id_for(int(width), int(height))


def _model_by_name(name: str) -> str:
    # An id ("4") or an AIR id passes as it is; the message's own rule judges it.
    return name if name in MODELS or ":" in name else model_id_for(name)


# wire name -> (Python name, name lookup, what the rule says)
CHOICES: Final[Mapping[str, tuple[str, Callable[[str], Any], str]]] = {
    "modelId": ("model", _model_by_name, f"a model id ({', '.join(MODELS)}), name or AIR id"),
    "sizeId": ("size", _size_by_name, f"a sizeId ({', '.join(map(str, SIZES))}) or 'WxH'"),
    "schedulerId": ("scheduler", scheduler_id_for, f"a scheduler id (1-{len(SCHEDULERS)}) or name"),
    "styleId": ("style", style_id_for, f"a style id (1-{len(STYLES)}) or name"),
    "promptLanguageId": ("language", language_id_for, f"a language id or name ({len(LANGUAGES)})"),
}


def by_name(wire: str, value: str, message: str) -> Any:
    """The id a table choice given by name stands for; raises LocalProtocolError naming it."""
    python_name, lookup, rule = CHOICES[wire]
    try:
        return lookup(value)
    except LookupError:
        error = FieldError(wire, python_name, value, f"must be {rule}")
        raise LocalProtocolError(f"invalid {message}", (error,)) from None


# The message's field -> the spec's, where they differ (see "Names" above).
_SPEC_NAMES: Final[Mapping[str, str]] = {
    "prompt_text": "prompt",
    "g_scale": "guidance",
    "model_id": "model",
    "size_id": "size",
    "scheduler_id": "scheduler",
    "style_id": "style",
    "prompt_language_id": "language",
    "image_initiator_uuid": "init_image_uuid",
    "image_mask_initiator_uuid": "mask_image_uuid",
    "image_base64": "image",
    "pre_processor_type": "preprocessor",
}


def in_spec_names(exc: LocalProtocolError) -> LocalProtocolError:
    """The same error, each field named as the spec names it (``guidance``, not ``g_scale``)."""
    errors = []
    for error in exc.errors:
        head, dot, rest = error.python_name.partition(".")
        head, bracket, index = head.partition("[")
        name = _SPEC_NAMES.get(head, head) + bracket + index + dot + rest
        errors.append(FieldError(error.field, name, error.value, error.rule))
    return LocalProtocolError(exc.message, tuple(errors))
