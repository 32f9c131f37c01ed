"""Requests written for the four other seed APIs, carried out by the orchestrator.

``await orch.submit_as("modelslab", request)`` takes a request in that API's shape and
returns that API's response; :data:`protocol.vocabularies.VOCABULARIES` names them. The
mapping is pure (``protocol.vocabularies``, whose ``base`` module tells the steps); this
module does the I/O of each step: uploads, the prompt enhancer, the task, upscales, reading
the bytes, and the webhook.

Bad input raises :class:`~orchestrator.errors.LocalProtocolError` before anything is sent,
naming the parameter as that API names it. Once the request is accepted, a failure of any
step is answered the API's way (``{"status": "error", ...}``, ``{"code": -1, ...}``), as its
users expect, and a webhook still hears of it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio
import orjson

from protocol.identity import new_task_uuid
from protocol.messages import TaskRequest
from protocol.vocabularies import VOCABULARIES, Outcome, OutputImage, Plan, Vocabulary, vocabulary
from protocol.vocabularies.steps import Enhance, Generate, Step, Upload, Upscale, drive, prelude
from protocol.vocabularies.steps import carry_out as carry_out_steps

from .config import Config
from .errors import OrchestratorError, UploadError, UsageError
from .results import GeneratedImage, TaskResult
from .timers import Clock

__all__ = ["VOCABULARIES", "Credits", "carry_out", "steps", "submit_as"]

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Credits:
    """A balance the caller keeps, in our server's cost units: each request spends what
    its steps cost (Stablecog's ``remaining_credits`` is what is left). A request is
    refused, unsent, once nothing is left."""

    balance: float

    def spend(self, cost: float) -> None:
        """Take ``cost`` off the balance."""
        self.balance = round(self.balance - cost, 10)


class Runner(Protocol):
    """What carrying out a plan needs of an Orchestrator."""

    @property
    def config(self) -> Config: ...

    async def run(self, task: TaskRequest, *, deadline: float | None = None) -> TaskResult: ...

    async def upload_image(
        self, image: bytes | str, *, deadline: float | None = None
    ) -> TaskResult: ...

    async def enhance_prompt(
        self, prompt: str, prompt_versions: int = 1, *, deadline: float | None = None
    ) -> TaskResult: ...

    async def upscale(
        self, image_uuid: str, upscale_factor: int = 2, *, deadline: float | None = None
    ) -> TaskResult: ...


async def submit_as(
    orch: Runner,
    name: str,
    request: Mapping[str, Any],
    *,
    credits: Credits | None = None,
    deadline: float | None = None,
    clock: Clock,
    rng: random.Random,
) -> dict[str, Any]:
    """Carry out a request in the shape of the API called ``name``; return its response.

    Raises UsageError for an unknown name and LocalProtocolError for a request that breaks
    that API's rules (nothing is sent)."""
    vocab = vocabulary(name)
    task_uuid = new_task_uuid()
    parsed, plan = vocab.prepare(request, task_uuid)
    if credits is not None and credits.balance <= 0:
        response = vocab.refuse("no credits left", parsed)
    else:
        response = await _answer(orch, vocab, parsed, plan, task_uuid, credits, deadline)
    if plan.webhook is not None:
        response["webhook_status"] = await _post_webhook(orch, plan.webhook, response, clock, rng)
    return response


async def _answer(
    orch: Runner,
    vocab: Vocabulary[Any],
    parsed: Any,
    plan: Plan,
    task_uuid: str,
    credits: Credits | None,
    deadline: float | None,
) -> dict[str, Any]:
    try:
        outcome = await carry_out(orch, plan, task_uuid, deadline)
    except UsageError:
        raise  # the orchestrator was misused (closed, say): not the request's failure
    except OrchestratorError as exc:
        return vocab.refuse(str(exc), parsed)
    if credits is not None:
        credits.spend(outcome.cost)
        outcome = replace(outcome, credits_left=credits.balance)
    return vocab.respond(parsed, plan, outcome)


async def carry_out(
    orch: Runner, plan: Plan, task_uuid: str, deadline: float | None = None
) -> Outcome:
    """Every step of a plan (``protocol.vocabularies.steps``): the outcome to answer from."""
    started = anyio.current_time()
    outcome = await drive(carry_out_steps(plan, task_uuid), partial(_perform, orch, deadline))
    return replace(outcome, seconds=anyio.current_time() - started)


async def steps(orch: Runner, plan: Plan, deadline: float | None = None) -> dict[str, str]:
    """The steps before a plan's task (uploads, the prompt enhancer), as the fields of our
    spec they give (``init_image_uuid``, ``prompt``, ...)."""
    image_uuids, prompt = await drive(prelude(plan), partial(_perform, orch, deadline))
    named = {f"{role}_image_uuid": image_uuid for role, image_uuid in image_uuids.items()}
    return named | {"prompt": prompt}


async def _perform(orch: Runner, deadline: float | None, step: Step) -> Any:
    if isinstance(step, Upload):
        try:
            uploaded = await orch.upload_image(step.source, deadline=deadline)
        except OrchestratorError as exc:  # a link that fails, bytes that are no image: ...
            raise UploadError(f"{step.parameter}: {exc}") from exc  # ... the request's failure
        return uploaded.image.image_uuid
    if isinstance(step, Enhance):
        return (await orch.enhance_prompt(step.prompt, deadline=deadline)).text
    if isinstance(step, Generate):
        result = await orch.run(step.task, deadline=deadline)
        width, height = step.task.dimensions
        return [_output(image, width, height) for image in result.images], result.cost
    if isinstance(step, Upscale):
        result = await orch.upscale(step.image.image_uuid, step.factor, deadline=deadline)
        image = step.image
        return _output(result.image, image.width * step.factor, image.height * step.factor), (
            result.cost
        )
    return await _read(step.image)


def _output(image: GeneratedImage, width: int, height: int) -> OutputImage:
    return OutputImage(
        image.image_uuid, image.url, width, height, image.seed, image.cost, image.nsfw, image.data()
    )


async def _read(image: OutputImage) -> bytes:
    return await GeneratedImage(image.image_uuid, image.url, "").read()


async def _post_webhook(
    orch: Runner, url: str, response: Mapping[str, Any], clock: Clock, rng: random.Random
) -> str:
    """POST the response to the webhook, tried as deliveries are (the orchestrator's
    DeliverySettings); ``"success"``, or ``"failed: <why>"``."""
    from .delivery.transfer import PutPolicy, http_client, put

    settings = orch.config.delivery
    policy = PutPolicy(
        settings.attempts, settings.backoff, settings.retry_after_cap, settings.timeout
    )
    headers = {"Content-Type": "application/json"}
    async with http_client(connections=1) as client:
        try:
            await put(
                client,
                url,
                orjson.dumps(dict(response)),
                headers,
                policy=policy,
                clock=clock,
                rng=rng,
                sink="webhook",
                limiter=anyio.CapacityLimiter(1),
                method="POST",
            )
        except UploadError as exc:
            log.warning("the webhook was not told: %s", exc)
            return f"failed: {exc}"
    return "success"
