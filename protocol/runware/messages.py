"""The current Runware dialect's messages, both directions, as pydantic v2 models.

A frame a client sends is a JSON array of *tasks*, each an object naming its
``taskType``; a frame a server sends is ``{"data": [items]}`` or
``{"errors": [errors]}``, where one frame may carry items of several tasks. Each
model here is one task or one item; :mod:`protocol.runware.codec` reads and writes
the arrays around them.

The models check the shape of each field: its type, and the choices the current
dialect names (``deliveryMethod``, ``outputType``). The limits that both dialects share
(steps, guidance, sizes, prompt lengths, how many results) are the legacy messages'
(:mod:`protocol.messages`): :mod:`protocol.runware.translate` builds the legacy message
and names what it refuses by the current dialect's field names, so every limit is
written once. Python names are the snake_case of the wire names, as in the legacy
models, except where that would clash with a legacy field of another spelling
(``checkNSFW`` is ``nsfw_check``; ``guideImageURL`` is ``guide_url``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, Strict

from ..messages import Bool, Float, Int, NonEmpty, Seed, _Request, _Response

__all__ = [
    "TASK_TYPE_ALIASES",
    "Authentication",
    "AuthenticationResult",
    "Caption",
    "ControlNetGuide",
    "ControlNetPreprocess",
    "ErrorItem",
    "GetResponse",
    "ImageInference",
    "ImageItem",
    "ImageUpload",
    "LoraItem",
    "Ping",
    "PongItem",
    "PreprocessItem",
    "PromptEnhance",
    "RemoveBackground",
    "ResultItem",
    "StatusItem",
    "Task",
    "TextItem",
    "UploadItem",
    "Upscale",
]

Str = Annotated[str, Strict()]
DeliveryMethod = Literal["sync", "async"]
OutputType = Literal["URL", "base64Data", "dataURI"]
OutputFormat = Literal["JPG", "PNG", "WEBP"]


class _Task(_Request):
    """A task a client sends: its ``taskType`` names it (``wire_name``, or one of its
    older names); the codec writes it."""

    task_type: Str | None = Field(None, alias="taskType")


class _WorkTask(_Task):
    """A task with a taskUUID and the delivery options every work task takes."""

    task_uuid: NonEmpty = Field(alias="taskUUID")
    delivery_method: DeliveryMethod | None = Field(None, alias="deliveryMethod")
    include_cost: Bool | None = Field(None, alias="includeCost")


class _ImageOutputs(_WorkTask):
    """The options of a task that makes images."""

    output_type: OutputType | None = Field(None, alias="outputType")
    output_format: OutputFormat | None = Field(None, alias="outputFormat")
    output_quality: Annotated[int, Strict(), Field(ge=20, le=99)] | None = Field(
        None, alias="outputQuality"
    )
    upload_endpoint: Str | None = Field(None, alias="uploadEndpoint")


class _InputImage(_ImageOutputs):
    """A task on one image: ``inputImage`` (older SDKs) or ``inputs.image`` (1.8)."""

    input_image: NonEmpty | None = Field(None, alias="inputImage")
    inputs: dict[str, Any] | None = None
    model: Str | None = None

    @property
    def image(self) -> Any:
        """The image the task works on, wherever the client put it."""
        if self.input_image is not None:
            return self.input_image
        return (self.inputs or {}).get("image")


# -- connection ----------------------------------------------------------------------------


class Authentication(_Task):
    """``authentication``: the first task on a socket; resumes a session when it names one."""

    wire_name: ClassVar[str] = "authentication"
    api_key: NonEmpty = Field(alias="apiKey", repr=False)
    connection_session_uuid: Str | None = Field(None, alias="connectionSessionUUID")


class Ping(_Task):
    """``ping``: the heartbeat."""

    wire_name: ClassVar[str] = "ping"
    ping: Literal[True] = True


class GetResponse(_WorkTask):
    """``getResponse``: the results of an earlier task so far (its taskUUID)."""

    wire_name: ClassVar[str] = "getResponse"


# -- work ----------------------------------------------------------------------------------


class LoraItem(_Request):
    """One LoRA of an ``imageInference``."""

    model: Str | Int
    weight: Float = 1.0


class ControlNetGuide(_Request):
    """One ControlNet guide of an ``imageInference``."""

    model: Str | None = None
    preprocessor: Str | None = None
    guide_image: NonEmpty = Field(alias="guideImage")
    weight: Float = 1.0
    start_step: Int | None = Field(None, alias="startStep")
    end_step: Int | None = Field(None, alias="endStep")
    start_step_percentage: Float | None = Field(None, alias="startStepPercentage")
    end_step_percentage: Float | None = Field(None, alias="endStepPercentage")
    control_mode: Str | None = Field(None, alias="controlMode")


class ImageInference(_ImageOutputs):
    """``imageInference``: text-to-image, image-to-image (``seedImage``), inpainting
    (``maskImage`` too), with LoRAs and ControlNet guides."""

    wire_name: ClassVar[str] = "imageInference"
    positive_prompt: NonEmpty = Field(alias="positivePrompt")
    negative_prompt: Str | None = Field(None, alias="negativePrompt")
    model: Str | Int | None = None
    number_results: Int = Field(1, alias="numberResults")
    width: Int | None = None
    height: Int | None = None
    steps: Int | None = None
    cfg_scale: Float | None = Field(None, alias="CFGScale")
    seed: Seed | None = None
    scheduler: Str | None = None
    clip_skip: Int | None = Field(None, alias="clipSkip")
    nsfw_check: Bool | None = Field(None, alias="checkNSFW")
    prompt_weighting: Literal["compel", "sdEmbeds"] | None = Field(None, alias="promptWeighting")
    seed_image: NonEmpty | None = Field(None, alias="seedImage")
    mask_image: NonEmpty | None = Field(None, alias="maskImage")
    strength: Float | None = None
    lora: tuple[LoraItem, ...] | None = None
    control_net: tuple[ControlNetGuide, ...] | None = Field(None, alias="controlNet")


class ImageUpload(_WorkTask):
    """``imageUpload``: an image as a data URI or plain base64."""

    wire_name: ClassVar[str] = "imageUpload"
    image: NonEmpty = Field(repr=False)


class Upscale(_InputImage):
    """``upscale`` (``imageUpscale`` in older SDKs): enlarge an image 2, 3 or 4 times."""

    wire_name: ClassVar[str] = "upscale"
    upscale_factor: Int = Field(2, alias="upscaleFactor")


class RemoveBackground(_InputImage):
    """``removeBackground`` (``imageBackgroundRemoval``): the subject on transparency."""

    wire_name: ClassVar[str] = "removeBackground"
    settings: dict[str, Any] | None = None


class Caption(_InputImage):
    """``caption`` (``imageCaption``): describe an image in words."""

    wire_name: ClassVar[str] = "caption"


class ControlNetPreprocess(_InputImage):
    """``controlNetPreprocess`` (``imageControlNetPreProcess``): a guide image."""

    wire_name: ClassVar[str] = "controlNetPreprocess"
    pre_processor_type: NonEmpty = Field(alias="preProcessorType")
    width: Int | None = None
    height: Int | None = None
    low_threshold_canny: Int | None = Field(None, alias="lowThresholdCanny")
    high_threshold_canny: Int | None = Field(None, alias="highThresholdCanny")
    include_hands_and_face_open_pose: Bool | None = Field(None, alias="includeHandsAndFaceOpenPose")


class PromptEnhance(_WorkTask):
    """``promptEnhance``: versions of a prompt, richer in detail."""

    wire_name: ClassVar[str] = "promptEnhance"
    prompt: NonEmpty
    prompt_max_length: Int | None = Field(None, alias="promptMaxLength")
    prompt_versions: Int | None = Field(None, alias="promptVersions")
    model: Str | None = None


Task = (
    Authentication
    | Ping
    | GetResponse
    | ImageInference
    | ImageUpload
    | Upscale
    | RemoveBackground
    | Caption
    | ControlNetPreprocess
    | PromptEnhance
)

#: Older names of task types that clients still send, by the name this dialect uses now.
TASK_TYPE_ALIASES: Final = {
    "imageUpscale": Upscale.wire_name,
    "imageBackgroundRemoval": RemoveBackground.wire_name,
    "removeImageBackground": RemoveBackground.wire_name,
    "imageCaption": Caption.wire_name,
    "imageControlNetPreProcess": ControlNetPreprocess.wire_name,
}


# -- results -------------------------------------------------------------------------------


class _Item(_Response):
    """An item of a ``{"data": [...]}`` frame; unknown fields are kept."""

    task_type: Str = Field(alias="taskType")


class _TaskItem(_Item):
    task_uuid: Str = Field(alias="taskUUID")
    cost: Float | None = None


class AuthenticationResult(_Item):
    """The server accepted the key: the session's UUID, to resume it later."""

    wire_name: ClassVar[str] = "authentication"
    connection_session_uuid: Str = Field(alias="connectionSessionUUID")


class PongItem(_Item):
    """The answer to ``ping``."""

    wire_name: ClassVar[str] = "ping"
    pong: Literal[True] = True


class ImageItem(_TaskItem):
    """An image of an ``imageInference``, ``upscale`` or ``removeBackground`` task."""

    wire_name: ClassVar[str] = "image"
    image_uuid: Str = Field(alias="imageUUID")
    image_url: Str | None = Field(None, alias="imageURL")
    image_base64_data: Str | None = Field(None, alias="imageBase64Data", repr=False)
    image_data_uri: Str | None = Field(None, alias="imageDataURI", repr=False)
    seed: Seed | None = None
    nsfw_content: Bool = Field(False, alias="NSFWContent")


class TextItem(_TaskItem):
    """A caption, or one enhanced prompt."""

    wire_name: ClassVar[str] = "text"
    text: Str


class UploadItem(_TaskItem):
    """The answer to ``imageUpload``."""

    wire_name: ClassVar[str] = "imageUpload"
    image_uuid: Str = Field(alias="imageUUID")
    image_url: Str = Field(alias="imageURL")


class PreprocessItem(_TaskItem):
    """The guide image a ``controlNetPreprocess`` made."""

    wire_name: ClassVar[str] = "controlNetPreprocess"
    guide_image_uuid: Str = Field(alias="guideImageUUID")
    input_image_uuid: Str | None = Field(None, alias="inputImageUUID")
    guide_url: Str | None = Field(None, alias="guideImageURL")
    guide_image_base64_data: Str | None = Field(None, alias="guideImageBase64Data", repr=False)
    nsfw_content: Bool = Field(False, alias="NSFWContent")


class StatusItem(_TaskItem):
    """An acknowledgement (``deliveryMethod: async``) or a ``getResponse`` answer that
    says the task is still running: no result in it."""

    wire_name: ClassVar[str] = "status"
    status: Str | None = None  # processing, pending, success; error (then ``error`` says)
    error: dict[str, Any] | None = None

    def failure(self) -> ErrorItem:
        """The error of an item whose status is ``error`` (as an error entry says it)."""
        error = self.error or {}
        code, message = error.get("code"), error.get("message")
        return ErrorItem.model_construct(
            code=code if isinstance(code, str) else "error",
            message=message if isinstance(message, str) else "",
            task_uuid=self.task_uuid,
            task_type=self.task_type,
            parameter=error.get("parameter") if isinstance(error.get("parameter"), str) else None,
        )


class ErrorItem(_Response):
    """One error of an ``{"errors": [...]}`` frame. ``parameter`` names the field."""

    wire_name: ClassVar[str] = "error"
    code: Str
    message: Str = ""
    task_uuid: Str | None = Field(None, alias="taskUUID")
    task_type: Str | None = Field(None, alias="taskType")
    parameter: Str | None = None


ResultItem = (
    AuthenticationResult
    | PongItem
    | ImageItem
    | TextItem
    | UploadItem
    | PreprocessItem
    | StatusItem
)
