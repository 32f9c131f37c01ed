"""Tiny random Stable Diffusion pipelines, built in code: real architecture, no download.

The weights are random, so the images are noise-like, but every component is the real one
(a CLIP text model with a small hand-made BPE vocabulary, a UNet with cross-attention, a VAE
with the usual 8x downsampling), so everything a checkpoint does runs: schedulers, steps,
guidance, img2img, inpainting, ControlNet, LoRA. A pipeline is about 1.5 MB on disk.

``python -m orchestrator.server.diffusion.tiny DIR`` writes one (DIR/model, and a canny
ControlNet in DIR/controlnet-canny) and prints the serve command that uses it.
"""

from __future__ import annotations

import json
import string
import sys
import tempfile
from pathlib import Path
from typing import Final

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

__all__ = ["build_tiny_controlnet", "build_tiny_lora", "build_tiny_pipeline"]

#: Whole words the tokenizer knows; anything else is spelled out letter by letter.
WORDS: Final = (
    *("a", "an", "the", "of", "on", "in", "with", "and", "photo", "painting", "style"),
    *("red", "green", "blue", "yellow", "white", "black", "big", "small", "blurry"),
    *("cat", "dog", "house", "tree", "sky", "sea", "mountain", "city", "forest", "car"),
)
_HIDDEN: Final = 32


def _tokenizer(directory: Path) -> CLIPTokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in string.ascii_lowercase + string.digits + string.punctuation:
            vocab.setdefault(char + suffix, len(vocab))
    for word in WORDS:
        vocab.setdefault(word + "</w>", len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77
    )


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def _vae() -> AutoencoderKL:
    # Four blocks: the 8x downsampling of a real checkpoint, so sizes mean what they do there.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )


def build_tiny_pipeline(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random Stable Diffusion pipeline to ``directory`` (``save_pretrained``)
    and return it. The same ``seed`` gives the same weights."""
    directory = Path(directory)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:  # save_pretrained writes its own copy
        tokenizer = _tokenizer(Path(scratch))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=_HIDDEN,
            intermediate_size=37,
            num_hidden_layers=3,  # clipSkip 2 still leaves one
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=_HIDDEN,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


def build_tiny_controlnet(model_dir: str | Path, directory: str | Path, *, seed: int = 1) -> Path:
    """Write a ControlNet for the tiny pipeline in ``model_dir`` to ``directory``. Its zero
    convolutions are randomised, so the guide really changes the image."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16))
    with torch.no_grad():
        for block in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
            for parameter in block.parameters():
                parameter.normal_(0, 0.5)
    controlnet.save_pretrained(directory)
    return Path(directory)


def build_tiny_lora(model_dir: str | Path, path: str | Path, *, seed: int = 2) -> Path:
    """Write a random LoRA for the tiny pipeline's UNet to the file ``path`` (needs peft)."""
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(config)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.5)
    path = Path(path)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=path.name
    )
    return path


def main(argv: list[str] | None = None) -> int:
    """Write a tiny pipeline and a canny ControlNet under the directory given."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.server.diffusion.tiny DIR", file=sys.stderr)
        return 2
    root = Path(args[0])
    model = build_tiny_pipeline(root / "model")
    canny = build_tiny_controlnet(model, root / "controlnet-canny")
    print(f"orchestrator serve --backend diffusers --model-dir {model} --controlnet canny={canny}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
