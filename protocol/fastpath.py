"""Cheaper paths for the two frames a busy client handles most, equally safe.

A client with thousands of tasks in flight sends a text-to-image ``newTask`` and
reads a ``newImages`` frame for each. Building, validating and dumping the
pydantic models costs more than everything else a task does, so:

- :func:`prepare_text_to_image` checks a ``newTask`` body with plain comparisons
  against the same tables and bounds as :class:`~protocol.messages.NewTask`, and
  encodes it directly. It returns ``None`` whenever it is not certain (any field
  it does not know, any value of an unexpected type or out of range); the caller
  then builds the model, which accepts it or names the broken rule. It never
  reports an error itself, so there is one source of error messages.
- :func:`read_images` validates the images of a plain ``newImages`` body with the
  :class:`~protocol.messages.Image` model itself, without building the
  ``NewImages`` wrapper around them; any other shape returns ``None`` and goes
  through the full decoder.

``tests/test_fastpath.py`` checks, over generated inputs, that whatever the fast
path accepts the models accept too, with the same meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from .codec import IMAGES, PreparedTask, dumps, kept
from .messages import _UUID4, Image
from .tables import (
    CLIP_SKIP_MAX,
    GUIDANCE_MAX,
    LANGUAGES,
    MODELS,
    SCHEDULERS,
    SEED_MAX,
    SEED_MIN,
    SIZES,
    STEPS_MAX,
    STYLES,
    TaskType,
)

__all__ = ["prepare_text_to_image", "read_images"]


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and low <= v <= high


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and v >= low


def _id_in(table: Mapping[int, Any]) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and v in table


def _flag(v: Any) -> bool:
    return type(v) is bool


# Wire name -> what the fast path accepts for each optional field: a subset of what NewTask
# accepts. (guidance is checked by _guidance, which also converts it.)
_OPTIONS: Final[dict[str, Callable[[Any], bool]]] = {
    "modelId": lambda v: (type(v) is str or type(v) is int) and str(v) in MODELS,
    "sizeId": _id_in(SIZES),
    "steps": _int_in(1, STEPS_MAX),
    "seed": _int_in(SEED_MIN, SEED_MAX),
    "schedulerId": _id_in(SCHEDULERS),
    "styleId": _id_in(STYLES),
    "clipSkip": _int_in(0, CLIP_SKIP_MAX),
    "promptLanguageId": _id_in(LANGUAGES),
    "useCache": _flag,
    "saveToCache": lambda v: v is True,  # false needs an uploadEndpoint: the model decides
    "offset": _int_at_least(0),
    "checkNsfw": _flag,
    "usePromptWeighting": _flag,
    "returnBase64Image": _flag,
}


def _guidance(v: Any) -> float | None:
    # The model reads an integer guidance as a float: so does the frame. (NaN and the
    # infinities fail the comparison.)
    if (type(v) is float or type(v) is int) and 0 <= v <= GUIDANCE_MAX:
        return float(v)
    return None


def prepare_text_to_image(
    task_uuid: Any, prompt_text: Any, number_results: Any, options: dict[str, Any]
) -> PreparedTask | None:
    """A text-to-image ``newTask`` that is certainly valid, encoded; ``None`` when it is
    not certain. ``options`` holds its other fields by wire name, only those set (it may
    be changed: gScale becomes a float).
    """
    if not (
        type(task_uuid) is str
        and _UUID4.fullmatch(task_uuid)
        and type(prompt_text) is str
        and prompt_text
        and type(number_results) is int
        and number_results >= 1
    ):
        return None
    checks = _OPTIONS
    for name, value in options.items():
        check = checks.get(name)
        if check is None:
            if name != "gScale" or (guidance := _guidance(value)) is None:
                return None
            options[name] = guidance
        elif not check(value):
            return None
    body = {
        "taskUUID": task_uuid,
        "taskType": TaskType.TEXT_TO_IMAGE,
        "promptText": prompt_text,
        "numberResults": number_results,
    }
    body.update(options)
    return PreparedTask(task_uuid, kept(dumps({"newTask": body})), IMAGES, number_results)


_IMAGE_LIST: Final = TypeAdapter(tuple[Image, ...])


def read_images(frame: dict[str, Any]) -> tuple[tuple[Image, ...], int | None] | None:
    """The images (and ``totalAvailableResults``, which our own server always sends) of a
    decoded frame that is exactly ``{"newImages": {"images": [...]}}``, optionally with an
    integer ``totalAvailableResults``, with valid images; ``None`` for anything else (the
    full decoder then reads it)."""
    if len(frame) != 1:
        return None
    body = frame.get("newImages")
    if type(body) is not dict:
        return None
    total = body.get("totalAvailableResults")
    if len(body) != (1 if total is None else 2) or (total is not None and type(total) is not int):
        return None
    images = body.get("images")
    if type(images) is not list:
        return None
    try:
        return _IMAGE_LIST.validate_python(images), total
    except ValidationError:
        return None
