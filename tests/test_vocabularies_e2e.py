"""Each seed API's request run end to end through the embedded server with
``orch.submit_as``: the answer has that API's shape, and ModelsLab's webhook is POSTed to a
real HTTP server on 127.0.0.1 (one that records, one that fails twice first, a dead one)."""

from __future__ import annotations

import base64
import io
import socket
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from orchestrator import (
    Backoff,
    Config,
    Credits,
    DeliverySettings,
    LocalProtocolError,
    Orchestrator,
)
from orchestrator.delivery.types import dimensions

from sinkkit import http_store

pytestmark = pytest.mark.timeout(60)

# Webhooks are tried as deliveries are: quick retries here, so the test does not wait.
QUICK = Config(delivery=DeliverySettings(attempts=3, backoff=Backoff(initial=0.01, maximum=0.02)))


def png(width: int, height: int, colour: tuple[int, int, int], box: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), colour)
    if box:  # a white square in the middle: an inpainting mask
        image.paste((255, 255, 255), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def from_data_uri(uri: str) -> bytes:
    head, _, data = uri.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64")
    return base64.b64decode(data)


def thumbnail(data: bytes) -> np.ndarray:
    small = Image.open(io.BytesIO(data)).convert("L").resize((32, 32))
    return np.asarray(small, np.float32).ravel()


def correlation(a: bytes, b: bytes) -> float:
    return float(np.corrcoef(thumbnail(a), thumbnail(b))[0, 1])


async def test_akiio_answers_like_the_aime_api_server() -> None:
    async with Orchestrator() as orch:
        request = {"prompt": "a lighthouse at dusk", "width": 600, "height": 400, "seed": 1234}
        first = await orch.submit_as("akiio", request)
        again = await orch.submit_as("akiio", request | {"key": "not-sent"})
        random = await orch.submit_as("akiio", {"prompt": "a lighthouse", "width": 256})
    assert first["success"] is True and first["seed"] == 1234
    assert set(first) >= {"job_id", "images", "seed", "prompt", "compute_duration"}
    image = from_data_uri(first["images"][0])
    assert dimensions(image) == (600, 400)
    assert from_data_uri(again["images"][0]) == image  # same seed, prompt and size: same image
    assert isinstance(random["seed"], int) and random["seed"] >= 1  # -1: the seed used is said


async def test_akiio_quality_keeps_the_composition_of_a_seed() -> None:
    async with Orchestrator() as orch:
        request = {"prompt": "a red balloon over a green field", "width": 640, "height": 384}
        images = {}
        for quality in ("high", "preview"):
            answer = await orch.submit_as("akiio", request | {"seed": 77, "quality": quality})
            images[quality] = from_data_uri(answer["images"][0])
            assert answer["steps"] == (20 if quality == "high" else 10)
        other = await orch.submit_as("akiio", request | {"seed": 78, "quality": "preview"})
    assert dimensions(images["preview"]) == (640, 384)  # computed at 320 x 192, upscaled 2x
    same = correlation(images["high"], images["preview"])
    assert same > 0.9
    assert same > correlation(images["high"], from_data_uri(other["images"][0])) + 0.1


async def test_modelslab_image_to_image_and_inpainting_in_base64() -> None:
    init = base64.b64encode(png(512, 512, (200, 40, 40))).decode()
    mask = base64.b64encode(png(512, 512, (0, 0, 0), box=True)).decode()
    common = {"prompt": "a blue sea", "base64": "yes", "enhance_prompt": "no", "samples": 2}
    async with Orchestrator() as orch:
        img2img = await orch.submit_as("modelslab", common | {"init_image": init, "strength": 0.3})
        inpaint = await orch.submit_as(
            "modelslab", common | {"init_image": init, "mask_image": mask, "track_id": 9}
        )
    for answer in (img2img, inpaint):
        assert answer["status"] == "success" and len(answer["output"]) == 2
        assert answer["proxy_links"] == [] and answer["nsfw_content_detected"] is False
        for output in answer["output"]:
            assert dimensions(base64.b64decode(output)) == (512, 512)
        assert isinstance(answer["meta"]["seed"], int)
    assert inpaint["track_id"] == 9 and "track_id" not in img2img
    # Little strength: the result stays near the (red) init image.
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(img2img["output"][0]))))
    assert pixels[..., 0].mean() > pixels[..., 2].mean()


async def test_modelslab_links_an_init_image_and_enhances_the_prompt() -> None:
    with http_store() as store:
        store.stored["/init.png"].append(png(512, 768, (10, 120, 30)))
        async with Orchestrator() as orch:
            answer = await orch.submit_as(
                "modelslab",
                {"prompt": "a cat", "init_image": f"{store.url}/init.png", "height": 768},
            )
            async with httpx.AsyncClient() as client:
                fetched = await client.get(answer["output"][0])
    assert answer["status"] == "success" and fetched.status_code == 200
    assert dimensions(fetched.content) == (512, 768)
    assert answer["meta"]["prompt"].startswith("a cat,")  # enhance_prompt (default yes) ran
    assert answer["meta"]["enhance_prompt"] == "yes"


async def test_modelslab_failure_is_answered_its_way() -> None:
    with http_store() as store:  # nothing stored there: the init image is a 404
        async with Orchestrator() as orch:
            answer = await orch.submit_as(
                "modelslab", {"prompt": "a", "init_image": f"{store.url}/gone.png", "track_id": 3}
            )
    assert answer["status"] == "error" and answer["track_id"] == 3
    assert "init_image" in answer["message"] and "404" in answer["message"]


def _webhook_request(url: str) -> dict[str, Any]:
    return {"prompt": "a kite", "enhance_prompt": "no", "webhook": url, "track_id": "t-1"}


async def test_modelslab_webhook_is_posted_with_the_track_id() -> None:
    with http_store() as store:
        async with Orchestrator(config=QUICK) as orch:
            answer = await orch.submit_as("modelslab", _webhook_request(f"{store.url}/hook"))
    assert answer["webhook_status"] == "success"
    assert store.requests == ["POST /hook"]
    posted = orjson.loads(store.stored["/hook"][0])
    assert posted["track_id"] == "t-1" and posted["status"] == "success"
    assert posted["output"] == answer["output"] and posted["id"] == answer["id"]
    assert store.headers["/hook"]["Content-Type"] == "application/json"


async def test_a_flaky_webhook_gets_it_on_the_third_try() -> None:
    def twice_first(path: str, n: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if n <= 2 else (200, {})

    with http_store(script=twice_first) as store:
        async with Orchestrator(config=QUICK) as orch:
            answer = await orch.submit_as("modelslab", _webhook_request(f"{store.url}/hook"))
    assert answer["webhook_status"] == "success"
    assert store.requests == ["POST /hook"] * 3 and len(store.stored["/hook"]) == 1


async def test_a_dead_webhook_is_reported_and_the_task_still_completes() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Orchestrator(config=QUICK) as orch:
        answer = await orch.submit_as("modelslab", _webhook_request(f"http://127.0.0.1:{port}/"))
    assert answer["status"] == "success" and len(answer["output"]) == 1
    assert answer["webhook_status"].startswith("failed: webhook: POST")
    assert "after 3 attempts" in answer["webhook_status"]


async def test_the_form_api_runs_its_own_example_request() -> None:
    # The seed's example: data fields as a form sends them, the init image as a file.
    data = {"image_strength": "0.35", "prompt": "black hair", "cfg_scale": "7", "steps": "20"}
    files = {"init_image": png(640, 448, (30, 30, 30))}
    async with Orchestrator() as orch:
        answer = await orch.submit_as("imagetoimage", data | files)
        broken = await orch.submit_as("imagetoimage", data | {"init_image": b"not an image"})
    assert answer["code"] == 0 and answer["message"] == "success"
    assert dimensions(base64.b64decode(answer["data"]["image"])) == (512, 512)
    assert isinstance(answer["data"]["seed"], int)
    assert broken["code"] == -1 and broken["data"] == {} and broken["message"]


async def test_stablecog_minimal_request_spends_credits() -> None:
    credits = Credits(1.0)
    async with Orchestrator() as orch:
        answer = await orch.submit_as(
            "stablecog", {"prompt": "red cat wearing a purple hat"}, credits=credits
        )
        async with httpx.AsyncClient() as client:
            fetched = [await client.get(output["url"]) for output in answer["outputs"]]
        submitted = orch.stats.submitted
        broke = await orch.submit_as("stablecog", {"prompt": "a"}, credits=Credits(0))
        assert orch.stats.submitted == submitted  # refused, unsent
    assert len(answer["outputs"]) == 4 and all(r.status_code == 200 for r in fetched)
    assert all(dimensions(r.content) == (768, 768) for r in fetched)
    assert 0 < answer["remaining_credits"] < 1.0 and answer["remaining_credits"] == credits.balance
    settings = answer["settings"]
    assert settings["num_outputs"] == 4 and settings["inference_steps"] == 30
    assert isinstance(settings["seed"], int)
    assert broke == {"error": "no credits left"}


async def test_bad_input_is_refused_before_anything_is_sent() -> None:
    async with Orchestrator() as orch:
        with pytest.raises(LocalProtocolError, match="num_outputs"):
            await orch.submit_as("stablecog", {"prompt": "a", "num_outputs": 5})
        with pytest.raises(LocalProtocolError, match="samples"):
            await orch.submit_as("modelslab", {"prompt": "a", "samples": 5})
        assert orch.stats.submitted == 0


async def test_stablecog_image_to_image_from_a_link() -> None:
    with http_store() as store:
        store.stored["/init.png"].append(png(512, 512, (220, 30, 30)))
        request = {
            "prompt": "a blue sea",
            "num_outputs": 1,
            "width": 512,
            "height": 512,
            "init_image_url": f"{store.url}/init.png",
            "prompt_strength": 0.2,  # follow the init image more than the prompt
        }
        async with Orchestrator() as orch:
            answer = await orch.submit_as("stablecog", request)
            async with httpx.AsyncClient() as client:
                image = (await client.get(answer["outputs"][0]["url"])).content
    assert answer["settings"]["init_image_url"] == request["init_image_url"]
    assert answer["settings"]["prompt_strength"] == 0.2
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), np.float32)
    assert pixels[..., 0].mean() > pixels[..., 2].mean()  # still the red init image, mostly
