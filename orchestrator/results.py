"""What users get back: results, the images in them, and the events of a task.

Plain slotted dataclasses, not frozen ones: one of each is built per task on the hot
path, and a frozen dataclass costs microseconds more to build.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from protocol.messages import Image, NewUploadedImageUUID, PreProcessControlNetResult, TaskRequest
from protocol.session import Progress

from .errors import InvalidState, OrchestratorError
from .specs import TaskSpec

__all__ = [
    "Event",
    "GeneratedImage",
    "ImageReady",
    "Progress",
    "TaskDone",
    "TaskFailed",
    "TaskResult",
    "TextReady",
]


@dataclass(slots=True)
class GeneratedImage:
    """One image a task produced (or an uploaded or preprocessed image).

    ``url`` is where the server hosts it; ``seed`` is set when the server reports it
    (the ``seed`` extension); ``base64_data`` when ``return_base64_image`` was asked.
    """

    image_uuid: str
    url: str
    task_uuid: str
    seed: int | None = None
    nsfw: bool = False
    alt_text: str | None = None
    cost: float | None = None
    base64_data: str | None = field(default=None, repr=False)

    def data(self) -> bytes | None:
        """The image's bytes, when the server sent them inline."""
        return None if self.base64_data is None else base64.b64decode(self.base64_data)

    @classmethod
    def from_wire(cls, image: Image) -> GeneratedImage:
        """Map a protocol image to the friendly names."""
        return cls(
            image.image_uuid,
            image.image_src,
            image.task_uuid,
            image.seed,
            image.b_nsfw_content,
            image.image_alt_text,
            image.cost,
            image.image_base64_data,
        )

    @classmethod
    def from_reply(cls, reply: NewUploadedImageUUID | PreProcessControlNetResult) -> GeneratedImage:
        """The image an upload or a preprocessing reply names."""
        if isinstance(reply, PreProcessControlNetResult):
            return cls(
                reply.new_image_uuid,
                reply.new_image_src,
                reply.task_uuid,
                nsfw=reply.b_nsfw_content,
                base64_data=reply.image_base64_data,
            )
        return cls(reply.new_image_uuid, reply.new_image_src, reply.task_uuid)


@dataclass(slots=True)
class TaskResult:
    """A finished task: its images (or texts), their summed cost, and where it ran.

    Every task type's result is one of these: generation, upscale and background
    removal fill ``images``; an upload and a ControlNet preprocessing give one image
    (:attr:`image`); a caption gives one text (:attr:`text`), an enhanced prompt
    ``prompt_versions`` texts (:attr:`texts`).
    """

    task_uuid: str
    task: TaskSpec | TaskRequest
    images: tuple[GeneratedImage, ...] = ()
    texts: tuple[str, ...] = ()
    endpoint: str | None = None

    @property
    def cost(self) -> float:
        """The sum of the images' reported costs."""
        return sum(image.cost or 0.0 for image in self.images)

    @property
    def image(self) -> GeneratedImage:
        """The first image (the only one of an upload, upscale or preprocessing).

        Raises InvalidState when the task produced no image (a text task)."""
        if not self.images:
            raise InvalidState(f"task {self.task_uuid} produced no image")
        return self.images[0]

    @property
    def text(self) -> str:
        """The first text (the caption of an image-to-text task).

        Raises InvalidState when the task produced no text (an image task)."""
        if not self.texts:
            raise InvalidState(f"task {self.task_uuid} produced no text")
        return self.texts[0]


@dataclass(slots=True)
class ImageReady:
    """An image of the task exists; delivered once."""

    task_uuid: str
    image: GeneratedImage


@dataclass(slots=True)
class TextReady:
    """A text (caption or enhanced prompt) of the task; delivered once."""

    task_uuid: str
    text: str


@dataclass(slots=True)
class TaskDone:
    """The task finished; the last event."""

    result: TaskResult


@dataclass(slots=True)
class TaskFailed:
    """The task failed (``error``: the exception ``result()`` raises); the last event."""

    task_uuid: str
    error: OrchestratorError


#: What ``TaskHandle.events()`` yields. ``Progress`` is the protocol's own event.
Event = Progress | ImageReady | TextReady | TaskDone | TaskFailed
