"""The current dialect's cheaper path for the frame a busy client reads most, equally safe.

A ``{"data": [...]}`` frame of image items (imageInference, upscale, removeBackground)
is read straight into the legacy :class:`~protocol.messages.Image` results the session
works with, validated by that model, without building an :class:`ImageItem` for each
first. Anything else (any other key, a status, a missing URL, another item) returns
``None`` and goes through the full decoder. ``tests/test_runware_protocol.py`` checks
that what this path accepts, the full decoder reads the same.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from ..messages import Image
from . import messages as m

__all__ = ["read_images"]

_IMAGE_TYPES: Final = frozenset((m.ImageInference.wire_name, m.Upscale.wire_name,
                                 m.RemoveBackground.wire_name))  # fmt: skip
# Each key of an image item the path takes, and the legacy image's name for it.
_KEYS: Final = {
    "taskUUID": "taskUUID",
    "imageUUID": "imageUUID",
    "imageURL": "imageSrc",
    "NSFWContent": "bNSFWContent",
    "cost": "cost",
    "seed": "seed",
    "imageBase64Data": "imageBase64Data",
}
_IMAGES: Final = TypeAdapter(tuple[Image, ...])


def read_images(frame: Any) -> tuple[Image, ...] | None:
    """The images of a parsed frame that is exactly ``{"data": [image items]}``, each
    with its URL; ``None`` for anything else."""
    if type(frame) is not dict or len(frame) != 1:
        return None
    items = frame.get("data")
    if type(items) is not list or not items:
        return None
    keys = _KEYS
    renamed = []
    for item in items:
        if type(item) is not dict or item.get("taskType") not in _IMAGE_TYPES:
            return None
        image: dict[str, Any] = {}
        for key, value in item.items():
            name = keys.get(key)
            if name is None:
                if key != "taskType":
                    return None
                continue
            image[name] = value
        # The legacy model reads "yes" as true; this dialect's refuses it, strictly.
        flag = image.get("bNSFWContent", False)
        if type(image.get("imageSrc")) is not str or type(flag) is not bool:
            return None
        renamed.append(image)
    try:
        return _IMAGES.validate_python(renamed)
    except ValidationError:
        return None
