"""What every vocabulary shares: the plan a request becomes, the outcome a response is built
from, and the helpers that keep the four mappings alike.

Theory of operation. A vocabulary is pure: it turns another API's request into a
:class:`Plan` and an :class:`Outcome` into that API's response, and never does I/O. The
orchestrator (``orchestrator.vocabularies``) carries a plan out:

1. upload each of :attr:`Plan.images` (bytes, or a URL it fetches), which names them by
   imageUUID;
2. when :attr:`Plan.enhance_prompt`, replace the prompt by our prompt enhancer's version;
3. submit :meth:`Plan.new_task`, one ``newTask`` for the whole request;
4. when :attr:`Plan.upscale`, upscale each image by that factor (AKI.IO's ``preview``
   computes at half the resolution);
5. read the images' bytes when :attr:`Plan.inline` (the API answers in base64);
6. build the response with :meth:`Vocabulary.respond`, and POST it to
   :attr:`Plan.webhook` when there is one.

Everything that can be refused is refused by :meth:`Vocabulary.prepare`, before step 1,
with a :class:`~protocol.errors.LocalProtocolError` naming the parameter as that API names
it. A task that fails after that gets that API's failure response
(:meth:`Vocabulary.refuse`), not an exception.
"""

from __future__ import annotations

import base64
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from ..errors import FieldError, LocalProtocolError
from ..messages import NewTask, join_negative_prompt
from ..tables import GUIDANCE_MAX, SIZE_STEP, TaskType, size_id_for
from ..validation import field_errors

__all__ = [
    "ApiModel",
    "ImageInput",
    "Outcome",
    "OutputImage",
    "Plan",
    "Vocabulary",
    "YesNo",
    "blank_png",
    "capped_guidance",
    "data_uri",
    "image_kind",
    "refused",
    "size_fields",
    "snapped",
]

Role = Literal["init", "mask"]
_ROLE_FIELDS: Final[Mapping[str, str]] = {
    "init": "imageInitiatorUUID",
    "mask": "imageMaskInitiatorUUID",
}
# A stand-in imageUUID, to check a plan's task before any image is uploaded.
_SOME_UUID: Final = "00000000-0000-4000-8000-000000000000"


class ApiModel(BaseModel):
    """A request of another API: its own parameter names, every unknown one refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _yes_no(value: object) -> object:
    # The API's own "yes"/"no" strings; JSON booleans mean the same.
    if isinstance(value, str) and value.lower() in ("yes", "no"):
        return value.lower() == "yes"
    if isinstance(value, bool):
        return value
    raise ValueError('must be "yes" or "no"')


YesNo = Annotated[bool, BeforeValidator(_yes_no)]


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image a request brings: bytes, base64 text, a data URI or an http(s) URL,
    which the orchestrator uploads. ``parameter`` is its name in the request."""

    role: Role
    source: str | bytes = field(repr=False)
    parameter: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a request asks for, in our terms (see the module docstring).

    ``fields`` are the ``newTask`` fields by wire name, without taskUUID, taskType, the
    prompt and the image references; ``settings`` is what took effect, in the API's own
    names, for its response; ``names`` maps wire names back to the API's parameters,
    for errors.
    """

    task_type: TaskType
    prompt: str
    fields: Mapping[str, Any]
    settings: Mapping[str, Any]
    names: Mapping[str, str]
    negative_prompt: str | None = None
    images: tuple[ImageInput, ...] = ()
    enhance_prompt: bool = False
    upscale: int | None = None
    inline: bool = False
    webhook: str | None = None

    def new_task(
        self, task_uuid: str, image_uuids: Mapping[str, str], prompt: str | None = None
    ) -> NewTask:
        """The task, for the uploaded images' imageUUIDs (by role) and the prompt (the
        enhanced one, when there is). Raises LocalProtocolError."""
        body: dict[str, Any] = {
            "taskUUID": task_uuid,
            "taskType": self.task_type,
            "promptText": join_negative_prompt(prompt or self.prompt, self.negative_prompt),
            **self.fields,
        }
        for role, image_uuid in image_uuids.items():
            body[_ROLE_FIELDS[role]] = image_uuid
        return NewTask(**body)

    def check(self, task_uuid: str) -> None:
        """Build the task once, with stand-in imageUUIDs, and name any broken rule by the
        API's parameter."""
        try:
            self.new_task(task_uuid, {image.role: _SOME_UUID for image in self.images})
        except LocalProtocolError as exc:
            errors = []
            for error in exc.errors:
                name = self.names.get(error.field.partition("[")[0], error.field)
                errors.append(FieldError(name, name, error.value, error.rule))
            raise LocalProtocolError(exc.message, tuple(errors)) from None


@dataclass(frozen=True, slots=True)
class OutputImage:
    """One image made for a request. ``data`` is set when the plan asked for the bytes."""

    image_uuid: str
    url: str
    width: int
    height: int
    seed: int | None = None
    cost: float | None = None
    nsfw: bool = False
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the orchestrator got for a plan: the images, the prompt they were made from
    (the enhanced one, if it was), the task's UUID, the summed cost of every step, the
    seconds from submitting to the last image, and the credits left, where the caller
    keeps a balance."""

    task_uuid: str
    images: tuple[OutputImage, ...]
    prompt: str
    cost: float
    seconds: float
    credits_left: float | None = None


R = TypeVar("R", bound=ApiModel)


class Vocabulary(ABC, Generic[R]):
    """One other API's request and response shapes, mapped onto ours."""

    name: ClassVar[str]  # what users pass: ``orch.submit_as(name, ...)``
    title: ClassVar[str]  # the API's name, for messages
    request_model: ClassVar[type[ApiModel]]

    def parse(self, data: Mapping[str, Any] | ApiModel) -> R:
        """The request, checked against the API's documented limits. Raises
        LocalProtocolError naming the parameter as the API names it."""
        if isinstance(data, self.request_model):
            return data  # type: ignore[return-value]
        if isinstance(data, BaseModel) or not isinstance(data, Mapping):
            raise LocalProtocolError(
                f"a {self.title} request is an object of its parameters, not {type(data).__name__}"
            )
        try:
            return self.request_model.model_validate(dict(data))  # type: ignore[return-value]
        except ValidationError as exc:
            # Named as the API names them: its own parameters, not our wire's camelCase.
            errors = tuple(
                FieldError(e.python_name, e.python_name, e.value, e.rule) for e in field_errors(exc)
            )
            raise LocalProtocolError(f"invalid {self.title} request", errors) from None

    def prepare(self, data: Mapping[str, Any] | ApiModel, task_uuid: str) -> tuple[R, Plan]:
        """Parse, plan and check a request: everything refusable is refused here."""
        request = self.parse(data)
        plan = self.plan(request)
        plan.check(task_uuid)
        return request, plan

    @abstractmethod
    def plan(self, request: R) -> Plan:
        """Map a parsed request onto our task (raises LocalProtocolError)."""

    @abstractmethod
    def respond(self, request: R, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        """The API's response for a finished request."""

    @abstractmethod
    def refuse(self, message: str, request: R | None = None) -> dict[str, Any]:
        """The API's response for a request that failed (``message`` says why)."""


def refused(title: str, parameter: str, value: Any, rule: str) -> LocalProtocolError:
    """The error for one broken rule of another API's request."""
    return LocalProtocolError(
        f"invalid {title} request", (FieldError(parameter, parameter, value, rule),)
    )


def snapped(value: int, step: int = SIZE_STEP) -> int:
    """``value`` rounded to the nearest multiple of ``step`` (at least ``step``)."""
    return max(step, (value + step // 2) // step * step)


def size_fields(width: int, height: int) -> dict[str, int]:
    """The wire fields for a size: its sizeId when the table has it (what any server of the
    seed understands), else this project's width/height extension."""
    try:
        return {"sizeId": size_id_for(width, height)}
    except LookupError:
        return {"width": width, "height": height}


def capped_guidance(value: float) -> float:
    """A guidance scale as our ``gScale`` takes it: the same scale (no rescaling, since a
    CFG of 7 means the same in every API), capped at our maximum."""
    return float(min(value, GUIDANCE_MAX))


def blank_png(width: int, height: int) -> bytes:
    """A black PNG of that size: what a safety checker puts in an image's place."""
    row = b"\x00" + b"\x00\x00\x00" * width  # filter byte, then black RGB pixels
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def image_kind(data: bytes) -> str:
    """``png``, ``jpeg`` or ``webp``, from the bytes' signature (``png`` when unknown)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


def data_uri(data: bytes) -> str:
    """``data:image/KIND;base64,...``."""
    return f"data:image/{image_kind(data)};base64,{base64.b64encode(data).decode()}"
