"""What a task request asks for, read the same way by every side.

The request messages differ in shape (a ``newTask`` names its init image
``imageInitiatorUUID``, an upscale its source ``imageUUID``); these typed helpers
answer the questions the client and the server both ask of any of them: which images
it reads (for routing and for fetching), its prompt, its seed, whether it wants
base64 inline and where its images are pushed.
"""

from __future__ import annotations

from typing import NamedTuple

from .messages import (
    _UUID,
    ClientMessage,
    NewConnection,
    NewImageUpload,
    NewTask,
    Ping,
    PreProcessControlNetRequest,
    PromptEnhance,
    TaskRequest,
)

__all__ = [
    "ImageReference",
    "is_uuid",
    "image_references",
    "image_uuids",
    "prompt_of",
    "requested_seed",
    "returns_base64",
    "task_uuid_of",
    "upload_endpoint",
    "upload_url",
]


class ImageReference(NamedTuple):
    """One image a task reads.

    ``role`` is its part in the job (``init``, ``mask``, ``guide0``, ``image``),
    ``field`` the wire path that names it, ``value`` the imageUUID or URL.
    """

    role: str
    field: str
    value: str
    is_url: bool


def image_references(task: TaskRequest) -> tuple[ImageReference, ...]:
    """Every image ``task`` reads, by imageUUID or by URL, in field order."""
    refs: list[tuple[str, str, str | None, bool]] = []
    if isinstance(task, NewTask):
        if task.image_initiator_uuid is None and task.image_mask_initiator_uuid is None:
            if not task.control_net:
                return ()  # a plain text-to-image (the server's hot path): nothing to read
        refs += [
            ("init", "imageInitiatorUUID", task.image_initiator_uuid, False),
            ("mask", "imageMaskInitiatorUUID", task.image_mask_initiator_uuid, False),
        ]
        for i, control in enumerate(task.control_net or ()):
            refs += [
                (f"guide{i}", f"controlNet[{i}].guideImageUUID", control.guide_image_uuid, False),
                (f"guide{i}", f"controlNet[{i}].guideImageUrl", control.guide_image_url, True),
            ]
    elif isinstance(task, PreProcessControlNetRequest):
        refs += [
            ("image", "guideImageUUID", task.guide_image_uuid, False),
            ("image", "guideImageUrl", task.guide_image_url, True),
        ]
    elif not isinstance(task, NewImageUpload | PromptEnhance):
        refs.append(("image", "imageUUID", task.image_uuid, False))
    return tuple(ImageReference(r, f, v, u) for r, f, v, u in refs if v is not None)


def image_uuids(task: TaskRequest) -> tuple[str, ...]:
    """The imageUUIDs ``task`` reads: it must run where those images are."""
    return tuple(ref.value for ref in image_references(task) if not ref.is_url)


def prompt_of(task: TaskRequest) -> tuple[str, str] | None:
    """``(wire field, text)`` of the task's prompt, for the kinds that have one."""
    if isinstance(task, NewTask):
        return "promptText", task.prompt_text
    if isinstance(task, PromptEnhance):
        return "prompt", task.prompt
    return None


def requested_seed(task: TaskRequest) -> int | None:
    """The seed the task gives, if it is a generation that gives one."""
    return task.seed if isinstance(task, NewTask) else None


def returns_base64(task: TaskRequest) -> bool:
    """Whether the task asked for its images inline (``returnBase64Image``)."""
    if isinstance(task, NewTask | PreProcessControlNetRequest):
        return task.return_base64_image
    return False


def upload_endpoint(task: TaskRequest) -> str | None:
    """Where the server must push the task's images (``uploadEndpoint``), if anywhere."""
    return task.upload_endpoint if isinstance(task, NewTask) else None


def upload_url(template: str, *, task_uuid: str, image_uuid: str, index: int, ext: str) -> str:
    """The URL an image is pushed to: ``uploadEndpoint`` with its ``{imageUUID}``,
    ``{taskUUID}``, ``{index}`` and ``{ext}`` placeholders filled, if it has any, so several
    images of one task go to distinct URLs (the server pushes there; the client records it)."""
    values = {"imageUUID": image_uuid, "taskUUID": task_uuid, "index": index, "ext": ext}
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def task_uuid_of(message: ClientMessage) -> str | None:
    """The taskUUID a client message names (a task request or a cancel), if any."""
    return None if isinstance(message, NewConnection | Ping) else message.task_uuid


def is_uuid(value: str) -> bool:
    """Whether ``value`` is shaped as an imageUUID (rather than a URL or image data)."""
    return _UUID.fullmatch(value) is not None
