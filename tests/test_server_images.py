"""Every task type against the procedural backend, and that each operation really does its job."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from orchestrator.server import imaging

from serverkit import Raw, client, png, running, square

pytestmark = [pytest.mark.timeout(60)]


async def fetch(url: str) -> np.ndarray[Any, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    with Image.open(io.BytesIO(response.content)) as image:
        return np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA") else "RGB"))


async def upload(raw: Raw, pixels: np.ndarray[Any, Any]) -> str:
    data = "data:image/png;base64," + base64.b64encode(png(pixels)).decode()
    task = await raw.task("newImageUpload", imageBase64=data, taskType=7)
    reply = await raw.reply("newUploadedImageUUID", task)
    return str(reply["newUploadedImageUUID"]["newImageUUID"])


async def one_image(raw: Raw, name: str = "newImages", **body: Any) -> dict[str, Any]:
    task = await raw.task("newTask" if name == "newImages" else name, **body)
    (image,) = await raw.images(task, 1, name)
    return image


async def test_text_to_image_is_deterministic_in_prompt_and_seed() -> None:
    async with running() as server, client(server, extensions=["seed"]) as raw:
        fields = {"promptText": "a red fox", "seed": 7, "useCache": False}
        first = await one_image(raw, **fields)
        again = await one_image(raw, **fields)
        other = await one_image(raw, **{**fields, "seed": 8})
        a, b, c = [await fetch(i["imageSrc"]) for i in (first, again, other)]
        assert a.shape == (512, 512, 3)
        assert np.array_equal(a, b)
        assert np.abs(a.astype(int) - c.astype(int)).mean() > 10  # visibly different
        # Two results: the seed goes up by one per image.
        task = await raw.task(promptText="a red fox", seed=7, numberResults=2, useCache=False)
        assert sorted(i["seed"] for i in await raw.images(task, 2)) == [7, 8]


async def test_the_negative_prompt_keeps_its_colours_out() -> None:
    async with running() as server, client(server) as raw:
        image = await one_image(raw, promptText="a red fox -no red", seed=3, sizeId=1)
        pixels = await fetch(image["imageSrc"])
    reddish = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert reddish.mean() < 0.02


async def test_image_to_image_stays_near_the_init_image_at_low_strength() -> None:
    init = square(512, (20, 200, 40))
    async with running() as server, client(server) as raw:
        init_uuid = await upload(raw, init)
        base = {
            "promptText": "a blue boat",
            "seed": 5,
            "taskType": 2,
            "imageInitiatorUUID": init_uuid,
        }
        low = await fetch((await one_image(raw, **base, strength=0.1))["imageSrc"])
        high = await fetch((await one_image(raw, **base, strength=0.9))["imageSrc"])
    distance = [np.abs(x.astype(int) - init.astype(int)).mean() for x in (low, high)]
    assert distance[0] < 10 < distance[1]


async def test_inpainting_leaves_pixels_outside_the_mask_unchanged() -> None:
    init = square(512, (200, 180, 20))
    mask = np.zeros((512, 512, 3), np.uint8)
    mask[100:300, 50:250] = 255
    async with running() as server, client(server) as raw:
        init_uuid, mask_uuid = await upload(raw, init), await upload(raw, mask)
        image = await one_image(
            raw,
            promptText="a cat",
            seed=2,
            taskType=3,
            imageInitiatorUUID=init_uuid,
            imageMaskInitiatorUUID=mask_uuid,
        )
        out = await fetch(image["imageSrc"])
    inside = mask[..., 0] == 255
    assert image["imageSrc"].endswith(".png")  # a PNG init stays lossless
    assert np.array_equal(out[~inside], init[~inside])
    assert np.abs(out[inside].astype(int) - init[inside].astype(int)).mean() > 10


async def test_upscale_resizes_by_the_factor() -> None:
    async with running() as server, client(server) as raw:
        source = await upload(raw, square(96))
        image = await one_image(raw, "newUpscaleGan", imageUUID=source, upscaleFactor=3)
        assert (await fetch(image["imageSrc"])).shape[:2] == (288, 288)


async def test_background_removal_separates_a_square_from_a_plain_background() -> None:
    async with running() as server, client(server) as raw:
        source = await upload(raw, square(128))
        image = await one_image(raw, "newRemoveBackground", imageUUID=source, taskType=8)
        out = await fetch(image["imageSrc"])
    assert image["imageSrc"].endswith(".png") and out.shape == (128, 128, 4)
    assert (out[40:88, 40:88, 3] == 255).all()  # the square, well inside its edges
    assert (out[:20, :, 3] == 0).all() and (out[:, :20, 3] == 0).all()


async def test_canny_edges_respond_to_the_thresholds() -> None:
    async with running() as server, client(server) as raw:
        source = await upload(
            raw, imaging.render("a green hill under a blue sky", 4, 512, 512, "4")
        )
        counts = []
        for low, high in ((20, 60), (60, 140), (120, 250)):
            task = await raw.task(
                "newPreProcessControlNet",
                preProcessorType="canny",
                guideImageUUID=source,
                lowThresholdCanny=low,
                highThresholdCanny=high,
            )
            reply = (await raw.reply("newPreProcessControlNet", task))["newPreProcessControlNet"]
            assert reply["initImageUUID"] == source
            counts.append(int((await fetch(reply["newImageSrc"]) > 0).any(axis=2).sum()))
    assert counts[0] > counts[1] > counts[2]


async def test_every_other_preprocessor_returns_a_guide_image() -> None:
    async with running(workers=1) as server, client(server) as raw:
        source = await upload(raw, square(128))
        for kind in ("depth_midas", "openpose", "seg_ofade20k", "normal_bae", "shuffle"):
            task = await raw.task(
                "newPreProcessControlNet",
                preProcessorType=kind,
                guideImageUUID=source,
                width=64,
                height=64,
            )
            reply = (await raw.reply("newPreProcessControlNet", task))["newPreProcessControlNet"]
            assert (await fetch(reply["newImageSrc"])).shape[:2] == (64, 64)


async def test_controlnet_generation_follows_its_guide() -> None:
    guide = np.zeros((512, 512, 3), np.uint8)
    guide[:, 250:262] = 255  # one white vertical line
    async with running() as server, client(server) as raw:
        guide_uuid = await upload(raw, guide)
        control = [
            {
                "preprocessor": "canny",
                "weight": 1.0,
                "startStep": 0,
                "endStep": 20,
                "guideImageUUID": guide_uuid,
            }
        ]
        plain = await fetch((await one_image(raw, promptText="a hill", seed=9))["imageSrc"])
        guided = await fetch(
            (await one_image(raw, promptText="a hill", seed=9, taskType=9, controlNet=control))[
                "imageSrc"
            ]
        )
        init_uuid = await upload(raw, square(512))
        both = await one_image(
            raw,
            promptText="a hill",
            seed=9,
            taskType=10,
            controlNet=control,
            imageInitiatorUUID=init_uuid,
        )
    change = np.abs(guided.astype(int) - plain.astype(int)).mean(axis=2)
    assert change[:, 250:262].mean() > 40 > change[:, :200].mean()
    assert both["imageSrc"].endswith(".png")


async def test_image_to_text_describes_colours_and_the_prompt_it_came_from() -> None:
    async with running() as server, client(server) as raw:
        source = await upload(raw, square(128, (36, 72, 200)))
        task = await raw.task("newReverseImageClip", imageUUID=source)
        text = (await raw.reply("newReverseClip", task))["newReverseClip"]["texts"][0]["text"]
        assert "blue" in text and "centre" in text
        made = await one_image(raw, promptText="a lighthouse at dusk", seed=1)
        task = await raw.task("newReverseImageClip", imageUUID=made["imageUUID"])
        text = (await raw.reply("newReverseClip", task))["newReverseClip"]["texts"][0]["text"]
        assert text.startswith("a lighthouse at dusk")


async def test_prompt_enhancement_gives_distinct_versions_within_the_length() -> None:
    async with running() as server, client(server) as raw:
        task = await raw.task(
            "newPromptEnhance", prompt="a cat", promptVersions=4, promptMaxLength=60
        )
        frames = await raw.until(
            lambda f: sum(len(x["newPromptEnhancer"]["texts"]) for x in f) >= 4
        )
    texts = [
        t["text"] for f in frames for t in f["newPromptEnhancer"]["texts"] if t["taskUUID"] == task
    ]
    assert len(set(texts)) == 4
    assert all(t.startswith("a cat") and len(t) <= 60 for t in texts)


async def test_progress_frames_for_clients_that_asked() -> None:
    async with running() as server, client(server, extensions=["progress"]) as raw:
        task = await raw.task(steps=10)
        frames = await raw.until(lambda f: any("newImages" in x for x in f), skip=())
    steps = [f["newProgress"]["step"] for f in frames if "newProgress" in f]
    assert steps == list(range(1, 11))
    assert all(f["newProgress"]["taskUUID"] == task for f in frames if "newProgress" in f)


async def test_a_missing_image_is_an_error_naming_the_field() -> None:
    async with running() as server, client(server) as raw:
        task = await raw.task(
            "newUpscaleGan", imageUUID="0b8ac4f4-3f4b-4a2f-9c43-5d0f0e1a2b3c", upscaleFactor=2
        )
        error = await raw.recv()
    assert (error["errorId"], error["taskUUID"]) == (1007, task)
    assert "imageUUID" in error["errorMessage"]


async def test_a_guide_image_url_is_fetched_under_the_address_policy() -> None:
    async with running(allow_private_uploads=True) as server, client(server) as raw:
        made = await one_image(raw, promptText="a red fox", seed=1)
        task = await raw.task(
            "newPreProcessControlNet", preProcessorType="canny", guideImageUrl=made["imageSrc"]
        )
        reply = (await raw.reply("newPreProcessControlNet", task))["newPreProcessControlNet"]
        assert (await fetch(reply["newImageSrc"])).shape == (512, 512, 3)
    async with running() as server, client(server) as raw:
        made = await one_image(raw, promptText="a red fox", seed=1)
        task = await raw.task(
            "newPreProcessControlNet", preProcessorType="canny", guideImageUrl=made["imageSrc"]
        )
        error = await raw.reply("newPreProcessControlNet", task)
        assert (error["errorId"], error["taskUUID"]) == (1007, task)
        assert "guideImageUrl" in error["errorMessage"]
