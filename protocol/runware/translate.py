"""Between the dialects, for tasks: the current dialect's tasks, the legacy messages.

Everything above the protocol speaks the legacy messages (specs encode ``newTask``
frames, the server's scheduler runs them), so the current dialect is a translation at
the edge, written once here (and for results, in :mod:`.results`) and used both ways:

- a client turns the legacy frame of a task into the current task that does the same
  (:func:`task_of`);
- a server turns a current task into a legacy message (:func:`legacy_task`), validated
  by the legacy models (every limit is written once, there), with what they refuse named
  by the current dialect's fields.

The tables of field names below serve both directions.

What has no counterpart is refused by name, never dropped: the legacy ``styleId``,
``promptLanguageId`` and the cache fields have none in the current dialect (a client
refuses them before anything is sent); ``webhookURL`` and ``ttl`` have none on our
server (which refuses them as fields it does not know).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from ..errors import FieldError, LocalProtocolError, RemoteProtocolError
from ..messages import (
    NewImageUpload,
    NewTask,
    PreProcessControlNetRequest,
    PromptEnhance,
    RemoveBackgroundRequest,
    ReverseImageClip,
    UpscaleGanRequest,
    join_negative_prompt,
    split_negative_prompt,
)
from ..tables import (
    DEFAULT_MODEL_ID,
    SCHEDULERS,
    TaskType,
    scheduler_id_for,
    size_for,
)
from ..validation import field_errors
from . import messages as current
from .tables import (
    DEFAULT_MODELS,
    air_for,
    canonical_scheduler,
    legacy_model_id,
    scheduler_for,
)

__all__ = [
    "legacy_task",
    "task_of",
]

# -- field names ---------------------------------------------------------------------------

# Legacy wire name -> current wire name, per current task type: the renames both
# directions use (and what names a legacy model's refusal in the current dialect).
_INFERENCE_NAMES: Final = {
    "taskUUID": "taskUUID",
    "promptText": "positivePrompt",
    "numberResults": "numberResults",
    "modelId": "model",
    "width": "width",
    "height": "height",
    "sizeId": "width",
    "steps": "steps",
    "gScale": "CFGScale",
    "seed": "seed",
    "schedulerId": "scheduler",
    "clipSkip": "clipSkip",
    "checkNsfw": "checkNSFW",
    "usePromptWeighting": "promptWeighting",
    "uploadEndpoint": "uploadEndpoint",
    "imageInitiatorUUID": "seedImage",
    "imageMaskInitiatorUUID": "maskImage",
    "strength": "strength",
    "lora": "lora",
    "controlNet": "controlNet",
    "returnBase64Image": "outputType",
    "taskType": "seedImage",  # a legacy taskType follows from the images given
}
# The fields whose values are the same in both dialects (under their own names).
_INFERENCE_COPIED: Final = (
    *("steps", "gScale", "seed", "clipSkip", "checkNsfw", "uploadEndpoint"),
    *("imageInitiatorUUID", "imageMaskInitiatorUUID", "strength"),
)
_NESTED_NAMES: Final = {
    "modelId": "model",
    "guideImageUUID": "guideImage",
    "guideImageUrl": "guideImage",
}
_ONE_IMAGE_NAMES: Final = {
    "taskUUID": "taskUUID",
    "imageUUID": "inputImage",
    "upscaleFactor": "upscaleFactor",
}
_PREPROCESS_NAMES: Final = {
    "taskUUID": "taskUUID",
    "guideImageUUID": "inputImage",
    "guideImageUrl": "inputImage",
    "preProcessorType": "preProcessorType",
    "width": "width",
    "height": "height",
    "lowThresholdCanny": "lowThresholdCanny",
    "highThresholdCanny": "highThresholdCanny",
    "includeHandsAndFaceOpenPose": "includeHandsAndFaceOpenPose",
    "returnBase64Image": "outputType",
}
_ENHANCE_NAMES: Final = {
    "taskUUID": "taskUUID",
    "prompt": "prompt",
    "promptMaxLength": "promptMaxLength",
    "promptVersions": "promptVersions",
}
_UPLOAD_NAMES: Final = {"taskUUID": "taskUUID", "imageBase64": "image"}

_DEFAULT_AIR: Final = air_for(DEFAULT_MODEL_ID)
#: Legacy fields the current dialect cannot say, and why.
_NO_COUNTERPART: Final = {
    "styleId": "the current dialect has no style presets",
    "promptLanguageId": "the current dialect takes prompts in English only",
    "useCache": "the current dialect has no result cache",
    "saveToCache": "the current dialect has no result cache",
    "offset": "the current dialect has no result cache",
}

# -- client: a legacy task frame -> a current task -----------------------------------------


def task_of(frame: Mapping[str, Any]) -> dict[str, Any]:
    """The current task for the legacy frame of a task (``{"newTask": {...}}``), as a
    plain object, ``deliveryMethod: sync`` (its results come on the socket).

    Raises:
        LocalProtocolError: the task says something the current dialect cannot.
    """
    name, body = next(iter(frame.items()))
    task = _TO_CURRENT[name](body)
    task["deliveryMethod"] = "sync"
    return task


def _refuse_missing(body: Mapping[str, Any]) -> None:
    for name, why in _NO_COUNTERPART.items():
        if name in body:
            error = FieldError(name, "", body[name], why)
            raise LocalProtocolError("cannot send this task in the current dialect", (error,))


# Legacy fields of a generation whose values the current dialect takes as they are, by
# their current names; the others are converted one by one (_convert), or refused.
_COPIES: Final = {
    legacy: _INFERENCE_NAMES[legacy]
    for legacy in ("numberResults", "width", "height", *_INFERENCE_COPIED)
}
_PLAIN: Final = frozenset({*_COPIES, "taskUUID", "taskType", "promptText"})
_DEFAULT_SIZE: Final = size_for(1)


def _inference(body: Mapping[str, Any]) -> dict[str, Any]:
    # One pass over the fields a plain text-to-image has; the rest only when present.
    positive, negative = split_negative_prompt(body["promptText"])
    width, height = _DEFAULT_SIZE
    task: dict[str, Any] = {
        "taskType": current.ImageInference.wire_name,
        "taskUUID": body["taskUUID"],
        "positivePrompt": positive,
        "model": _DEFAULT_AIR,
        "width": width,
        "height": height,
        "numberResults": 1,
    }
    if negative is not None:
        task["negativePrompt"] = negative
    copies, plain, converted = _COPIES, _PLAIN, False
    for key, value in body.items():
        name = copies.get(key)
        if name is not None:
            task[name] = value
        elif key not in plain:
            converted = True
    if converted:
        _convert(body, task)
    return task


def _convert(body: Mapping[str, Any], task: dict[str, Any]) -> None:
    _refuse_missing(body)
    if "modelId" in body:
        task["model"] = air_for(body["modelId"])
    if "sizeId" in body:
        task["width"], task["height"] = size_for(body["sizeId"])
    if "schedulerId" in body:
        task["scheduler"] = scheduler_for(body["schedulerId"])
    if body.get("usePromptWeighting"):
        task["promptWeighting"] = "compel"
    if body.get("returnBase64Image"):
        task["outputType"] = "base64Data"
    if "lora" in body:
        task["lora"] = [
            {"model": lora["modelId"], "weight": lora["weight"]} for lora in body["lora"]
        ]
    if "controlNet" in body:
        task["controlNet"] = [_guide_of(guide) for guide in body["controlNet"]]


def _guide_of(guide: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        current_name: guide[legacy]
        for legacy, current_name in (
            ("preprocessor", "preprocessor"),
            ("weight", "weight"),
            ("startStep", "startStep"),
            ("endStep", "endStep"),
            ("startStepPercentage", "startStepPercentage"),
            ("endStepPercentage", "endStepPercentage"),
            ("controlMode", "controlMode"),
        )
        if legacy in guide
    }
    out["guideImage"] = guide.get("guideImageUUID") or guide.get("guideImageUrl")
    return out


def _one_image(task_type: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def build(body: Mapping[str, Any]) -> dict[str, Any]:
        task: dict[str, Any] = {
            "taskType": task_type,
            "taskUUID": body["taskUUID"],
            "model": DEFAULT_MODELS[task_type],
            "inputs": {"image": body["imageUUID"]},
        }
        if "upscaleFactor" in body:
            task["upscaleFactor"] = body["upscaleFactor"]
        return task

    return build


def _preprocess(body: Mapping[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = {"taskType": current.ControlNetPreprocess.wire_name}
    for legacy in _dump_names(_PREPROCESS_NAMES):
        if legacy in body:
            task[legacy] = body[legacy]
    task["inputs"] = {"image": body.get("guideImageUUID") or body.get("guideImageUrl")}
    if body.get("returnBase64Image"):
        task["outputType"] = "base64Data"
    return task


def _enhance(body: Mapping[str, Any]) -> dict[str, Any]:
    _refuse_missing(body)
    task = {"taskType": current.PromptEnhance.wire_name, "model": DEFAULT_MODELS["promptEnhance"]}
    task.update((_ENHANCE_NAMES[k], v) for k, v in body.items() if k in _ENHANCE_NAMES)
    return task


def _upload(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "taskType": current.ImageUpload.wire_name,
        "taskUUID": body["taskUUID"],
        "image": body["imageBase64"],
    }


_TO_CURRENT: Final[Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    NewTask.wire_name: _inference,
    UpscaleGanRequest.wire_name: _one_image(current.Upscale.wire_name),
    RemoveBackgroundRequest.wire_name: _one_image(current.RemoveBackground.wire_name),
    ReverseImageClip.wire_name: _one_image(current.Caption.wire_name),
    PreProcessControlNetRequest.wire_name: _preprocess,
    PromptEnhance.wire_name: _enhance,
    NewImageUpload.wire_name: _upload,
}


# -- server: a current task -> a legacy message --------------------------------------------

ServerTask = (
    NewTask
    | NewImageUpload
    | UpscaleGanRequest
    | RemoveBackgroundRequest
    | ReverseImageClip
    | PreProcessControlNetRequest
    | PromptEnhance
)


def legacy_task(task: current.Task) -> ServerTask:
    """The legacy message that does what ``task`` asks, validated by the legacy models.

    Raises:
        RemoteProtocolError: a field breaks a rule, named as the current dialect names it.
    """
    try:
        cls, body, names = _legacy_form(task)
    except _Refused as refused:
        raise RemoteProtocolError(f"invalid {task.wire_name}", (refused.error,)) from None
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        errors = tuple(_renamed(error, names) for error in field_errors(exc))
    raise RemoteProtocolError(f"invalid {task.wire_name}", errors)


def _legacy_form(task: current.Task) -> tuple[type[ServerTask], dict[str, Any], Mapping[str, str]]:
    # The legacy model, the body to validate with it, and how its names map back.
    if isinstance(task, current.ImageInference):
        return NewTask, _inference_body(task), _INFERENCE_NAMES
    if isinstance(task, current.Upscale):
        body = {"taskUUID": task.task_uuid, "imageUUID": _image(task)}
        body["upscaleFactor"] = task.upscale_factor
        return UpscaleGanRequest, body, _ONE_IMAGE_NAMES
    if isinstance(task, current.RemoveBackground):
        return RemoveBackgroundRequest, _one_image_body(task), _ONE_IMAGE_NAMES
    if isinstance(task, current.Caption):
        return ReverseImageClip, _one_image_body(task), _ONE_IMAGE_NAMES
    if isinstance(task, current.ControlNetPreprocess):
        return PreProcessControlNetRequest, _preprocess_body(task), _PREPROCESS_NAMES
    if isinstance(task, current.PromptEnhance):
        return PromptEnhance, _dump(task, _ENHANCE_NAMES), _ENHANCE_NAMES
    if isinstance(task, current.ImageUpload):
        body = {"taskUUID": task.task_uuid, "imageBase64": task.image}
        return NewImageUpload, body, _UPLOAD_NAMES
    raise _Refused("taskType", task.task_type, "is not a task that makes results")


def _one_image_body(task: current.RemoveBackground | current.Caption) -> dict[str, Any]:
    if isinstance(task, current.RemoveBackground):
        _output_base64(task)  # only checks outputFormat: the cut-out's alpha makes a PNG
    return {"taskUUID": task.task_uuid, "imageUUID": _image(task)}


class _Refused(Exception):
    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.error = FieldError(field, "", value, rule)


def _image(task: current.Task) -> Any:
    image = task.image if isinstance(task, current._InputImage) else None
    if image is None:
        raise _Refused("inputImage", None, "is required (or inputs.image): an imageUUID")
    return image


def _output_base64(task: current._ImageOutputs) -> bool:
    if task.output_format not in (None, "JPG") and not isinstance(task, current.RemoveBackground):
        raise _Refused("outputFormat", task.output_format, "must be JPG on this server")
    return task.output_type in ("base64Data", "dataURI")


def _inference_body(task: current.ImageInference) -> dict[str, Any]:
    body = _dump(
        task, _INFERENCE_NAMES, ("taskUUID", "numberResults", "width", "height", *_INFERENCE_COPIED)
    )
    body["promptText"] = join_negative_prompt(task.positive_prompt, task.negative_prompt)
    body["modelId"] = DEFAULT_MODEL_ID if task.model is None else legacy_model_id(task.model)
    if task.scheduler is not None:
        body["schedulerId"] = _scheduler_id(task.scheduler)
    if task.prompt_weighting is not None:
        body["usePromptWeighting"] = True
    body["returnBase64Image"] = _output_base64(task)
    if task.lora is not None:
        body["lora"] = [{"modelId": lora.model, "weight": lora.weight} for lora in task.lora]
    if task.control_net is not None:
        body["controlNet"] = [_legacy_guide(guide, i) for i, guide in enumerate(task.control_net)]
    body["taskType"] = _inference_type(task)
    if (task.width is None) != (task.height is None):
        missing = "height" if task.height is None else "width"
        raise _Refused(missing, None, "is required with the other of width and height")
    return body


def _inference_type(task: current.ImageInference) -> TaskType:
    if task.control_net:
        return (
            TaskType.CONTROLNET_IMAGE_TO_IMAGE
            if task.seed_image
            else TaskType.CONTROLNET_TEXT_TO_IMAGE
        )
    if task.mask_image is not None:
        return TaskType.INPAINTING
    return TaskType.IMAGE_TO_IMAGE if task.seed_image is not None else TaskType.TEXT_TO_IMAGE


def _scheduler_id(name: str) -> int:
    try:
        return scheduler_id_for(canonical_scheduler(name))
    except LookupError:
        known = ", ".join(sorted(SCHEDULERS.values())[:6])
        raise _Refused(
            "scheduler", name, f"must be a scheduler this server knows ({known}, ...)"
        ) from None


def _legacy_guide(guide: current.ControlNetGuide, index: int) -> dict[str, Any]:
    if guide.preprocessor is None:
        raise _Refused(f"controlNet[{index}].preprocessor", None, "is required (canny, depth, ...)")
    out = guide.model_dump(by_alias=True, exclude_unset=True, exclude={"model", "guide_image"})
    is_url = guide.guide_image.startswith(("http://", "https://"))
    out["guideImageUrl" if is_url else "guideImageUUID"] = guide.guide_image
    return out


def _preprocess_body(task: current.ControlNetPreprocess) -> dict[str, Any]:
    body = _dump(task, _PREPROCESS_NAMES)
    image = _image(task)
    is_url = isinstance(image, str) and image.startswith(("http://", "https://"))
    body["guideImageUrl" if is_url else "guideImageUUID"] = image
    body["returnBase64Image"] = _output_base64(task)
    return body


def _dump(
    task: current.Task, names: Mapping[str, str], copied: tuple[str, ...] | None = None
) -> dict[str, Any]:
    # The fields whose values are the same in both dialects (by default: those of the same
    # name), as set, under their legacy names.
    given = task.model_dump(by_alias=True, exclude_unset=True)
    names_copied = _dump_names(names) if copied is None else copied
    return {legacy: given[names[legacy]] for legacy in names_copied if names[legacy] in given}


def _dump_names(names: Mapping[str, str]) -> tuple[str, ...]:
    # The fields of the same name and value in both dialects.
    return tuple(legacy for legacy, name in names.items() if legacy == name)


def _renamed(error: FieldError, names: Mapping[str, str]) -> FieldError:
    head, dot, rest = error.field.partition(".")
    base, bracket, index = head.partition("[")
    field = names.get(base, base) + bracket + index
    if rest:
        first, sep, more = rest.partition(".")
        field += "." + _NESTED_NAMES.get(first, first) + sep + more
    return FieldError(field, "", error.value, error.rule)
