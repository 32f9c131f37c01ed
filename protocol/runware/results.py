"""Between the dialects, for results: the current dialect's items, the legacy results.

- a client reads the items it receives as the legacy results they carry
  (:func:`results_of`, :func:`failure_of`), so the session code that decides what
  completes a task is the legacy one;
- a server writes each legacy frame it would send as the current frame
  (:func:`current_frame`): images, texts, replies, errors, the authentication answer,
  the pong. Progress has no counterpart in the current dialect and is not sent.

Items name their task type by the current names (``upscale``, not ``imageUpscale``),
whatever name the client used. An image asked for as ``base64Data`` or ``dataURI`` comes
with both forms, and its URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ..messages import (
    ErrorMessage,
    Image,
    NewConnectionSessionUUID,
    NewImages,
    NewUploadedImageUUID,
    PreProcessControlNetResult,
    PromptEnhancer,
    RemoveBackgroundResult,
    ReverseClip,
    Text,
    UpscaleGanResult,
)
from ..tables import ErrorId
from . import messages as current
from .tables import current_code, error_id_for

__all__ = ["current_frame", "failure_of", "results_of"]


# -- client: current items -> legacy results -----------------------------------------------

LegacyResult = Image | Text | NewUploadedImageUUID | PreProcessControlNetResult


def results_of(item: current.ResultItem) -> LegacyResult | None:
    """The legacy result an item carries (``None`` for one that carries none: an
    acknowledgement, a status)."""
    if isinstance(item, current.ImageItem):
        return Image.model_construct(
            image_src=item.image_url or item.image_data_uri or "",
            image_uuid=item.image_uuid,
            task_uuid=item.task_uuid,
            b_nsfw_content=item.nsfw_content,
            cost=item.cost,
            image_base64_data=item.image_base64_data,
            seed=item.seed,
        )
    if isinstance(item, current.TextItem):
        return Text.model_construct(task_uuid=item.task_uuid, text=item.text)
    if isinstance(item, current.UploadItem):
        return NewUploadedImageUUID.model_construct(
            new_image_uuid=item.image_uuid, new_image_src=item.image_url, task_uuid=item.task_uuid
        )
    if isinstance(item, current.PreprocessItem):
        return PreProcessControlNetResult.model_construct(
            task_uuid=item.task_uuid,
            new_image_uuid=item.guide_image_uuid,
            new_image_src=item.guide_url or "",
            init_image_uuid=item.input_image_uuid,
            b_nsfw_content=item.nsfw_content,
            image_base64_data=item.guide_image_base64_data,
        )
    return None


def failure_of(error: current.ErrorItem) -> ErrorMessage:
    """The legacy error an error item means (its code mapped to an errorId when known)."""
    text = error.message if error.parameter is None else f"{error.parameter}: {error.message}"
    return ErrorMessage.model_construct(
        error_id=error_id_for(error.code),
        error_message=text,
        task_uuid=error.task_uuid,
        error_code=error.code,
    )


# -- server: a legacy frame -> the current frame -------------------------------------------


def current_frame(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The current frame for a legacy frame a server would send (already an object);
    ``None`` for one the current dialect has no counterpart of (progress)."""
    if "error" in obj:
        return {"errors": [_error_item(obj)]}
    name, body = next(iter(obj.items()))
    convert = _TO_ITEMS.get(name)
    return None if convert is None else {"data": convert(body)}


def _error_item(obj: Mapping[str, Any]) -> dict[str, Any]:
    error_id = obj.get("errorId", ErrorId.INTERNAL_ERROR)
    item: dict[str, Any] = {"code": current_code(error_id), "message": obj.get("errorMessage", "")}
    if "taskUUID" in obj:
        item["taskUUID"] = obj["taskUUID"]
    return item


def _images(task_type: str) -> Callable[[Mapping[str, Any]], list[dict[str, Any]]]:
    def items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for image in body["images"]:
            item = {
                "taskType": task_type,
                "taskUUID": image["taskUUID"],
                "imageUUID": image["imageUUID"],
                "imageURL": image["imageSrc"],
                "NSFWContent": image.get("bNSFWContent", False),
                "cost": image.get("cost", 0.0),
            }
            if "seed" in image:
                item["seed"] = image["seed"]
            if "imageBase64Data" in image:
                data = image["imageBase64Data"]
                item["imageBase64Data"] = data
                item["imageDataURI"] = f"data:{_mime(image['imageSrc'])};base64,{data}"
            out.append(item)
        return out

    return items


def _mime(src: str) -> str:
    return "image/png" if src.endswith(".png") else "image/jpeg"


def _texts(task_type: str) -> Callable[[Mapping[str, Any]], list[dict[str, Any]]]:
    def items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            {"taskType": task_type, "taskUUID": t["taskUUID"], "text": t["text"], "cost": 0.0}
            for t in body["texts"]
        ]

    return items


def _uploaded(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "taskType": current.ImageUpload.wire_name,
            "taskUUID": body["taskUUID"],
            "imageUUID": body["newImageUUID"],
            "imageURL": body["newImageSrc"],
        }
    ]


def _preprocessed(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    item = {
        "taskType": current.ControlNetPreprocess.wire_name,
        "taskUUID": body["taskUUID"],
        "guideImageUUID": body["newImageUUID"],
        "guideImageURL": body["newImageSrc"],
        "NSFWContent": body.get("bNSFWContent", False),
        "cost": 0.0,
    }
    if "initImageUUID" in body:
        item["inputImageUUID"] = body["initImageUUID"]
    if "imageBase64Data" in body:
        item["guideImageBase64Data"] = body["imageBase64Data"]
    return [item]


def _authenticated(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "taskType": current.Authentication.wire_name,
            "connectionSessionUUID": body["connectionSessionUUID"],
        }
    ]


_TO_ITEMS: Final[Mapping[str, Callable[[Any], list[dict[str, Any]]]]] = {
    NewImages.wire_name: _images(current.ImageInference.wire_name),
    UpscaleGanResult.wire_name: _images(current.Upscale.wire_name),
    RemoveBackgroundResult.wire_name: _images(current.RemoveBackground.wire_name),
    ReverseClip.wire_name: _texts(current.Caption.wire_name),
    PromptEnhancer.wire_name: _texts(current.PromptEnhance.wire_name),
    NewUploadedImageUUID.wire_name: _uploaded,
    PreProcessControlNetResult.wire_name: _preprocessed,
    NewConnectionSessionUUID.wire_name: _authenticated,
    "pong": lambda body: [{"taskType": current.Ping.wire_name, "pong": True}],
}
