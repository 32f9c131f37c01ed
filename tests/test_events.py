"""What a streaming UI relies on: each step says its image, previews when asked, a JSON form
of every event, a bounded log for a slow reader, a bounded outbox per page, aggregate
progress for map, and the page's request rules."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import orjson
import pytest
from PIL import Image

from orchestrator import (
    Config,
    ImageReady,
    Orchestrator,
    Progress,
    RemoteTaskError,
    RunProgress,
    TaskDone,
    TaskFailed,
    TextToImage,
    UsageError,
)
from orchestrator.errors import LocalProtocolError
from orchestrator.server import ServerConfig, ServerLimits, serve_embedded
from orchestrator.server.backends import PREVIEW_SIDE
from orchestrator.ui import Outbox, text_to_image
from orchestrator.ui.command import ui_config
from protocol import NewTask, Session
from protocol.codec import dumps
from protocol.tables import DEFAULT_EXTENSIONS

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def orchestrator(config: Config | None = None) -> AsyncIterator[Orchestrator]:
    server_config = ServerConfig(workers=1, limits=ServerLimits(max_number_results=4))
    async with serve_embedded(server_config) as server:
        async with Orchestrator([server.url], api_key=server.api_key, config=config) as orch:
            yield orch


async def test_steps_name_their_image_and_previews_come_only_when_asked() -> None:
    spec = TextToImage(prompt="a blue boat", number_results=3, steps=4, width=256, height=128)
    for config, previews in ((ui_config(), True), (None, False)):
        async with orchestrator(config) as orch, orch.submit(spec) as handle:
            events = [event async for event in handle.events()]
        steps = [e for e in events if isinstance(e, Progress)]
        assert {e.image_index for e in steps} == {0, 1, 2}
        for event in steps:
            assert (event.preview_base64 is not None) is previews
        ready = [e.index for e in events if isinstance(e, ImageReady)]
        assert ready == [0, 1, 2]
        # Each image's steps come before it: no step of image i after ImageReady(i).
        for i in range(3):
            at = events.index(next(e for e in events if isinstance(e, ImageReady) and e.index == i))
            assert all(e.image_index != i for e in events[at:] if isinstance(e, Progress))
        if previews:
            preview = Image.open(io.BytesIO(base64.b64decode(steps[-1].preview_base64 or "")))
            assert preview.format == "JPEG"
            assert preview.size == (PREVIEW_SIDE, PREVIEW_SIDE // 2)  # the image's shape


def test_a_server_that_says_no_index_is_counted_by_the_session() -> None:
    session = Session("key")
    session.send_connect()
    session.receive(dumps({"newConnectionSessionUUID": {"connectionSessionUUID": "s"}}))
    task = str(uuid.uuid4())
    session.send_task(NewTask(task_uuid=task, prompt_text="a cat", number_results=2))

    def step(n: int) -> Progress:
        (event,) = session.receive(
            dumps({"newProgress": {"taskUUID": task, "step": n, "steps": 2}})
        )
        assert isinstance(event, Progress)
        return event

    assert step(1).image_index == 0
    image = {"imageUUID": str(uuid.uuid4()), "taskUUID": task, "imageSrc": "https://x/1.jpg"}
    session.receive(dumps({"newImages": {"images": [image]}}))
    assert step(1).image_index == 1  # one image delivered: the next steps are the second's


async def test_every_event_has_a_stable_json_form() -> None:
    async with orchestrator(ui_config()) as orch:
        spec = TextToImage(prompt="a green hill", number_results=2, steps=2, seed=7)
        async with orch.submit(spec) as handle:
            events = [event async for event in handle.events()]
        with pytest.raises(RemoteTaskError) as caught:
            await orch.run(TextToImage(prompt="a hill", number_results=5))  # the server: 4
    shapes = [event.to_json() for event in events]
    assert all(orjson.loads(orjson.dumps(shape)) == shape for shape in shapes)  # JSON types
    progress = next(s for s in shapes if s["type"] == "progress")
    assert set(progress) == {"type", "taskUUID", "imageIndex", "step", "steps", "preview"}
    assert progress["preview"].startswith("data:image/jpeg;base64,")
    ready = next(s for s in shapes if s["type"] == "imageReady")
    assert set(ready) == {"type", "taskUUID", "index", "image"}
    assert ready["image"]["seed"] == "7" and ready["image"]["url"].startswith("http://127.0.0.1")
    done = shapes[-1]
    assert done["type"] == "taskDone" and len(done["images"]) == 2
    assert done["cost"] == pytest.approx(sum(i["cost"] for i in done["images"]))
    failed = TaskFailed(caught.value.task_uuid, caught.value).to_json()
    assert failed["error"]["type"] == "RemoteTaskError"
    assert failed["error"]["errorId"] == caught.value.error_id
    assert failed["error"]["errorMessage"] == caught.value.error_message
    assert RunProgress(3, 1, 2, 10).to_json() == {
        "type": "runProgress",
        "done": 3,
        "failed": 1,
        "inFlight": 2,
        "total": 10,
    }


async def test_a_slow_reader_costs_the_task_a_bounded_log() -> None:
    steps, images = 60, 4
    async with orchestrator(ui_config()) as orch:
        spec = TextToImage(prompt="a slow reader", number_results=images, steps=steps)
        async with orch.submit(spec) as handle:
            reader = handle.events()
            first = await anext(reader)  # a reader that then reads nothing until the end
            await handle.result()
            # Every image and the end are kept, and one step per image: nothing more.
            assert handle.buffered_events <= 2 * images + 1
            rest = [event async for event in reader]
    assert isinstance(first, Progress)
    assert [e.index for e in rest if isinstance(e, ImageReady)] == list(range(images))
    last_steps = {e.image_index: e.step for e in rest if isinstance(e, Progress)}
    assert last_steps == dict.fromkeys(range(images), steps)  # the latest step always shows
    assert isinstance(rest[-1], TaskDone)


async def test_a_page_that_reads_nothing_holds_a_bounded_outbox() -> None:
    outbox = Outbox(limit=4)
    for step in range(10_000):
        for image in range(3):
            await outbox.put({"step": step, "image": image}, key=("g1", image))
    await outbox.put({"figures": 1}, key="figures")
    await outbox.put({"figures": 2}, key="figures")
    for i in range(4):
        await outbox.put({"image": i})
    assert len(outbox) == 3 + 1 + 4
    blocked = anyio.Event()

    async def one_more() -> None:
        await outbox.put({"image": 4})
        blocked.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_more)
        await anyio.wait_all_tasks_blocked()
        assert not blocked.is_set() and outbox.kept == 4  # waits for room: nothing dropped
        got = [await outbox.get() for _ in range(len(outbox))]
        await blocked.wait()
    assert got[:3] == [{"step": 9999, "image": i} for i in range(3)]  # each key's latest
    assert got[3:] == [{"figures": 2}, {"image": 0}, {"image": 1}, {"image": 2}, {"image": 3}]
    assert await outbox.get() == {"image": 4}


async def test_map_reports_where_the_run_stands() -> None:
    seen: list[RunProgress] = []
    async with orchestrator() as orch:
        tasks = [TextToImage(prompt=f"fox {i}") for i in range(12)]
        results = [r async for r in orch.map(tasks, concurrency=3, on_progress=seen.append)]
        bad = [TextToImage(prompt="ok"), TextToImage(prompt="x", steps=500)]
        outcomes = [r async for r in orch.map(bad, return_exceptions=True, on_progress=seen.append)]
    assert len(results) == 12 and all(p.in_flight <= 3 for p in seen)
    assert seen[11 + 12] == RunProgress(12, 0, 0, 12)  # 12 submissions and 12 endings
    assert seen[-1] == RunProgress(1, 1, 0, 2)
    assert isinstance(outcomes[0], LocalProtocolError)  # the bad one, refused at once


def test_the_page_request_names_what_is_wrong() -> None:
    spec = text_to_image({"type": "generate", "id": "g1", "prompt": "a fox", "seed": None})
    assert spec.prompt == "a fox" and spec.seed is None
    cases = {
        "colour": ({"prompt": "a", "colour": "red"}, "colour: unknown field"),
        "steps": ({"prompt": "a", "steps": "20"}, "steps = '20': must be a whole number"),
        "bool": ({"prompt": "a", "numberResults": True}, "numberResults = True"),
        "prompt": ({"numberResults": 2}, "prompt: required"),
    }
    for message, expected in cases.values():
        with pytest.raises(UsageError, match=expected):
            text_to_image(message)


def test_previews_are_asked_for_only_by_who_wants_them() -> None:
    assert "preview" not in Config().extensions
    assert ui_config().extensions == DEFAULT_EXTENSIONS | {"preview"}
