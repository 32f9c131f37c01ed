"""Loading a local diffusers pipeline, and the variants each task type runs on.

Everything loads from disk only (``local_files_only``; nothing is fetched from a hub). The
text-to-image pipeline is loaded once; image-to-image, inpainting and the ControlNet
pipelines are made from it with ``from_pipe``, so they share its weights and cost no memory
of their own. LoRA adapters load into the shared components on first use.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import diffusers.utils.logging
import torch
import transformers.utils.logging
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    ControlNetModel,
)

from ..backends import BackendError
from ..config import DiffusionSettings

__all__ = ["Device", "Pipelines", "choose_device", "lora_file_name"]

log = logging.getLogger("orchestrator.server")

_DTYPES: Final[Mapping[str, torch.dtype]] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Device:
    """Where the pipelines run."""

    name: str  # "cuda", "cuda:1", "mps", "cpu"
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{self.name} ({str(self.dtype).removeprefix('torch.')})"


def choose_device(settings: DiffusionSettings) -> Device:
    """``settings.device``, or CUDA when present (float16), else the CPU (float32)."""
    name = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device = {name!r}: this torch build sees no CUDA device")
    if settings.dtype is None:
        dtype = torch.float32 if name == "cpu" else torch.float16
    elif settings.dtype in _DTYPES:
        dtype = _DTYPES[settings.dtype]
    else:
        raise BackendError(f"dtype = {settings.dtype!r}: must be one of {sorted(_DTYPES)}")
    return Device(name, dtype)


def lora_file_name(model_id: str | int) -> str:
    """The file a LoRA's model id names in ``lora_dir``: the id with every character
    outside ``A-Za-z0-9._-`` made ``_`` (``civitai:101055@128078`` is
    ``civitai_101055_128078.safetensors``)."""
    return _UNSAFE_NAME.sub("_", str(model_id)) + ".safetensors"


def _pipeline_dir(value: str | None, what: str) -> Path:
    if value is None:
        raise BackendError(f"{what}: required by the diffusers backend (a pipeline directory)")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise BackendError(f"{what} = {value}: no such directory")
    if not (path / "model_index.json").is_file() and not (path / "config.json").is_file():
        raise BackendError(
            f"{what} = {value}: not a diffusers model directory (no model_index.json); "
            "make one with save_pretrained"
        )
    return path


class Pipelines:
    """The loaded pipeline and its variants, on one device. Not thread-safe: the backend
    runs one job at a time per device."""

    def __init__(self, settings: DiffusionSettings) -> None:
        self.settings = settings
        self.model_dir = _pipeline_dir(settings.model_dir, "model_dir")
        self.controlnet_dirs = {
            name: _pipeline_dir(path, f"controlnets[{name!r}]")
            for name, path in settings.controlnets.items()
        }
        self.device = choose_device(settings)
        self._variants: dict[object, Any] = {}
        self._controlnets: dict[str, Any] = {}
        self._loras: set[str] = set()
        self._lora_active = False
        self.base: Any = None
        self.default_scheduler: Any = None  # the checkpoint's own: every job's template

    def load(self) -> None:
        """Load the text-to-image pipeline (seconds to minutes for a real checkpoint)."""
        # The libraries' progress bars and per-call notes (a scheduler adjusting its own
        # config) would fill a server's log; their errors still show.
        for library in (diffusers.utils.logging, transformers.utils.logging):
            library.disable_progress_bar()
            library.set_verbosity_error()
        try:
            with warnings.catch_warnings():
                # Newer diffusers call it ``dtype``; ``torch_dtype`` works in every release.
                warnings.filterwarnings("ignore", message=".*`dtype`")
                pipe = AutoPipelineForText2Image.from_pretrained(
                    self.model_dir, torch_dtype=self.device.dtype, local_files_only=True
                )
        except (OSError, ValueError) as exc:
            raise BackendError(f"model_dir = {self.model_dir}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self.base = pipe.to(self.device.name)
        self.default_scheduler = pipe.scheduler
        self._variants["text"] = self.base

    @property
    def family(self) -> str:
        """The pipeline's class name (``StableDiffusionPipeline``, ...), as its directory
        says before it is loaded."""
        if self.base is not None:
            return type(self.base).__name__
        index = self.model_dir / "model_index.json"
        try:
            return str(json.loads(index.read_text())["_class_name"])
        except (OSError, ValueError, KeyError):
            return "a diffusers pipeline"

    def text_to_image(self) -> Any:
        """The loaded pipeline itself."""
        return self.base

    def image_to_image(self) -> Any:
        """Image-to-image on the loaded weights."""
        return self._variant("image", AutoPipelineForImage2Image)

    def inpainting(self) -> Any:
        """Inpainting on the loaded weights (a plain checkpoint inpaints by blending
        latents under the mask; an inpainting checkpoint uses its extra channels)."""
        return self._variant("inpaint", AutoPipelineForInpainting)

    def controlnet(self, preprocessors: Sequence[str], *, init_image: bool) -> Any:
        """A ControlNet pipeline guided by the models for ``preprocessors``, in order."""
        models = [self._controlnet(name) for name in preprocessors]
        key = ("controlnet", init_image, tuple(preprocessors))
        auto = AutoPipelineForImage2Image if init_image else AutoPipelineForText2Image
        return self._variant(key, auto, controlnet=models[0] if len(models) == 1 else models)

    def _variant(self, key: object, auto: Any, **components: Any) -> Any:
        pipe = self._variants.get(key)
        if pipe is None:
            pipe = auto.from_pipe(self.base, **components)
            pipe.set_progress_bar_config(disable=True)
            self._variants[key] = pipe
        return pipe

    def _controlnet(self, preprocessor: str) -> Any:
        model = self._controlnets.get(preprocessor)
        if model is None:
            path = self.controlnet_dirs[preprocessor]
            model = ControlNetModel.from_pretrained(
                path, torch_dtype=self.device.dtype, local_files_only=True
            ).to(self.device.name)
            self._controlnets[preprocessor] = model
        return model

    def prompt_embeddings(self, pipe: Any, prompt: str, clip_skip: int) -> Any:
        """``prompt``'s CLIP embeddings from ``clip_skip`` layers before the last, for a
        one-text-encoder pipeline, through the final layer norm as the pipeline does for its
        own ``clip_skip``. Here because that path of diffusers expects the text model inside
        a ``text_model`` attribute, which newer transformers' CLIPTextModel no longer has."""
        tokens = pipe.tokenizer(
            prompt,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device.name)
        encoder = pipe.text_encoder
        hidden = encoder(tokens, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
        norm = getattr(encoder, "text_model", encoder).final_layer_norm
        return norm(hidden).to(self.device.dtype)

    def lora_path(self, model_id: str | int) -> Path | None:
        """The file of a LoRA in ``lora_dir``, or ``None`` if there is none."""
        if self.settings.lora_dir is None:
            return None
        path = Path(self.settings.lora_dir).expanduser() / lora_file_name(model_id)
        return path if path.is_file() else None

    def use_loras(self, pipe: Any, loras: Sequence[tuple[Path, float]]) -> None:
        """Make ``pipe`` run with exactly these LoRAs at these weights (none: plain)."""
        if not loras:
            if self._lora_active:
                pipe.disable_lora()
                self._lora_active = False
            return
        names = []
        for path, _ in loras:
            name = path.stem.replace(".", "_")
            if name not in self._loras:
                self.base.load_lora_weights(
                    str(path.parent), weight_name=path.name, adapter_name=name
                )
                self._loras.add(name)
            names.append(name)
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=[weight for _, weight in loras])
        self._lora_active = True
