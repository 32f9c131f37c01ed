"""The reference server speaks the four other seed APIs over HTTP: each seed's own example
request, with only the URL changed, through a real HTTP client against the server on
127.0.0.1 port 0; the answers' shapes, their images decoded, their seeds."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from PIL import Image

from orchestrator.delivery.types import dimensions
from orchestrator.server import ReferenceServer

from serverkit import GatedBackend, running
from sinkkit import http_store

pytestmark = pytest.mark.timeout(60)

KEY = "key-a"
BEARER = {"Authorization": f"Bearer {KEY}"}


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 40, 160)).save(out, "PNG")
    return out.getvalue()


def serving(**config: Any) -> Any:
    config.setdefault("allow_private_uploads", True)  # links and webhooks on 127.0.0.1
    return running(http_port=0, **config)


async def fetch_image(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.get(url)
    assert response.status_code == 200
    return response.content


def indented(code: str) -> str:
    """The snippet with its blocks indented again: a ``with`` has a one-line body, an
    ``if`` runs to the end."""
    out, depth, one_line = [], 0, False
    for line in code.strip().splitlines():
        out.append("    " * (depth + one_line) + line)
        one_line = line.startswith("with ")
        depth += line.startswith("if ")
    return "\n".join(out)


def test_the_form_apis_own_python_example_runs_unchanged_but_for_the_url(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (next((shared / "seeds").glob("002_*.txt"))).read_text()
    snippet = text.split("Example Request\n", 1)[1].split("Example Response", 1)[0]
    assert "https://www.aithriving.com" in snippet
    (tmp_path / "init_image.png").write_bytes(png(512, 512))
    monkeypatch.chdir(tmp_path)

    async def main() -> dict[str, Any]:
        async with serving() as server:
            code = snippet.replace("https://www.aithriving.com", server.http_url)
            code = code.replace("your-auth-token", KEY)
            # The seed's text lost the snippet's indentation and its base64 import: both are
            # restored, nothing else is changed.
            namespace: dict[str, Any] = {}
            await anyio.to_thread.run_sync(exec, "import base64\n" + indented(code), namespace)
            return namespace["response_json"]  # type: ignore[no-any-return]

    answer = anyio.run(main)
    assert answer["code"] == 0 and answer["message"] == "success"
    assert isinstance(answer["data"]["seed"], int) and answer["data"]["seed"] >= 1
    written = (tmp_path / "result.png").read_bytes()  # the snippet decoded and wrote it
    assert dimensions(written) == (512, 512)
    assert written == base64.b64decode(answer["data"]["image"])


async def test_the_form_api_refuses_in_its_own_shape() -> None:
    async with serving() as server, httpx.AsyncClient() as client:
        url = f"{server.http_url}/api/generate/basic/imageToImage"
        files = {"init_image": ("i.png", png(320, 320))}
        unauthorised = await client.post(url, data={"prompt": "a"}, files=files)
        wrong = await client.post(
            url, data={"prompt": "a"}, files=files, headers={"Authorization": "x"}
        )
        bad = await client.post(
            url, data={"prompt": "a", "width": "330"}, files=files, headers={"Authorization": KEY}
        )
        broken = await client.post(
            url,
            data={"prompt": "a"},
            files={"init_image": ("i.png", b"no")},
            headers={"Authorization": KEY},
        )
    assert unauthorised.status_code == wrong.status_code == 401
    assert (
        unauthorised.json()
        == wrong.json()
        == {"code": -1, "message": "invalid API key", "data": {}}
    )
    assert bad.status_code == 400 and "width = '330'" in bad.json()["message"]
    assert "multiple of 64" in bad.json()["message"]
    assert broken.status_code == 200 and broken.json()["code"] == -1
    assert "init_image" in broken.json()["message"]


def modelslab_body(**changes: Any) -> dict[str, Any]:
    """A ModelsLab text2img body as its documentation writes them: numbers as strings."""
    body: dict[str, Any] = {
        "key": KEY,
        "model_id": "sdxl",
        "prompt": "ultra realistic close up portrait of a lighthouse keeper",
        "negative_prompt": "bad quality",
        "width": "512",
        "height": "512",
        "samples": "1",
        "num_inference_steps": "31",
        "safety_checker": "no",
        "enhance_prompt": "yes",
        "seed": None,
        "guidance_scale": 7.5,
        "webhook": None,
        "track_id": None,
    }
    return body | changes


async def test_modelslab_text2img_and_its_webhook() -> None:
    with http_store() as hook:
        async with serving() as server, httpx.AsyncClient() as client:
            body = modelslab_body(webhook=f"{hook.url}/done", track_id="track-1")
            answer = (
                await client.post(f"{server.http_url}/api/v6/images/text2img", json=body)
            ).json()
            image = await fetch_image(client, answer["output"][0])
            await anyio.to_thread.run_sync(hook.kept.wait, 30)  # POSTed once it was answered
    assert answer["status"] == "success" and answer["track_id"] == "track-1"
    assert dimensions(image) == (512, 512)
    assert isinstance(answer["meta"]["seed"], int)
    assert answer["meta"]["prompt"].startswith("ultra realistic")  # enhanced, from the original
    posted = orjson.loads(hook.stored["/done"][0])
    assert hook.requests == ["POST /done"]
    assert posted["track_id"] == "track-1" and posted["output"] == answer["output"]


async def test_modelslab_img2img_inpaint_and_realtime() -> None:
    init = base64.b64encode(png(512, 512)).decode()
    mask = base64.b64encode(png(512, 512)).decode()
    async with serving() as server, httpx.AsyncClient() as client:
        base = f"{server.http_url}/api/v6"
        common = modelslab_body(base64="yes", enhance_prompt="no", init_image=init)
        img2img = (
            await client.post(f"{base}/images/img2img", json=common | {"strength": 0.5})
        ).json()
        inpaint = (
            await client.post(f"{base}/images/inpaint", json=common | {"mask_image": mask})
        ).json()
        realtime = (await client.post(f"{base}/realtime/text2img", json=modelslab_body())).json()
        misrouted = (await client.post(f"{base}/images/text2img", json=common)).json()
        missing = (await client.post(f"{base}/images/inpaint", json=common)).json()
    for answer in (img2img, inpaint):
        assert answer["status"] == "success"
        assert dimensions(base64.b64decode(answer["output"][0])) == (512, 512)
    assert realtime["status"] == "success"
    assert misrouted == {
        "status": "error",
        "message": "init_image: send image-to-image to /img2img",
    }
    assert missing["message"] == "mask_image: required by /inpaint"


async def test_modelslab_refusals_are_status_error_and_say_nothing_of_keys() -> None:
    async with serving() as server, httpx.AsyncClient() as client:
        url = f"{server.http_url}/api/v6/images/text2img"
        wrong = await client.post(url, json=modelslab_body(key="key-z"))
        missing = await client.post(
            url, json={k: v for k, v in modelslab_body().items() if k != "key"}
        )
        bad = await client.post(url, json=modelslab_body(samples="5"))
        unknown = await client.post(
            f"{server.http_url}/api/v6/images/text2video", json=modelslab_body()
        )
    assert wrong.status_code == missing.status_code == 200
    assert wrong.json() == missing.json() == {"status": "error", "message": "invalid API key"}
    assert (
        bad.json()["status"] == "error"
        and "samples = '5': must be at most 4" in bad.json()["message"]
    )
    assert unknown.status_code == 404


async def test_a_slow_modelslab_request_is_processing_then_fetched_by_id() -> None:
    backend = GatedBackend()
    with http_store() as hook:
        async with (
            serving(backend=backend, http_wait=0.05) as server,
            httpx.AsyncClient() as client,
        ):
            body = modelslab_body(enhance_prompt="no", webhook=f"{hook.url}/hook", track_id=5)
            first = (
                await client.post(f"{server.http_url}/api/v6/images/text2img", json=body)
            ).json()
            assert first["status"] == "processing" and first["id"]
            fetch = first["fetch_result"]
            assert fetch == f"{server.http_url}/api/v6/images/fetch/{first['id']}"
            still = (await client.post(fetch, json={"key": KEY})).json()
            other_key = (await client.post(fetch, json={"key": "key-b"})).json()
            backend.gate.set()
            await anyio.to_thread.run_sync(hook.kept.wait, 30)  # told by the webhook
            done = (await client.post(fetch, json={"key": KEY})).json()
    assert still["status"] == "processing"
    assert other_key["status"] == "error"  # another key's request is not found
    assert done["status"] == "success" and done["id"] == first["id"] and done["track_id"] == 5
    assert orjson.loads(hook.stored["/hook"][0])["id"] == first["id"]


async def test_stablecog_minimal_request_and_credits() -> None:
    async with serving(credits_per_key=0.002) as server, httpx.AsyncClient() as client:
        url = f"{server.http_url}/v1/image/generation/create"
        first = await client.post(
            url, json={"prompt": "red cat wearing a purple hat"}, headers=BEARER
        )
        images = [await fetch_image(client, output["url"]) for output in first.json()["outputs"]]
        broke = await client.post(url, json={"prompt": "a"}, headers=BEARER)
        unauthorised = await client.post(url, json={"prompt": "a"})
        bad = await client.post(url, json={"prompt": "a", "num_outputs": 5}, headers=BEARER)
    answer = first.json()
    assert first.status_code == 200 and len(answer["outputs"]) == 4
    assert all(dimensions(image) == (768, 768) for image in images)
    spent = 4 * 0.768 * 0.768 * 30 * 0.0001  # what our server charges: megapixels x steps
    # Allowed while the key had credits; what it cost is taken all the same.
    assert answer["remaining_credits"] == pytest.approx(0.002 - spent, abs=1e-7)
    assert answer["remaining_credits"] < 0
    assert isinstance(answer["settings"]["seed"], int)
    assert broke.status_code == 402 and broke.json() == {"error": "insufficient credits"}
    assert unauthorised.status_code == 401 and unauthorised.json() == {"error": "invalid API key"}
    assert bad.status_code == 400 and "num_outputs = 5" in bad.json()["error"]


async def test_akiio_call_by_endpoint_name() -> None:
    async with serving() as server, httpx.AsyncClient() as client:
        call = {
            "key": KEY,
            "prompt": "a lighthouse at dusk",
            "width": 600,
            "height": 400,
            "seed": 99,
        }
        answer = await client.post(f"{server.http_url}/api/call/dreamshaper", json=call)
        unknown = await client.post(f"{server.http_url}/api/call/nonesuch", json=call)
        wrong = await client.post(f"{server.http_url}/api/call/sdxl", json=call | {"key": "nope"})
        bad = await client.post(
            f"{server.http_url}/api/call/sdxl", json=call | {"true_cfg_scale": 12}
        )
    result = answer.json()
    assert answer.status_code == 200 and result["success"] is True and result["seed"] == 99
    data = base64.b64decode(result["images"][0].partition(",")[2])
    assert dimensions(data) == (600, 400)
    assert unknown.status_code == 404 and unknown.json()["success"] is False
    assert wrong.status_code == 401 and wrong.json() == {
        "success": False,
        "error": "invalid API key",
    }
    assert bad.status_code == 400 and "true_cfg_scale = 12" in bad.json()["error"]


async def test_a_body_over_the_cap_is_refused() -> None:
    async with serving(http_max_body=1024) as server, httpx.AsyncClient() as client:
        big = {"prompt": "a" * 2000}
        answer = await client.post(
            f"{server.http_url}/v1/image/generation/create", json=big, headers=BEARER
        )
    assert answer.status_code == 413 and "over 1024 bytes" in answer.json()["error"]


async def test_http_and_websocket_share_one_scheduler() -> None:
    from orchestrator import Orchestrator, TextToImage

    async with serving() as server, httpx.AsyncClient() as client:
        server_: ReferenceServer = server
        async with Orchestrator(server_.url, api_key=KEY) as orch:
            await orch.run(TextToImage(prompt="a", size="1024x1024", steps=10))
        url = f"{server_.http_url}/v1/image/generation/create"
        answer = (
            await client.post(url, json={"prompt": "b", "num_outputs": 1}, headers=BEARER)
        ).json()
    # The socket's task was charged to the same key's account as the HTTP request.
    ws_cost = 1.048576 * 10 * 0.0001
    http_cost = 0.589824 * 30 * 0.0001
    assert answer["remaining_credits"] == pytest.approx(1000 - ws_cost - http_cost, abs=1e-7)
    assert re.match(r"http://127\.0\.0\.1:\d+/images/", answer["outputs"][0]["url"])
