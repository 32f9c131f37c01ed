"""The diffusers backend through the real server over the wire, on a tiny random pipeline
built in code: offline (no hub, and sockets to anything but loopback refused)."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: it reads it once

from conftest import component

component("torch", "torch (the [diffusion] extra)")
component("diffusers", "diffusers (the [diffusion] extra)")

from orchestrator.server import (  # noqa: E402
    BackendError,
    ReferenceServer,
    ServerConfig,
    make_backend,
)
from orchestrator.server.diffusion.schedulers import SCHEDULER_MAP  # noqa: E402
from orchestrator.server.diffusion.tiny import (  # noqa: E402
    build_tiny_controlnet,
    build_tiny_lora,
    build_tiny_pipeline,
)

from serverkit import Raw, client, png, square  # noqa: E402

pytestmark = [pytest.mark.timeout(120)]

SMALL = {"width": 64, "height": 64, "steps": 4, "useCache": False, "returnBase64Image": True}
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every socket connection except to loopback: nothing may reach a hub."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            raise OSError(f"test blocks connections to {address[0]}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    model = build_tiny_pipeline(root / "model")
    return {
        "model": model,
        "canny": build_tiny_controlnet(model, root / "controlnet-canny"),
        "lora": build_tiny_lora(model, root / "loras" / "civitai_1_2.safetensors"),
    }


def settings(weights: dict[str, Path]) -> dict[str, Any]:
    diffusion = {
        "model_dir": str(weights["model"]),
        "controlnets": {"canny": str(weights["canny"])},
        "lora_dir": str(weights["lora"].parent),
    }
    return {"backend": "diffusers", "diffusion": diffusion}


def serving(weights: dict[str, Path], **config: Any) -> ReferenceServer:
    """The real server, its backend made from ``ServerConfig(backend="diffusers")``."""
    config = {"api_keys": ("key-a",), "workers": 2, **settings(weights), **config}
    return ReferenceServer(ServerConfig(**config))


def pixels_of(image: dict[str, Any]) -> np.ndarray[Any, Any]:
    with Image.open(io.BytesIO(base64.b64decode(image["imageBase64Data"]))) as decoded:
        return np.asarray(decoded.convert("RGB")).astype(int)


async def generate(raw: Raw, count: int = 1, **body: Any) -> list[dict[str, Any]]:
    task = await raw.task(**{**SMALL, "numberResults": count, **body})
    return await raw.images(task, count)


async def upload(raw: Raw, pixels: np.ndarray[Any, Any]) -> str:
    data = "data:image/png;base64," + base64.b64encode(png(pixels)).decode()
    task = await raw.task("newImageUpload", imageBase64=data, taskType=7)
    reply = await raw.reply("newUploadedImageUUID", task)
    return str(reply["newUploadedImageUUID"]["newImageUUID"])


async def progress_of(raw: Raw, task: str) -> list[int]:
    """The steps reported for ``task`` until its image arrives."""
    frames = await raw.until(lambda f: any("newImages" in x or "error" in x for x in f), skip=())
    assert "error" not in frames[-1], frames[-1]
    return [
        f["newProgress"]["step"] for f in frames if f.get("newProgress", {}).get("taskUUID") == task
    ]


async def test_same_seed_same_bytes_and_different_seeds_differ(weights: dict[str, Path]) -> None:
    async with serving(weights) as server, client(server, extensions=["seed"]) as raw:
        (first,) = await generate(raw, seed=7, promptText="a red cat")
        (again,) = await generate(raw, seed=7, promptText="a red cat")
        (other,) = await generate(raw, seed=8, promptText="a red cat")
        (prompt,) = await generate(raw, seed=7, promptText="a blue house")
    assert first["imageBase64Data"] == again["imageBase64Data"]
    assert first["seed"] == 7 and pixels_of(first).shape == (64, 64, 3)
    for different in (other, prompt):
        assert np.abs(pixels_of(first) - pixels_of(different)).mean() > 2


async def test_number_results_four_gives_four_distinct_images_as_if_made_alone(
    weights: dict[str, Path],
) -> None:
    async with serving(weights) as server, client(server, extensions=["seed"]) as raw:
        images = await generate(raw, 4, seed=100)
        (alone,) = await generate(raw, seed=102)
    assert sorted(image["seed"] for image in images) == [100, 101, 102, 103]
    assert len({image["imageBase64Data"] for image in images}) == 4
    third = next(image for image in images if image["seed"] == 102)
    # The same generator per image: a batch gives what one image alone gives.
    assert np.abs(pixels_of(third) - pixels_of(alone)).max() <= 2


async def test_steps_and_scheduler_reach_the_pipeline(weights: dict[str, Path]) -> None:
    async with serving(weights) as server:
        async with client(server, extensions=["progress"]) as raw:
            plain = await raw.task(**{**SMALL, "steps": 6, "seed": 1})
            assert await progress_of(raw, plain) == [1, 2, 3, 4, 5, 6]
            # Heun is second order: two model calls per step but the last.
            heun = await raw.task(**{**SMALL, "steps": 6, "seed": 1, "schedulerId": 8})
            assert await progress_of(raw, heun) == list(range(1, 12))
        async with client(server) as raw:
            by = {}
            for scheduler in (2, 17, 22, 26):  # DDIM, Euler, DPM++ 2M Karras, DPM++ SDE
                (by[scheduler],) = await generate(raw, seed=3, schedulerId=scheduler)
            (sde_again,) = await generate(raw, seed=3, schedulerId=26)
    assert len({pixels_of(image).tobytes() for image in by.values()}) == 4
    assert sde_again["imageBase64Data"] == by[26]["imageBase64Data"]  # its noise follows the seed


async def test_an_unmapped_scheduler_is_refused_naming_it(weights: dict[str, Path]) -> None:
    async with serving(weights) as server, client(server) as raw:
        task = await raw.task(**SMALL, schedulerId=19)
        error = await raw.recv()
    assert (error["errorId"], error["taskUUID"]) == (1001, task)
    assert "schedulerId = 19 (VQDiffusionScheduler)" in error["errorMessage"]


async def test_guidance_negative_prompt_and_clip_skip_change_the_image(
    weights: dict[str, Path],
) -> None:
    async with serving(weights) as server, client(server) as raw:
        (base,) = await generate(raw, seed=4, promptText="a red cat")
        variants = [
            (await generate(raw, seed=4, promptText="a red cat", gScale=2.0))[0],
            (await generate(raw, seed=4, promptText="a red cat -no blurry"))[0],
            (await generate(raw, seed=4, promptText="a red cat", clipSkip=2))[0],
        ]
    for variant in variants:
        assert np.abs(pixels_of(base) - pixels_of(variant)).mean() > 1


async def test_image_to_image_depends_on_the_init_image_and_runs_strength_of_the_steps(
    weights: dict[str, Path],
) -> None:
    async with serving(weights) as server:
        async with client(server, extensions=["progress"]) as raw:
            green, blue = (
                await upload(raw, square(64, (20, 200, 40))),
                await upload(raw, square(64)),
            )
            fields = {**SMALL, "steps": 10, "seed": 5, "taskType": 2}
            task = await raw.task(**fields, imageInitiatorUUID=green, strength=0.3)
            assert await progress_of(raw, task) == [1, 2, 3]
        async with client(server) as raw:
            (on_green,) = await generate(raw, **fields, imageInitiatorUUID=green, strength=0.5)
            (on_blue,) = await generate(raw, **fields, imageInitiatorUUID=blue, strength=0.5)
            (stronger,) = await generate(raw, **fields, imageInitiatorUUID=green, strength=0.9)
    # Random weights move pixels little per step, but any change is a real one: the same
    # inputs give the same bytes.
    assert np.abs(pixels_of(on_green) - pixels_of(on_blue)).mean() > 0.5
    assert np.abs(pixels_of(on_green) - pixels_of(stronger)).mean() > 0.5


async def test_inpainting_keeps_every_pixel_outside_the_mask(weights: dict[str, Path]) -> None:
    init = square(64, (200, 180, 20))
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[8:40, 16:48] = 255
    async with serving(weights) as server, client(server) as raw:
        init_uuid, mask_uuid = await upload(raw, init), await upload(raw, mask)
        (image,) = await generate(
            raw, seed=2, taskType=3, imageInitiatorUUID=init_uuid, imageMaskInitiatorUUID=mask_uuid
        )
    out, inside = pixels_of(image), mask[..., 0] == 255
    assert image["imageSrc"].endswith(".png")  # a PNG init stays lossless
    assert np.array_equal(out[~inside], init[~inside])
    assert np.abs(out[inside] - init[inside]).mean() > 10


async def test_controlnet_guides_the_image_and_a_missing_model_is_refused(
    weights: dict[str, Path],
) -> None:
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[:, ::8] = 255
    async with serving(weights) as server, client(server) as raw:
        guide = await upload(raw, edges)
        plain = {"seed": 9, "promptText": "a house"}
        (unguided,) = await generate(raw, **plain)
        control = {"preprocessor": "canny", "weight": 1.0, "startStep": 0, "endStep": 4}
        (guided,) = await generate(
            raw, **plain, taskType=9, controlNet=[{**control, "guideImageUUID": guide}]
        )
        init = await upload(raw, square(64))
        (both,) = await generate(
            raw,
            **plain,
            taskType=10,
            imageInitiatorUUID=init,
            controlNet=[{**control, "guideImageUUID": guide}],
        )
        task = await raw.task(
            **SMALL,
            taskType=9,
            controlNet=[{**control, "preprocessor": "depth_midas", "guideImageUUID": guide}],
        )
        error = await raw.recv()
    assert np.abs(pixels_of(unguided) - pixels_of(guided)).mean() > 1
    assert pixels_of(both).shape == (64, 64, 3)
    assert (error["errorId"], error["taskUUID"]) == (1002, task)
    assert "controlNet[0].preprocessor = 'depth_midas'" in error["errorMessage"]
    assert "given: canny" in error["errorMessage"]


async def test_a_lora_changes_the_image_and_a_missing_one_is_refused(
    weights: dict[str, Path],
) -> None:
    async with serving(weights) as server, client(server) as raw:
        (plain,) = await generate(raw, seed=6)
        (styled,) = await generate(raw, seed=6, lora=[{"modelId": "civitai:1@2", "weight": 1.0}])
        (plain_again,) = await generate(raw, seed=6)
        task = await raw.task(**SMALL, lora=[{"modelId": "civitai:3@4", "weight": 0.5}])
        error = await raw.recv()
    assert np.abs(pixels_of(plain) - pixels_of(styled)).mean() > 1
    assert plain_again["imageBase64Data"] == plain["imageBase64Data"]  # the LoRA is off again
    assert (error["errorId"], error["taskUUID"]) == (1002, task)
    assert "lora[0].modelId = civitai:3@4: no civitai_3_4.safetensors in" in error["errorMessage"]


async def test_cancel_stops_the_pipeline_mid_way(weights: dict[str, Path]) -> None:
    async with serving(weights) as server:
        async with client(server, extensions=["progress", "cancel"]) as raw:
            task = await raw.task(**{**SMALL, "width": 128, "height": 128, "steps": 100})
            first = await raw.recv()
            assert first["newProgress"]["step"] == 1
            await raw.send({"cancelTask": {"taskUUID": task}})
            steps = []
            while "error" not in (frame := await raw.recv()):
                assert "newImages" not in frame
                steps.append(frame["newProgress"]["step"])
            assert (frame["errorId"], frame["taskUUID"]) == (1010, task)
            # The device is free again at once: the next task runs to its image.
            (after,) = await generate(raw, seed=1)
    assert not steps or steps[-1] < 100
    assert pixels_of(after).shape == (64, 64, 3)


async def test_each_step_names_its_image_and_previews_the_latents(
    weights: dict[str, Path],
) -> None:
    async with serving(weights) as server:
        async with client(server, extensions=["progress", "preview"]) as raw:
            task = await raw.task(**{**SMALL, "numberResults": 2})
            frames = await raw.until(lambda f: sum("newImages" in x for x in f) >= 2, skip=())
    steps = [f["newProgress"] for f in frames if "newProgress" in f]
    assert [(p["imageIndex"], p["step"]) for p in steps] == [
        (index, step)
        for step in range(1, 5)
        for index in (0, 1)  # one batch: both each step
    ]
    assert all(p["taskUUID"] == task for p in steps)
    preview = Image.open(io.BytesIO(base64.b64decode(steps[-1]["previewBase64"])))
    assert preview.format == "JPEG" and max(preview.size) <= 128


async def test_one_job_at_a_time_on_the_device(weights: dict[str, Path]) -> None:
    async with serving(weights, workers=4) as server:
        async with client(server, extensions=["progress"]) as raw:
            tasks = [await raw.task(**{**SMALL, "seed": i}) for i in range(1, 4)]
            frames = await raw.until(
                lambda f: bool(f) and (sum("newImages" in x for x in f) >= 3 or "error" in f[-1]),
                skip=(),
            )
            assert "error" not in frames[-1], frames[-1]
    order = [f["newProgress"]["taskUUID"] for f in frames if "newProgress" in f]
    runs = [task for i, task in enumerate(order) if i == 0 or order[i - 1] != task]
    assert sorted(runs) == sorted(tasks)  # each task's steps in one unbroken run


@pytest.mark.parametrize("batch_tasks", [True, False])
async def test_tasks_queued_behind_a_busy_device_share_a_pass_only_when_asked(
    weights: dict[str, Path], batch_tasks: bool
) -> None:
    diffusion = {**settings(weights)["diffusion"], "batch_tasks": batch_tasks}
    async with serving(weights, workers=4, diffusion=diffusion) as server:
        device = server.backend.device  # type: ignore[attr-defined]
        alone: dict[int, np.ndarray[Any, Any]] = {}
        async with client(server) as raw:
            for seed in (1, 2, 3):  # each made alone first, to compare with
                (image,) = await generate(raw, seed=seed, promptText=f"fox {seed}")
                alone[seed] = pixels_of(image)
            calls = device.calls
            # The device is busy: the next tasks queue behind it (one at a time, unless
            # tasks may share, when the server runs as many jobs as share a pass).
            device.lock.acquire()
            try:
                tasks = {
                    await raw.task(**{**SMALL, "seed": s, "promptText": f"fox {s}"}): s
                    for s in (1, 2, 3)
                }
                queued = await anyio.to_thread.run_sync(
                    device.wait_queued, 3 if batch_tasks else 1, 60.0
                )
            finally:
                device.lock.release()
            assert queued
            frames = await raw.until(lambda f: sum("newImages" in x for x in f) == 3)
    images = [image for frame in frames for image in frame["newImages"]["images"]]
    assert sorted(tasks[image["taskUUID"]] for image in images) == [1, 2, 3]
    assert device.calls - calls == (1 if batch_tasks else 3)
    for image in images:
        seed = tasks[image["taskUUID"]]
        difference = np.abs(pixels_of(image) - alone[seed])
        if batch_tasks:  # its own prompt and seed, whatever its neighbours in the pass
            assert difference.mean() < 1.0, difference.mean()
        else:
            assert not difference.any()


async def test_other_task_types_run_procedurally_and_the_server_says_so(
    weights: dict[str, Path],
) -> None:
    backend = make_backend(ServerConfig(**settings(weights)))
    lines = "\n".join(backend.describe())  # type: ignore[attr-defined]
    assert "StableDiffusionPipeline" in lines and "cpu (float32)" in lines
    assert "upscale, background removal, captions, prompt enhancement: procedural" in lines
    async with serving(weights) as server, client(server) as raw:
        (made,) = await generate(raw, seed=1)
        task = await raw.task("newUpscaleGan", imageUUID=made["imageUUID"], upscaleFactor=2)
        (image,) = await raw.images(task, 1, "newUpscaleGan")
        async with httpx.AsyncClient() as http:
            upscaled = (await http.get(image["imageSrc"])).content
    with Image.open(io.BytesIO(upscaled)) as decoded:
        assert decoded.size == (128, 128)


def test_a_missing_or_wrong_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="model_dir = .*: no such directory"):
        make_backend(
            ServerConfig(backend="diffusers", diffusion={"model_dir": str(tmp_path / "x")})
        )
    with pytest.raises(BackendError, match="not a diffusers model directory"):
        make_backend(ServerConfig(backend="diffusers", diffusion={"model_dir": str(tmp_path)}))
    with pytest.raises(BackendError, match="model_dir: required"):
        make_backend(ServerConfig(backend="diffusers"))


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "orchestrator.server.diffusion.backend",
        "orchestrator.server.diffusion.pipelines",
    ):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    yield


def test_without_the_extra_it_says_how_to_install_it(no_torch: None, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"needs the \[diffusion\] extra \(torch is missing\)"):
        make_backend(ServerConfig(backend="diffusers", diffusion={"model_dir": str(tmp_path)}))


async def test_every_mapped_scheduler_runs_and_every_other_is_refused(
    weights: dict[str, Path],
) -> None:
    async with serving(weights) as server, client(server) as raw:
        for scheduler_id, choice in SCHEDULER_MAP.items():
            task = await raw.task(**{**SMALL, "steps": 2, "seed": 1, "schedulerId": scheduler_id})
            if choice.refused:
                error = await raw.recv()
                assert (error["errorId"], error["taskUUID"]) == (1001, task)
                assert f"schedulerId = {scheduler_id} " in error["errorMessage"]
            else:
                (image,) = await raw.images(task, 1)
                assert pixels_of(image).shape == (64, 64, 3), scheduler_id


def orchestrator_cli(*args: str, block_torch: bool = False) -> subprocess.CompletedProcess[str]:
    prelude = "import sys; sys.modules['torch'] = None; " if block_torch else "import sys; "
    code = prelude + "from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=90, env=env
    )


def test_generate_makes_real_images_on_the_embedded_diffusers_server(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    done = orchestrator_cli(
        *("generate", "a red cat", "-n", "2", "--size", "64x64", "--steps", "3"),
        *("--seed", "5", "--model-dir", str(weights["model"]), "--out", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines() if line.endswith(".jpg")]
    assert len(paths) == 2
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (64, 64)


def test_serve_says_what_runs_each_task_type_and_refuses_a_bad_model_dir(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"]
    command += ["--http-port", "-1", "--api-key", "k", "--model-dir", str(weights["model"])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        try:
            lines = [process.stdout.readline() for _ in range(5)]
        finally:
            process.terminate()
    assert lines[0].startswith("listening on ws://127.0.0.1:")
    assert lines[1].startswith("backend: diffusers, StableDiffusionPipeline from ")
    assert "on cpu (float32)" in lines[1]
    assert lines[2].startswith("controlnet: no models given")
    bad = orchestrator_cli("serve", "--port", "0", "--model-dir", str(tmp_path))
    assert bad.returncode == 2
    last = bad.stderr.splitlines()[-1]  # after what the libraries say as they import
    assert last.startswith("error: model_dir = ") and "not a diffusers" in last


def test_without_torch_serve_says_how_to_install_the_extra(weights: dict[str, Path]) -> None:
    done = orchestrator_cli(
        "serve", "--port", "0", "--model-dir", str(weights["model"]), block_torch=True
    )
    assert done.returncode == 2
    assert "pip install 'imagegen-orchestrator[diffusion]'" in done.stderr
