"""The orchestrator in both dialects against the reference server: the layers above the
protocol do not know which one a connection speaks, so the same calls give the same results."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
import websockets
from PIL import Image
from test_orchestrator_e2e import assert_each_image_once

from orchestrator import (
    AuthenticationError,
    Config,
    CurrentTask,
    LocalProtocolError,
    Orchestrator,
    TaskError,
    TextToImage,
    Timeouts,
    UsageError,
)
from orchestrator.server import FixedBackend
from orchestrator.testing import FakeServer, MemoryTransport
from protocol import ControlNet

from serverkit import KEY, png, running, square

pytestmark = [pytest.mark.timeout(60)]

DIALECTS = ["legacy", "runware"]


async def pixels(url: str) -> np.ndarray[Any, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    with Image.open(io.BytesIO(response.content)) as image:
        return np.asarray(image)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_every_task_type_does_its_job_in_either_dialect(dialect: str) -> None:
    async with (
        running() as server,
        Orchestrator(server.url, api_key=KEY, config=Config(dialect=dialect)) as orch,
    ):
        made = await orch.text_to_image(
            "a red fox -no blur", number_results=3, size=4, seed=11, negative_prompt=None
        )
        assert len({i.image_uuid for i in made.images}) == 3
        assert sorted(i.seed or 0 for i in made.images) == [11, 12, 13]
        assert (await pixels(made.images[0].url)).shape == (512, 768, 3)
        uploaded = (await orch.upload_image(png(square(256)))).image.image_uuid
        near = await orch.image_to_image("a blue square", uploaded, strength=0.1, seed=1)
        assert near.image.seed == 1 and near.image.url.endswith(".png")  # as its init image
        mask = (await orch.upload_image(png(square(256, (255, 255, 255))))).image.image_uuid
        await orch.inpaint("a cat", uploaded, mask, seed=2)
        guide = await orch.controlnet_preprocess("canny", guide_image_uuid=uploaded)
        control = ControlNet(
            preprocessor="canny",
            weight=0.8,
            start_step=0,
            end_step=10,
            guide_image_uuid=guide.image.image_uuid,
        )
        await orch.controlnet("a lighthouse", [control], model="13", steps=10)
        bigger = await orch.upscale(made.images[0].image_uuid, 2)
        assert (await pixels(bigger.image.url)).shape[:2] == (1024, 1536)
        cut = await orch.remove_background(uploaded)
        assert (await pixels(cut.image.url)).shape[2] == 4  # an alpha channel
        caption = await orch.image_to_text(made.images[0].image_uuid)
        assert "red fox" in caption.text
        versions = await orch.enhance_prompt("a cat", 3, prompt_max_length=120)
        assert len(set(versions.texts)) == 3 and all(t.startswith("a cat") for t in versions.texts)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_errors_fail_the_task_they_name_and_the_others_finish(dialect: str) -> None:
    config = Config(dialect=dialect)
    async with (
        running(FixedBackend()) as server,
        Orchestrator(server.url, api_key=KEY, config=config) as orch,
    ):
        unknown = "9b2b3c44-5d6e-4f70-8a9b-0c1d2e3f4a5b"  # never uploaded
        with pytest.raises(TaskError) as caught:
            await orch.upscale(unknown)
        assert "imageUUID" in str(caught.value) or "inputImage" in str(caught.value)
        results = [await orch.text_to_image(f"fox {i}") for i in range(3)]
        assert len({r.image.image_uuid for r in results}) == 3
    async with running(FixedBackend()) as server:
        with pytest.raises(AuthenticationError):
            async with Orchestrator(server.url, api_key="wrong", config=config) as orch:
                await orch.text_to_image("a fox")


async def test_what_the_current_dialect_cannot_say_is_refused_at_submit() -> None:
    async with (
        running(FixedBackend()) as server,
        Orchestrator(server.url, api_key=KEY, config=Config(dialect="runware")) as orch,
    ):
        with pytest.raises(LocalProtocolError, match="styleId"):
            await orch.submit(TextToImage(prompt="a fox", style=2))
        assert orch.pool.in_flight == 0


@asynccontextmanager
async def relay(
    upstream: str, frames: list[str], cut_after: int | None = None
) -> AsyncIterator[str]:
    """A WebSocket relay in front of ``upstream`` that records what clients send, and drops
    each client's socket after ``cut_after`` frames from the server (once)."""
    cuts: list[bool] = []

    async def handle(downstream: websockets.ServerConnection) -> None:
        async with websockets.connect(upstream, max_size=None) as up:
            async with anyio.create_task_group() as tg:

                async def outbound() -> None:
                    async for frame in downstream:
                        frames.append(frame if isinstance(frame, str) else frame.decode())
                        await up.send(frame)
                    tg.cancel_scope.cancel()

                async def inbound() -> None:
                    count = 0
                    async for frame in up:
                        await downstream.send(frame)
                        count += 1
                        if cut_after is not None and count == cut_after and not cuts:
                            cuts.append(True)
                            downstream.transport.abort()  # a dropped socket, no goodbye
                            break
                    tg.cancel_scope.cancel()

                tg.start_soon(outbound)
                tg.start_soon(inbound)

    async with websockets.serve(handle, "127.0.0.1", 0, max_size=None) as front:
        yield f"ws://127.0.0.1:{front.sockets[0].getsockname()[1]}"


async def test_tasks_submitted_together_go_out_in_few_array_frames() -> None:
    sent: list[str] = []
    async with running(FixedBackend()) as server, relay(server.url, sent) as url:
        async with Orchestrator(url, api_key=KEY, config=Config(dialect="runware")) as orch:
            results = [
                r async for r in orch.map(TextToImage(prompt=f"fox {i}") for i in range(500))
            ]
    assert_each_image_once(results, 1)
    task_frames = [f for f in sent if '"imageInference"' in f]
    assert sum(f.count('"imageInference"') for f in task_frames) == 500
    assert len(task_frames) < 100  # many tasks per frame


async def test_a_dropped_socket_loses_nothing_and_repeats_nothing_in_the_current_dialect() -> None:
    sent: list[str] = []
    config = Config(dialect="runware", timeouts=Timeouts(replay_quiet=0.2))
    async with running(FixedBackend()) as server, relay(server.url, sent, cut_after=300) as url:
        async with Orchestrator(url, api_key=KEY, config=config) as orch:
            tasks = (TextToImage(prompt=f"cat {i}", number_results=2) for i in range(1000))
            results = [r async for r in orch.map(tasks, concurrency=256)]
            assert [c.connects for c in orch.pool.connections] == [2]
    assert len(results) == 1000
    assert_each_image_once(results, 2)
    auth = [f for f in sent if '"authentication"' in f]
    assert len(auth) == 2 and '"connectionSessionUUID"' in auth[1]  # the session resumed


async def test_endpoints_of_both_dialects_share_the_work() -> None:
    async with running(FixedBackend()) as old, running(FixedBackend()) as new:
        config = Config(endpoint_dialects={new.url: "runware"})
        async with Orchestrator([old.url, new.url], api_key=KEY, config=config) as orch:
            results = [
                r async for r in orch.map(TextToImage(prompt=f"fox {i}") for i in range(400))
            ]
            assert_each_image_once(results, 1)
            served = {c.endpoint: c.session.dialect for c in orch.pool.connections}
            assert served == {old.url: "legacy", new.url: "runware"}
            assert {r.endpoint for r in results} == {old.url, new.url}
            with pytest.raises(LocalProtocolError, match="styleId"):
                await orch.submit(TextToImage(prompt="a fox", style=2))


async def test_a_task_written_in_the_current_dialect_goes_as_written() -> None:
    sdxl = {"model": "civitai:101055@128078", "width": 512, "height": 512}
    task = {"taskType": "imageInference", "positivePrompt": "a fox", "numberResults": 2, **sdxl}
    async with running(FixedBackend()) as server:
        config = Config(dialect="runware")
        async with Orchestrator(server.url, api_key=KEY, config=config) as orch:
            result = await orch.run(CurrentTask(task=task))
            assert len({i.image_uuid for i in result.images}) == 2
            words = await orch.run(
                CurrentTask(
                    task={"taskType": "promptEnhance", "prompt": "a cat", "promptVersions": 2}
                )
            )
            assert len(words.texts) == 2
            with pytest.raises(TaskError, match="vae"):  # our server judges what we do not know
                await orch.run(CurrentTask(task={**task, "vae": "civitai:1@1"}))
            with pytest.raises(LocalProtocolError, match="numberResults"):
                await orch.submit(CurrentTask(task={**task, "numberResults": "two"}))
            with pytest.raises(LocalProtocolError, match="taskType"):
                await orch.submit(CurrentTask(task={**task, "taskType": "videoInference"}))
        async with Orchestrator(server.url, api_key=KEY) as orch:  # the legacy dialect
            with pytest.raises(LocalProtocolError, match="current Runware dialect"):
                await orch.submit(CurrentTask(task=task))


def test_a_dialect_is_one_the_orchestrator_speaks() -> None:
    with pytest.raises(UsageError, match=r"Config.dialect = 'soap': must be a dialect"):
        Config(dialect="soap")
    with pytest.raises(UsageError, match=r"endpoint_dialects\['ws://a:1'\]"):
        Config(endpoint_dialects={"ws://a:1": "Runware"})
    config = Config(endpoint_dialects={"ws://a:1": "runware"})
    assert (config.dialect_of("ws://a:1"), config.dialect_of("ws://b:1")) == ("runware", "legacy")


@asynccontextmanager
async def fake(**options: Any) -> AsyncIterator[tuple[FakeServer, Orchestrator]]:
    config = Config(dialect="runware", timeouts=Timeouts(replay_quiet=0.05))
    async with FakeServer(**options) as server:
        transport = MemoryTransport(server)
        async with Orchestrator(
            "ws://fake", api_key="test-key", config=config, transport=transport
        ) as orch:
            yield server, orch


async def test_the_fake_server_speaks_the_current_dialect_for_users_tests() -> None:
    async with fake(images_per_frame=1, duplicate_frames=True) as (server, orch):
        result = await orch.text_to_image("a fox", number_results=3)
        assert len({i.image_uuid for i in result.images}) == 3  # split, doubled, once each
        assert all(c.dialect == "runware" for c in server.connections)
    failing = "3f0c4a2e-8d1b-4c6e-9f7a-2b5d8e1c0a94"
    async with fake(queue_full=2, fail={failing: (1001, "steps: too many")}) as (server, orch):
        assert len((await orch.text_to_image("a fox")).images) == 1  # retried past a full queue
        with pytest.raises(TaskError, match="too many"):
            await orch.run(TextToImage(prompt="a fox", task_uuid=failing))
    async with fake(drop_after_frames=5) as (server, orch):
        results = [r async for r in orch.map(TextToImage(prompt=f"fox {i}") for i in range(20))]
        assert_each_image_once(results, 1)
        assert [c.connects for c in orch.pool.connections] == [2]  # resumed once
