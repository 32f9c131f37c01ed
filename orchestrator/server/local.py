"""Tasks the server runs for its HTTP APIs, on the same scheduler as every socket.

An HTTP request of another seed API becomes a plan (``protocol.vocabularies``) whose steps
(``protocol.vocabularies.steps``) are tasks submitted here for the request's API key. Each
key has one local session whose "connection" is an :class:`Outlet` in this process: the
scheduler sends it the very frames a socket would carry, and the outlet hands each to the
task waiting for it. So an HTTP request has the keys, fairness, limits, cost accounting and
hosting of a WebSocket one, and the scheduler knows nothing of HTTP.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio

from protocol import decode_from_server, encode
from protocol.messages import (
    ErrorMessage,
    Image,
    NewImages,
    NewImageUpload,
    NewUploadedImageUUID,
    PromptEnhance,
    PromptEnhancer,
    TaskRequest,
    UpscaleGanRequest,
    UpscaleGanResult,
)
from protocol.tables import ErrorId
from protocol.vocabularies import OutputImage
from protocol.vocabularies.steps import Enhance, Generate, Read, Step, Upload, Upscale, drive

from .push import Pusher, PushError
from .scheduler import Scheduler
from .state import ServerSession, error_message
from .store import ImageStore

__all__ = ["LocalTaskFailed", "LocalTasks", "Outlet"]

T = TypeVar("T")
# What a local session negotiates: the seed of each image, and errors with their task.
_EXTENSIONS = frozenset({"seed", "taskErrors"})


class LocalTaskFailed(Exception):
    """A local task (or a step of a plan) failed: the error id and why."""

    def __init__(self, error_id: int, text: str) -> None:
        super().__init__(text)
        self.error_id, self.text = error_id, text


class Outlet:
    """A local session's connection: frames go to a callback, never to a socket."""

    congested = False
    dead = False
    authenticated = True

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self._on_frame = on_frame

    def send(self, frame: bytes, task_uuid: str | None = None) -> None:
        self._on_frame(frame)

    def send_error(self, error_id: int, text: str, task_uuid: str | None = None) -> None:
        self.send(encode(error_message(error_id, text, task_uuid, _EXTENSIONS)))

    def close(self, code: int, reason: str) -> None:
        """Nothing to close."""


@dataclass(slots=True)
class _Waiting:
    expected: int
    items: list[Any] = field(default_factory=list)
    error: tuple[int, str] | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class LocalTasks:
    """Submit tasks for an API key and wait for their results; do a plan's steps."""

    def __init__(self, scheduler: Scheduler, store: ImageStore, pusher: Pusher) -> None:
        self._scheduler, self._store, self._pusher = scheduler, store, pusher
        self._outlet = Outlet(self._on_frame)
        self._sessions: dict[str, ServerSession] = {}
        self._waiting: dict[str, _Waiting] = {}

    def _session(self, key_id: str) -> ServerSession:
        session = self._sessions.get(key_id)
        if session is None:
            session = ServerSession(str(uuid.uuid4()), key_id, _EXTENSIONS, self._outlet)
            self._sessions[key_id] = session
        return session

    async def run(self, key_id: str, task: TaskRequest, seconds: float) -> list[Any]:
        """Run ``task`` for the key; its results (images, texts or the upload's reply).
        Raises LocalTaskFailed, or TimeoutError after ``seconds`` (the task is cancelled)."""
        session = self._session(key_id)
        waiting = self._waiting[task.task_uuid] = _Waiting(task.expected_results)
        try:
            self._scheduler.accept(self._outlet, session, task)  # type: ignore[arg-type]
            with anyio.fail_after(seconds):
                await waiting.done.wait()
        finally:
            del self._waiting[task.task_uuid]
            if not waiting.done.is_set():
                self._scheduler.cancel(session, task.task_uuid)
        if waiting.error is not None:
            raise LocalTaskFailed(*waiting.error)
        return waiting.items

    def _on_frame(self, frame: bytes) -> None:
        message = decode_from_server(frame)
        if isinstance(message, NewImages | UpscaleGanResult):
            for image in message.images:
                self._deliver(image.task_uuid, image)
        elif isinstance(message, NewUploadedImageUUID):
            self._deliver(message.task_uuid, message)
        elif isinstance(message, PromptEnhancer):
            for text in message.texts:
                self._deliver(text.task_uuid, text.text)
        elif isinstance(message, ErrorMessage) and message.task_uuid is not None:
            waiting = self._waiting.get(message.task_uuid)
            if waiting is not None:
                waiting.error = (message.error_id, message.error_message)
                waiting.done.set()

    def _deliver(self, task_uuid: str, item: Any) -> None:
        waiting = self._waiting.get(task_uuid)
        if waiting is None or waiting.done.is_set():
            return
        waiting.items.append(item)
        if len(waiting.items) >= waiting.expected:
            waiting.done.set()

    # -- a plan's steps --

    async def drive(
        self, key_id: str, run: Generator[Step, Any, T], seconds: float, max_fetch: int
    ) -> T:
        """Do each step ``run`` yields, for the key, within ``seconds`` each; its value."""
        return await drive(run, partial(self._perform, key_id, seconds, max_fetch))

    async def _perform(self, key_id: str, seconds: float, max_fetch: int, step: Step) -> Any:
        new_uuid = str(uuid.uuid4())
        if isinstance(step, Upload):
            data = await self._image_bytes(step, max_fetch)
            upload = NewImageUpload(task_uuid=new_uuid, image_base64=data)
            try:
                (reply,) = await self.run(key_id, upload, seconds)
            except LocalTaskFailed as exc:  # named by the request's parameter, not ours
                text = exc.text.removeprefix("imageBase64: ")
                raise LocalTaskFailed(exc.error_id, f"{step.parameter}: {text}") from None
            return reply.new_image_uuid
        if isinstance(step, Enhance):
            texts = await self.run(
                key_id, PromptEnhance(task_uuid=new_uuid, prompt=step.prompt), seconds
            )
            return texts[0]
        if isinstance(step, Generate):
            images = await self.run(key_id, step.task, seconds)
            return [self._output(image) for image in images], _cost(images)
        if isinstance(step, Upscale):
            request = UpscaleGanRequest(
                task_uuid=new_uuid, image_uuid=step.image.image_uuid, upscale_factor=step.factor
            )
            images = await self.run(key_id, request, seconds)
            return self._output(images[0]), _cost(images)
        assert isinstance(step, Read)
        stored = self._store.get(step.image.image_uuid)
        if stored is None:
            raise LocalTaskFailed(ErrorId.IMAGE_NOT_FOUND, "the image is no longer kept")
        return stored.data

    async def _image_bytes(self, step: Upload, max_fetch: int) -> str:
        # Bytes, base64 or a data URI go as they are; a link is fetched by the server,
        # under the same address policy as its pushes.
        source = step.source
        if isinstance(source, bytes):
            return base64.b64encode(source).decode()
        if source.startswith(("http://", "https://")):
            try:
                return base64.b64encode(await self._pusher.get(source, max_fetch)).decode()
            except PushError as exc:
                raise LocalTaskFailed(
                    ErrorId.VALIDATION_ERROR, f"{step.parameter}: {exc}"
                ) from None
        return source

    def _output(self, image: Image) -> OutputImage:
        stored = self._store.get(image.image_uuid)
        width, height = (stored.width, stored.height) if stored is not None else (0, 0)
        data = base64.b64decode(image.image_base64_data) if image.image_base64_data else None
        return OutputImage(
            image.image_uuid,
            image.image_src,
            width,
            height,
            image.seed,
            image.cost,
            image.b_nsfw_content,
            data,
        )


def _cost(images: list[Image]) -> float:
    return sum(image.cost or 0.0 for image in images)
