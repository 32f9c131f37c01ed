"""What users submit: one spec class per task type.

A spec is a friendly description of one task (``TextToImage(prompt=...)``), plain
data: it is validated and encoded when submitted, so changing it afterwards changes
nothing in flight. (Specs are not frozen: a frozen dataclass costs microseconds more
to build, and a bulk job builds one per task.)

:meth:`TaskSpec.prepare` turns it into the protocol's frame for a taskUUID; this is
where bad input is refused, with a :class:`~orchestrator.errors.LocalProtocolError`
naming the wire field, the spec's field and the rule, before anything is sent.

Names. A spec's field is the snake_case of its wire name (``clipSkip`` ->
``clip_skip``, ``lora``, ``lowThresholdCanny`` -> ``low_threshold_canny``), with
these exceptions, mapped here and only here:

- a choice from one of the seed's tables drops its ``Id``/``Type`` and takes the
  table's id or its name: ``model`` (``"4"``, ``4``, ``"SDXL v1.0"`` or an AIR id),
  ``size`` (``11`` or ``"1024x1024"``), ``scheduler``, ``style``, ``language``,
  ``preprocessor``; a size the table lacks is ``width`` with ``height`` instead (this
  project's extension of the protocol, which our server understands);
- ``prompt`` (``promptText``), ``negative_prompt`` (the legacy `` -no `` suffix),
  ``guidance`` (``gScale``), ``init_image_uuid`` (``imageInitiatorUUID``),
  ``mask_image_uuid`` (``imageMaskInitiatorUUID``), and ``UploadImage.image``
  (``imageBase64``, which also takes raw bytes).
"""

from __future__ import annotations

import base64
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypedDict

from protocol.codec import PreparedTask, prepare
from protocol.errors import FieldError, LocalProtocolError, UsageError
from protocol.fastpath import prepare_text_to_image
from protocol.messages import (
    ControlNet,
    Lora,
    NewImageUpload,
    NewTask,
    PreProcessControlNetRequest,
    PromptEnhance,
    RemoveBackgroundRequest,
    ReverseImageClip,
    TaskRequest,
    UpscaleGanRequest,
    join_negative_prompt,
)
from protocol.requests import image_uuids, is_uuid, upload_endpoint
from protocol.runware.session import prepare_current
from protocol.tables import (
    SEED_MAX,
    SEED_MIN,
    TaskType,
)

from .naming import CHOICES, by_name, in_spec_names

__all__ = [
    "ControlNetImage",
    "EnhancePrompt",
    "GenerationOptions",
    "ImageToImage",
    "ImageToText",
    "Inpaint",
    "PreprocessControlNet",
    "PreprocessOptions",
    "RemoveBackground",
    "TaskSpec",
    "TextToImage",
    "UploadImage",
    "Upscale",
]


def _set(**fields: Any) -> dict[str, Any]:
    # Only what the user set goes on the wire: the server's defaults apply to the rest.
    return {name: value for name, value in fields.items() if value is not None}


# -- the specs -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class TaskSpec:
    """Base of every task spec.

    Attributes:
        task_uuid: choose the taskUUID (default: a new UUIDv4).
        metadata: the task's own values, for the placeholders of sink templates
            (``{label}``); kept on this side, never sent.
        deliver_to: sinks for this task's images instead of the orchestrator's (``()``:
            none): strings as ``Orchestrator(deliver_to=)`` takes, or sink objects.
    """

    task_uuid: str | None = None
    metadata: dict[str, Any] | None = None
    deliver_to: Sequence[Any] | None = None

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the protocol message. Raises LocalProtocolError naming the broken field
        (its wire name, and the name of this spec's field)."""
        try:
            return self._request(task_uuid)
        except LocalProtocolError as exc:
            raise in_spec_names(exc) from None

    def _request(self, task_uuid: str) -> TaskRequest:
        raise NotImplementedError

    def prepare(self, task_uuid: str) -> PreparedTask:
        """Validate and encode the task for ``task_uuid``, once (what the orchestrator sends)."""
        return prepare(self.to_request(task_uuid))

    def image_refs(self) -> tuple[str, ...]:
        """imageUUIDs this task reads: it must run where those images are."""
        return ()


@dataclass(slots=True, kw_only=True)
class _Generation(TaskSpec):
    prompt: str
    negative_prompt: str | None = None
    number_results: int = 1
    model: str | int | None = None
    size: int | str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    scheduler: int | str | None = None
    style: int | str | None = None
    clip_skip: int | None = None
    language: int | str | None = None
    use_cache: bool | None = None
    save_to_cache: bool | None = None
    offset: int | None = None
    check_nsfw: bool | None = None
    use_prompt_weighting: bool | None = None
    upload_endpoint: str | None = None
    lora: tuple[Lora, ...] | None = None
    return_base64_image: bool | None = None

    _task_type = TaskType.TEXT_TO_IMAGE

    def _fields(self) -> dict[str, Any]:
        # Wire names, and only what the user set: the server's defaults apply to the rest.
        fields = {
            "promptText": join_negative_prompt(self.prompt, self.negative_prompt),
            "numberResults": self.number_results,
        }
        fields.update(self._options())
        return fields

    def _options(self) -> dict[str, Any]:
        if type(self.seed) is int and self.seed == 0:  # diffusers and ComfyUI users try it
            rule = f"must be {SEED_MIN} to {SEED_MAX}: leave it out for a random seed"
            error = FieldError("seed", "seed", 0, rule)
            raise LocalProtocolError(f"invalid {NewTask.wire_name}", (error,))
        values = zip(_GENERATION_WIRE_NAMES, _generation_values(self), strict=True)
        options = {name: value for name, value in values if value is not None}
        for name in CHOICES:  # in wire order, so the first bad choice is the one named
            # A table choice given by name (a str; ids are ints) becomes its id.
            if type(value := options.get(name)) is str:
                options[name] = by_name(name, value, NewTask.wire_name)
        return options

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newTask`` message."""
        return NewTask(task_uuid=task_uuid, task_type=self._task_type, **self._fields())


# (wire name, attribute) of the generation options, in wire order.
GENERATION_FIELDS: Final = (
    ("modelId", "model"),
    ("sizeId", "size"),
    ("width", "width"),
    ("height", "height"),
    ("steps", "steps"),
    ("gScale", "guidance"),
    ("seed", "seed"),
    ("schedulerId", "scheduler"),
    ("styleId", "style"),
    ("clipSkip", "clip_skip"),
    ("promptLanguageId", "language"),
    ("useCache", "use_cache"),
    ("saveToCache", "save_to_cache"),
    ("offset", "offset"),
    ("checkNsfw", "check_nsfw"),
    ("usePromptWeighting", "use_prompt_weighting"),
    ("uploadEndpoint", "upload_endpoint"),
    ("lora", "lora"),
    ("returnBase64Image", "return_base64_image"),
)
_GENERATION_WIRE_NAMES: Final = tuple(wire_name for wire_name, _ in GENERATION_FIELDS)
_generation_values = operator.attrgetter(*(attribute for _, attribute in GENERATION_FIELDS))


class GenerationOptions(TypedDict, total=False):
    """The keyword options of the generation methods (``Orchestrator.text_to_image`` and
    its siblings): every field of :class:`TextToImage` but ``prompt``."""

    task_uuid: str | None
    metadata: dict[str, Any] | None
    deliver_to: Sequence[Any] | None
    negative_prompt: str | None
    number_results: int
    model: str | int | None
    size: int | str | None
    width: int | None
    height: int | None
    steps: int | None
    guidance: float | None
    seed: int | None
    scheduler: int | str | None
    style: int | str | None
    clip_skip: int | None
    language: int | str | None
    use_cache: bool | None
    save_to_cache: bool | None
    offset: int | None
    check_nsfw: bool | None
    use_prompt_weighting: bool | None
    upload_endpoint: str | None
    lora: tuple[Lora, ...] | None
    return_base64_image: bool | None


@dataclass(slots=True, kw_only=True)
class TextToImage(_Generation):
    """Generate ``number_results`` images from a prompt (taskType 1)."""

    def prepare(self, task_uuid: str) -> PreparedTask:
        """Validate and encode the task; the common case skips building the model."""
        prompt_text = join_negative_prompt(self.prompt, self.negative_prompt)
        prepared = prepare_text_to_image(
            task_uuid, prompt_text, self.number_results, self._options()
        )
        return prepare(self.to_request(task_uuid)) if prepared is None else prepared


@dataclass(slots=True, kw_only=True)
class ImageToImage(_Generation):
    """Generate from a prompt and an init image (taskType 2); ``strength`` 0-1."""

    init_image_uuid: str
    strength: float | None = None

    _task_type = TaskType.IMAGE_TO_IMAGE

    def _fields(self) -> dict[str, Any]:
        return _Generation._fields(self) | _set(
            imageInitiatorUUID=self.init_image_uuid, strength=self.strength
        )

    def image_refs(self) -> tuple[str, ...]:
        """The init image."""
        return (self.init_image_uuid,)


@dataclass(slots=True, kw_only=True)
class Inpaint(_Generation):
    """Repaint the masked part of an init image (taskType 3)."""

    init_image_uuid: str
    mask_image_uuid: str

    _task_type = TaskType.INPAINTING

    def _fields(self) -> dict[str, Any]:
        return _Generation._fields(self) | _set(
            imageInitiatorUUID=self.init_image_uuid,
            imageMaskInitiatorUUID=self.mask_image_uuid,
        )

    def image_refs(self) -> tuple[str, ...]:
        """The init image and the mask."""
        return (self.init_image_uuid, self.mask_image_uuid)


@dataclass(slots=True, kw_only=True)
class ControlNetImage(_Generation):
    """Generate guided by ControlNet (taskType 9, or 10 with an init image)."""

    control_net: tuple[ControlNet, ...]
    init_image_uuid: str | None = None
    strength: float | None = None

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newTask`` message (type 10 when an init image is given)."""
        task_type = TaskType.CONTROLNET_TEXT_TO_IMAGE
        if self.init_image_uuid is not None:
            task_type = TaskType.CONTROLNET_IMAGE_TO_IMAGE
        extra = _set(
            controlNet=self.control_net,
            imageInitiatorUUID=self.init_image_uuid,
            strength=self.strength,
        )
        return NewTask(task_uuid=task_uuid, task_type=task_type, **(self._fields() | extra))

    def image_refs(self) -> tuple[str, ...]:
        """The init image and the guides given by imageUUID."""
        guides = tuple(g.guide_image_uuid for g in self.control_net if g.guide_image_uuid)
        return (self.init_image_uuid, *guides) if self.init_image_uuid else guides


@dataclass(slots=True, kw_only=True)
class Upscale(TaskSpec):
    """Upscale an image by ``upscale_factor`` 2, 3 or 4 (taskType 6)."""

    image_uuid: str
    upscale_factor: int = 2

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newUpscaleGan`` message."""
        return UpscaleGanRequest(
            task_uuid=task_uuid, image_uuid=self.image_uuid, upscale_factor=self.upscale_factor
        )

    def image_refs(self) -> tuple[str, ...]:
        """The image to upscale."""
        return (self.image_uuid,)


@dataclass(slots=True, kw_only=True)
class RemoveBackground(TaskSpec):
    """Cut the subject out of an image into a transparent PNG (taskType 8)."""

    image_uuid: str

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newRemoveBackground`` message."""
        return RemoveBackgroundRequest(task_uuid=task_uuid, image_uuid=self.image_uuid)

    def image_refs(self) -> tuple[str, ...]:
        """The source image."""
        return (self.image_uuid,)


@dataclass(slots=True, kw_only=True)
class ImageToText(TaskSpec):
    """Caption an image (taskType 4)."""

    image_uuid: str

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newReverseImageClip`` message."""
        return ReverseImageClip(task_uuid=task_uuid, image_uuid=self.image_uuid)

    def image_refs(self) -> tuple[str, ...]:
        """The image to caption."""
        return (self.image_uuid,)


@dataclass(slots=True, kw_only=True)
class EnhancePrompt(TaskSpec):
    """Write ``prompt_versions`` (1-5) richer versions of a prompt (taskType 5)."""

    prompt: str
    prompt_versions: int = 1
    prompt_max_length: int | None = None
    language: int | str | None = None

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newPromptEnhance`` message."""
        language = self.language
        if type(language) is str:
            language = by_name("promptLanguageId", language, PromptEnhance.wire_name)
        fields = _set(prompt_max_length=self.prompt_max_length, prompt_language_id=language)
        return PromptEnhance(
            task_uuid=task_uuid, prompt=self.prompt, prompt_versions=self.prompt_versions, **fields
        )


@dataclass(slots=True, kw_only=True)
class UploadImage(TaskSpec):
    """Upload an image (a file's path, raw bytes, base64 text or a data URI) to use by
    imageUUID (type 7)."""

    image: bytes | str | Path = field(repr=False)

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newImageUpload`` message (a path is read here)."""
        data = self.image
        if isinstance(data, Path):
            path = data
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"UploadImage.image: no file to read at {path}: {exc}") from exc
        text = base64.b64encode(data).decode() if isinstance(data, bytes) else data
        return NewImageUpload(task_uuid=task_uuid, image_base64=text)


@dataclass(slots=True, kw_only=True)
class PreprocessControlNet(TaskSpec):
    """Turn a guide image into a ControlNet guide (taskType 11), by imageUUID or URL."""

    preprocessor: str
    guide_image_uuid: str | None = None
    guide_image_url: str | None = None
    width: int | None = None
    height: int | None = None
    low_threshold_canny: int | None = None
    high_threshold_canny: int | None = None
    include_hands_and_face_open_pose: bool | None = None
    return_base64_image: bool | None = None

    def _request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newPreProcessControlNet`` message."""
        fields = _set(
            guide_image_uuid=self.guide_image_uuid,
            guide_image_url=self.guide_image_url,
            width=self.width,
            height=self.height,
            low_threshold_canny=self.low_threshold_canny,
            high_threshold_canny=self.high_threshold_canny,
            include_hands_and_face_open_pose=self.include_hands_and_face_open_pose,
            return_base64_image=self.return_base64_image,
        )
        return PreProcessControlNetRequest(
            task_uuid=task_uuid, pre_processor_type=self.preprocessor, **fields
        )

    def image_refs(self) -> tuple[str, ...]:
        """The guide image, when given by imageUUID."""
        return (self.guide_image_uuid,) if self.guide_image_uuid else ()


@dataclass(slots=True, kw_only=True)
class CurrentTask(TaskSpec):
    """A task written in the current Runware dialect and sent as written (its taskUUID
    aside), for what the other specs do not say: ``CurrentTask(task={"taskType":
    "imageInference", "positivePrompt": ..., "model": ..., "outputFormat": "PNG", "vae":
    ...})``. Only for endpoints that speak that dialect (``Config(dialect="runware")``);
    fields this package knows are checked before sending, the rest the server judges."""

    task: Mapping[str, Any]

    def prepare(self, task_uuid: str) -> PreparedTask:
        """Encode the task as written, for ``task_uuid``."""
        return prepare_current(self.task, task_uuid)

    def image_refs(self) -> tuple[str, ...]:
        """The images it names by imageUUID (so it runs where they are)."""
        inputs = self.task.get("inputs")
        named = [self.task.get(k) for k in ("seedImage", "maskImage", "inputImage")]
        named.append(inputs.get("image") if isinstance(inputs, Mapping) else None)
        return tuple(v for v in named if isinstance(v, str) and is_uuid(v))


class PreprocessOptions(TypedDict, total=False):
    """The keyword options of ``Orchestrator.controlnet_preprocess``: every field of
    :class:`PreprocessControlNet` but ``preprocessor``."""

    task_uuid: str | None
    metadata: dict[str, Any] | None
    deliver_to: Sequence[Any] | None
    guide_image_uuid: str | None
    guide_image_url: str | None
    width: int | None
    height: int | None
    low_threshold_canny: int | None
    high_threshold_canny: int | None
    include_hands_and_face_open_pose: bool | None
    return_base64_image: bool | None


def spec_delivery(
    task: TaskSpec | TaskRequest,
) -> tuple[Sequence[Any] | None, dict[str, Any] | None, str | None]:
    """A task's own sinks, its metadata, and its ``uploadEndpoint`` (the server's push)."""
    if isinstance(task, TaskSpec):
        return task.deliver_to, task.metadata, getattr(task, "upload_endpoint", None)
    return None, None, upload_endpoint(task)


def spec_image_refs(task: TaskSpec | TaskRequest) -> tuple[str, ...]:
    """imageUUIDs a spec or a raw protocol message reads."""
    return task.image_refs() if isinstance(task, TaskSpec) else image_uuids(task)
