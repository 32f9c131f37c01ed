"""The four seed vocabularies against their own documents: every parameter the document
lists is accepted and mapped, every documented limit is refused naming the parameter as
that API names it, and the defaults apply. Pure: no server here (the end-to-end runs are in
test_vocabularies_e2e.py)."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import LocalProtocolError, UsageError
from protocol.messages import NewTask
from protocol.tables import SCHEDULERS, STYLES, TaskType
from protocol.vocabularies import VOCABULARIES, Plan, vocabulary
from protocol.vocabularies.base import blank_png, snapped

TASK = str(uuid.uuid4())
PNG = blank_png(64, 64)
URL = "https://images.example/cat.png"


def seed(shared: Path, prefix: str) -> str:
    (path,) = (shared / "seeds").glob(f"{prefix}_*.txt")
    return path.read_text()


def prepared(name: str, request: dict[str, Any]) -> tuple[Any, Plan, NewTask]:
    vocab = vocabulary(name)
    parsed, plan = vocab.prepare(request, TASK)
    refs = {image.role: str(uuid.uuid4()) for image in plan.images}
    return parsed, plan, plan.new_task(TASK, refs)


def refused(name: str, request: dict[str, Any]) -> tuple[str, str]:
    """(parameter, rule) of the first broken rule."""
    with pytest.raises(LocalProtocolError) as caught:
        vocabulary(name).prepare(request, TASK)
    assert caught.value.errors, str(caught.value)
    first = caught.value.errors[0]
    return first.field, first.rule


def test_the_names_are_discoverable_and_an_unknown_one_is_refused() -> None:
    assert set(VOCABULARIES) == {"akiio", "modelslab", "imagetoimage", "stablecog"}
    with pytest.raises(UsageError, match="akiio, modelslab, imagetoimage, stablecog"):
        vocabulary("midjourney")


def test_an_unknown_parameter_is_refused_by_its_name() -> None:
    for name in VOCABULARIES:
        base: dict[str, Any] = {"prompt": "a"} | (
            {"init_image": PNG} if name == "imagetoimage" else {}
        )
        parameter, rule = refused(name, base | {"no_such": 1})
        assert parameter == "no_such" and "not a field" in rule


# -- AKI.IO ---------------------------------------------------------------------------------


def aki_parameters(text: str) -> set[str]:
    # "prompt:string", "seed:integer (optional)", "negative_prompt (optional)"
    return set(re.findall(r"^([a-z_]+)(?::[a-z]+)?(?: \(optional\))?$", text, re.M)) - {"a"}


def test_akiio_accepts_every_documented_parameter(shared: Path) -> None:
    text = seed(shared, "000")
    documented = aki_parameters(text)
    assert {"key", "prompt", "width", "height", "seed", "quality", "true_cfg_scale"} <= documented
    model = VOCABULARIES["akiio"].request_model
    assert documented == set(model.model_fields)
    qualities = re.findall(r"“(\w+)”", text.split("quality:string")[1])[:4]
    assert qualities == ["max", "high", "fast", "preview"]
    for quality in qualities:
        prepared("akiio", {"prompt": "a", "quality": quality})


def test_akiio_limits_from_its_document(shared: Path) -> None:
    text = seed(shared, "000")
    low, high = map(int, re.search(r"range of (\d+) to (\d+) pixels", text).groups())  # type: ignore[union-attr]
    cfg_low, cfg_high = map(int, re.search(r"range is (\d+) to (\d+)", text).groups())  # type: ignore[union-attr]
    for side in ("width", "height"):
        assert refused("akiio", {"prompt": "a", side: low - 1})[0] == side
        assert refused("akiio", {"prompt": "a", side: high + 1})[0] == side
        prepared("akiio", {"prompt": "a", side: low})
        prepared("akiio", {"prompt": "a", side: high})
    assert (
        refused("akiio", {"prompt": "a", "true_cfg_scale": cfg_high + 0.5})[0] == "true_cfg_scale"
    )
    assert refused("akiio", {"prompt": "a", "true_cfg_scale": cfg_low - 1})[0] == "true_cfg_scale"
    assert refused("akiio", {"prompt": "a", "quality": "ultra"})[0] == "quality"
    assert refused("akiio", {"prompt": ""})[0] == "prompt"
    assert refused("akiio", {"prompt": "a", "seed": 0}) == (
        "seed",
        "must be -1 (random) or a seed from 1",
    )


def test_akiio_defaults_and_mapping() -> None:
    _, plan, task = prepared("akiio", {"prompt": "a fox", "negative_prompt": "rain", "key": "k"})
    assert task.dimensions == (1024, 1024) and task.size_id == 11  # in our table: a sizeId
    assert task.steps == 20 and task.g_scale == 5.0 and task.seed is None  # -1: random
    assert task.positive_prompt == "a fox" and task.negative_prompt == "rain"
    assert plan.inline and plan.upscale is None
    _, _, task = prepared("akiio", {"prompt": "a", "width": 1001, "height": 333, "seed": 9})
    assert (task.width, task.height, task.seed) == (1000, 336, 9)  # the 8-pixel grid


def test_akiio_quality_scales_steps_and_resolution() -> None:
    steps = {}
    for quality in ("max", "high", "fast", "preview"):
        _, plan, task = prepared("akiio", {"prompt": "a", "steps": 40, "quality": quality})
        steps[quality] = task.steps
        assert plan.upscale == (2 if quality == "preview" else None)
        assert task.dimensions == ((512, 512) if quality == "preview" else (1024, 1024))
    assert steps == {"max": 60, "high": 40, "fast": 24, "preview": 20}


# -- ModelsLab ------------------------------------------------------------------------------


def table_rows(text: str, header: str) -> list[list[str]]:
    section = text.split(header, 1)[1]
    rows = []
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[a-z0-9_]+", cells[0]):
            break
        rows.append(cells)
    return rows


def test_modelslab_accepts_every_documented_parameter(shared: Path) -> None:
    text = seed(shared, "001")
    documented = {row[0] for row in table_rows(text, "Parameter | Description |")}
    assert len(documented) == 28
    assert documented == set(VOCABULARIES["modelslab"].request_model.model_fields)


def test_modelslab_schedulers_map_by_name(shared: Path) -> None:
    text = seed(shared, "001")
    names = re.findall(r"^- ?(\w+Scheduler)$|:- (\w+Scheduler)$", text, re.M)
    listed = [a or b for a, b in names]
    assert len(listed) == 18
    for name in listed:
        if name == "LCMScheduler":
            assert refused("modelslab", {"prompt": "a", "scheduler": name}) == (
                "scheduler",
                "has no equivalent on this server",
            )
            continue
        _, _, task = prepared(
            "modelslab", {"prompt": "a", "scheduler": name, "use_karras_sigmas": "no"}
        )
        assert SCHEDULERS[task.scheduler_id] == name  # type: ignore[index]


def test_modelslab_dpm_variants_follow_karras_and_algorithm_type() -> None:
    request = {"prompt": "a", "scheduler": "DPMSolverMultistepScheduler"}
    variants = {
        ("yes", None): "DPM++ 2M Karras",
        ("no", None): "DPMSolverMultistepScheduler",
        ("yes", "dpmsolver+++"): "DPM++ 2M SDE Karras",
        ("no", "dpmsolver+++"): "DPM++ 2M SDE",
    }
    for (karras, algorithm), ours in variants.items():
        extra = {"use_karras_sigmas": karras, "algorithm_type": algorithm}
        _, plan, task = prepared("modelslab", request | extra)
        assert SCHEDULERS[task.scheduler_id] == ours  # type: ignore[index]
        assert plan.settings["use_karras_sigmas"] == karras
    bad = {"prompt": "a", "scheduler": "DDIMScheduler", "algorithm_type": "dpmsolver+++"}
    assert refused("modelslab", bad)[0] == "algorithm_type"


def test_modelslab_limits_from_its_document(shared: Path) -> None:
    text = seed(shared, "001")
    assert "The maximum value is 4" in text and "accepts 21,31,41" in text
    ok = {"prompt": "a"}
    assert refused("modelslab", ok | {"samples": 5})[0] == "samples"
    for steps in (21, 31, 41):
        assert prepared("modelslab", ok | {"num_inference_steps": steps})[2].steps == steps
    assert refused("modelslab", ok | {"num_inference_steps": 30}) == (
        "num_inference_steps",
        "must be 21, 31 or 41",
    )
    assert refused("modelslab", ok | {"guidance_scale": 0.5})[0] == "guidance_scale"
    assert refused("modelslab", ok | {"guidance_scale": 21})[0] == "guidance_scale"
    assert refused("modelslab", ok | {"clip_skip": 9})[0] == "clip_skip"
    assert refused("modelslab", ok | {"clip_skip": 0})[0] == "clip_skip"
    assert refused("modelslab", ok | {"width": 1025})[0] == "width"
    assert refused("modelslab", ok | {"height": 1032})[0] == "height"
    assert refused("modelslab", ok | {"safety_checker": "maybe"})[0] == "safety_checker"
    assert refused("modelslab", ok | {"safety_checker_type": "smudge"})[0] == "safety_checker_type"
    loras = ok | {"lora_model": "contrast-fix,yae-miko-genshin"}
    assert refused("modelslab", loras | {"lora_strength": "0.5"})[0] == "lora_strength"
    assert refused("modelslab", loras | {"lora_strength": "0.5,1.5"})[0] == "lora_strength"
    assert refused("modelslab", loras | {"lora_strength": "0.05,1"})[0] == "lora_strength"
    assert refused("modelslab", ok | {"vae": "my-vae"})[0] == "vae"
    assert refused("modelslab", ok | {"model_id": "nobody-knows"})[0] == "model_id"
    assert refused("modelslab", ok | {"mask_image": URL})[0] == "mask_image"
    assert refused("modelslab", ok | {"strength": 0.5})[0] == "strength"
    assert refused("modelslab", ok | {"init_image": "aGVsbG8="})[0] == "init_image"  # not a link
    assert refused("modelslab", ok | {"webhook": "ftp://x"})[0] == "webhook"


def test_modelslab_defaults_and_mapping() -> None:
    _, plan, task = prepared("modelslab", {"prompt": "a", "key": "k", "seed": None})
    assert task.dimensions == (512, 512) and task.number_results == 1 and task.steps == 31
    assert task.g_scale == 7.5 and task.check_nsfw and task.seed is None
    assert plan.enhance_prompt and not plan.inline and plan.webhook is None
    request = {
        "prompt": "a",
        "model_id": "dreamshaper",
        "width": "700",
        "height": "900",
        "samples": "4",
        "guidance_scale": 15,
        "clip_skip": 2,
        "seed": 12345,
        "lora_model": "contrast-fix,yae-miko-genshin",
        "lora_strength": "0.5,0.8",
        "safety_checker": "no",
        "enhance_prompt": "no",
        "base64": "yes",
        "init_image": "aGVsbG8=",
        "mask_image": "aGVsbG8=",
        "strength": 0.4,
        "webhook": "http://127.0.0.1:1/hook",
        "track_id": "job-7",
        "tomesd": "no",
        "temp": "yes",
    }
    _, plan, task = prepared("modelslab", request)
    assert task.task_type is TaskType.INPAINTING and task.strength == 0.4
    assert (task.width, task.height, task.number_results) == (704, 904, 4)
    assert task.g_scale == 10.0 and plan.settings["guidance_scale"] == 10.0  # capped, and said
    assert task.clip_skip == 1 and task.seed == 12345 and task.model_id == "20"
    assert [(lora.model_id, lora.weight) for lora in task.lora or ()] == [
        ("contrast-fix", 0.5),
        ("yae-miko-genshin", 0.8),
    ]
    assert not task.check_nsfw and not plan.enhance_prompt and plan.inline
    assert [image.role for image in plan.images] == ["init", "mask"]
    assert plan.webhook == "http://127.0.0.1:1/hook"
    assert plan.settings["tomesd"] == "no" and plan.settings["temp"] == "yes"
    _, plan, task = prepared("modelslab", {"prompt": "a", "init_image": URL})
    assert task.task_type is TaskType.IMAGE_TO_IMAGE and plan.images[0].source == URL


# -- the image-to-image form API -------------------------------------------------------------


def test_imagetoimage_accepts_every_documented_parameter(shared: Path) -> None:
    text = seed(shared, "002")
    rows = table_rows(text, "Parameter | Type | Required | Description |")
    documented = {row[0] for row in rows}
    assert documented == set(VOCABULARIES["imagetoimage"].request_model.model_fields)
    enums = {row[0]: row[3].split("Enum: ")[1].split(" ") for row in rows if "Enum: " in row[3]}
    for preset in enums["clip_guidance_preset"]:
        request = {"prompt": "a", "init_image": PNG, "clip_guidance_preset": preset}
        if preset == "NONE":
            prepared("imagetoimage", request)
        else:
            assert refused("imagetoimage", request)[0] == "clip_guidance_preset"
    samplers = [s for s in enums["sampler"] if s.isupper()]
    assert len(samplers) == 10
    for sampler in samplers:
        _, _, task = prepared(
            "imagetoimage", {"prompt": "a", "init_image": PNG, "sampler": sampler}
        )
        assert task.scheduler_id in SCHEDULERS
    presets = [p for p in enums["style_preset"] if p.islower() and p != "pass"]
    styles = [p.rstrip(".") for p in presets[:17]]
    assert len(styles) == 17
    for style in styles:
        _, plan, task = prepared(
            "imagetoimage", {"prompt": "a", "init_image": PNG, "style_preset": style}
        )
        # A style we have is our styleId; one we lack is said in the prompt.
        assert task.style_id in STYLES or plan.prompt == f"a, {style.replace('-', ' ')} style"


def test_imagetoimage_limits_from_its_document(shared: Path) -> None:
    text = seed(shared, "002")
    assert "between 320 and 1536 pixels, in an increment divisible by 64" in text
    ok: dict[str, Any] = {"prompt": "a", "init_image": PNG}
    for side in ("width", "height"):
        assert refused("imagetoimage", ok | {side: 256})[0] == side
        assert refused("imagetoimage", ok | {side: 1600})[0] == side
        assert refused("imagetoimage", ok | {side: 330})[0] == side
        prepared("imagetoimage", ok | {side: 1536})
    assert refused("imagetoimage", ok | {"image_strength": 1.5})[0] == "image_strength"
    assert refused("imagetoimage", ok | {"cfg_scale": 36})[0] == "cfg_scale"
    assert refused("imagetoimage", ok | {"steps": 9})[0] == "steps"
    assert refused("imagetoimage", ok | {"steps": 51})[0] == "steps"
    assert refused("imagetoimage", ok | {"sampler": "K_MAGIC"})[0] == "sampler"
    assert refused("imagetoimage", {"prompt": "a"})[0] == "init_image"


def test_imagetoimage_defaults_and_mapping() -> None:
    # The seed's own example request: form fields as text, as a form sends them.
    example = {"image_strength": "0.35", "prompt": "black hair", "cfg_scale": "7", "steps": "20"}
    _, plan, task = prepared("imagetoimage", example | {"init_image": PNG})
    assert task.task_type is TaskType.IMAGE_TO_IMAGE
    assert task.strength == pytest.approx(0.65)  # close to the init image = move little
    assert task.g_scale == 7.0 and task.steps == 20 and task.dimensions == (512, 512)
    assert task.seed is None and plan.inline  # seed 0 (the default): random
    _, _, task = prepared(
        "imagetoimage", {"prompt": "a", "init_image": PNG, "seed": 7, "cfg_scale": 30}
    )
    assert task.seed == 7 and task.g_scale == 10.0


# -- Stablecog ------------------------------------------------------------------------------


def stablecog_parameters(text: str) -> dict[str, str]:
    """Request body parameter -> the line that follows it (its type and limits)."""
    body = text.split("Request Body", 1)[1].split("Response Body", 1)[0]
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    found = {}
    for i, line in enumerate(lines[:-1]):
        match = re.fullmatch(r"([a-z_]+)( required)?", line)
        if match and match.group(1) not in ("string", "int", "float"):
            found[match.group(1)] = lines[i + 1]
    return found


def test_stablecog_accepts_every_documented_parameter(shared: Path) -> None:
    documented = stablecog_parameters(seed(shared, "003"))
    assert len(documented) == 12
    assert set(documented) == set(VOCABULARIES["stablecog"].request_model.model_fields)


def test_stablecog_limits_from_its_document(shared: Path) -> None:
    documented = stablecog_parameters(seed(shared, "003"))
    ok: dict[str, Any] = {"prompt": "a", "width": 512, "height": 512, "inference_steps": 20}
    for parameter, line in documented.items():
        bounds = re.match(r"min([\d.]+)\s+max([\d.]+)", line)
        if bounds is None:
            continue
        low, high = (float(b) for b in bounds.groups())
        integer = line.endswith("int")
        below = low - 1 if integer else low - 0.5
        above = high + (8 if parameter in ("width", "height") else 1)
        extra = {"init_image_url": URL} if parameter == "prompt_strength" else {}
        for value in (below, above):
            value = int(value) if integer else value
            assert refused("stablecog", ok | extra | {parameter: value})[0] == parameter, (
                parameter,
                value,
            )
    assert refused("stablecog", ok | {"width": 260})[0] == "width"  # multiples of 8
    # width * height * steps <= 1024 * 1024 * 30, and < 50 * 640 * 640: the stricter holds.
    assert (
        refused("stablecog", {"prompt": "a", "width": 1024, "height": 1024, "inference_steps": 30})[
            0
        ]
        == "inference_steps"
    )
    assert (
        refused("stablecog", {"prompt": "a", "width": 640, "height": 640, "inference_steps": 50})[0]
        == "inference_steps"
    )
    prepared("stablecog", {"prompt": "a", "width": 640, "height": 640, "inference_steps": 49})
    kandinsky = {"prompt": "a", "model_id": "22b0857d-7edc-4d00-9cd9-45aa509db093"}
    assert refused("stablecog", kandinsky) == (
        "model_id",
        "Kandinsky has no equivalent on this server",
    )
    p_sampler = {"prompt": "a", "scheduler_id": "b7224e56-1440-43b9-ac86-66d66f9e8c91"}
    assert refused("stablecog", p_sampler)[1] == "P Sampler has no equivalent on this server"
    assert refused("stablecog", {"prompt": "a", "model_id": "gpt"})[0] == "model_id"
    assert refused("stablecog", {"prompt": "a", "prompt_strength": 0.5})[0] == "prompt_strength"


def test_stablecog_defaults_and_mapping() -> None:
    _, plan, task = prepared("stablecog", {"prompt": "red cat wearing a purple hat"})
    assert (task.width, task.height, task.number_results) == (768, 768, 4)
    assert task.g_scale == 7.0 and task.steps == 30 and task.model_id == "4"
    assert SCHEDULERS[task.scheduler_id] == "EulerDiscreteScheduler"  # type: ignore[index]
    assert plan.settings["model_id"] == "8002bc51-7260-468f-8840-cf1e6dbe3f8a"
    _, plan, task = prepared("stablecog", {"prompt": "a", "init_image_url": URL, "seed": 5})
    assert task.task_type is TaskType.IMAGE_TO_IMAGE and task.strength == 0.6 and task.seed == 5
    assert plan.images[0].source == URL


# -- shared helpers -------------------------------------------------------------------------


def test_snapping_and_the_blank_image() -> None:
    assert [snapped(v) for v in (1, 4, 5, 1000, 1001, 1004)] == [8, 8, 8, 1000, 1000, 1008]
    from orchestrator.delivery.types import dimensions

    assert dimensions(blank_png(40, 24)) == (40, 24)


def test_a_flagged_image_is_replaced_by_a_blank_one() -> None:
    from orchestrator.delivery.types import dimensions
    from protocol.vocabularies import Outcome, OutputImage

    vocab = vocabulary("modelslab")
    parsed, plan = vocab.prepare({"prompt": "a"}, TASK)
    images = (
        OutputImage(str(uuid.uuid4()), "http://h/a.png", 64, 48, seed=3, nsfw=True),
        OutputImage(str(uuid.uuid4()), "http://h/b.png", 64, 48, seed=4),
    )
    answer = vocab.respond(parsed, plan, Outcome(TASK, images, "a", 0.0, 0.1))
    assert answer["nsfw_content_detected"] is True
    blank, kept = answer["output"]
    assert kept == "http://h/b.png" and blank.startswith("data:image/png;base64,")
    data = base64.b64decode(blank.partition(",")[2])
    assert dimensions(data) == (64, 48)
    unchecked, plan = vocab.prepare({"prompt": "a", "safety_checker": "no"}, TASK)
    answer = vocab.respond(unchecked, plan, Outcome(TASK, images, "a", 0.0, 0.1))
    assert answer["output"][0] == "http://h/a.png" and not answer["nsfw_content_detected"]
