"""ModelsLab's text/image-to-image and inpainting request (``../shared/seeds/001_*``).

A finished request answers ``{"status": "success", "generationTime", "id", "output":
[links], "proxy_links", "nsfw_content_detected", "webhook_status", "meta", "track_id"}``, a
failed one ``{"status": "error", "message"}``; with a ``webhook`` the orchestrator also
POSTs the finished response there (retried), ``track_id`` in it.

Choices (README has the table):

- numbers may come as JSON strings (``"512"``), as ModelsLab's own examples send them;
- ``init_image`` alone is image-to-image, with ``mask_image`` inpainting; each is a link,
  or base64 when ``base64`` is yes; ``strength`` is our ``strength`` as it is;
- ``width``/``height`` up to 1024 are rounded to a multiple of 8;
- ``num_inference_steps`` only 21, 31 or 41 (default 31);
- ``guidance_scale`` 1-20 is our ``gScale``, capped at our 10 (``meta`` says what ran);
- ``clip_skip`` 1-8 counts the last layer as 1: ours is one less, capped at 2;
- the 18 schedulers map by name onto ours; ``LCMScheduler`` has no equivalent and is
  refused. ``use_karras_sigmas`` (default yes) and ``algorithm_type`` ``dpmsolver+++``
  choose among our DPM++ 2M variants for ``DPMSolverMultistepScheduler``; with any other
  scheduler Karras sigmas do not apply (``meta`` says no);
- ``enhance_prompt`` (default yes) runs our prompt enhancer first;
- ``safety_checker`` (default yes) asks for the NSFW check; a flagged image is replaced by
  a blank one, whatever ``safety_checker_type`` says (the seed: "replaced by a blank image");
- ``lora_model`` and ``lora_strength`` are comma lists of the same length (each strength
  0.1-1; without ``lora_strength`` each LoRA weighs 1);
- ``model_id`` is one of the slugs in :data:`MODEL_IDS`, or one of our model ids, names or
  AIR ids; ``vae`` (a custom VAE) is refused; ``tomesd`` and ``temp`` change nothing here
  (a speed option, and our links already expire with the server's retention);
- ``seed`` null is random (``meta.seed`` is the seed used); 0 is refused with that hint;
- ``key`` is not sent on: the orchestrator authenticates with its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, Field, StrictStr

from ..tables import (
    CLIP_SKIP_MAX,
    LORAS_MAX,
    MODELS,
    SEED_MAX,
    TaskType,
    model_id_for,
    scheduler_id_for,
)
from .base import (
    ApiModel,
    ImageInput,
    Outcome,
    OutputImage,
    Plan,
    Vocabulary,
    YesNo,
    blank_png,
    capped_guidance,
    data_uri,
    refused,
    size_fields,
    snapped,
)

__all__ = ["MODEL_IDS", "SCHEDULERS", "ModelsLabRequest", "ModelsLabVocabulary"]

#: ModelsLab's public model slugs that match one of ours.
MODEL_IDS: Final[Mapping[str, str]] = {
    "sdxl": "4",
    "rev-animated": "13",
    "absolute-reality": "18",
    "cyberrealistic": "19",
    "dreamshaper": "20",
    "ghostmix": "22",
    "samaritan-3d-cartoon": "25",
}

SchedulerName = Literal[
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "DPMSolverSinglestepScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DDIMInverseScheduler",
    "DEISMultistepScheduler",
    "IPNDMScheduler",
    "KarrasVeScheduler",
    "ScoreSdeVeScheduler",
    "LCMScheduler",
]
#: Each scheduler's id among ours (None: no equivalent).
SCHEDULERS: Final[Mapping[str, int | None]] = {
    name: None if name == "LCMScheduler" else scheduler_id_for(name)
    for name in SchedulerName.__args__  # type: ignore[attr-defined]
}
# DPMSolverMultistepScheduler's variants: (karras, sde) -> our scheduler id.
_DPM_2M: Final = {
    (True, False): scheduler_id_for("DPM++ 2M Karras"),
    (True, True): scheduler_id_for("DPM++ 2M SDE Karras"),
    (False, True): scheduler_id_for("DPM++ 2M SDE"),
    (False, False): scheduler_id_for("DPMSolverMultistepScheduler"),
}

Side = Annotated[int, Field(ge=64, le=1024)]


def _documented_steps(value: int) -> int:
    # A number, or its text ("31"): only the three the seed documents.
    if value not in (21, 31, 41):
        raise ValueError("must be 21, 31 or 41")
    return value


class ModelsLabRequest(ApiModel):
    """The body attributes, as the seed documents them."""

    prompt: Annotated[StrictStr, Field(min_length=1)]
    key: StrictStr | None = None
    model_id: StrictStr | None = None
    negative_prompt: StrictStr | None = None
    init_image: StrictStr | None = None
    mask_image: StrictStr | None = None
    width: Side = 512
    height: Side = 512
    samples: Annotated[int, Field(ge=1, le=4)] = 1
    num_inference_steps: Annotated[int, AfterValidator(_documented_steps)] = 31
    safety_checker: YesNo = True
    safety_checker_type: Literal["blur", "sensitive_content_text", "pixelate", "black"] = (
        "sensitive_content_text"
    )
    enhance_prompt: YesNo = True
    guidance_scale: Annotated[float, Field(ge=1, le=20, allow_inf_nan=False)] = 7.5
    strength: Annotated[float, Field(ge=0, le=1)] | None = None
    tomesd: YesNo = True
    use_karras_sigmas: YesNo = True
    algorithm_type: Literal["none", "dpmsolver+++"] | None = None
    vae: StrictStr | None = None
    lora_strength: StrictStr | float | None = None
    lora_model: StrictStr | None = None
    scheduler: SchedulerName | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] | None = None
    webhook: Annotated[StrictStr, Field(pattern=r"^https?://")] | None = None
    track_id: StrictStr | int | None = None
    clip_skip: Annotated[int, Field(ge=1, le=8)] | None = None
    base64: YesNo = False
    temp: YesNo = False


class ModelsLabVocabulary(Vocabulary[ModelsLabRequest]):
    """ModelsLab: text2img, img2img and inpaint, with webhooks."""

    name: ClassVar[str] = "modelslab"
    title: ClassVar[str] = "ModelsLab"
    request_model: ClassVar[type[ApiModel]] = ModelsLabRequest

    def plan(self, request: ModelsLabRequest) -> Plan:
        self._refuse_unsupported(request)
        width, height = snapped(request.width), snapped(request.height)
        fields: dict[str, Any] = {
            **size_fields(width, height),
            "numberResults": request.samples,
            "steps": request.num_inference_steps,
            "gScale": capped_guidance(request.guidance_scale),
            "checkNsfw": request.safety_checker,
        }
        settings: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "model_id": request.model_id or "sdxl",
            "width": width,
            "height": height,
            "samples": request.samples,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": fields["gScale"],
        }
        if request.model_id is not None:
            fields["modelId"] = self._model(request.model_id)
        scheduler, karras = self._scheduler(request)
        if scheduler is not None:
            fields["schedulerId"] = scheduler
        settings |= {"scheduler": request.scheduler, "use_karras_sigmas": _yes(karras)}
        if request.clip_skip is not None:
            fields["clipSkip"] = min(CLIP_SKIP_MAX, request.clip_skip - 1)
            settings["clip_skip"] = fields["clipSkip"] + 1
        if request.seed is not None:
            fields["seed"] = request.seed
        if request.lora_model is not None:
            fields["lora"] = self._loras(request.lora_model, request.lora_strength)
            settings |= {"lora_model": request.lora_model, "lora_strength": request.lora_strength}
        if request.base64:
            fields["returnBase64Image"] = True
        task_type, images = self._images(request)
        if request.strength is not None:
            fields["strength"] = request.strength
            settings["strength"] = request.strength
        settings |= {
            "safety_checker": _yes(request.safety_checker),
            "safety_checker_type": request.safety_checker_type,
            "enhance_prompt": _yes(request.enhance_prompt),
            "tomesd": _yes(request.tomesd),
            "base64": _yes(request.base64),
            "temp": _yes(request.temp),
        }
        return Plan(
            task_type,
            request.prompt,
            fields,
            settings,
            _NAMES,
            negative_prompt=request.negative_prompt or None,
            images=images,
            enhance_prompt=request.enhance_prompt,
            inline=request.base64,
            webhook=request.webhook,
        )

    def _refuse_unsupported(self, request: ModelsLabRequest) -> None:
        if request.vae is not None:
            raise refused(self.title, "vae", request.vae, "custom VAEs are not supported here")
        if request.seed == 0:
            raise refused(self.title, "seed", 0, "must be from 1 (null for a random seed)")
        if request.mask_image is not None and request.init_image is None:
            raise refused(self.title, "mask_image", "...", "needs init_image (inpainting)")
        if request.strength is not None and request.init_image is None:
            raise refused(self.title, "strength", request.strength, "is used only with init_image")

    def _model(self, model_id: str) -> str:
        if model_id in MODEL_IDS:
            return MODEL_IDS[model_id]
        if model_id in MODELS or ":" in model_id:
            return model_id  # one of ours, or an AIR id: the task's own rule judges it
        try:
            return model_id_for(model_id)
        except LookupError:
            known = ", ".join(MODEL_IDS)
            rule = f"must be one of {known}, or one of our model ids, names or AIR ids"
            raise refused(self.title, "model_id", model_id, rule) from None

    def _scheduler(self, request: ModelsLabRequest) -> tuple[int | None, bool]:
        # The scheduler id to send (None: the server's default) and whether Karras applied.
        name, sde = request.scheduler, request.algorithm_type == "dpmsolver+++"
        if name == "DPMSolverMultistepScheduler":
            return _DPM_2M[(request.use_karras_sigmas, sde)], request.use_karras_sigmas
        if sde:
            rule = "is used only with DPMSolverMultistepScheduler"
            raise refused(self.title, "algorithm_type", request.algorithm_type, rule)
        if name is None:
            return None, False
        scheduler = SCHEDULERS[name]
        if scheduler is None:
            raise refused(self.title, "scheduler", name, "has no equivalent on this server")
        return scheduler, False

    def _loras(self, models: str, strengths: str | float | None) -> list[dict[str, Any]]:
        names = [name.strip() for name in models.split(",")]
        if not all(names) or len(names) > LORAS_MAX:
            rule = f"must be 1 to {LORAS_MAX} comma-separated LoRA ids"
            raise refused(self.title, "lora_model", models, rule)
        weights = [1.0] * len(names) if strengths is None else _strengths(self.title, strengths)
        if len(weights) != len(names):
            rule = f"must give one strength per lora_model ({len(names)}), got {len(weights)}"
            raise refused(self.title, "lora_strength", strengths, rule)
        return [{"modelId": n, "weight": w} for n, w in zip(names, weights, strict=True)]

    def _images(self, request: ModelsLabRequest) -> tuple[TaskType, tuple[ImageInput, ...]]:
        if request.init_image is None:
            return TaskType.TEXT_TO_IMAGE, ()
        init = self._image(request, "init_image", request.init_image)
        images = [ImageInput("init", init, "init_image")]
        if request.mask_image is not None:
            mask = self._image(request, "mask_image", request.mask_image)
            images.append(ImageInput("mask", mask, "mask_image"))
            return TaskType.INPAINTING, (images[0], images[1])
        return TaskType.IMAGE_TO_IMAGE, (images[0],)

    def _image(self, request: ModelsLabRequest, parameter: str, value: str) -> str:
        if not request.base64 and not value.startswith(("http://", "https://")):
            rule = 'must be a link (http:// or https://), or base64 with base64 "yes"'
            raise refused(self.title, parameter, value, rule)
        return value

    def respond(self, request: ModelsLabRequest, plan: Plan, outcome: Outcome) -> dict[str, Any]:
        flagged = request.safety_checker and any(image.nsfw for image in outcome.images)
        output = [self._output(request, image) for image in outcome.images]
        seeds = [image.seed for image in outcome.images]
        response: dict[str, Any] = {
            "status": "success",
            "generationTime": round(outcome.seconds, 3),
            "id": outcome.task_uuid,
            "output": output,
            "proxy_links": [] if request.base64 else list(output),
            "nsfw_content_detected": flagged,
            "webhook_status": "",
            "meta": {
                **plan.settings,
                "prompt": outcome.prompt,
                "seed": seeds[0] if seeds else None,
            },
        }
        if request.track_id is not None:
            response["track_id"] = request.track_id
        return response

    def _output(self, request: ModelsLabRequest, image: OutputImage) -> str:
        if request.safety_checker and image.nsfw:  # the seed: "replaced by a blank image"
            return _encoded(request.base64, blank_png(image.width, image.height))
        if request.base64:
            assert image.data is not None, "base64 plans read the bytes"
            return _encoded(True, image.data)
        return image.url

    def refuse(self, message: str, request: ModelsLabRequest | None = None) -> dict[str, Any]:
        response: dict[str, Any] = {"status": "error", "message": message}
        if request is not None and request.track_id is not None:
            response["track_id"] = request.track_id
        return response


# The wire fields' names in this API, for errors found when the task is built.
_NAMES: Final = {
    "promptText": "prompt",
    "modelId": "model_id",
    "sizeId": "width",
    "width": "width",
    "height": "height",
    "numberResults": "samples",
    "steps": "num_inference_steps",
    "gScale": "guidance_scale",
    "seed": "seed",
    "schedulerId": "scheduler",
    "clipSkip": "clip_skip",
    "lora": "lora_model",
    "strength": "strength",
    "imageInitiatorUUID": "init_image",
    "imageMaskInitiatorUUID": "mask_image",
}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _strengths(title: str, value: str | float) -> list[float]:
    parts = [value] if isinstance(value, float | int) else str(value).split(",")
    try:
        weights = [float(part) for part in parts]
    except ValueError:
        raise refused(title, "lora_strength", value, "must be comma-separated numbers") from None
    if not all(0.1 <= w <= 1 for w in weights):
        raise refused(title, "lora_strength", value, "each must be 0.1 to 1")
    return weights


def _encoded(base64_text: bool, data: bytes) -> str:
    # base64 yes: the bare base64 text; otherwise a link, which for bytes made here is a
    # data URI (a blank image has no host).
    uri = data_uri(data)
    return uri.partition(",")[2] if base64_text else uri
