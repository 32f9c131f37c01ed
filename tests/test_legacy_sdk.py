"""A client nobody here wrote, the legacy Runware SDK from PyPI, against our server.

It pins an old websockets, so it lives in its own virtual environment (``.ci/run`` makes
``.legacy-venv``; ``LEGACY_PYTHON`` may point elsewhere). In CI its absence fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import venv_python
from serverkit import running

pytestmark = [pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "legacy" / "legacy_client.py"


def legacy_python() -> str:
    return venv_python("LEGACY_PYTHON", ".legacy-venv", "legacy SDK")


async def test_the_legacy_sdk_generates_images_and_enhances_prompts_against_our_server() -> None:
    python = legacy_python()
    async with running() as server:
        with anyio.fail_after(90):
            done = await anyio.run_process(
                [python, str(SCRIPT), server.url, "key-a"], check=False, stderr=sys.stderr.fileno()
            )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        images = result["images"]
        assert len(images) == 2 and len({i["imageUUID"] for i in images}) == 2
        async with httpx.AsyncClient() as http:
            for image in images:
                response = await http.get(image["imageSrc"])
                assert response.status_code == 200 and response.content[:3] == b"\xff\xd8\xff"
        prompts = result["prompts"]
        assert len(set(prompts)) == 3 and all(p.startswith("a cat") for p in prompts)


def test_the_frames_it_sends_are_the_recorded_ones(shared: Path) -> None:
    # The fixture frames decode as client frames: the server reads what the SDK really sends.
    from protocol import decode_from_client

    lines = (shared / "fixtures" / "legacy-sdk-client-frames.jsonl").read_bytes().splitlines()
    names = [decode_from_client(line).wire_name for line in lines if line.strip()]
    assert names == ["newConnection", "ping", "newTask", "newPromptEnhance", "newImageUpload"]
