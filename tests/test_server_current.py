"""The reference server in the current Runware dialect, frame by frame, on the same port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from orchestrator.server import FixedBackend

from serverkit import KEY, GatedBackend, client, running

pytestmark = [pytest.mark.timeout(30)]


def tid() -> str:
    return str(uuid.uuid4())


class Current:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, *tasks: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(list(tasks)).decode())

    async def recv(self) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await self.ws.recv())
        return frame


@asynccontextmanager
async def current(url: str, key: str | None = KEY) -> AsyncIterator[Current]:
    async with connect(url, max_size=None) as ws:
        peer = Current(ws)
        if key is not None:
            await peer.send({"taskType": "authentication", "apiKey": key})
            (auth,) = (await peer.recv())["data"]
            assert auth["taskType"] == "authentication" and auth["connectionSessionUUID"]
        yield peer


def inference(**fields: Any) -> dict[str, Any]:
    task = {"taskType": "imageInference", "taskUUID": tid(), "positivePrompt": "a fox"}
    return {**task, "width": 512, "height": 512, **fields}


async def test_one_port_two_dialects_one_scheduler() -> None:
    async with running(FixedBackend()) as server:
        async with current(server.url) as new, client(server) as old:
            task = inference(numberResults=2, seed=9)
            await new.send(task)
            items = (await new.recv())["data"] + (await new.recv())["data"]
            assert sorted(i["seed"] for i in items) == [9, 10]
            assert {i["taskUUID"] for i in items} == {task["taskUUID"]}
            # the same key over the legacy dialect: the task is known, its results re-sent
            await old.send({"newTask": {"taskUUID": task["taskUUID"], "promptText": "a fox"}})
            images = (await old.recv())["newImages"]["images"]
            assert {i["imageUUID"] for i in images} == {i["imageUUID"] for i in items}


async def test_what_a_socket_may_do_before_and_after_authentication() -> None:
    async with running(FixedBackend()) as server:
        async with current(server.url, key=None) as peer:
            await peer.send({"taskType": "ping", "ping": True}, inference())
            assert (await peer.recv()) == {"data": [{"taskType": "ping", "pong": True}]}
            (error,) = (await peer.recv())["errors"]
            assert error["code"] == "missingAuthentication"
            await peer.send({"taskType": "authentication", "apiKey": "wrong"})
            (error,) = (await peer.recv())["errors"]
            assert error["code"] == "invalidApiKey"


async def test_bad_tasks_are_answered_by_name_and_the_good_ones_in_the_frame_run() -> None:
    async with running(FixedBackend()) as server, current(server.url) as peer:
        good, dance, guidance, empty = inference(), tid(), tid(), tid()
        await peer.send(
            {"taskType": "dance", "taskUUID": dance},
            inference(CFGScale=40, taskUUID=guidance),
            inference(positivePrompt="", taskUUID=empty),
            good,
        )
        frames = [await peer.recv() for _ in range(4)]
        errors = {e["taskUUID"]: e for f in frames for e in f.get("errors", ())}
        named = {t: (errors[t]["code"], errors[t]["parameter"]) for t in (dance, guidance, empty)}
        assert named == {
            dance: ("invalidTaskType", "taskType"),
            guidance: ("invalidCFGScale", "CFGScale"),
            empty: ("invalidPositivePrompt", "positivePrompt"),
        }
        (image,) = [i for f in frames for i in f.get("data", ())]
        assert image["taskUUID"] == good["taskUUID"]
        await peer.ws.send(b"not json".decode())
        (error,) = (await peer.recv())["errors"]
        assert error["code"] == "invalidFrame"


async def test_async_delivery_is_acknowledged_then_delivered_and_get_response_repeats_it() -> None:
    async with running(FixedBackend()) as server, current(server.url) as peer:
        task = inference(deliveryMethod="async")
        await peer.send(task)
        (ack,) = (await peer.recv())["data"]
        assert ack == {
            "taskType": "imageInference",
            "taskUUID": task["taskUUID"],
            "status": "processing",
        }
        (image,) = (await peer.recv())["data"]
        await peer.send({"taskType": "getResponse", "taskUUID": task["taskUUID"]})
        assert (await peer.recv())["data"] == [image]
        await peer.send({"taskType": "getResponse", "taskUUID": tid()})
        (error,) = (await peer.recv())["errors"]
        assert error["code"] == "taskNotFound"


async def test_a_resumed_session_gets_what_was_made_while_it_was_away() -> None:
    backend = GatedBackend()
    async with running(backend) as server:
        async with current(server.url, key=None) as peer:
            await peer.send({"taskType": "authentication", "apiKey": KEY})
            session = (await peer.recv())["data"][0]["connectionSessionUUID"]
            task = inference(numberResults=2)
            await peer.send(task)
            await backend.wait_started()
        await server.wait_connections(0)
        backend.gate.set()
        await backend.wait_finished()  # made while the client is away
        async with current(server.url, key=None) as peer:
            auth = {"taskType": "authentication", "apiKey": KEY, "connectionSessionUUID": session}
            await peer.send(auth)
            assert (await peer.recv())["data"][0]["connectionSessionUUID"] == session
            replayed = [i for _ in range(2) for i in (await peer.recv())["data"]]
            assert [i["taskUUID"] for i in replayed] == [task["taskUUID"]] * 2
            assert len({i["imageUUID"] for i in replayed}) == 2
