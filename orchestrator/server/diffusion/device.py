"""One device shared by the job threads: one pipeline call at a time, and tasks that can
share a forward pass sharing it.

Theory of operation
===================

Each job's thread hands its work (a pipeline, its arguments, the seeds of its images) to
:meth:`Device.run`, which queues it and waits for the device lock. Whichever thread holds
the lock runs the oldest queued work, together with every other queued work of the same
``key`` (same pipeline, size, steps, guidance and scheduler: only the prompts and seeds
differ) up to ``max_images`` images, as one call with a prompt and a generator per image;
then it gives the lock up, and each thread finds its own images done. A thread may run
another's batch before its own: all that matters is that every queued work is run once.

Nothing waits to fill a batch: a lone task runs at once, and tasks coalesce only when they
queue behind a running call, which is exactly when sharing the pass saves time. Work with no
``key`` (a task that cannot share: guides, masks, LoRAs, an SDE sampler whose noise follows
one seed) always runs alone.

Progress goes to every image of every member after each step. A member cancelled mid-way is
dropped from the results (its images are computed with the others and thrown away); only
when every member is cancelled does the call stop.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch

from ..backends import JobCancelled, JobContext, preview_jpeg
from .schedulers import make_scheduler

__all__ = ["Device", "Work", "latent_preview"]


@dataclass(eq=False)
class Work:
    """One pipeline call's worth of a job: ``inputs`` without the per-image arguments."""

    pipe: Any
    inputs: dict[str, Any]
    seeds: Sequence[int]
    scheduler_id: int | None
    ctx: JobContext
    key: Hashable | None = None  # equal keys may share a call; None: never
    first_index: int = 0  # the task's result index of its first seed (progress says it)
    images: list[np.ndarray[Any, Any]] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False
    cancelled: bool = False


class Device:
    """Runs :class:`Work` one call at a time; see the module docstring."""

    def __init__(self, scheduler_template: Callable[[], Any], max_images: int) -> None:
        self._template = scheduler_template
        self._max_images = max(1, max_images)
        self.lock = threading.Lock()  # held for each pipeline call: the device is busy
        self._guard = threading.Condition()  # the queue; notified as work joins it
        self._queue: list[Work] = []
        self.calls = 0  # pipeline calls made (the bench reads it)

    def run(self, work: Work) -> list[np.ndarray[Any, Any]]:
        """The images of ``work`` as ``(height, width, 3)`` floats in 0-1, in seed order;
        raises what the pipeline raised, or :class:`JobCancelled`."""
        with self._guard:
            self._queue.append(work)
            self._guard.notify_all()
        while not work.done:
            with self.lock:
                with self._guard:
                    batch = self._take()
                if batch:
                    self._call(batch)
        if work.error is not None:
            raise work.error
        return work.images

    def wait_queued(self, count: int, timeout: float) -> bool:
        """Block until ``count`` works wait for the device (``False`` on timeout)."""
        with self._guard:
            return self._guard.wait_for(lambda: len(self._queue) >= count, timeout)

    def _take(self) -> list[Work]:
        if not self._queue:
            return []
        first = self._queue.pop(0)
        batch, images = [first], len(first.seeds)
        if first.key is None:
            return batch
        for other in list(self._queue):
            if other.key == first.key and images + len(other.seeds) <= self._max_images:
                self._queue.remove(other)
                batch.append(other)
                images += len(other.seeds)
        return batch

    def _call(self, batch: list[Work]) -> None:
        first = batch[0]
        seeds = [seed for work in batch for seed in work.seeds]
        inputs = (
            _merged(batch)
            if len(batch) > 1
            else {
                **first.inputs,
                "num_images_per_prompt": len(seeds),
            }
        )
        try:
            first.pipe.scheduler = make_scheduler(self._template(), first.scheduler_id, seeds[0])
            self.calls += 1
            with torch.inference_mode():
                result = first.pipe(
                    **inputs,
                    generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
                    output_type="np",
                    callback_on_step_end=_reporter(batch),
                )
        except BaseException as exc:  # every member learns it, then the thread goes on
            for work in batch:
                work.error = JobCancelled() if work.cancelled else exc
                work.done = True
            if not isinstance(exc, Exception):
                raise
            return
        images = list(np.asarray(result.images))
        for work in batch:
            work.images, images = images[: len(work.seeds)], images[len(work.seeds) :]
            if work.cancelled:
                work.error = JobCancelled()
            work.done = True


def _merged(batch: list[Work]) -> dict[str, Any]:
    # One prompt (and negative prompt) per image: the members differ only in those.
    inputs = dict(batch[0].inputs)
    inputs["prompt"] = [w.inputs["prompt"] for w in batch for _ in w.seeds]
    inputs["negative_prompt"] = [w.inputs["negative_prompt"] or "" for w in batch for _ in w.seeds]
    inputs["num_images_per_prompt"] = 1
    return inputs


#: Stable Diffusion's four latent channels to RGB, near enough for a preview (the linear
#: fit of decoded colours to latents that previews of SD 1.x/2.x commonly use).
_LATENT_RGB: Final = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


def latent_preview(latents: Any, row: int) -> bytes | None:
    """A preview JPEG of image ``row`` of a batch's latents, without the VAE (a few hundred
    microseconds); None for latents that are not four channels."""
    if latents is None or latents.ndim != 4 or latents.shape[1] != len(_LATENT_RGB):
        return None
    factors = torch.tensor(_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[row].float().cpu(), factors)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return preview_jpeg(pixels)


def _reporter(batch: list[Work]) -> Callable[..., dict[str, Any]]:
    # Diffusers calls this after each denoising step; ``progress`` raises once a task is
    # cancelled. Alone, that leaves the pipeline's loop at once; in a batch, the others go on.
    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        latents, row = tensors.get("latents"), 0
        for work in batch:
            for i in range(len(work.seeds)):
                preview = functools.partial(latent_preview, latents, row + i)
                if not work.cancelled:
                    try:
                        work.ctx.progress(
                            step + 1, pipe.num_timesteps, work.first_index + i, preview
                        )
                    except JobCancelled:
                        work.cancelled = True
            row += len(work.seeds)
        if all(work.cancelled for work in batch):
            raise JobCancelled()
        return tensors

    return on_step_end
