"""Backends turn one accepted task into images or texts, behind one small interface.

The server resolves everything a task refers to (stored images, the seed, how many results
the cache already covers) into a :class:`Job`, then calls :meth:`Backend.run` off the event
loop when the backend is ``blocking`` (on the loop otherwise). The backend hands each result
to :meth:`JobContext.emit` the moment it exists, reports steps through
:meth:`JobContext.progress` (which raises :class:`JobCancelled` once the task is cancelled),
and raises :class:`JobError` for a task it cannot do.

- :class:`ProceduralBackend` (the default) does real image work; see :mod:`.imaging`.
- :class:`FixedBackend` answers at once with one tiny pre-encoded image, for load tests and
  benchmarks where pixels do not matter.
- ``diffusers`` (the [diffusion] extra, :mod:`.diffusion`) runs Stable Diffusion pipelines
  from a local directory; :mod:`.registry` makes any of them by name.

A backend may also say how many jobs it runs at once (``concurrency``; the server's
``workers`` otherwise) and have an ``open()`` that the server runs in a worker thread before
it listens (loading weights), and ``describe()``, lines saying what runs each task type.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

import numpy as np
from PIL import Image as PILImage

from protocol import (
    NewImageUpload,
    NewTask,
    PreProcessControlNetRequest,
    PromptEnhance,
    RemoveBackgroundRequest,
    ReverseImageClip,
    TaskRequest,
    UpscaleGanRequest,
)
from protocol.tables import ErrorId, TaskType

from . import imaging

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "FixedBackend",
    "ImageOutput",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "Output",
    "PREVIEW_SIDE",
    "PreviewFn",
    "ProceduralBackend",
    "SourceImage",
    "TextOutput",
    "describe",
    "image_format",
    "parse_image_base64",
    "preview_jpeg",
    "worker_count",
]

#: Image-to-image moves this far from the init image when the task gives no ``strength``.
DEFAULT_STRENGTH: Final = 0.75


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A stored image a task refers to."""

    uuid: str
    data: bytes
    format: str  # "jpeg" or "png"
    prompt: str | None = None  # the prompt it was made from, when it was made here


@dataclass(frozen=True, slots=True)
class Job:
    """One task, resolved.

    ``sources`` holds the images the task refers to, by role: ``init``, ``mask``, ``image``
    (upscale, background removal, captions, preprocessing) and ``guide0``, ``guide1``, ...
    (ControlNet guides, in the task's order). Generation makes results ``first`` to
    ``numberResults - 1`` (the cache served the others); result ``i`` uses ``seed + i``.
    """

    request: TaskRequest
    seed: int = 1
    first: int = 0
    sources: Mapping[str, SourceImage] = field(default_factory=dict)
    output_format: str = "jpeg"
    max_pixels: int = 4096 * 4096  # of any image decoded or made (ServerLimits)


@dataclass(frozen=True, slots=True)
class ImageOutput:
    """One image made for a task: result ``index``, encoded."""

    index: int
    data: bytes
    format: str
    width: int
    height: int
    seed: int | None = None
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class TextOutput:
    """One text made for a task (a caption or an enhanced prompt)."""

    index: int
    text: str


Output = ImageOutput | TextOutput


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.progress` once the task has been cancelled."""


class JobError(Exception):
    """A task the backend cannot do; becomes an error frame with ``error_id``."""

    def __init__(self, error_id: int, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


class BackendError(Exception):
    """A backend that cannot start: its extra is missing, or its weights are not there."""


#: Makes a preview of an image in the making: called only when the client asked for them.
PreviewFn = Callable[[], bytes | None]


class JobContext(Protocol):
    """What a running job reports to; safe to call from a worker thread."""

    def emit(self, output: Output) -> None:
        """Deliver one result now."""

    def progress(
        self, step: int, steps: int, index: int = 0, preview: PreviewFn | None = None
    ) -> None:
        """Report step ``step`` of ``steps`` of result ``index``; ``preview`` makes a small
        JPEG of it so far (see :func:`preview_jpeg`), called only for a client that asked
        for previews. Raise :class:`JobCancelled` if the task was cancelled."""


class Backend(Protocol):
    """Makes results. ``blocking`` backends run in worker threads, others on the loop."""

    name: ClassVar[str]
    blocking: ClassVar[bool]

    def run(self, job: Job, ctx: JobContext) -> None:
        """Make the job's results, emitting each; raise :class:`JobError` if it cannot."""


# -- shared helpers ------------------------------------------------------------------------

#: The longer side of a preview, in pixels: enough for a card, a few KB a step.
PREVIEW_SIDE: Final = 128


def preview_jpeg(pixels: imaging.Pixels) -> bytes:
    """A small JPEG of ``pixels`` (an image in the making), for the ``preview`` extension."""
    image = PILImage.fromarray(np.ascontiguousarray(pixels[..., :3]))
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), PILImage.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def image_format(data: bytes) -> str | None:
    """``"jpeg"`` or ``"png"`` from the bytes' signature, or ``None`` for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def parse_image_base64(text: str) -> bytes:
    """The bytes of ``imageBase64``: plain base64 or a ``data:image/...;base64,`` URI."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise JobError(ErrorId.VALIDATION_ERROR, "imageBase64: a data URI must be base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        message = "imageBase64: must be base64 or a data:image/...;base64, URI"
        raise JobError(ErrorId.VALIDATION_ERROR, message) from exc


def _decode(job: Job, role: str, *, alpha: bool = False) -> imaging.Pixels:
    source = job.sources[role]
    try:
        return imaging.decode(source.data, alpha=alpha, max_pixels=job.max_pixels)
    except ValueError as exc:
        raise JobError(ErrorId.VALIDATION_ERROR, f"image {source.uuid}: {exc}") from exc


# -- procedural ----------------------------------------------------------------------------


class ProceduralBackend:
    """Real, deterministic image operations in a few milliseconds (see :mod:`.imaging`)."""

    name: ClassVar[str] = "procedural"
    blocking: ClassVar[bool] = True

    def run(self, job: Job, ctx: JobContext) -> None:
        """Make the job's results; see the module docstring."""
        request = job.request
        if isinstance(request, NewTask):
            self._generate(job, request, ctx)
        elif isinstance(request, NewImageUpload):
            ctx.emit(_upload(request, job.max_pixels))
        elif isinstance(request, PromptEnhance):
            for i, text in enumerate(_enhance(request)):
                ctx.emit(TextOutput(i, text))
        elif isinstance(request, ReverseImageClip):
            prompt = job.sources["image"].prompt
            ctx.emit(TextOutput(0, imaging.caption(_decode(job, "image"), prompt)))
        else:
            ctx.emit(self._transform(job, request))

    def _generate(self, job: Job, task: NewTask, ctx: JobContext) -> None:
        width, height = task.dimensions
        positive, negative = task.positive_prompt, task.negative_prompt
        for index in range(job.first, task.number_results):
            seed = job.seed + index

            def progress(step: int, steps: int, so_far: imaging.Pixels, index: int = index) -> None:
                ctx.progress(step, steps, index, functools.partial(preview_jpeg, so_far))

            pixels = imaging.render(
                positive,
                seed,
                width,
                height,
                str(task.model_id),
                steps=task.steps,
                guidance=task.g_scale,
                avoid=negative,
                style=task.style_id,
                progress=progress,
            )
            pixels = self._condition(job, task, pixels)
            data = imaging.encode(pixels, job.output_format)
            ctx.emit(
                ImageOutput(index, data, job.output_format, width, height, seed, task.prompt_text)
            )

    def _condition(self, job: Job, task: NewTask, pixels: imaging.Pixels) -> imaging.Pixels:
        # What the task's type adds to plain generation: an init image, a mask, guides.
        kind = task.task_type
        if kind in (TaskType.IMAGE_TO_IMAGE, TaskType.CONTROLNET_IMAGE_TO_IMAGE):
            strength = DEFAULT_STRENGTH if task.strength is None else task.strength
            pixels = imaging.blend(_decode(job, "init"), pixels, strength)
        elif kind is TaskType.INPAINTING:
            init, mask = _decode(job, "init"), _decode(job, "mask")
            pixels = imaging.inpaint(
                init, mask, pixels, 1.0 if task.strength is None else task.strength
            )
        for i, control in enumerate(task.control_net or ()):
            pixels = imaging.guide(pixels, _decode(job, f"guide{i}"), control.weight)
        return pixels

    def _transform(
        self,
        job: Job,
        request: TaskRequest,
    ) -> ImageOutput:
        source = job.sources["image"]
        if isinstance(request, UpscaleGanRequest):
            pixels = _decode(job, "image", alpha=source.format == "png")
            _check_upscale(pixels, request.upscale_factor, job.max_pixels)
            pixels = imaging.upscale(pixels, request.upscale_factor)
            fmt = source.format
        elif isinstance(request, RemoveBackgroundRequest):
            pixels, fmt = imaging.remove_background(_decode(job, "image")), "png"
        else:
            assert isinstance(request, PreProcessControlNetRequest)
            pixels, fmt = _preprocess(request, _decode(job, "image")), "png"
        height, width = pixels.shape[:2]
        return ImageOutput(0, imaging.encode(pixels, fmt), fmt, width, height)


def _preprocess(request: PreProcessControlNetRequest, pixels: imaging.Pixels) -> imaging.Pixels:
    low = 100 if request.low_threshold_canny is None else request.low_threshold_canny
    high = 200 if request.high_threshold_canny is None else request.high_threshold_canny
    guide = imaging.preprocess(pixels, request.pre_processor_type, low=low, high=high)
    if request.width is not None or request.height is not None:
        width = request.width or guide.shape[1]
        height = request.height or guide.shape[0]
        guide = imaging.resize(guide, width, height)
    return guide


def _check_upscale(pixels: imaging.Pixels, factor: int, max_pixels: int) -> None:
    height, width = pixels.shape[:2]
    if width * height * factor * factor > max_pixels:
        message = (
            f"upscaleFactor: {width}x{height} times {factor} would be "
            f"{width * factor}x{height * factor}, more than the {max_pixels} pixels "
            "this server makes"
        )
        raise JobError(ErrorId.LIMIT_EXCEEDED, message)


def _upload(request: NewImageUpload, max_pixels: int) -> ImageOutput:
    data = parse_image_base64(request.image_base64)
    try:
        pixels = imaging.decode(data, alpha=True, max_pixels=max_pixels)
    except ValueError as exc:
        raise JobError(ErrorId.VALIDATION_ERROR, f"imageBase64: {exc}") from exc
    fmt = image_format(data)
    if fmt is None:  # WebP: keep it as PNG, which everything reads
        fmt, data = "png", imaging.encode(pixels, "png")
    opaque = pixels[..., :3] if bool((pixels[..., 3] == 255).all()) else pixels
    return ImageOutput(0, data, fmt, int(opaque.shape[1]), int(opaque.shape[0]))


def _enhance(request: PromptEnhance) -> list[str]:
    try:
        return imaging.enhance_prompt(
            request.prompt, request.prompt_versions, request.prompt_max_length
        )
    except ValueError as exc:
        raise JobError(ErrorId.LIMIT_EXCEEDED, f"promptMaxLength: {exc}") from exc


# -- fixed ---------------------------------------------------------------------------------


@functools.cache
def _tiny(fmt: str) -> bytes:
    pixels = np.zeros((8, 8, 4 if fmt == "png" else 3), np.uint8)
    pixels[2:6, 2:6] = 255
    return imaging.encode(pixels, fmt)


class FixedBackend:
    """One tiny pre-encoded image (an 8x8 JPEG, or PNG where alpha is expected), at once.

    For load and orchestration tests: it runs on the event loop and renders nothing.
    Texts are still right in number and distinct, so every task type completes.
    """

    name: ClassVar[str] = "fixed"
    blocking: ClassVar[bool] = False

    def run(self, job: Job, ctx: JobContext) -> None:
        """Emit the fixed image (or texts) for every result the job asks for."""
        request = job.request
        if isinstance(request, NewTask):
            for index in range(job.first, request.number_results):
                data = _tiny("jpeg")
                ctx.emit(ImageOutput(index, data, "jpeg", 8, 8, job.seed + index))
        elif isinstance(request, PromptEnhance):
            for i, text in enumerate(_enhance(request)):
                ctx.emit(TextOutput(i, text))
        elif isinstance(request, ReverseImageClip):
            ctx.emit(TextOutput(0, "a small white square on black"))
        elif isinstance(request, NewImageUpload):
            data = parse_image_base64(request.image_base64)
            ctx.emit(ImageOutput(0, data, image_format(data) or "png", 0, 0))
        else:
            fmt = "jpeg" if isinstance(request, UpscaleGanRequest) else "png"
            ctx.emit(ImageOutput(0, _tiny(fmt), fmt, 8, 8))


#: Backends by name, as ``orchestrator serve --backend`` takes them.
BACKENDS: Final[Mapping[str, type[ProceduralBackend] | type[FixedBackend]]] = {
    "procedural": ProceduralBackend,
    "fixed": FixedBackend,
}


def worker_count(backend: Backend, workers: int) -> int:
    """Jobs run at once: the server's ``workers``, or fewer where the backend says so."""
    concurrency: int | None = getattr(backend, "concurrency", None)
    return max(1, min(workers, concurrency) if concurrency else workers)


def describe(backend: Backend) -> list[str]:
    """What runs each task type, as lines for the start-up log."""
    lines: Callable[[], list[str]] | None = getattr(backend, "describe", None)
    return lines() if lines is not None else [f"backend: {backend.name}"]
