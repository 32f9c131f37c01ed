"""The image-to-image form API (``../shared/seeds/002_*``), on our image-to-image task.

It answers ``{"code": 0, "message": "success", "data": {"image": base64, "seed"}}``, and
``{"code": -1, "message": reason, "data": {}}`` on failure.

Choices (README has the table):

- values may come as text (it is a form: every field of a multipart body is text);
- ``width``/``height`` are marked required, but the seed's own example sends neither:
  they are optional, 512 each by default, 320-1536 in steps of 64 when given;
- ``image_strength`` (default 0.35) is how *close* to the init image to stay, so our
  ``strength`` (how far to move) is 1 - image_strength;
- ``cfg_scale`` 0-35 (default 7) is our ``gScale``, capped at our 10;
- ``sampler`` maps onto our schedulers (README's table); ``K_DPMPP_2S_ANCESTRAL``, which
  we lack, runs as DPMSolverSinglestepScheduler, the nearest;
- ``style_preset``: the eleven we have become our style ids; the other six (3d-model,
  cinematic, enhance, modeling-compound, pixel-art, tile-texture) are written into the
  prompt as ``", <preset> style"``;
- ``clip_guidance_preset`` other than NONE is refused: we have no CLIP guidance;
- ``seed`` 0 (or none) is random, and ``data.seed`` is the seed used.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, StrictBytes, StrictStr

from ..tables import SEED_MAX, TaskType, scheduler_id_for, style_id_for
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

__all__ = ["SAMPLERS", "STYLE_PRESETS", "ImageToImageRequest", "ImageToImageVocabulary"]

Sampler = Literal[
    "DDIM",
    "DDPM",
    "K_DPMPP_2M",
    "K_DPMPP_2S_ANCESTRAL",
    "K_DPM_2",
    "K_DPM_2_ANCESTRAL",
    "K_EULER",
    "K_EULER_ANCESTRAL",
    "K_HEUN",
    "K_LMS",
]
SAMPLERS: Final[Mapping[str, int]] = {
    "DDIM": scheduler_id_for("DDIMScheduler"),
    "DDPM": scheduler_id_for("DDPMScheduler"),
    "K_DPMPP_2M": scheduler_id_for("DPMSolverMultistepScheduler"),
    "K_DPMPP_2S_ANCESTRAL": scheduler_id_for("DPMSolverSinglestepScheduler"),  # nearest
    "K_DPM_2": scheduler_id_for("KDPM2DiscreteScheduler"),
    "K_DPM_2_ANCESTRAL": scheduler_id_for("KDPM2AncestralDiscreteScheduler"),
    "K_EULER": scheduler_id_for("EulerDiscreteScheduler"),
    "K_EULER_ANCESTRAL": scheduler_id_for("EulerAncestralDiscreteScheduler"),
    "K_HEUN": scheduler_id_for("HeunDiscreteScheduler"),
    "K_LMS": scheduler_id_for("LMSDiscreteScheduler"),
}
StylePreset = Literal[
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
]
_IN_THE_PROMPT: Final = frozenset(
    ("3d-model", "cinematic", "enhance", "modeling-compound", "pixel-art", "tile-texture")
)
#: Each preset's style id among ours; None: written into the prompt instead.
STYLE_PRESETS: Final[Mapping[str, int | None]] = {
    preset: None if preset in _IN_THE_PROMPT else style_id_for(preset.replace("-", " "))
    for preset in StylePreset.__args__  # type: ignore[attr-defined]
}

Side = Annotated[int, Field(ge=320, le=1536, multiple_of=64)]


class ImageToImageRequest(ApiModel):
    """The form's fields, as the seed documents them."""

    init_image: StrictBytes | StrictStr = Field(repr=False)
    prompt: Annotated[StrictStr, Field(min_length=1)]
    width: Side = 512
    height: Side = 512
    image_strength: Annotated[float, Field(ge=0, le=1)] = 0.35
    cfg_scale: Annotated[int, Field(ge=0, le=35)] = 7
    clip_guidance_preset: (
        Literal["FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"] | None
    ) = None
    sampler: Sampler | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    steps: Annotated[int, Field(ge=10, le=50)] = 30
    style_preset: StylePreset | None = None


class ImageToImageVocabulary(Vocabulary[ImageToImageRequest]):
    """The form API: one image from an init image, answered in base64."""

    name: ClassVar[str] = "imagetoimage"
    title: ClassVar[str] = "image-to-image form API"
    request_model: ClassVar[type[ApiModel]] = ImageToImageRequest

    def plan(self, request: ImageToImageRequest) -> Plan:
        preset = request.clip_guidance_preset
        if preset not in (None, "NONE"):
            rule = "must be NONE: CLIP guidance has no equivalent here"
            raise refused(self.title, "clip_guidance_preset", preset, rule)
        prompt = request.prompt
        fields: dict[str, Any] = {
            **size_fields(request.width, request.height),
            "strength": round(1 - request.image_strength, 6),
            "gScale": capped_guidance(request.cfg_scale),
            "steps": request.steps,
            "returnBase64Image": True,
        }
        if request.sampler is not None:
            fields["schedulerId"] = SAMPLERS[request.sampler]
        if request.style_preset is not None:
            style = STYLE_PRESETS[request.style_preset]
            if style is None:
                prompt = f"{prompt}, {request.style_preset.replace('-', ' ')} style"
            else:
                fields["styleId"] = style
        if request.seed:
            fields["seed"] = request.seed
        settings = {"width": request.width, "height": request.height, "cfg_scale": fields["gScale"]}
        return Plan(
            TaskType.IMAGE_TO_IMAGE,
            prompt,
            fields,
            settings,
            _NAMES,
            images=(ImageInput("init", request.init_image, "init_image"),),
            inline=True,
        )

    def respond(self, request: ImageToImageRequest, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        image = outcome.images[0]
        assert image.data is not None, "this API answers with the bytes"
        data = {"image": base64.b64encode(image.data).decode(), "seed": image.seed}
        return {"code": 0, "message": "success", "data": data}

    def refuse(self, message: str, request: ImageToImageRequest | None = None) -> dict[str, Any]:
        return {"code": -1, "message": message, "data": {}}


_NAMES: Final = {
    "promptText": "prompt",
    "sizeId": "width",
    "width": "width",
    "height": "height",
    "strength": "image_strength",
    "gScale": "cfg_scale",
    "steps": "steps",
    "seed": "seed",
    "imageInitiatorUUID": "init_image",
}
