"""The reference server's bookkeeping, free of I/O: keys, sessions, tasks, the fair queue,
and how results become frames.

Theory of operation
===================

A **session** belongs to one API key and outlives its sockets. While a connection is
attached, results go straight to it; while detached (the socket dropped), the session notes
which tasks produced results, and a resume with its ``connectionSessionUUID`` (same key
only) replays them. A session detached longer than the retention window is forgotten.

A **task record** is keyed by (API key, taskUUID) and lives from acceptance until the
retention window after it finished (frozen, then: see :mod:`.tasks`). It belongs to the
session that last submitted it:

1. QUEUED on acceptance (limits, images and quotas checked first; a refusal is an error
   frame and leaves no record, so the client may submit again later);
2. RUNNING when a worker takes it; each result is appended to ``results`` and delivered;
3. DONE or FAILED once, never left again; a cancel, a shutdown or an error sets FAILED.

Invariants:

1. A taskUUID known for the key is never generated again: submitting it again (from any
   session of the key) moves the record to the submitting session and re-sends every
   result produced so far, and the error if it failed.
2. Every result is sent once per attached connection, or, when the connection is gone
   (or goes while frames wait to be written), its task is marked undelivered in its session;
   a resume re-sends each such task's results, plus those of tasks still running.
   ``knownTaskUUIDs`` lists exactly those tasks, so the client resubmits the rest, and
   invariant 1 answers the resubmissions of tasks whose frames died with the socket.
3. The fair queue holds one lane per session and serves lanes round-robin, one task per
   turn, so one session's flood delays another's single task by at most one task per
   worker.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol import (
    ErrorMessage,
    Image,
    NewImages,
    NewImageUpload,
    NewTask,
    NewUploadedImageUUID,
    PreProcessControlNetRequest,
    PreProcessControlNetResult,
    PromptEnhance,
    PromptEnhancer,
    RemoveBackgroundRequest,
    RemoveBackgroundResult,
    ReverseClip,
    ReverseImageClip,
    ServerMessage,
    TaskRequest,
    Text,
    UpscaleGanRequest,
    UpscaleGanResult,
)
from protocol.codec import dumps, encode
from protocol.tables import error_code_for

from .backends import SourceImage

__all__ = [
    "FairQueue",
    "cache_key",
    "output_format",
    "ImageResult",
    "KeyRing",
    "ReplyResult",
    "Result",
    "ServerSession",
    "TaskRecord",
    "TaskState",
    "TextResult",
    "error_message",
    "result_frame",
    "result_message",
]


class KeyRing:
    """API keys, compared in constant time; only digests are kept, and never logged."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def identify(self, presented: str) -> str | None:
        """A stable id of the matching key (a digest prefix), or ``None``."""
        digest = hashlib.sha256(presented.encode()).digest()
        match = None
        for known in self._digests:  # no early exit: the time does not depend on which key
            if hmac.compare_digest(digest, known):
                match = known.hex()[:16]
        return match


@dataclass(eq=False)
class ServerSession:
    """One session: its key, extensions, attached connection, and tasks to report."""

    uuid: str
    key_id: str
    extensions: frozenset[str] = frozenset()
    connection: Any = None  # the attached connection, or None while detached
    detached_at: float | None = None
    active: set[str] = field(default_factory=set)  # accepted, not finished
    undelivered: set[str] = field(default_factory=set)  # results produced while detached
    replay: deque[tuple[str, int]] = field(default_factory=deque)  # (task, results re-sent)

    def held(self) -> set[str]:
        """Tasks a resume reports in ``knownTaskUUIDs`` and replays."""
        return self.active | self.undelivered


class TaskState(enum.Enum):
    """Where a task record is; see the module docstring."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ImageResult:
    """An image result; ``inline`` means the frame carries its base64 too."""

    image_uuid: str
    src: str
    cost: float | None
    seed: int | None
    alt_text: str | None = None
    inline: bool = False


@dataclass(frozen=True, slots=True)
class TextResult:
    """A text result."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """The one-image reply of an upload (7) or a ControlNet preprocessing (11)."""

    image_uuid: str
    src: str
    init_image_uuid: str | None = None
    inline: bool = False


Result = ImageResult | TextResult | ReplyResult


@dataclass(eq=False, slots=True)
class TaskRecord:
    """One accepted task; see the module docstring."""

    uuid: str
    key_id: str
    # The request, until the task finishes: a finished record is kept for the retention
    # window (thousands a second of them) and its frames need only ``kind`` and
    # ``total_available``; the model would cost ~1 KB and three objects for the collector.
    request: TaskRequest | None
    session: ServerSession
    seed: int = 1
    first: int = 0  # results the cache served
    cache_key: bytes | None = None  # its ResultCache digest (newTask only)
    total_available: int | None = None  # newTask: totalAvailableResults (numberResults if unset)
    state: TaskState = TaskState.QUEUED
    results: list[Result] = field(default_factory=list)
    error: tuple[int, str] | None = None  # (errorId, errorMessage) once FAILED
    finished_at: float | None = None
    sources: dict[str, SourceImage] = field(default_factory=dict)  # until a worker takes it
    kind: type[TaskRequest] = NewTask  # the request's message type (set from the request)

    def __post_init__(self) -> None:
        if self.request is None:  # thawed from a finished entry, which gave its kind
            return
        self.kind = type(self.request)
        if isinstance(self.request, NewTask) and self.total_available is None:
            self.total_available = self.request.number_results

    @property
    def live_request(self) -> TaskRequest:
        """The request of a task that has not finished."""
        assert self.request is not None, f"task {self.uuid} has finished"
        return self.request

    @property
    def is_finished(self) -> bool:
        """DONE or FAILED."""
        return self.state in (TaskState.DONE, TaskState.FAILED)


# -- frames --------------------------------------------------------------------------------


def error_message(
    error_id: int, text: str, task_uuid: str | None, extensions: frozenset[str]
) -> ErrorMessage:
    """The error frame's message, with ``errorCode`` for ``taskErrors`` sessions."""
    fields: dict[str, Any] = {"error_id": error_id, "error_message": text}
    if task_uuid is not None:
        fields["task_uuid"] = task_uuid
    code = error_code_for(error_id) if "taskErrors" in extensions else None
    if code is not None:
        fields["error_code"] = code
    return ErrorMessage(**fields)


def result_message(
    record: TaskRecord,
    results: Iterable[Result],
    extensions: frozenset[str],
    inline: dict[str, str],
) -> ServerMessage:
    """The frame that carries ``results`` of ``record``, in its task type's message.

    Image objects carry only the keys legacy clients know, plus ``seed`` for sessions
    that negotiated it and ``imageBase64Data`` for tasks that asked (``inline`` maps an
    imageUUID to its base64).
    """
    kind, uuid = record.kind, record.uuid
    if issubclass(kind, PromptEnhance | ReverseImageClip):
        texts = tuple(
            Text(task_uuid=uuid, text=r.text) for r in results if isinstance(r, TextResult)
        )
        cls = PromptEnhancer if issubclass(kind, PromptEnhance) else ReverseClip
        return cls(texts=texts)
    if issubclass(kind, NewImageUpload | PreProcessControlNetRequest):
        (reply,) = results
        assert isinstance(reply, ReplyResult)
        return _reply_message(record, reply, inline)
    images = tuple(
        _image(uuid, r, extensions, inline) for r in results if isinstance(r, ImageResult)
    )
    if issubclass(kind, UpscaleGanRequest):
        return UpscaleGanResult(images=images)
    if issubclass(kind, RemoveBackgroundRequest):
        return RemoveBackgroundResult(images=images)
    assert issubclass(kind, NewTask)
    return NewImages(images=images, total_available_results=record.total_available)


def result_frame(
    record: TaskRecord,
    results: Sequence[Result],
    extensions: frozenset[str],
    inline: dict[str, str],
) -> bytes:
    """The encoded frame of :func:`result_message`, byte for byte.

    Every image of a ``newTask`` goes out in one of these, so that case is built as plain
    dicts in the models' field order (tests compare it with the models' encoding); the
    other task types go through the models.
    """
    if record.kind is not NewTask or not all(type(r) is ImageResult for r in results):
        return encode(result_message(record, results, extensions, inline))
    uuid, with_seed = record.uuid, "seed" in extensions
    images = []
    for r in results:
        assert isinstance(r, ImageResult)
        image: dict[str, Any] = {
            "imageSrc": r.src,
            "imageUUID": r.image_uuid,
            "taskUUID": uuid,
            "bNSFWContent": False,
        }
        if r.alt_text is not None:
            image["imageAltText"] = r.alt_text
        image["cost"] = r.cost
        if r.image_uuid in inline:
            image["imageBase64Data"] = inline[r.image_uuid]
        if with_seed and r.seed is not None:
            image["seed"] = r.seed
        images.append(image)
    total = record.total_available
    return dumps({"newImages": {"images": images, "totalAvailableResults": total}})


def _image(
    task_uuid: str, result: ImageResult, extensions: frozenset[str], inline: dict[str, str]
) -> Image:
    fields: dict[str, Any] = {
        "image_src": result.src,
        "image_uuid": result.image_uuid,
        "b_nsfw_content": False,
        "task_uuid": task_uuid,
        "cost": result.cost,
    }
    if result.alt_text is not None:
        fields["image_alt_text"] = result.alt_text
    if result.image_uuid in inline:
        fields["image_base64_data"] = inline[result.image_uuid]
    if result.seed is not None and "seed" in extensions:
        fields["seed"] = result.seed
    return Image(**fields)


def _reply_message(
    record: TaskRecord, reply: ReplyResult, inline: dict[str, str]
) -> NewUploadedImageUUID | PreProcessControlNetResult:
    if not issubclass(record.kind, PreProcessControlNetRequest):
        return NewUploadedImageUUID(
            new_image_uuid=reply.image_uuid, new_image_src=reply.src, task_uuid=record.uuid
        )
    fields: dict[str, Any] = {
        "task_uuid": record.uuid,
        "new_image_uuid": reply.image_uuid,
        "new_image_src": reply.src,
        "b_nsfw_content": False,
    }
    if reply.init_image_uuid is not None:
        fields["init_image_uuid"] = reply.init_image_uuid
    if reply.image_uuid in inline:
        fields["image_base64_data"] = inline[reply.image_uuid]
    return PreProcessControlNetResult(**fields)


# -- task parameters ------------------------------------------------------------------------


def cache_key(task: NewTask) -> Hashable:
    """Every generation parameter, and the seed when one is given."""
    return (
        task.prompt_text,
        str(task.model_id),
        task.size_id,
        task.width,
        task.height,
        task.task_type,
        task.steps,
        task.g_scale,
        task.scheduler_id,
        task.style_id,
        task.clip_skip,
        task.use_prompt_weighting,
        task.lora,
        task.control_net,
        task.image_initiator_uuid,
        task.image_mask_initiator_uuid,
        task.strength,
        task.seed,
    )


def output_format(sources: dict[str, SourceImage]) -> str:
    """``png`` when the init image is PNG, else ``jpeg``."""
    # Lossless in, lossless out: an image-to-image or inpainting task from a PNG stays PNG, so
    # the pixels it must keep are kept exactly.
    init = sources.get("init")
    return "png" if init is not None and init.format == "png" else "jpeg"


# -- the fair queue ------------------------------------------------------------------------


class FairQueue:
    """One FIFO lane per session, served round-robin (see invariant 3)."""

    def __init__(self) -> None:
        self._lanes: dict[str, deque[TaskRecord]] = {}
        self._ring: deque[str] = deque()  # lanes with records, not paused, in turn
        self._paused: set[str] = set()  # lanes whose records wait (a congested reader)
        self._ready = asyncio.Event()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, lane: str, record: TaskRecord) -> None:
        """Queue a record at the back of its lane."""
        queue = self._lanes.get(lane)
        if queue is None:
            self._lanes[lane] = deque((record,))
            if lane not in self._paused:
                self._ring.append(lane)
        else:
            queue.append(record)
        self._size += 1
        self._ready.set()

    def pause(self, lane: str) -> None:
        """Take no more records from ``lane`` until :meth:`resume`."""
        if lane not in self._paused:
            self._paused.add(lane)
            if lane in self._lanes:
                self._ring.remove(lane)

    def resume(self, lane: str) -> None:
        """Serve ``lane`` again, at the back of the turn."""
        if lane in self._paused:
            self._paused.discard(lane)
            if lane in self._lanes:
                self._ring.append(lane)
                self._ready.set()

    def remove_lane(self, lane: str) -> list[TaskRecord]:
        """Remove and return everything ``lane`` holds; it is forgotten."""
        queue = self._lanes.pop(lane, deque())
        if lane in self._paused:
            self._paused.discard(lane)
        elif queue:
            self._ring.remove(lane)
        self._size -= len(queue)
        return list(queue)

    def get_nowait(self) -> TaskRecord | None:
        """The next record, taking lanes in turn, or ``None`` if empty."""
        if not self._ring:
            return None
        lane = self._ring.popleft()
        queue = self._lanes[lane]
        record = queue.popleft()
        if queue:
            self._ring.append(lane)
        else:
            del self._lanes[lane]
        self._size -= 1
        return record

    async def get(self) -> TaskRecord:
        """Wait for the next record."""
        while (record := self.get_nowait()) is None:
            self._ready.clear()
            await self._ready.wait()
        return record

    def drain(self) -> list[TaskRecord]:
        """Remove and return everything queued."""
        out = [record for queue in self._lanes.values() for record in queue]
        self._lanes.clear()
        self._ring.clear()
        self._paused.clear()
        self._size = 0
        return out
