"""The ``diffusers`` backend: generation tasks on a local Stable Diffusion pipeline.

Theory of operation
===================

The server runs :meth:`DiffusersBackend.run` in worker threads, and every pipeline call goes
through one :class:`~.device.Device`: one call at a time (two on one GPU only slow each other
down and double the memory). A generation task becomes one call per batch of at most
``max_batch`` results, each result ``i`` drawn from its own generator seeded ``seed + i``, so
the same seed gives the same bytes on every run and after a resume.

With ``batch_tasks`` on, plain text-to-image tasks of the same size, steps, guidance and
scheduler that queue behind a running call share the next forward pass (the server runs
``max_batch`` jobs at once so that they can queue). It is off by default: an image made in a
batch of other prompts differs from the same seed made alone by a rounding step here and
there, and byte-identical repeats are what most users of a seed expect.

The pipeline's step callback reports each denoising step (``JobContext.progress``), which
raises :class:`JobCancelled` once the task is cancelled: the exception leaves the pipeline
mid-loop, so a cancel stops the work within one step. What the pipeline cannot do (an
unmapped scheduler, a ControlNet or LoRA with no local weights) is refused before a step runs,
naming the field. Task types with no model here (upscale, background removal, captions,
prompt enhancement, uploads) run on the procedural backend, and :meth:`describe` says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import torch
from PIL import Image

from protocol import NewTask
from protocol.tables import STYLES, ErrorId, TaskType

from .. import imaging
from ..backends import (
    DEFAULT_STRENGTH,
    ImageOutput,
    Job,
    JobContext,
    JobError,
    ProceduralBackend,
)
from ..config import DiffusionSettings
from .device import Device, Work
from .pipelines import Pipelines, lora_file_name
from .schedulers import SCHEDULER_MAP, refusal

__all__ = ["DiffusersBackend"]

_SEED_SPACE: Final = 2**64  # torch generators take seeds in [0, 2**64)
_INIT_TYPES: Final = (TaskType.IMAGE_TO_IMAGE, TaskType.CONTROLNET_IMAGE_TO_IMAGE)
_PER_TASK: Final = frozenset({"prompt", "negative_prompt"})  # what may differ in a shared pass


class DiffusersBackend:
    """Stable Diffusion from a local directory; see the module docstring.

    Raises :class:`~..backends.BackendError` when the settings name no pipeline directory,
    a directory that is not one, or a device this torch cannot use.
    """

    name: ClassVar[str] = "diffusers"
    blocking: ClassVar[bool] = True

    def __init__(self, settings: DiffusionSettings) -> None:
        self.pipelines = Pipelines(settings)
        self._max_batch = max(1, settings.max_batch)
        self._batch_tasks = settings.batch_tasks
        # Jobs at once: one, unless tasks may share a pass (they must queue to share).
        self.concurrency = self._max_batch if self._batch_tasks else 1
        self.device = Device(lambda: self.pipelines.default_scheduler, self._max_batch)
        self._procedural = ProceduralBackend()

    def open(self) -> None:
        """Load the weights (the server calls this in a thread before it listens)."""
        self.pipelines.load()

    def describe(self) -> list[str]:
        """What runs each task type, for the start-up log."""
        p = self.pipelines
        nets = ", ".join(f"{name} ({path})" for name, path in p.controlnet_dirs.items())
        return [
            f"backend: diffusers, {p.family} from {p.model_dir} on {p.device}, "
            f"batches of up to {self._max_batch} images"
            + (", shared between tasks" if self._batch_tasks else ""),
            f"controlnet: {nets or 'no models given (ControlNet tasks are refused)'}",
            f"lora: {p.settings.lora_dir or 'no lora_dir given (LoRA tasks are refused)'}",
            "upscale, background removal, captions, prompt enhancement: procedural "
            "(no model configured for them)",
        ]

    def run(self, job: Job, ctx: JobContext) -> None:
        """Generate with the pipeline; every other task type runs procedurally."""
        if isinstance(job.request, NewTask):
            self._generate(job, job.request, ctx)
        else:
            self._procedural.run(job, ctx)

    def _generate(self, job: Job, task: NewTask, ctx: JobContext) -> None:
        pipe, inputs = self._plan(job, task)
        kept = _kept_region(job, task)
        key = self._sharing_key(pipe, task, inputs)
        for batch in _batches(range(job.first, task.number_results), self._max_batch):
            seeds = [(job.seed + index) % _SEED_SPACE for index in batch]
            work = Work(pipe, inputs, seeds, task.scheduler_id, ctx, key, batch[0])
            images = self.device.run(work)
            for index, seed, pixels in zip(batch, seeds, _to_pixels(images), strict=True):
                if kept is not None:
                    pixels = kept(pixels)
                data = imaging.encode(pixels, job.output_format)
                width, height = pixels.shape[1], pixels.shape[0]
                output = ImageOutput(index, data, job.output_format, width, height, seed)
                ctx.emit(output)

    def _sharing_key(self, pipe: Any, task: NewTask, inputs: dict[str, Any]) -> Any:
        # What must be equal for two tasks to share a pass: everything but the prompts.
        # Only plain text-to-image shares: guides, masks, init images, LoRAs and embeddings
        # are per task, and an SDE sampler's noise follows one seed for the whole batch.
        plain = task.task_type is TaskType.TEXT_TO_IMAGE and not task.control_net
        seeded = SCHEDULER_MAP[task.scheduler_id or 1].seeded
        if not self._batch_tasks or not plain or task.lora or seeded or "prompt" not in inputs:
            return None
        shared = sorted((k, v) for k, v in inputs.items() if k not in _PER_TASK)
        return (id(pipe), task.scheduler_id, tuple(shared))

    def _plan(self, job: Job, task: NewTask) -> tuple[Any, dict[str, Any]]:
        # The pipeline and its arguments, or a refusal before any step runs.
        why = refusal(task.scheduler_id)
        if why is not None:
            raise JobError(ErrorId.VALIDATION_ERROR, why)
        width, height = task.dimensions
        inputs: dict[str, Any] = {
            "prompt": _styled(task.positive_prompt, task.style_id),
            "negative_prompt": task.negative_prompt,
            "num_inference_steps": task.steps,
            "guidance_scale": task.g_scale,
            "clip_skip": task.clip_skip or None,
        }
        kind = task.task_type
        if kind in _INIT_TYPES:
            inputs["image"] = _image(job, "init", width, height)
            inputs["strength"] = DEFAULT_STRENGTH if task.strength is None else task.strength
        else:
            inputs["height"], inputs["width"] = height, width
        if kind is TaskType.INPAINTING:
            inputs["image"] = _image(job, "init", width, height)
            inputs["mask_image"] = _image(job, "mask", width, height)
            inputs["strength"] = 1.0 if task.strength is None else task.strength
        pipe = self._pipeline(task, inputs, job, width, height)
        self.pipelines.use_loras(pipe, self._loras(task))
        if task.clip_skip and not hasattr(pipe.text_encoder, "text_model"):
            self._skip_clip_layers(pipe, inputs, task.clip_skip)
        return pipe, inputs

    def _skip_clip_layers(self, pipe: Any, inputs: dict[str, Any], clip_skip: int) -> None:
        # Both prompts through the same layers, as ``clip_skip`` does when it works.
        if getattr(pipe, "text_encoder_2", None) is not None:
            return  # two text encoders (SDXL): diffusers' own clip_skip path works there
        encode = self.pipelines.prompt_embeddings
        with torch.inference_mode():
            inputs["prompt_embeds"] = encode(pipe, inputs.pop("prompt"), clip_skip)
            negative = inputs.pop("negative_prompt") or ""
            inputs["negative_prompt_embeds"] = encode(pipe, negative, clip_skip)
        del inputs["clip_skip"]

    def _pipeline(
        self, task: NewTask, inputs: dict[str, Any], job: Job, width: int, height: int
    ) -> Any:
        p, kind = self.pipelines, task.task_type
        if not task.control_net:
            if kind in _INIT_TYPES:
                return p.image_to_image()
            return p.inpainting() if kind is TaskType.INPAINTING else p.text_to_image()
        if kind is TaskType.INPAINTING:
            raise JobError(
                ErrorId.UNKNOWN_TASK_TYPE,
                "controlNet: the diffusers backend does not guide inpainting",
            )
        preprocessors = [guide.preprocessor for guide in task.control_net]
        for i, name in enumerate(preprocessors):
            if name not in p.controlnet_dirs:
                given = ", ".join(p.controlnet_dirs) or "none"
                raise JobError(
                    ErrorId.UNKNOWN_TASK_TYPE,
                    f"controlNet[{i}].preprocessor = {name!r}: no ControlNet model for it on "
                    f"this server (given: {given}; serve --controlnet {name}=DIR)",
                )
        guides = [_image(job, f"guide{i}", width, height) for i in range(len(preprocessors))]
        one = len(guides) == 1
        inputs["image" if kind not in _INIT_TYPES else "control_image"] = (
            guides[0] if one else guides
        )
        scales = [guide.weight for guide in task.control_net]
        spans = [_span(guide, task.steps) for guide in task.control_net]
        inputs["controlnet_conditioning_scale"] = scales[0] if one else scales
        inputs["control_guidance_start"] = [start for start, _ in spans]
        inputs["control_guidance_end"] = [end for _, end in spans]
        return p.controlnet(preprocessors, init_image=kind in _INIT_TYPES)

    def _loras(self, task: NewTask) -> list[tuple[Path, float]]:
        loras = []
        for i, lora in enumerate(task.lora or ()):
            path = self.pipelines.lora_path(lora.model_id)
            if path is None:
                where = self.pipelines.settings.lora_dir
                missing = (
                    f"no {lora_file_name(lora.model_id)} in {where}"
                    if where
                    else ("this server has no LoRA directory (serve --lora-dir DIR)")
                )
                text = f"lora[{i}].modelId = {lora.model_id}: {missing}"
                raise JobError(ErrorId.UNKNOWN_TASK_TYPE, text)
            loras.append((path, lora.weight))
        return loras


def _batches(indices: range, size: int) -> Iterator[Sequence[int]]:
    iterator = iter(indices)
    while batch := tuple(itertools.islice(iterator, size)):
        yield batch


def _to_pixels(images: Sequence[np.ndarray[Any, Any]]) -> list[imaging.Pixels]:
    as_bytes = (np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8)
    return list(as_bytes)


def _image(job: Job, role: str, width: int, height: int) -> Image.Image:
    source = job.sources[role]
    try:
        pixels = imaging.decode(source.data, max_pixels=job.max_pixels)
    except ValueError as exc:
        raise JobError(ErrorId.VALIDATION_ERROR, f"image {source.uuid}: {exc}") from exc
    return Image.fromarray(imaging.resize(pixels, width, height))


def _kept_region(job: Job, task: NewTask) -> Callable[[imaging.Pixels], imaging.Pixels] | None:
    # Inpainting keeps every unmasked pixel of the init image exactly (the VAE's round trip
    # would otherwise shift them a little), by the procedural backend's rule for the mask.
    if task.task_type is not TaskType.INPAINTING:
        return None
    init = imaging.decode(job.sources["init"].data, max_pixels=job.max_pixels)
    mask = imaging.decode(job.sources["mask"].data, max_pixels=job.max_pixels)
    return lambda generated: imaging.inpaint(init, mask, generated, 1.0)


def _span(guide: Any, steps: int) -> tuple[float, float]:
    # A guide acts from startStep to endStep (or the percentages), as fractions of the run.
    if guide.start_step is not None:
        return guide.start_step / steps, min(1.0, guide.end_step / steps)
    return float(guide.start_step_percentage), float(guide.end_step_percentage)


def _styled(prompt: str, style_id: int | None) -> str:
    # A style preset is a few words the model knows, added to the prompt.
    if style_id is None or style_id == 1:
        return prompt
    return f"{prompt}, {STYLES[style_id].lower()} style"
