"""Helpers for tests against a real reference server on 127.0.0.1, port 0: a raw websockets
client that speaks frames as dicts, backends that stop on a gate, and tiny images."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import orjson
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from orchestrator.server import FixedBackend, Job, JobContext, ReferenceServer, ServerConfig

Frame = dict[str, Any]


def new_uuid() -> str:
    return str(uuid.uuid4())


def png(pixels: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def square(size: int = 128, colour: tuple[int, int, int] = (30, 60, 220)) -> np.ndarray[Any, Any]:
    """A coloured square in the middle of a plain light-grey background."""
    pixels = np.full((size, size, 3), 210, np.uint8)
    q = size // 4
    pixels[q : size - q, q : size - q] = colour
    return pixels


class Raw:
    """A raw websockets client: frames in and out as dicts, nothing else in between."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session_uuid: str | None = None

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv(self) -> Frame:
        frame: Frame = orjson.loads(await self.ws.recv())
        return frame

    async def auth(self, key: str, **fields: Any) -> Frame:
        await self.send({"newConnection": {"apiKey": key, **fields}})
        reply = await self.recv()
        self.session_uuid = reply["newConnectionSessionUUID"]["connectionSessionUUID"]
        return reply

    async def task(self, name: str = "newTask", **body: Any) -> str:
        body.setdefault("taskUUID", new_uuid())
        if name == "newTask":
            body.setdefault("promptText", "a red fox")
            body.setdefault("taskType", 1)
        await self.send({name: body})
        return str(body["taskUUID"])

    async def until(self, done: Any, *, skip: Iterable[str] = ("newProgress",)) -> list[Frame]:
        """Frames until ``done(frames)`` holds (progress frames left out)."""
        frames: list[Frame] = []
        while not done(frames):
            frame = await self.recv()
            if not any(k in frame for k in skip):
                frames.append(frame)
        return frames

    async def images(self, task_uuid: str, count: int, name: str = "newImages") -> list[Frame]:
        """Collect ``count`` distinct images of a task; fail on an error frame for it."""
        seen: dict[str, Frame] = {}
        while len(seen) < count:
            frame = await self.recv()
            if frame.get("error") and frame.get("taskUUID") == task_uuid:
                raise AssertionError(f"task failed: {frame}")
            for image in frame.get(name, {}).get("images", ()):
                if image["taskUUID"] == task_uuid:
                    seen.setdefault(image["imageUUID"], image)
        return list(seen.values())

    async def reply(self, name: str, task_uuid: str) -> Frame:
        """The first ``name`` frame (or error) about a task."""
        while True:
            frame = await self.recv()
            if frame.get("error") and frame.get("taskUUID") == task_uuid:
                return frame
            body = frame.get(name)
            if isinstance(body, dict):
                uuids = {body.get("taskUUID")} | {t.get("taskUUID") for t in body.get("texts", ())}
                if task_uuid in uuids:
                    return frame


@asynccontextmanager
async def running(backend: Any = None, **config: Any) -> AsyncIterator[ReferenceServer]:
    config.setdefault("api_keys", ("key-a", "key-b"))
    config.setdefault("workers", 2)
    async with ReferenceServer(ServerConfig(**config), backend=backend) as server:
        yield server


@asynccontextmanager
async def client(server: ReferenceServer, key: str = "key-a", **auth: Any) -> AsyncIterator[Raw]:
    async with connect(server.url, max_size=None, compression=None) as ws:
        raw = Raw(ws)
        if key:
            await raw.auth(key, **auth)
        yield raw


class GatedBackend:
    """The fixed backend behind a gate: each job waits until the test opens it.

    ``order`` lists taskUUIDs in the order jobs started; ``started`` is set by the first.
    """

    name = "gated"
    blocking = True

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()  # set once a job has emitted all its results
        self.order: list[str] = []
        self._fixed = FixedBackend()

    def run(self, job: Job, ctx: JobContext) -> None:
        self.order.append(job.request.task_uuid)
        self.started.set()
        if not self.gate.wait(timeout=60):
            raise RuntimeError("gate never opened")
        self._fixed.run(job, ctx)
        self.finished.set()

    async def wait_started(self) -> None:
        await anyio.to_thread.run_sync(self.started.wait, 30)

    async def wait_finished(self) -> None:
        await anyio.to_thread.run_sync(self.finished.wait, 30)


class CountingBackend(FixedBackend):
    """The fixed backend, counting the jobs it ran."""

    blocking = False

    def __init__(self) -> None:
        self.runs = 0

    def run(self, job: Job, ctx: JobContext) -> None:
        self.runs += 1
        super().run(job, ctx)


KEY = "key-a"


class ServerProcess:
    """``orchestrator serve`` in its own process; killable and restartable on its port."""

    def __init__(self, port: int = 0) -> None:
        command = [sys.executable, "-m", "orchestrator.cli", "serve", "--backend", "fixed"]
        command += ["--port", str(port), "--api-key", KEY]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first.startswith("listening on ws://127.0.0.1:"), first
        self.url = first.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        second = self.process.stdout.readline()  # the seed HTTP APIs' port (no key line: given)
        self.http_url = second.split()[-1] if second.startswith("http on ") else None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def server_process(port: int = 0) -> Iterator[ServerProcess]:
    server = ServerProcess(port)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()
