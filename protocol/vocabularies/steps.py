"""Carrying out a plan, sans-I/O: a generator that yields each step and is sent its result.

The client (``orchestrator.vocabularies``) and our server's HTTP APIs
(``orchestrator.server.apis``) drive the same generator with :func:`drive`, each doing the
steps' I/O its own way (``perform``), so the order of the steps and what each gives are
written once::

    outcome = await drive(carry_out(plan, task_uuid), perform)  # seconds, credits unset

A step that fails raises in the driver; the generator is then dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .base import Outcome, OutputImage, Plan

__all__ = [
    "Enhance",
    "Generate",
    "Read",
    "Step",
    "Upload",
    "Upscale",
    "carry_out",
    "drive",
    "prelude",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upload:
    """Upload an image (bytes, base64, a data URI or a link to fetch); sent its imageUUID.
    ``parameter`` names it in the request, for errors."""

    source: str | bytes = field(repr=False)
    parameter: str


@dataclass(frozen=True, slots=True)
class Enhance:
    """Run our prompt enhancer on ``prompt``; sent the enhanced prompt."""

    prompt: str


@dataclass(frozen=True, slots=True)
class Generate:
    """Run the task; sent ``(images, cost)``: a sequence of OutputImage and its cost."""

    task: Any  # protocol.messages.NewTask


@dataclass(frozen=True, slots=True)
class Upscale:
    """Upscale an image by ``factor``; sent ``(image, cost)``."""

    image: OutputImage
    factor: int


@dataclass(frozen=True, slots=True)
class Read:
    """Read an image's bytes; sent them."""

    image: OutputImage


Step = Upload | Enhance | Generate | Upscale | Read


def prelude(plan: Plan) -> Generator[Step, Any, tuple[dict[str, str], str]]:
    """The steps before the task: the images' imageUUIDs by role, and the prompt."""
    image_uuids: dict[str, str] = {}
    for image in plan.images:
        image_uuids[image.role] = yield Upload(image.source, image.parameter)
    prompt = plan.prompt
    if plan.enhance_prompt:
        prompt = yield Enhance(prompt)
    return image_uuids, prompt


def carry_out(plan: Plan, task_uuid: str) -> Generator[Step, Any, Outcome]:
    """Every step of a plan (see ``base``), and the outcome to answer from."""
    image_uuids, prompt = yield from prelude(plan)
    task = plan.new_task(task_uuid, image_uuids, prompt)
    made: tuple[Sequence[OutputImage], float] = yield Generate(task)
    images, cost = list(made[0]), made[1]
    if plan.upscale:
        for i, image in enumerate(images):
            bigger, spent = yield Upscale(image, plan.upscale)
            # It is the same picture: it keeps the seed and the flag it was made with.
            images[i] = replace(bigger, seed=image.seed, nsfw=image.nsfw)
            cost += spent
    if plan.inline:
        for i, image in enumerate(images):
            if image.data is None:
                images[i] = replace(image, data=(yield Read(image)))
    return Outcome(task_uuid, tuple(images), prompt, round(cost, 10), 0.0)


async def drive(run: Generator[Step, Any, T], perform: Callable[[Step], Awaitable[Any]]) -> T:
    """Send each step ``run`` yields what ``perform`` makes of it; return its value. (It
    awaits only ``perform``: the I/O, and the event loop, are the caller's.)"""
    result: Any = None
    while True:
        try:
            step = run.send(result)
        except StopIteration as done:
            value: T = done.value
            return value
        result = await perform(step)
