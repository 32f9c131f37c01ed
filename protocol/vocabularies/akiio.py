"""AKI.IO's image-generation request (``../shared/seeds/000_*``), on our ``newTask``.

AKI.IO runs the AIME API server: a finished call answers ``{"success": true, "job_id",
"images": [data URIs], "seed", "prompt", "compute_duration", "total_duration"}`` and a
failed one ``{"success": false, "error": ...}``.

Choices (README has the table):

- ``width``/``height`` (128-2048, any integer) are rounded to the nearest multiple of 8
  (16 with ``quality="preview"``, which computes at half of each side), and sent as a
  sizeId when our table has that size, else as our width/height extension. They default to
  1024 x 1024; the seed marks them neither required nor optional.
- ``seed`` -1 (the default) is random, and the response carries the seed used; 0 is not a
  seed on our wire, so it is refused with that hint.
- ``steps`` default to our server's recommendation (20), 1-50 as the seed says.
- ``true_cfg_scale`` 0-10 is our ``gScale`` as it is; its default is the middle, 5.
- ``quality`` scales the steps and the compute resolution, so the same seed keeps its
  composition: ``max`` x1.5 steps, ``high`` (default) x1, ``fast`` x0.6, ``preview`` x0.5
  steps at half the resolution, upscaled 2x by our upscaler.
- numbers may come as text (``"512"``), as a CSV cell does;
- ``key`` authenticates a call to AKI.IO; the orchestrator authenticates with its own key,
  so the request's is not sent on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, StrictStr

from ..tables import DEFAULT_STEPS, SEED_MAX, STEPS_MAX, TaskType
from .base import ApiModel, Outcome, Plan, Vocabulary, data_uri, refused, size_fields, snapped

__all__ = ["QUALITY", "AkiRequest", "AkiVocabulary"]

#: quality -> (steps factor, compute resolution factor)
QUALITY: Final[Mapping[str, tuple[float, float]]] = {
    "max": (1.5, 1.0),
    "high": (1.0, 1.0),
    "fast": (0.6, 1.0),
    "preview": (0.5, 0.5),
}

Side = Annotated[int, Field(ge=128, le=2048)]


class AkiRequest(ApiModel):
    """The request parameters, as the seed documents them."""

    prompt: Annotated[StrictStr, Field(min_length=1)]
    key: StrictStr | None = None
    negative_prompt: StrictStr | None = None
    width: Side = 1024
    height: Side = 1024
    seed: Annotated[int, Field(ge=-1, le=SEED_MAX)] = -1
    steps: Annotated[int, Field(ge=1, le=50)] | None = None
    true_cfg_scale: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 5.0
    quality: Literal["max", "high", "fast", "preview"] = "high"


class AkiVocabulary(Vocabulary[AkiRequest]):
    """AKI.IO: one image per call, answered in base64."""

    name: ClassVar[str] = "akiio"
    title: ClassVar[str] = "AKI.IO"
    request_model: ClassVar[type[ApiModel]] = AkiRequest

    def plan(self, request: AkiRequest) -> Plan:
        if request.seed == 0:
            raise refused(self.title, "seed", 0, "must be -1 (random) or a seed from 1")
        step_factor, scale = QUALITY[request.quality]
        grid = 16 if scale < 1 else 8  # a half that stays on the 8-pixel grid
        width, height = snapped(request.width, grid), snapped(request.height, grid)
        base = request.steps or DEFAULT_STEPS
        steps = min(STEPS_MAX, max(1, round(base * step_factor)))
        fields: dict[str, Any] = {
            **size_fields(int(width * scale), int(height * scale)),
            "steps": steps,
            "gScale": float(request.true_cfg_scale),
            "returnBase64Image": True,
        }
        if request.seed != -1:
            fields["seed"] = request.seed
        settings = {
            "width": width,
            "height": height,
            "steps": steps,
            "true_cfg_scale": float(request.true_cfg_scale),
            "quality": request.quality,
        }
        names = {"steps": "steps", "gScale": "true_cfg_scale", "seed": "seed"}
        return Plan(
            TaskType.TEXT_TO_IMAGE,
            request.prompt,
            fields,
            settings,
            names | {"promptText": "prompt", "sizeId": "width", "width": "width"},
            negative_prompt=request.negative_prompt or None,
            upscale=round(1 / scale) if scale < 1 else None,
            inline=True,
        )

    def respond(self, request: AkiRequest, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        image = outcome.images[0] if outcome.images else None
        return {
            "success": True,
            "job_id": outcome.task_uuid,
            "images": [data_uri(i.data) for i in outcome.images if i.data is not None],
            "seed": image.seed if image is not None else None,
            "prompt": outcome.prompt,
            **plan.settings,
            "compute_duration": round(outcome.seconds, 3),
            "total_duration": round(outcome.seconds, 3),
        }

    def refuse(self, message: str, request: AkiRequest | None = None) -> dict[str, Any]:
        return {"success": False, "error": message}
