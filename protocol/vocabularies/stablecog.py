"""Stablecog's generation request (``../shared/seeds/003_*``), on our ``newTask``.

It answers ``{"outputs": [{"id", "url"}], "remaining_credits", "settings"}``, and
``{"error": reason}`` on failure. Credits are what the caller's balance has left after the
orchestrator's cost accounting (the costs our server reports) spent on the request.

Choices (README has the table):

- defaults are those of Stablecog's public defaults endpoint (768 x 768, four outputs,
  guidance 7, 30 steps, prompt strength 0.6), except the model and scheduler: its default
  model (Kandinsky) and scheduler (P Sampler) have no equivalent here, so an unset
  ``model_id`` is SDXL and an unset ``scheduler_id`` Euler, and ``settings`` says so;
- both of the seed's budgets are checked before sending: width x height x steps at most
  1024 x 1024 x 30, and under 50 x 640 x 640 (the stricter of the two);
- ``model_id`` and ``scheduler_id`` are Stablecog's UUIDs (:data:`MODELS`,
  :data:`SCHEDULERS`); those with no equivalent here (the Kandinsky models, P Sampler)
  are refused;
- ``init_image_url`` makes it image-to-image; ``prompt_strength`` (follow the prompt more
  as it grows) is our ``strength`` as it is;
- ``guidance_scale`` 1-20 is our ``gScale``, capped at our 10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, StrictStr

from ..tables import SEED_MAX, TaskType, scheduler_id_for
from .base import (
    ApiModel,
    ImageInput,
    Outcome,
    Plan,
    Vocabulary,
    capped_guidance,
    refused,
    size_fields,
)

__all__ = ["MODELS", "SCHEDULERS", "StablecogRequest", "StablecogVocabulary"]

SDXL: Final = "8002bc51-7260-468f-8840-cf1e6dbe3f8a"
EULER: Final = "6fb13b76-9900-4fa4-abf8-8f843e034a7f"

#: Stablecog's model UUIDs -> (its name, our model id or None where we have no equivalent).
MODELS: Final[Mapping[str, tuple[str, str | None]]] = {
    SDXL: ("SDXL", "4"),
    "3fb1f6d9-c0d3-4ae4-adf4-77f8da78a6f7": ("Waifu Diffusion XL", "4"),
    "4e54440f-ee17-4712-b4b6-0671b94d685d": ("SSD 1B", "4"),
    "048b4aa3-5586-47ed-900f-f4341c96bdb2": ("Stable Diffusion v1.5", "18"),
    "b6c1372f-31a7-457c-907c-d292a6ffef97": ("Luna Diffusion", "20"),
    "fc06f6ab-ed14-4186-a7c0-aaec288d4f38": ("22h Diffusion", "20"),
    "8acfe4c8-751d-4aa6-8c3c-844e3ef478e0": ("Openjourney", "20"),
    "f7f3d973-ac6f-4a7a-9db8-e89e4fba03a9": ("Waifu Diffusion v1.4", "13"),
    "eaa438e1-dbf9-48fd-be71-206f0f257617": ("Redshift Diffusion", "25"),
    "36d9d835-646f-4fc7-b9fe-98654464bf8e": ("Arcane Diffusion", "22"),
    "a3636543-91cc-4290-b1a4-9d506457b9be": ("Freedom", "19"),
    "22b0857d-7edc-4d00-9cd9-45aa509db093": ("Kandinsky", None),
    "9fa49c00-109d-430f-9ddd-449f02e2c71a": ("Kandinsky 2.2", None),
}
#: Stablecog's scheduler UUIDs -> (its name, our scheduler id or None).
SCHEDULERS: Final[Mapping[str, tuple[str, int | None]]] = {
    "55027f8b-f046-4e71-bc51-53d5448661e0": ("LMS", scheduler_id_for("LMSDiscreteScheduler")),
    EULER: ("Euler", scheduler_id_for("EulerDiscreteScheduler")),
    "af2679a4-dbbb-4950-8c06-c3bb15416ef6": (
        "Euler A.",
        scheduler_id_for("EulerAncestralDiscreteScheduler"),
    ),
    "9d175114-9a26-4371-861c-729ba9ecb4da": (
        "DPM Multistep",
        scheduler_id_for("DPMSolverMultistepScheduler"),
    ),
    "7e98751f-e135-4206-b855-48b141e7b98f": (
        "DPM Singlestep",
        scheduler_id_for("DPMSolverSinglestepScheduler"),
    ),
    "82cf78dd-6afb-48cc-aca6-14224cca6950": ("DDIM", scheduler_id_for("DDIMScheduler")),
    "01e94c28-501d-4c6d-8f00-079f3230bf58": ("UniPC", scheduler_id_for("UniPCMultistepScheduler")),
    "cc1b8dbf-0aec-4e52-8110-8082506fb7ba": ("DDPM", scheduler_id_for("DDPMScheduler")),
    "b7224e56-1440-43b9-ac86-66d66f9e8c91": ("P Sampler", None),
}

#: The seed's two budgets on width x height x inference steps.
PIXEL_STEPS_MAX: Final = 1024 * 1024 * 30  # at most
PIXEL_STEPS_BELOW: Final = 50 * 640 * 640  # strictly below

Side = Annotated[int, Field(ge=256, le=1024, multiple_of=8)]


class StablecogRequest(ApiModel):
    """The request body, as the seed documents it."""

    prompt: Annotated[StrictStr, Field(min_length=1)]
    model_id: StrictStr | None = None
    width: Side = 768
    height: Side = 768
    negative_prompt: StrictStr | None = None
    num_outputs: Annotated[int, Field(ge=1, le=4)] = 4
    guidance_scale: Annotated[float, Field(ge=1, le=20, allow_inf_nan=False)] = 7.0
    inference_steps: Annotated[int, Field(ge=10, le=50)] = 30
    scheduler_id: StrictStr | None = None
    seed: Annotated[int, Field(ge=1, le=SEED_MAX)] | None = None
    init_image_url: Annotated[StrictStr, Field(pattern=r"^https?://")] | None = None
    prompt_strength: Annotated[float, Field(ge=0, le=1)] | None = None


class StablecogVocabulary(Vocabulary[StablecogRequest]):
    """Stablecog: up to four images, answered with links and the credits left."""

    name: ClassVar[str] = "stablecog"
    title: ClassVar[str] = "Stablecog"
    request_model: ClassVar[type[ApiModel]] = StablecogRequest

    def plan(self, request: StablecogRequest) -> Plan:
        self._check_budget(request)
        model_uuid = request.model_id or SDXL
        scheduler_uuid = request.scheduler_id or EULER
        model = _lookup(self.title, MODELS, "model_id", model_uuid)
        scheduler = _lookup(self.title, SCHEDULERS, "scheduler_id", scheduler_uuid)
        fields: dict[str, Any] = {
            **size_fields(request.width, request.height),
            "modelId": model,
            "schedulerId": scheduler,
            "numberResults": request.num_outputs,
            "gScale": capped_guidance(request.guidance_scale),
            "steps": request.inference_steps,
        }
        if request.seed is not None:
            fields["seed"] = request.seed
        settings: dict[str, Any] = {
            "model_id": model_uuid,
            "scheduler_id": scheduler_uuid,
            "width": request.width,
            "height": request.height,
            "num_outputs": request.num_outputs,
            "guidance_scale": fields["gScale"],
            "inference_steps": request.inference_steps,
        }
        images: tuple[ImageInput, ...] = ()
        task_type = TaskType.TEXT_TO_IMAGE
        if request.init_image_url is not None:
            strength = 0.6 if request.prompt_strength is None else request.prompt_strength
            fields["strength"] = strength
            settings |= {"init_image_url": request.init_image_url, "prompt_strength": strength}
            images = (ImageInput("init", request.init_image_url, "init_image_url"),)
            task_type = TaskType.IMAGE_TO_IMAGE
        elif request.prompt_strength is not None:
            rule = "is used only with init_image_url"
            raise refused(self.title, "prompt_strength", request.prompt_strength, rule)
        return Plan(
            task_type,
            request.prompt,
            fields,
            settings,
            _NAMES,
            negative_prompt=request.negative_prompt or None,
            images=images,
        )

    def _check_budget(self, request: StablecogRequest) -> None:
        load = request.width * request.height * request.inference_steps
        if load > PIXEL_STEPS_MAX:
            rule = "width * height * inference_steps must be at most 1024 * 1024 * 30"
            raise refused(self.title, "inference_steps", request.inference_steps, rule)
        if load >= PIXEL_STEPS_BELOW:
            rule = "inference_steps * width * height must be below 50 * 640 * 640"
            raise refused(self.title, "inference_steps", request.inference_steps, rule)

    def respond(self, request: StablecogRequest, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        outputs = [{"id": image.image_uuid, "url": image.url} for image in outcome.images]
        seed = outcome.images[0].seed if outcome.images else None
        return {
            "outputs": outputs,
            "remaining_credits": outcome.credits_left,
            "settings": {**plan.settings, "seed": seed},
        }

    def refuse(self, message: str, request: StablecogRequest | None = None) -> dict[str, Any]:
        return {"error": message}


def _lookup(title: str, table: Mapping[str, tuple[str, Any]], parameter: str, value: str) -> Any:
    entry = table.get(value)
    if entry is None:
        rule = f"must be one of Stablecog's ids ({len(table)} known; README lists them)"
        raise refused(title, parameter, value, rule)
    name, ours = entry
    if ours is None:
        raise refused(title, parameter, value, f"{name} has no equivalent on this server")
    return ours


_NAMES: Final = {
    "promptText": "prompt",
    "modelId": "model_id",
    "schedulerId": "scheduler_id",
    "sizeId": "width",
    "width": "width",
    "height": "height",
    "numberResults": "num_outputs",
    "gScale": "guidance_scale",
    "steps": "inference_steps",
    "seed": "seed",
    "strength": "prompt_strength",
    "imageInitiatorUUID": "init_image_url",
}
