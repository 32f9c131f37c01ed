"""Every wire message, both directions, as frozen pydantic v2 models.

Python attributes are the snake_case of the wire names (``promptText`` ->
``prompt_text``); the wire names are aliases, and both are accepted when a
model is built. Each class names its top-level frame key in ``wire_name``; the
codec (:mod:`protocol.codec`) wraps and unwraps that key.

Requests (client -> server) validate every constraint of the protocol's
reference and reject unknown fields, so a typo fails before anything is sent.
Responses (server -> client) are read tolerantly: unknown fields are kept in
``model_extra`` and optional fields may be missing, so newer servers and older
examples both read.

Building a model from Python with bad values raises
:class:`~protocol.errors.LocalProtocolError`; decoding a bad frame raises
:class:`~protocol.errors.RemoteProtocolError` (see the codec). Both carry one
:class:`~protocol.errors.FieldError` per broken rule, naming the wire field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    model_validator,
)

from .errors import LocalProtocolError
from .tables import (
    CLIP_SKIP_MAX,
    CONTROLNET_PREPROCESSORS,
    CONTROLNETS_MAX,
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL_ID,
    DEFAULT_STEPS,
    EXTENSION_NAME_MAX_LENGTH,
    EXTENSIONS_MAX,
    GUIDANCE_MAX,
    LANGUAGES,
    LORAS_MAX,
    MODEL_ID_MAX_LENGTH,
    MODELS,
    SCHEDULERS,
    SEED_MAX,
    SEED_MIN,
    SIZE_MAX,
    SIZE_MIN,
    SIZE_STEP,
    SIZES,
    STEPS_MAX,
    STYLES,
    TASK_TYPE_NAMES,
    URL_MAX_LENGTH,
    ModelFamily,
    TaskType,
    preprocessors_for,
    size_for,
)
from .validation import RuleError, field_errors

__all__ = [
    "ClientMessage",
    "CancelTask",
    "ControlNet",
    "ErrorMessage",
    "Image",
    "Lora",
    "Message",
    "NewConnection",
    "NewConnectionSessionUUID",
    "NewImageUpload",
    "NewImages",
    "NewProgress",
    "NewTask",
    "NewUploadedImageUUID",
    "Ping",
    "Pong",
    "PreProcessControlNetRequest",
    "PreProcessControlNetResult",
    "PromptEnhance",
    "PromptEnhancer",
    "RemoveBackgroundRequest",
    "RemoveBackgroundResult",
    "ReverseClip",
    "ReverseImageClip",
    "ServerMessage",
    "TaskRequest",
    "Text",
    "UpscaleGanRequest",
    "UpscaleGanResult",
    "join_negative_prompt",
    "split_negative_prompt",
]

# -- field types ---------------------------------------------------------------------------

_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.I)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
# AIR ids: "source:model@version", e.g. civitai:132942@146296.
_AIR = re.compile(r"[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+")

_GENERATION_TYPES: Final = frozenset(
    {
        TaskType.TEXT_TO_IMAGE,
        TaskType.IMAGE_TO_IMAGE,
        TaskType.INPAINTING,
        TaskType.CONTROLNET_TEXT_TO_IMAGE,
        TaskType.CONTROLNET_IMAGE_TO_IMAGE,
    }
)
_NEEDS_INIT_IMAGE: Final = frozenset(
    {TaskType.IMAGE_TO_IMAGE, TaskType.INPAINTING, TaskType.CONTROLNET_IMAGE_TO_IMAGE}
)
_NEEDS_CONTROLNET: Final = frozenset(
    {TaskType.CONTROLNET_TEXT_TO_IMAGE, TaskType.CONTROLNET_IMAGE_TO_IMAGE}
)


def _uuid4(value: str) -> str:
    if not _UUID4.fullmatch(value):
        raise ValueError("must be a UUIDv4 string (8-4-4-4-12 hex digits, version 4)")
    return value


def _uuid(value: str) -> str:
    if not _UUID.fullmatch(value):
        raise ValueError("must be a UUID string (8-4-4-4-12 hex digits)")
    return value


def _model_id(value: object) -> str | int:
    # Kept as received (the legacy SDK sends 13, the reference says "13"); compared as strings.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string or an integer")
    if isinstance(value, str) and len(value) > MODEL_ID_MAX_LENGTH:
        raise ValueError(f"must have at most {MODEL_ID_MAX_LENGTH} characters")
    if str(value) not in MODELS and not (isinstance(value, str) and _AIR.fullmatch(value)):
        known = ", ".join(MODELS)
        raise ValueError(f"must be a known model id ({known}) or an AIR id like civitai:1@2")
    return value


def _lora_model_id(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ValueError("must be a non-empty string (an AIR id like civitai:1@2) or an integer")
    if isinstance(value, str) and len(value) > MODEL_ID_MAX_LENGTH:
        raise ValueError(f"must have at most {MODEL_ID_MAX_LENGTH} characters")
    return value


def _at_most(count: int) -> BeforeValidator:
    # Counted before any item is validated: a hostile array costs nothing past its length.
    def check(value: object) -> object:
        if isinstance(value, list | tuple) and len(value) > count:
            raise ValueError(f"must have at most {count} items (got {len(value)})")
        return value

    return BeforeValidator(check)


def _task_type(*allowed: TaskType, rule: str | None = None) -> PlainValidator:
    # A plain validator: a lax enum would take True for 1, a strict one would refuse plain ints.
    def check(value: object) -> TaskType:
        if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
            names = " or ".join(str(int(t)) for t in allowed)
            raise ValueError(rule or f"must be {names} for this message")
        return TaskType(value)

    return PlainValidator(check)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _one_of(table: Any, rule: str) -> AfterValidator:
    def check(value: int) -> int:
        if value not in table:
            raise ValueError(rule)
        return value

    return AfterValidator(check)


def _ids(table: Any) -> str:
    return ", ".join(map(str, table))


_UNKNOWN_PREPROCESSOR: Final = "must be a known ControlNet preprocessor (canny, depth_midas, ...)"


def _is_true(value: object) -> bool:
    if value is not True:
        raise ValueError("must be true")
    return True


Int = Annotated[int, Strict()]  # strict: rejects bools, strings and (lossy) floats
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # accepts ints, not bools
TaskUUID = Annotated[str, Strict(), AfterValidator(_uuid4)]
ImageUUID = Annotated[str, Strict(), AfterValidator(_uuid)]
ModelId = Annotated[str | int, PlainValidator(_model_id)]
LoraModelId = Annotated[str | int, PlainValidator(_lora_model_id)]
Seed = Annotated[int, Strict(), Field(ge=SEED_MIN, le=SEED_MAX)]
Weight = Annotated[float, Strict(), Field(ge=0, le=1)]
Bool = Annotated[bool, Strict()]  # strict: true or false, not "yes", 1 or "on"
NonEmpty = Annotated[str, Strict(), Field(min_length=1)]
HttpUrl = Annotated[str, Strict(), Field(max_length=URL_MAX_LENGTH), AfterValidator(_http_url)]
LanguageId = Annotated[int, Strict(), _one_of(LANGUAGES, "must be a language id (1-298, not 193)")]
SizeId = Annotated[int, Strict(), _one_of(SIZES, f"must be a known sizeId ({_ids(SIZES)})")]
SchedulerId = Annotated[int, Strict(), _one_of(SCHEDULERS, "must be a known schedulerId (1-26)")]
StyleId = Annotated[int, Strict(), _one_of(STYLES, "must be a known styleId (1-12)")]
_SD15: Final = CONTROLNET_PREPROCESSORS[ModelFamily.SD15]
Preprocessor = Annotated[str, Strict(), _one_of(_SD15, _UNKNOWN_PREPROCESSOR)]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]
Side = Annotated[int, Strict(), Field(ge=SIZE_MIN, le=SIZE_MAX, multiple_of=SIZE_STEP)]
TrueFlag = Annotated[bool, PlainValidator(_is_true)]


# -- bases ---------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    wire_name: ClassVar[str]

    def __init__(self, /, **data: Any) -> None:
        # Built from Python means built by us: bad values are a *local* protocol error.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise LocalProtocolError(
                f"invalid {getattr(self, 'wire_name', type(self).__name__)}",
                field_errors(exc),
            ) from exc

    # Tell pydantic this is still the base __init__: ``model_validate`` (the codec, nested
    # models) then validates directly and raises ValidationError, which the codec turns into
    # a *remote* error; only construction from Python comes through here.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class _Request(_Model):
    model_config = ConfigDict(extra="forbid")


class _Response(_Model):
    model_config = ConfigDict(extra="allow")


# -- connection ----------------------------------------------------------------------------


class NewConnection(_Request):
    """``newConnection``: authenticate, optionally resuming a session and asking for extensions."""

    wire_name: ClassVar[str] = "newConnection"
    api_key: NonEmpty = Field(alias="apiKey", repr=False)
    connection_session_uuid: ImageUUID | None = Field(None, alias="connectionSessionUUID")
    extensions: (
        Annotated[
            tuple[Annotated[NonEmpty, Field(max_length=EXTENSION_NAME_MAX_LENGTH)], ...],
            _at_most(EXTENSIONS_MAX),
        ]
        | None
    ) = None


class NewConnectionSessionUUID(_Response):
    """Reply to ``newConnection``: the session's UUID, extensions accepted, tasks still held."""

    wire_name: ClassVar[str] = "newConnectionSessionUUID"
    connection_session_uuid: str = Field(alias="connectionSessionUUID")
    extensions: tuple[str, ...] | None = None
    known_task_uuids: tuple[str, ...] | None = Field(None, alias="knownTaskUUIDs")


class Ping(_Request):
    """``{"ping": true}``."""

    wire_name: ClassVar[str] = "ping"


class Pong(_Response):
    """``{"pong": true}``."""

    wire_name: ClassVar[str] = "pong"


class CancelTask(_Request):
    """``cancelTask`` (the ``cancel`` extension): stop a task the server accepted."""

    wire_name: ClassVar[str] = "cancelTask"
    task_uuid: TaskUUID = Field(alias="taskUUID")


# -- generation (task types 1, 2, 3, 9, 10) -------------------------------------------------


class Lora(_Request):
    """One LoRA: a model id (usually an AIR id) and its weight, 0 to 1."""

    model_id: LoraModelId = Field(alias="modelId")
    weight: Weight


class ControlNet(_Request):
    """One ControlNet guide for a generation task."""

    preprocessor: Preprocessor
    weight: Weight
    start_step: Annotated[int, Strict(), Field(ge=0)] | None = Field(None, alias="startStep")
    end_step: Annotated[int, Strict(), Field(ge=0)] | None = Field(None, alias="endStep")
    start_step_percentage: Weight | None = Field(None, alias="startStepPercentage")
    end_step_percentage: Weight | None = Field(None, alias="endStepPercentage")
    guide_image_uuid: ImageUUID | None = Field(None, alias="guideImageUUID")
    guide_image_url: HttpUrl | None = Field(None, alias="guideImageUrl")
    control_mode: Literal["balanced", "prompt", "controlnet"] | None = Field(
        None, alias="controlMode"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        steps = (self.start_step, self.end_step)
        percents = (self.start_step_percentage, self.end_step_percentage)
        if any(v is not None for v in steps) and any(v is not None for v in percents):
            raise RuleError(
                "startStepPercentage",
                self.start_step_percentage,
                "give startStep/endStep or startStepPercentage/endStepPercentage, not both",
            )
        _check_range("startStep", "endStep", *steps)
        _check_range("startStepPercentage", "endStepPercentage", *percents)
        if all(v is None for v in (*steps, *percents)):
            raise RuleError("startStep", None, "startStep/endStep (or the percentages) required")
        if (self.guide_image_uuid is None) == (self.guide_image_url is None):
            raise RuleError(
                "guideImageUUID", None, "give exactly one of guideImageUUID and guideImageUrl"
            )
        return self


def _check_range(start_name: str, end_name: str, start: float | None, end: float | None) -> None:
    if (start is None) != (end is None):
        missing = end_name if end is None else start_name
        raise RuleError(missing, None, f"{start_name} and {end_name} go together")
    if start is not None and end is not None and end <= start:
        raise RuleError(end_name, end, f"must be after {start_name} ({start})")


class NewTask(_Request):
    """``newTask``: generate images (taskType 1, 2, 3, 9 or 10).

    A taskType must agree with its fields: image-to-image (2) and ControlNet
    image-to-image (10) need ``imageInitiatorUUID``, inpainting (3) also
    ``imageMaskInitiatorUUID``; ControlNet tasks (9, 10) need ``controlNet``.
    Two of its fields are this project's extensions, sent only when set: ``strength``
    (0-1, how far an image-to-image result may move from its init image), and
    ``width`` with ``height`` (both or neither; 64-2048, multiples of 8), a size the
    ``sizeId`` table lacks, which replaces ``sizeId``.
    """

    wire_name: ClassVar[str] = "newTask"
    task_uuid: TaskUUID = Field(alias="taskUUID")
    prompt_text: NonEmpty = Field(alias="promptText")
    number_results: PositiveInt = Field(1, alias="numberResults")
    model_id: ModelId = Field(DEFAULT_MODEL_ID, alias="modelId")
    size_id: SizeId = Field(1, alias="sizeId")
    task_type: Annotated[
        TaskType,
        _task_type(
            *_GENERATION_TYPES,
            rule="newTask takes taskType 1, 2, 3, 9 or 10 (other types have their own messages)",
        ),
    ] = Field(TaskType.TEXT_TO_IMAGE, alias="taskType")
    steps: Annotated[int, Strict(), Field(ge=1, le=STEPS_MAX)] = DEFAULT_STEPS
    g_scale: Annotated[float, Strict(), Field(ge=0, le=GUIDANCE_MAX, allow_inf_nan=False)] = Field(
        DEFAULT_GUIDANCE, alias="gScale"
    )
    seed: Seed | None = None
    scheduler_id: SchedulerId | None = Field(None, alias="schedulerId")
    style_id: StyleId | None = Field(None, alias="styleId")
    clip_skip: Annotated[int, Strict(), Field(ge=0, le=CLIP_SKIP_MAX)] | None = Field(
        None, alias="clipSkip"
    )
    prompt_language_id: LanguageId | None = Field(None, alias="promptLanguageId")
    use_cache: Bool | None = Field(None, alias="useCache")
    save_to_cache: Bool | None = Field(None, alias="saveToCache")
    offset: Annotated[int, Strict(), Field(ge=0)] = 0
    check_nsfw: Bool = Field(False, alias="checkNsfw")
    use_prompt_weighting: Bool = Field(False, alias="usePromptWeighting")
    upload_endpoint: HttpUrl | None = Field(None, alias="uploadEndpoint")
    lora: Annotated[tuple[Lora, ...], _at_most(LORAS_MAX)] | None = None
    control_net: Annotated[tuple[ControlNet, ...], _at_most(CONTROLNETS_MAX)] | None = Field(
        None, alias="controlNet"
    )
    image_initiator_uuid: ImageUUID | None = Field(None, alias="imageInitiatorUUID")
    image_mask_initiator_uuid: ImageUUID | None = Field(None, alias="imageMaskInitiatorUUID")
    strength: Weight | None = None
    width: Side | None = None
    height: Side | None = None
    return_base64_image: Bool = Field(False, alias="returnBase64Image")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.width is not None or self.height is not None:
            self._check_free_size()
        self._check_images()
        self._check_control_net()
        if self.save_to_cache is False and self.upload_endpoint is None:
            raise RuleError("saveToCache", False, "can be false only with an uploadEndpoint")
        return self

    def _check_images(self) -> None:
        needs_init = self.task_type in _NEEDS_INIT_IMAGE
        if not needs_init and self.image_initiator_uuid is None and self.strength is None:
            if self.image_mask_initiator_uuid is None:
                return  # a plain text-to-image, the hot path: nothing to check
        image_fields = (
            ("imageInitiatorUUID", self.image_initiator_uuid, needs_init),
            (
                "imageMaskInitiatorUUID",
                self.image_mask_initiator_uuid,
                self.task_type is TaskType.INPAINTING,
            ),
        )
        for wire_name, value, used in image_fields:
            if used and value is None:
                raise RuleError(wire_name, None, f"is required for {self._kind()}")
            if not used and value is not None:
                raise RuleError(wire_name, value, f"is not used by {self._kind()}")
        if not needs_init and self.strength is not None:
            raise RuleError("strength", self.strength, f"is not used by {self._kind()}")

    def _check_free_size(self) -> None:
        for wire_name, value in (("width", self.width), ("height", self.height)):
            if value is None:
                raise RuleError(wire_name, None, "is required with the other of width and height")
        if "size_id" in self.model_fields_set:
            rule = "cannot be given with width and height (they replace it)"
            raise RuleError("sizeId", self.size_id, rule)

    def _kind(self) -> str:
        # Only built when a rule is broken: valid tasks are the hot path.
        return f"taskType {int(self.task_type)} ({TASK_TYPE_NAMES[self.task_type]})"

    def _check_control_net(self) -> None:
        if self.task_type in _NEEDS_CONTROLNET and not self.control_net:
            raise RuleError(
                "controlNet", self.control_net, f"is required for taskType {int(self.task_type)}"
            )
        if not self.control_net:
            return
        allowed = preprocessors_for(self.model_id)
        for i, guide in enumerate(self.control_net or ()):
            if guide.preprocessor not in allowed:
                raise RuleError(
                    f"controlNet[{i}].preprocessor",
                    guide.preprocessor,
                    f"is not available for modelId {self.model_id!r}",
                )
            if guide.end_step is not None and guide.end_step > self.steps:
                raise RuleError(
                    f"controlNet[{i}].endStep",
                    guide.end_step,
                    f"must be at most steps ({self.steps})",
                )

    @property
    def dimensions(self) -> tuple[int, int]:
        """The ``(width, height)`` asked for: the free size, else the ``sizeId``'s."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        return size_for(self.size_id)

    @property
    def positive_prompt(self) -> str:
        """The prompt without its legacy ``-no`` negative part."""
        return split_negative_prompt(self.prompt_text)[0]

    @property
    def negative_prompt(self) -> str | None:
        """The legacy negative prompt (``promptText`` ending in `` -no <negative>``), if any."""
        return split_negative_prompt(self.prompt_text)[1]

    @property
    def expected_results(self) -> int:
        """How many distinct images complete this task."""
        return self.number_results


_NEGATIVE_MARK: Final = " -no "


def split_negative_prompt(prompt_text: str) -> tuple[str, str | None]:
    """Split the legacy ``"<positive> -no <negative>"`` convention into its two parts."""
    positive, mark, negative = prompt_text.partition(_NEGATIVE_MARK)
    if not mark:
        return prompt_text, None
    return positive.strip(), negative.strip() or None


def join_negative_prompt(positive: str, negative: str | None) -> str:
    """Join a prompt and a negative prompt the way legacy clients send them."""
    return f"{positive}{_NEGATIVE_MARK}{negative}" if negative else positive


class Image(_Response):
    """One image of a result frame (``newImages``, ``newUpscaleGan``, ``newRemoveBackground``)."""

    image_src: str = Field(alias="imageSrc")
    image_uuid: str = Field(alias="imageUUID")
    task_uuid: str = Field(alias="taskUUID")
    b_nsfw_content: bool = Field(False, alias="bNSFWContent")
    image_alt_text: str | None = Field(None, alias="imageAltText")
    cost: Float | None = None
    image_base64_data: str | None = Field(None, alias="imageBase64Data", repr=False)
    seed: Seed | None = None  # the ``seed`` extension: the seed this image was made with


class NewImages(_Response):
    """``newImages``: one or more images, possibly of several tasks."""

    wire_name: ClassVar[str] = "newImages"
    images: tuple[Image, ...]
    total_available_results: Int | None = Field(None, alias="totalAvailableResults")


class NewProgress(_Response):
    """``newProgress`` (the ``progress`` extension): a step of a running task.

    ``imageIndex`` (ours) says which of the task's results the step is of (0-based, in the
    order they are delivered); a server that leaves it out makes them one after another.
    ``previewBase64`` (the ``preview`` extension) is a small JPEG of that image so far."""

    wire_name: ClassVar[str] = "newProgress"
    task_uuid: str = Field(alias="taskUUID")
    step: Annotated[int, Strict(), Field(ge=0)]
    steps: Annotated[int, Strict(), Field(ge=1)]
    image_index: Annotated[int, Strict(), Field(ge=0)] | None = Field(None, alias="imageIndex")
    preview_base64: str | None = Field(None, alias="previewBase64", repr=False)


# -- the other task types ------------------------------------------------------------------


class NewImageUpload(_Request):
    """``newImageUpload`` (taskType 7): store an image (base64 or a data URI), get its UUID."""

    wire_name: ClassVar[str] = "newImageUpload"
    image_base64: NonEmpty = Field(alias="imageBase64", repr=False)
    task_uuid: TaskUUID = Field(alias="taskUUID")
    task_type: Annotated[TaskType, _task_type(TaskType.IMAGE_UPLOAD)] = Field(
        TaskType.IMAGE_UPLOAD, alias="taskType"
    )
    expected_results: ClassVar[int] = 1


class NewUploadedImageUUID(_Response):
    """Reply to ``newImageUpload``."""

    wire_name: ClassVar[str] = "newUploadedImageUUID"
    new_image_uuid: str = Field(alias="newImageUUID")
    new_image_src: str = Field(alias="newImageSrc")
    task_uuid: str = Field(alias="taskUUID")


class PreProcessControlNetRequest(_Request):
    """``newPreProcessControlNet`` request (taskType 11): make a guide image from an image."""

    wire_name: ClassVar[str] = "newPreProcessControlNet"
    task_uuid: TaskUUID = Field(alias="taskUUID")
    pre_processor_type: Preprocessor = Field(alias="preProcessorType")
    guide_image_uuid: ImageUUID | None = Field(None, alias="guideImageUUID")
    guide_image_url: HttpUrl | None = Field(None, alias="guideImageUrl")
    width: Annotated[int, Strict(), Field(ge=64, le=2048)] | None = None
    height: Annotated[int, Strict(), Field(ge=64, le=2048)] | None = None
    low_threshold_canny: Annotated[int, Strict(), Field(ge=0, le=255)] | None = Field(
        None, alias="lowThresholdCanny"
    )
    high_threshold_canny: Annotated[int, Strict(), Field(ge=0, le=255)] | None = Field(
        None, alias="highThresholdCanny"
    )
    include_hands_and_face_open_pose: Bool = Field(False, alias="includeHandsAndFaceOpenPose")
    return_base64_image: Bool = Field(False, alias="returnBase64Image")
    task_type: Annotated[TaskType, _task_type(TaskType.CONTROLNET_PREPROCESS)] | None = Field(
        None, alias="taskType"
    )
    expected_results: ClassVar[int] = 1

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.guide_image_uuid is None) == (self.guide_image_url is None):
            raise RuleError(
                "guideImageUUID", None, "give exactly one of guideImageUUID and guideImageUrl"
            )
        low, high = self.low_threshold_canny, self.high_threshold_canny
        if low is not None and high is not None and high <= low:
            raise RuleError("highThresholdCanny", high, f"must be above lowThresholdCanny ({low})")
        return self


class PreProcessControlNetResult(_Response):
    """``newPreProcessControlNet`` reply: the guide image made."""

    wire_name: ClassVar[str] = "newPreProcessControlNet"
    task_uuid: str = Field(alias="taskUUID")
    new_image_uuid: str = Field(alias="newImageUUID")
    new_image_src: str = Field(alias="newImageSrc")
    init_image_uuid: str | None = Field(None, alias="initImageUUID")
    b_nsfw_content: bool = Field(False, alias="bNSFWContent")
    image_base64_data: str | None = Field(None, alias="imageBase64Data", repr=False)


class UpscaleGanRequest(_Request):
    """``newUpscaleGan`` request (taskType 6): enlarge an image 2, 3 or 4 times."""

    wire_name: ClassVar[str] = "newUpscaleGan"
    image_uuid: ImageUUID = Field(alias="imageUUID")
    task_uuid: TaskUUID = Field(alias="taskUUID")
    upscale_factor: Annotated[int, Strict(), Field(ge=2, le=4)] = Field(alias="upscaleFactor")
    task_type: Annotated[TaskType, _task_type(TaskType.IMAGE_UPSCALE)] | None = Field(
        None, alias="taskType"
    )
    expected_results: ClassVar[int] = 1


class UpscaleGanResult(_Response):
    """``newUpscaleGan`` reply."""

    wire_name: ClassVar[str] = "newUpscaleGan"
    images: tuple[Image, ...]


class RemoveBackgroundRequest(_Request):
    """``newRemoveBackground`` request (taskType 8)."""

    wire_name: ClassVar[str] = "newRemoveBackground"
    image_uuid: ImageUUID = Field(alias="imageUUID")
    task_uuid: TaskUUID = Field(alias="taskUUID")
    task_type: Annotated[TaskType, _task_type(TaskType.REMOVE_BACKGROUND)] = Field(
        TaskType.REMOVE_BACKGROUND, alias="taskType"
    )
    expected_results: ClassVar[int] = 1


class RemoveBackgroundResult(_Response):
    """``newRemoveBackground`` reply: an image with an alpha channel."""

    wire_name: ClassVar[str] = "newRemoveBackground"
    images: tuple[Image, ...]


class ReverseImageClip(_Request):
    """``newReverseImageClip`` (taskType 4): caption an image."""

    wire_name: ClassVar[str] = "newReverseImageClip"
    image_uuid: ImageUUID = Field(alias="imageUUID")
    task_uuid: TaskUUID = Field(alias="taskUUID")
    task_type: Annotated[TaskType, _task_type(TaskType.IMAGE_TO_TEXT)] | None = Field(
        None, alias="taskType"
    )
    expected_results: ClassVar[int] = 1


class PromptEnhance(_Request):
    """``newPromptEnhance`` (taskType 5): ``promptVersions`` richer versions of a prompt."""

    wire_name: ClassVar[str] = "newPromptEnhance"
    prompt: NonEmpty
    task_uuid: TaskUUID = Field(alias="taskUUID")
    prompt_max_length: Annotated[int, Strict(), Field(ge=1, le=380)] = Field(
        380, alias="promptMaxLength"
    )
    prompt_versions: Annotated[int, Strict(), Field(ge=1, le=5)] = Field(1, alias="promptVersions")
    prompt_language_id: LanguageId | None = Field(None, alias="promptLanguageId")
    task_type: Annotated[TaskType, _task_type(TaskType.PROMPT_ENHANCER)] | None = Field(
        None, alias="taskType"
    )

    @property
    def expected_results(self) -> int:
        """How many distinct texts complete this task."""
        return self.prompt_versions


class Text(_Response):
    """One text of a ``newReverseClip`` or ``newPromptEnhancer`` frame."""

    task_uuid: str = Field(alias="taskUUID")
    text: str


class ReverseClip(_Response):
    """``newReverseClip``: the caption of an image."""

    wire_name: ClassVar[str] = "newReverseClip"
    texts: tuple[Text, ...]


class PromptEnhancer(_Response):
    """``newPromptEnhancer``: enhanced prompts."""

    wire_name: ClassVar[str] = "newPromptEnhancer"
    texts: tuple[Text, ...]


class ErrorMessage(_Response):
    """The flat error frame: ``{"error": true, "errorId": N, "errorMessage": ..., "taskUUID"?}``.

    ``errorCode`` is the ``taskErrors`` extension's stable name for the id.
    Unknown ids are kept as they are.
    """

    wire_name: ClassVar[str] = "error"
    error: TrueFlag = True
    error_id: Int = Field(alias="errorId")
    error_message: str = Field("", alias="errorMessage")
    task_uuid: str | None = Field(None, alias="taskUUID")
    error_code: str | None = Field(None, alias="errorCode")


TaskRequest = (
    NewTask
    | NewImageUpload
    | PreProcessControlNetRequest
    | UpscaleGanRequest
    | RemoveBackgroundRequest
    | ReverseImageClip
    | PromptEnhance
)
ClientMessage = NewConnection | Ping | CancelTask | TaskRequest
ServerMessage = (
    NewConnectionSessionUUID
    | Pong
    | NewImages
    | NewProgress
    | NewUploadedImageUUID
    | PreProcessControlNetResult
    | UpscaleGanResult
    | RemoveBackgroundResult
    | ReverseClip
    | PromptEnhancer
    | ErrorMessage
)
Message = ClientMessage | ServerMessage
