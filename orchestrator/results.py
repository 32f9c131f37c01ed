"""What users get back: results, the images in them, and the events of a task.

Plain slotted dataclasses, not frozen ones: one of each is built per task on the hot
path, and a frozen dataclass costs microseconds more to build.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from protocol.messages import Image, NewUploadedImageUUID, PreProcessControlNetResult, TaskRequest
from protocol.session import Progress

from .errors import InvalidState, OrchestratorError, UploadError
from .specs import TaskSpec

__all__ = [
    "Delivery",
    "Event",
    "GeneratedImage",
    "ImageDelivered",
    "ImageReady",
    "Progress",
    "RunProgress",
    "TaskDone",
    "TaskFailed",
    "TaskResult",
    "TextReady",
]


#: The most bytes :meth:`GeneratedImage.read` takes from a URL unless told otherwise.
READ_LIMIT = 64 * 1024 * 1024


@dataclass(slots=True)
class Delivery:
    """Where one image went (or failed to go), by one sink.

    ``location`` is the URL, ``s3://`` URI or file path; ``error`` is set, and ``location``
    empty, when the delivery failed (the image's other deliveries are not affected).
    ``width`` and ``height`` are read from the image's header (None for a format it
    does not know, or when the bytes could not be had).
    """

    sink: str
    location: str
    bytes: int
    sha256: str
    attempts: int
    error: UploadError | None = None
    width: int | None = None
    height: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the image got there."""
        return self.error is None


@dataclass(slots=True)
class GeneratedImage:
    """One image a task produced (or an uploaded or preprocessed image).

    ``url`` is where the server hosts it (the embedded server's URLs live only as long as
    its orchestrator: :meth:`save` what you keep); ``seed`` is set when the server reports
    it (the ``seed`` extension); ``base64_data`` when ``return_base64_image`` was asked;
    ``deliveries`` says where the orchestrator's sinks put it; ``uploaded_to`` is where the
    server pushed it, for a task with an ``upload_endpoint``.
    """

    image_uuid: str
    url: str
    task_uuid: str
    seed: int | None = None
    nsfw: bool = False
    alt_text: str | None = None
    cost: float | None = None
    base64_data: str | None = field(default=None, repr=False)
    deliveries: tuple[Delivery, ...] = ()
    uploaded_to: str | None = None

    def data(self) -> bytes | None:
        """The image's bytes, when the server sent them inline."""
        return None if self.base64_data is None else base64.b64decode(self.base64_data)

    async def read(self, *, max_bytes: int = READ_LIMIT, seconds: float = 60.0) -> bytes:
        """The image's bytes: decoded when the server sent them inline, else fetched from
        :attr:`url` (streamed, at most ``max_bytes``, within ``seconds``). Raises
        UploadError if it cannot be."""
        if self.base64_data is not None:
            return base64.b64decode(self.base64_data)
        from .delivery.transfer import fetch, http_client

        async with http_client() as client:
            return await fetch(client, self.url, max_bytes, seconds)

    async def save(
        self, path: str | Path, *, max_bytes: int = READ_LIMIT, seconds: float = 60.0
    ) -> Path:
        """Write the image at ``path`` (atomically; into a directory as ``IMAGEUUID.EXT``)
        and return the file's path. Raises UploadError if the bytes cannot be read."""
        from .delivery.transfer import write_atomically
        from .delivery.types import sniff

        data = await self.read(max_bytes=max_bytes, seconds=seconds)
        target = Path(path)
        if await anyio.Path(target).is_dir():
            target = target / f"{self.image_uuid}.{sniff(data, self.url)[0]}"
        await write_atomically(target, data)
        return target

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
    """The task's image ``index`` (0-based, in delivery order) exists; delivered once."""

    task_uuid: str
    image: GeneratedImage
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        """``{"type": "imageReady", "taskUUID", "index", "image": {...}}``."""
        return {
            "type": "imageReady",
            "taskUUID": self.task_uuid,
            "index": self.index,
            "image": image_json(self.image),
        }


@dataclass(slots=True)
class ImageDelivered:
    """One delivery of image ``index`` finished (``delivery.ok`` says whether it got there)."""

    task_uuid: str
    image: GeneratedImage
    delivery: Delivery
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        """``{"type": "imageDelivered", "taskUUID", "index", "imageUUID", "delivery"}``."""
        return {
            "type": "imageDelivered",
            "taskUUID": self.task_uuid,
            "index": self.index,
            "imageUUID": self.image.image_uuid,
            "delivery": delivery_json(self.delivery),
        }


@dataclass(slots=True)
class TextReady:
    """The task's text ``index`` (a caption or an enhanced prompt); delivered once."""

    task_uuid: str
    text: str
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        """``{"type": "textReady", "taskUUID", "index", "text"}``."""
        return {
            "type": "textReady",
            "taskUUID": self.task_uuid,
            "index": self.index,
            "text": self.text,
        }


@dataclass(slots=True)
class TaskDone:
    """The task finished; the last event."""

    result: TaskResult

    def to_json(self) -> dict[str, Any]:
        """``{"type": "taskDone", "taskUUID", "images": [...], "texts", "cost", "endpoint"}``."""
        result = self.result
        return {
            "type": "taskDone",
            "taskUUID": result.task_uuid,
            "images": [image_json(image) for image in result.images],
            "texts": list(result.texts),
            "cost": result.cost,
            "endpoint": result.endpoint,
        }


@dataclass(slots=True)
class TaskFailed:
    """The task failed (``error``: the exception ``result()`` raises); the last event."""

    task_uuid: str
    error: OrchestratorError

    def to_json(self) -> dict[str, Any]:
        """``{"type": "taskFailed", "taskUUID", "error": {"type", "message", ...}}``."""
        return {"type": "taskFailed", "taskUUID": self.task_uuid, "error": error_json(self.error)}


@dataclass(slots=True)
class RunProgress:
    """Where a run of many tasks stands (``Orchestrator.map``'s ``on_progress``, and bulk
    runs'): tasks ``done`` and ``failed`` so far, ``in_flight`` now, of ``total`` (None
    while the source's length is unknown)."""

    done: int
    failed: int
    in_flight: int
    total: int | None = None

    @property
    def finished(self) -> int:
        """Tasks that need nothing more (done or failed)."""
        return self.done + self.failed

    def to_json(self) -> dict[str, Any]:
        """``{"type": "runProgress", "done", "failed", "inFlight", "total"}``."""
        return {
            "type": "runProgress",
            "done": self.done,
            "failed": self.failed,
            "inFlight": self.in_flight,
            "total": self.total,
        }


def image_json(image: GeneratedImage) -> dict[str, Any]:
    """An image's JSON form (the bytes are left out: ``url`` says where they are)."""
    return {
        "imageUUID": image.image_uuid,
        "url": image.url,
        "taskUUID": image.task_uuid,
        "seed": None if image.seed is None else str(image.seed),  # beyond 2**53: a string
        "nsfw": image.nsfw,
        "altText": image.alt_text,
        "cost": image.cost,
        "uploadedTo": image.uploaded_to,
        "deliveries": [delivery_json(d) for d in image.deliveries],
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """A delivery's JSON form (``error`` is the message, or None)."""
    error = delivery.error
    return {
        "sink": delivery.sink,
        "location": delivery.location,
        "bytes": delivery.bytes,
        "sha256": delivery.sha256,
        "attempts": delivery.attempts,
        "ok": error is None,
        "error": None if error is None else str(error),
        "width": delivery.width,
        "height": delivery.height,
    }


def error_json(error: OrchestratorError) -> dict[str, Any]:
    """An error's JSON form: its class, its message, and the server's ids when it sent them."""
    out: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    names = (
        ("error_id", "errorId"),
        ("error_code", "errorCode"),
        ("error_message", "errorMessage"),
    )
    for name, key in names:
        value = getattr(error, name, None)
        if value is not None:
            out[key] = value
    return out


#: What ``TaskHandle.events()`` yields. ``Progress`` is the protocol's own event. Each has
#: ``to_json()``: a dict of JSON types with a ``type`` key (README, "Events").
Event = Progress | ImageReady | ImageDelivered | TextReady | TaskDone | TaskFailed
