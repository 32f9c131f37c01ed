"""The vendor's current SDK (runware-sdk 1.8, the current Runware dialect) against our server.

It lives in its own virtual environment (``.ci/run`` makes ``.runware-venv``;
``RUNWARE_PYTHON`` may point elsewhere). In CI its absence fails the test.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from PIL import Image

from protocol.runware import Refused, decode, decode_from_client, decode_from_server
from protocol.runware.codec import to_object

from conftest import venv_python
from serverkit import running

pytestmark = [pytest.mark.timeout(120)]

HERE = Path(__file__).parent
SCRIPT = HERE / "runware" / "sdk_client.py"
FRAMES = HERE / "fixtures" / "runware-sdk-frames.jsonl"


async def _fetch(http: httpx.AsyncClient, url: str) -> Image.Image:
    response = await http.get(url)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content))


async def test_the_current_sdk_gets_images_upscales_cut_outs_and_prompts_from_our_server() -> None:
    python = venv_python("RUNWARE_PYTHON", ".runware-venv", "runware-sdk")
    async with running() as server:
        with anyio.fail_after(90):
            done = await anyio.run_process(
                [python, str(SCRIPT), server.url, "key-a"], check=False, stderr=sys.stderr.fileno()
            )
        assert done.returncode == 0
        result: dict[str, Any] = json.loads(done.stdout)
        async with httpx.AsyncClient() as http:
            # imageInference with a negative prompt and numberResults 2, delivered "async"
            # (the SDK's default: acknowledged, then the results)
            polled = result["polled"]
            assert len({i["imageUUID"] for i in polled}) == 2
            assert all(i["taskType"] == "imageInference" and i["cost"] > 0 for i in polled)
            for image in polled:
                assert (await _fetch(http, image["imageURL"])).size == (512, 512)
            # getResponse answers with every result so far
            assert {i["imageUUID"] for i in result["fetched"]} == {i["imageUUID"] for i in polled}
            # without a negative prompt, "sync", a seed and a free size
            [pushed] = result["pushed"]
            assert pushed["seed"] == 42
            assert (await _fetch(http, pushed["imageURL"])).size == (768, 512)
            [upscaled] = result["upscaled"]
            assert (await _fetch(http, upscaled["imageURL"])).size == (1536, 1024)
            [cut_out] = result["cut_out"]
            cut = await _fetch(http, cut_out["imageURL"])
            assert cut.format == "PNG" and cut.mode == "RGBA"
        # the SDK collects as many results as numberResults says (1 here): the first version
        assert result["prompts"] and all(p["text"].startswith("a cat") for p in result["prompts"])
        error = result["error"]
        assert error["code"] == "validation" and error["parameter"] == "steps"
        assert "at most 100" in error["message"]


def _recorded() -> list[tuple[str, Any]]:
    lines = FRAMES.read_bytes().splitlines()
    return [(e["from"], e["frame"]) for e in map(orjson.loads, lines) if e]


def test_the_recorded_frames_of_the_sdk_decode_and_encode_back_unchanged() -> None:
    recorded = _recorded()
    sides = {side for side, _ in recorded}
    assert sides == {"client", "server"}
    task_types = set()
    for side, obj in recorded:
        frame = orjson.dumps(obj)
        if side == "client":
            tasks = decode_from_client(frame)
            assert not any(isinstance(t, Refused) for t in tasks), tasks
            for task, original in zip(tasks, obj, strict=True):
                assert not isinstance(task, Refused)
                task_types.add(task.wire_name)
                assert to_object(task) == original
        else:
            key, originals = next(iter(obj.items()))
            items = decode_from_server(frame)
            assert [to_object(item) for item in items] == originals
            assert decode(frame) == items
    assert task_types >= {
        "authentication",
        "imageInference",
        "getResponse",
        "upscale",
        "removeBackground",
        "promptEnhance",
    }
