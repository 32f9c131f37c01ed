"""The fake server: the protocol in memory, misbehaving on demand.

It speaks both dialects, as the reference server does: a socket whose first frame is an
array speaks the current Runware dialect, translated to and from the seed's at its edge
(``protocol.runware``), so every knob below works the same in either."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from pydantic import ValidationError

from protocol.codec import decode_from_client, dumps, parse
from protocol.errors import RemoteProtocolError
from protocol.identity import image_uuid_for
from protocol.messages import (
    CancelTask,
    ClientMessage,
    NewConnection,
    NewImageUpload,
    NewTask,
    Ping,
    PreProcessControlNetRequest,
    PromptEnhance,
    ReverseImageClip,
    TaskRequest,
)
from protocol.runware import messages as current
from protocol.runware.codec import Refused
from protocol.runware.codec import decode_from_client as current_tasks
from protocol.runware.results import current_frame
from protocol.runware.translate import legacy_task
from protocol.tables import ERRORS, KNOWN_EXTENSIONS, ErrorId
from protocol.validation import field_errors

from ..errors import ConnectError, ConnectionClosed
from ..transport import Stream
from .memory import Endpoint, socket_pair

__all__ = ["FakeConnection", "FakeServer"]


@dataclass
class _Task:
    request: TaskRequest
    answered: bool = False
    frames: list[bytes] = field(default_factory=list)  # results not yet delivered


@dataclass
class _Session:
    uuid: str
    tasks: dict[str, _Task] = field(default_factory=dict)
    connection: FakeConnection | None = None


class FakeConnection:
    """The server's side of one in-memory socket."""

    def __init__(self, server: FakeServer, endpoint: Endpoint) -> None:
        self.server = server
        self._endpoint = endpoint
        self.session: _Session | None = None
        self.extensions: frozenset[str] = frozenset()
        self.frozen = False
        self.closed = False
        self.frames_sent = 0
        self.dialect: str | None = None  # legacy or runware: what its first frame says

    def send(self, frame: bytes | Mapping[str, Any]) -> None:
        """Send a frame (bytes as they are, or an object serialised as JSON); to a socket
        in the current dialect, a legacy frame goes as that dialect says it."""
        if self.closed or self.frozen:
            return
        if self.dialect == "runware":
            obj = frame if isinstance(frame, Mapping) else parse(frame)
            current = obj if "data" in obj or "errors" in obj else current_frame(obj)
            if current is None:
                return  # progress: the current dialect has none
            frame = current
        data = frame if isinstance(frame, bytes) else dumps(frame)
        try:
            self._endpoint._outgoing.send_nowait(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.drop()
            return
        self.frames_sent += 1

    def drop(self, code: int | None = None) -> None:
        """Close the socket abruptly (the client sees the connection lost, and ``code``
        as the close code the server sent, if given)."""
        self.closed = True
        self._endpoint.close(code)
        if self.session is not None and self.session.connection is self:
            self.session.connection = None

    def freeze(self) -> None:
        """Go half-open: keep the socket but read nothing and send nothing (no pongs)."""
        self.frozen = True


class FakeServer:
    """An in-memory server for the protocol, with knobs to misbehave.

    Args:
        api_key: the one key it accepts.
        extensions: the extensions it grants (when asked).
        auto_reply: answer each task at once; otherwise call :meth:`reply`.
        images_per_frame: split a task's images over frames of this many.
        duplicate_frames: send every result frame twice.
        silent: accept tasks and never answer them (pings are still answered).
        queue_full: refuse this many tasks with errorId 1003 (queue full) first.
        fail: taskUUIDs to fail with (errorId, message).
        progress_steps: with the ``progress`` extension, send this many progress frames.
        drop_after_frames: drop the socket after sending this many result frames.
        forget_on_drop: a drop also loses the tasks' undelivered results (the server
            does not list them as known, so the client must resubmit them).
        poison: taskUUIDs whose frame makes it drop the socket (close code 1011), always.
        max_frame: frames larger than this close the socket with 1009, unread.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        extensions: Iterable[str] = KNOWN_EXTENSIONS,
        auto_reply: bool = True,
        images_per_frame: int | None = None,
        duplicate_frames: bool = False,
        silent: bool = False,
        queue_full: int = 0,
        fail: Mapping[str, tuple[int, str]] | None = None,
        progress_steps: int = 0,
        drop_after_frames: int | None = None,
        forget_on_drop: bool = False,
        poison: Iterable[str] = (),
        max_frame: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.extensions = frozenset(extensions)
        self.auto_reply = auto_reply
        self.images_per_frame = images_per_frame
        self.duplicate_frames = duplicate_frames
        self.silent = silent
        self.queue_full = queue_full
        self.fail = dict(fail or {})
        self.progress_steps = progress_steps
        self.drop_after_frames = drop_after_frames
        self.forget_on_drop = forget_on_drop
        self.poison = frozenset(poison)
        self.max_frame = max_frame
        self.refuse_connections = False
        self.connections: list[FakeConnection] = []
        self.received: list[TaskRequest] = []
        self.times_received: Counter[str] = Counter()
        self.cancelled: list[str] = []
        self.pings = 0
        self.sessions: dict[str, _Session] = {}
        self._tg: TaskGroup | None = None
        self._stack = AsyncExitStack()
        self._changed = anyio.Event()

    async def __aenter__(self) -> FakeServer:
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        for conn in self.connections:
            conn.drop()
        await self._stack.aclose()  # the body's exception goes on unwrapped
        return None

    # -- inspection and control --

    @property
    def connection(self) -> FakeConnection:
        """The most recent connection."""
        return self.connections[-1]

    @property
    def live_connections(self) -> list[FakeConnection]:
        """Connections not dropped."""
        return [c for c in self.connections if not c.closed]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (checked after every frame the server handles)."""
        while not predicate():
            self._changed = event = anyio.Event()
            await event.wait()

    async def wait_received(self, count: int) -> None:
        """Wait until ``count`` task frames arrived in all (resubmissions included)."""
        await self.wait_for(lambda: len(self.received) >= count)

    def drop_all(self) -> None:
        """Drop every connection."""
        for conn in self.connections:
            conn.drop()

    def reply(self, task_uuid: str) -> None:
        """Answer a task now (for ``auto_reply=False``)."""
        for session in self.sessions.values():
            task = session.tasks.get(task_uuid)
            if task is not None:
                self._answer(session, task)

    def pending(self) -> list[str]:
        """taskUUIDs received and not yet answered or cancelled, in any session."""
        return [
            t for s in self.sessions.values() for t, task in s.tasks.items() if not task.answered
        ]

    # -- frames --

    def accept(self) -> Stream:
        """Open a socket (called by :class:`MemoryTransport`); raises ConnectError if refusing."""
        if self.refuse_connections:
            raise ConnectError("connection refused (fake server is down)")
        if self._tg is None:
            raise ConnectError("the fake server is not running (use `async with`)")
        client, server = socket_pair()
        conn = FakeConnection(self, server)
        self.connections.append(conn)
        self._tg.start_soon(self._serve, conn)
        return client

    async def _serve(self, conn: FakeConnection) -> None:
        try:
            while True:
                for data in await conn._endpoint.receive():
                    if conn.closed:
                        break  # what followed a fatal frame is never read
                    if not conn.frozen:
                        self._handle(conn, data)
                self._changed.set()
        except ConnectionClosed:
            conn.drop()
            self._changed.set()

    def _handle(self, conn: FakeConnection, data: bytes) -> None:
        if self.max_frame is not None and len(data) > self.max_frame:
            conn.drop(1009)  # message too big, as a WebSocket server closes
            return
        if conn.dialect is None:  # an array is the current Runware dialect, as our server says
            conn.dialect = "runware" if data.lstrip()[:1] == b"[" else "legacy"
        if conn.dialect == "runware":
            for translated in self._current(conn, data):
                self._on_message(conn, translated)
            return
        try:
            message: ClientMessage = decode_from_client(data)
        except RemoteProtocolError as exc:
            conn.send(_error(ErrorId.MALFORMED_FRAME, str(exc)))
            return
        self._on_message(conn, message)

    def _current(self, conn: FakeConnection, data: bytes) -> list[ClientMessage]:
        # The legacy messages a current-dialect frame's tasks stand for; what does not
        # translate is answered at once, and getResponse re-sends what a task has so far.
        try:
            tasks = current_tasks(data)
        except RemoteProtocolError as exc:
            conn.send(_error(ErrorId.MALFORMED_FRAME, str(exc)))
            return []
        messages: list[ClientMessage] = []
        for task in tasks:
            task_uuid = getattr(task, "task_uuid", None)
            try:
                if isinstance(task, Refused):
                    raise task.error
                if isinstance(task, current.GetResponse):
                    self._get_response(conn, task.task_uuid)
                else:
                    messages.append(_legacy_message(task))
            except RemoteProtocolError as exc:
                conn.send(_error(ErrorId.VALIDATION_ERROR, str(exc), task_uuid, conn))
        return messages

    def _get_response(self, conn: FakeConnection, task_uuid: str) -> None:
        known = conn.session.tasks.get(task_uuid) if conn.session is not None else None
        if known is None:
            conn.send(_error(ErrorId.VALIDATION_ERROR, "no such task here", task_uuid, conn))
        else:
            self._deliver(conn.session, known)  # type: ignore[arg-type]

    def _on_message(self, conn: FakeConnection, message: ClientMessage) -> None:
        if isinstance(message, NewConnection):
            self._connect(conn, message)
        elif isinstance(message, Ping):
            self.pings += 1
            conn.send({"pong": True})
        elif conn.session is None:
            conn.send(_error(ErrorId.NOT_AUTHENTICATED, "authenticate first"))
        elif isinstance(message, CancelTask):
            self.cancelled.append(message.task_uuid)
            conn.session.tasks.pop(message.task_uuid, None)
        elif message.task_uuid in self.poison:
            conn.drop(1011)  # this task brings the server's socket down, every time
        else:
            self._task(conn, conn.session, message)

    def _connect(self, conn: FakeConnection, message: NewConnection) -> None:
        if message.api_key != self.api_key:
            conn.send(_error(ErrorId.INVALID_API_KEY, "invalid API key"))
            conn.drop()
            return
        wanted = frozenset(message.extensions or ())
        conn.extensions = wanted & self.extensions
        resume = message.connection_session_uuid
        session = self.sessions.get(resume) if resume else None
        if session is None:
            session = _Session(str(uuid.uuid4()))
            self.sessions[session.uuid] = session
        if session.connection is not None and session.connection is not conn:
            session.connection.drop()
        session.connection, conn.session = conn, session
        reply: dict[str, Any] = {"connectionSessionUUID": session.uuid}
        if message.extensions is not None:
            reply["extensions"] = sorted(conn.extensions)
        if resume and "resume" in conn.extensions:
            reply["knownTaskUUIDs"] = list(session.tasks)
        conn.send({"newConnectionSessionUUID": reply})
        for task in list(session.tasks.values()):
            self._deliver(session, task)

    def _task(self, conn: FakeConnection, session: _Session, request: Any) -> None:
        self.received.append(request)
        self.times_received[request.task_uuid] += 1
        if self.queue_full > 0:
            self.queue_full -= 1
            conn.send(_error(ErrorId.QUEUE_FULL, "queue full", request.task_uuid, conn))
            return
        if request.task_uuid in self.fail:
            error_id, text = self.fail[request.task_uuid]
            conn.send(_error(error_id, text, request.task_uuid, conn))
            return
        known = session.tasks.get(request.task_uuid)
        if known is not None:  # a resubmission of a task this session holds: no new work
            self._deliver(session, known)
            return
        task = session.tasks[request.task_uuid] = _Task(request)
        if self.auto_reply and not self.silent:
            self._answer(session, task)

    def _answer(self, session: _Session, task: _Task) -> None:
        conn = session.connection
        if conn is not None and self.progress_steps and "progress" in conn.extensions:
            for step in range(1, self.progress_steps + 1):
                steps = self.progress_steps
                progress = {"taskUUID": task.request.task_uuid, "step": step, "steps": steps}
                progress["previewBase64"] = "aGVsbG8="  # a preview, as servers may send
                conn.send({"newProgress": progress})
        task.answered = True
        task.frames = _results(task.request, conn, self.images_per_frame)
        self._deliver(session, task)

    def _deliver(self, session: _Session, task: _Task) -> None:
        if not task.answered:
            return
        while task.frames:
            conn = session.connection
            if conn is None or conn.closed:
                return  # kept for the resume
            if self.drop_after_frames is not None and conn.frames_sent >= self.drop_after_frames:
                self.drop_after_frames = None
                conn.drop()
                if self.forget_on_drop:
                    session.tasks.pop(task.request.task_uuid, None)
                return
            frame = task.frames.pop(0)
            conn.send(frame)
            if self.duplicate_frames:
                conn.send(frame)
        session.tasks.pop(task.request.task_uuid, None)


def _legacy_message(task: current.Task) -> ClientMessage:
    # What a task of the current dialect is in the seed's (translate.legacy_task for work).
    if isinstance(task, current.Authentication):
        fields = {"apiKey": task.api_key, "extensions": ["seed", "taskErrors"]}
        if task.connection_session_uuid is not None:
            fields["connectionSessionUUID"] = task.connection_session_uuid
        try:
            return NewConnection.model_validate(fields)
        except ValidationError as exc:
            raise RemoteProtocolError("invalid authentication", field_errors(exc)) from None
    if isinstance(task, current.Ping):
        return Ping()
    return legacy_task(task)


def _error(
    error_id: int, message: str, task_uuid: str | None = None, conn: FakeConnection | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"error": True, "errorId": int(error_id), "errorMessage": message}
    if task_uuid is not None:
        frame["taskUUID"] = task_uuid
    info = ERRORS.get(error_id)
    if conn is not None and "taskErrors" in conn.extensions and info is not None:
        frame["errorCode"] = info.code
    return frame


def _image(task_uuid: str, index: int, conn: FakeConnection | None) -> dict[str, Any]:
    image: dict[str, Any] = {
        "imageSrc": f"https://fake.invalid/{image_uuid_for(task_uuid, index)}.jpg",
        "imageUUID": image_uuid_for(task_uuid, index),
        "bNSFWContent": False,
        "taskUUID": task_uuid,
        "cost": 0.001,
    }
    if conn is not None and "seed" in conn.extensions:
        image["seed"] = 1000 + index
    return image


def _results(request: Any, conn: FakeConnection | None, per_frame: int | None) -> list[bytes]:
    task_uuid = request.task_uuid
    if isinstance(request, NewImageUpload | PreProcessControlNetRequest):
        body = {
            "taskUUID": task_uuid,
            "newImageUUID": image_uuid_for(task_uuid, 0),
            "newImageSrc": f"https://fake.invalid/{image_uuid_for(task_uuid, 0)}.png",
        }
        return [
            encode_frame(
                request.wire_name
                if isinstance(request, PreProcessControlNetRequest)
                else "newUploadedImageUUID",
                body,
            )
        ]
    if isinstance(request, ReverseImageClip | PromptEnhance):
        count = request.expected_results
        name = "newReverseClip" if isinstance(request, ReverseImageClip) else "newPromptEnhancer"
        texts = [
            {"taskUUID": task_uuid, "text": f"text {i} of {task_uuid[:8]}"} for i in range(count)
        ]
        return [encode_frame(name, {"texts": chunk}) for chunk in _chunks(texts, per_frame)]
    name = "newImages" if isinstance(request, NewTask) else request.wire_name
    images = [_image(task_uuid, i, conn) for i in range(request.expected_results)]
    return [encode_frame(name, {"images": chunk}) for chunk in _chunks(images, per_frame)]


def encode_frame(name: str, body: Mapping[str, Any]) -> bytes:
    """Serialise ``{name: body}`` as a frame."""
    return dumps({name: body})


def _chunks(items: list[Any], size: int | None) -> list[list[Any]]:
    size = size or max(len(items), 1)
    return [items[i : i + size] for i in range(0, len(items), size)]
