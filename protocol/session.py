"""The client side of a connection to one server, as a sans-I/O state machine.

Theory of operation
===================

A :class:`Session` is one logical, resumable session with one server. It may
outlive several sockets. It owns no socket, no clock and no futures: the caller
sends the bytes that ``send_*`` return, feeds every received frame to
:meth:`Session.receive`, and acts on the events that come back.

States::

    IDLE --send_connect--> AUTHENTICATING --reply--> OPEN
                                ^   |                  |
                   send_connect |   | connection_lost  | connection_lost
                                |   v                  v
                             DISCONNECTED <------------+
    any --close, or an authentication failure--> CLOSED (final)

Transitions:

1. ``send_connect()`` in IDLE or DISCONNECTED returns the ``newConnection``
   frame and enters AUTHENTICATING. After a disconnect the frame carries the
   session's UUID, so the server resumes the session and replays the results
   it produced meanwhile.
2. ``newConnectionSessionUUID`` in AUTHENTICATING enters OPEN and yields
   :class:`Authenticated`, which says which tasks to send again when that can
   be known (see invariant 5).
3. An error frame naming no task: ``errorId`` 19 (invalid API key) in any state
   yields :class:`ConnectionFailed` and enters CLOSED; it must not be retried.
   Any other task-less error while AUTHENTICATING also yields
   :class:`ConnectionFailed`, enters DISCONNECTED and forgets the session UUID,
   so the next attempt starts a fresh session. In OPEN it yields
   :class:`ServerError` and nothing changes.
4. ``connection_lost()`` in AUTHENTICATING or OPEN enters DISCONNECTED.
5. ``close()`` enters CLOSED from any state and hands back the pending tasks.

Invariants:

1. Tasks are accepted only in OPEN (:class:`InvalidState` otherwise). A task is
   pending from ``send_task`` until it completes, fails or is cancelled.
   Disconnects do not end it: pending tasks and what they received survive.
2. A result is delivered once: images are deduplicated by imageUUID per task,
   texts by content, across frames, replays and resubmissions, and across
   sessions when a task moves here with the results it ``delivered`` elsewhere.
   The session is the one place that decides a task is complete.
3. A task completes when its results are all in: ``numberResults`` distinct
   images (types 1, 2, 3, 9, 10), one image (6, 8), one text (4),
   ``promptVersions`` texts (5), or the reply frame (7, 11).
4. ``receive`` never raises for what the peer sends: a malformed frame yields
   :class:`FrameRejected`, a result or error for a task that is not pending
   yields :class:`UnknownTask`; the session goes on. Matching is one dict
   lookup by taskUUID per result.
5. After a resume the tasks to send again are known exactly when the server
   lists ``knownTaskUUIDs`` (the ``resume`` extension) or hands out a new
   session (it knows none of ours): :attr:`Authenticated.resubmit`. Otherwise
   it is ``None``, and the caller waits until the replay has gone quiet, then
   sends again whatever :meth:`Session.outstanding` still lists.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .codec import (
    IMAGES,
    PREPROCESS,
    TEXTS,
    UPLOAD,
    PreparedTask,
    encode,
    loads,
    prepare,
    server_message,
)
from .errors import InvalidState, LocalProtocolError, RemoteProtocolError
from .fastpath import read_images
from .messages import (
    CancelTask,
    ErrorMessage,
    Image,
    NewConnection,
    NewConnectionSessionUUID,
    NewImages,
    NewProgress,
    NewUploadedImageUUID,
    Ping,
    Pong,
    PreProcessControlNetResult,
    PromptEnhancer,
    RemoveBackgroundResult,
    ReverseClip,
    ServerMessage,
    TaskRequest,
    Text,
    UpscaleGanResult,
)
from .tables import ErrorId, is_retryable

__all__ = [
    "Authenticated",
    "ConnectionFailed",
    "Event",
    "FrameRejected",
    "ImageReceived",
    "PongReceived",
    "PreparedTask",
    "Progress",
    "ServerError",
    "Session",
    "SessionState",
    "TaskCompleted",
    "TaskFailed",
    "TextReceived",
    "UnknownTask",
    "prepare",
]


class SessionState(enum.Enum):
    """States of a :class:`Session`; see the module's theory of operation."""

    IDLE = "idle"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


# -- events --------------------------------------------------------------------------------

# Events are plain slotted dataclasses, not frozen ones: a frozen dataclass sets each field
# through object.__setattr__, which costs a busy client microseconds per result.


@dataclass(slots=True)
class Authenticated:
    """The server accepted the key. ``resubmit``: tasks to send again now, when knowable."""

    session_uuid: str
    extensions: frozenset[str]
    resumed: bool
    known_task_uuids: tuple[str, ...] | None
    resubmit: tuple[str, ...] | None


@dataclass(slots=True)
class ImageReceived:
    """A new image of a pending task (never one already delivered)."""

    task_uuid: str
    image: Image
    total_available_results: int | None = None


@dataclass(slots=True)
class TextReceived:
    """A new text (caption or enhanced prompt) of a pending task."""

    task_uuid: str
    text: str


@dataclass(slots=True)
class Progress:
    """A step of a running task (the ``progress`` extension): ``step`` of ``steps`` of the
    task's result ``image_index`` (0-based, in delivery order; from the server's
    ``imageIndex``, else the number of results delivered so far). ``preview_base64`` is a
    small JPEG of that image so far, when the ``preview`` extension was accepted."""

    task_uuid: str
    step: int
    steps: int
    preview_base64: str | None = None
    image_index: int = 0

    def to_json(self) -> dict[str, Any]:
        """``{"type": "progress", "taskUUID", "imageIndex", "step", "steps", "preview"}``;
        ``preview`` is a ``data:`` URI, or None."""
        preview = self.preview_base64
        if preview is not None:
            kind = "png" if preview.startswith("iVBOR") else "jpeg"
            preview = f"data:image/{kind};base64,{preview}"
        return {
            "type": "progress",
            "taskUUID": self.task_uuid,
            "imageIndex": self.image_index,
            "step": self.step,
            "steps": self.steps,
            "preview": preview,
        }


@dataclass(slots=True)
class TaskCompleted:
    """All of a task's results arrived; it is no longer pending.

    ``images`` and ``texts`` are those received in this session, in order: a task that
    moved here with results ``delivered`` elsewhere does not repeat them.
    """

    task_uuid: str
    images: tuple[Image, ...] = ()
    texts: tuple[str, ...] = ()
    reply: NewUploadedImageUUID | PreProcessControlNetResult | None = None

    @property
    def cost(self) -> float:
        """The sum of the images' reported costs."""
        return sum(image.cost or 0.0 for image in self.images)


@dataclass(slots=True)
class TaskFailed:
    """The server sent an error frame naming the task; it is no longer pending."""

    task_uuid: str
    error_id: int
    error_message: str
    error_code: str | None = None

    @property
    def retryable(self) -> bool:
        """Whether to send the task again after a backoff (queue full, server stopping)."""
        return is_retryable(self.error_id)


@dataclass(slots=True)
class ConnectionFailed:
    """The connection failed as a whole. ``authentication``: the key was refused (no retry)."""

    error_id: int
    error_message: str
    authentication: bool


@dataclass(slots=True)
class ServerError:
    """An error frame naming no task, after authentication; the connection goes on."""

    error_id: int
    error_message: str
    error_code: str | None = None


@dataclass(slots=True)
class PongReceived:
    """The server answered a ping."""


@dataclass(slots=True)
class UnknownTask:
    """A frame named a task that is not pending (unknown, finished or cancelled); dropped."""

    task_uuid: str
    message: str


@dataclass(slots=True)
class FrameRejected:
    """A frame broke the protocol; it was dropped and the session goes on."""

    error: RemoteProtocolError


Event = (
    Authenticated
    | ImageReceived
    | TextReceived
    | Progress
    | TaskCompleted
    | TaskFailed
    | ConnectionFailed
    | ServerError
    | PongReceived
    | UnknownTask
    | FrameRejected
)


# -- pending tasks -------------------------------------------------------------------------


# A pending task is its PreparedTask until its first result arrives, then a _Pending that
# also keeps the results: with thousands of tasks in flight, every object per task is work
# for the cyclic garbage collector, and most tasks complete with their first result.


@dataclass(slots=True)
class _Pending:
    frame: bytes  # exactly what was sent, to send again after a disconnect
    expects: str  # which result messages complete it
    expected: int
    results: list[Any] | None = None  # images or texts received in this session, in order
    seen: set[str] | None = None  # imageUUIDs or texts received (only when expecting several)
    earlier: int = 0  # results delivered before the task came to this session

    def add(self, key: str, result: Any) -> bool:
        """Record a result unless it was seen; return False for a duplicate."""
        if self.results is None:
            self.results = [result]
            if self.expected > 1:
                self.seen = {key}
            return True
        if self.seen is None or key in self.seen:
            return False  # a task expecting one result is complete at the first
        self.seen.add(key)
        self.results.append(result)
        return True

    @property
    def count(self) -> int:
        return self.earlier + (0 if self.results is None else len(self.results))


# -- the session ---------------------------------------------------------------------------


class Session:
    """The client's side of a session with one server. See the module docstring.

    Args:
        api_key: the key sent in ``newConnection``.
        extensions: extensions to ask for; the server's reply says which it accepted.
        session_uuid: a ``connectionSessionUUID`` to resume from the first connect.
    """

    dialect = "legacy"  #: the dialect's name in protocol.dialects.DIALECTS

    def __init__(
        self, api_key: str, *, extensions: Iterable[str] = (), session_uuid: str | None = None
    ) -> None:
        self._api_key = api_key
        self._wanted = tuple(dict.fromkeys(extensions))
        self._session_uuid = session_uuid
        self._extensions: frozenset[str] = frozenset()
        self._state = SessionState.IDLE
        self._pending: dict[str, PreparedTask | _Pending] = {}

    # -- inspection --

    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    @property
    def session_uuid(self) -> str | None:
        """The ``connectionSessionUUID`` the server gave, once authenticated."""
        return self._session_uuid

    @property
    def extensions(self) -> frozenset[str]:
        """Extensions the server accepted (empty until authenticated)."""
        return self._extensions

    @property
    def in_flight(self) -> int:
        """How many tasks are pending."""
        return len(self._pending)

    def is_pending(self, task_uuid: str) -> bool:
        """Whether a task is pending (sent, and neither finished nor cancelled)."""
        return task_uuid in self._pending

    def remaining(self, task_uuid: str) -> int:
        """How many more results a pending task needs (0 if it is not pending)."""
        pending = self._pending.get(task_uuid)
        if pending is None:
            return 0
        return pending.expected - (pending.count if isinstance(pending, _Pending) else 0)

    def outstanding(self) -> list[str]:
        """Pending tasks whose results have not all arrived, in the order they were sent."""
        return list(self._pending)

    # -- sending --

    def send_connect(self) -> bytes:
        """Return the ``newConnection`` frame (resuming the session after a disconnect)."""
        self._expect(SessionState.IDLE, SessionState.DISCONNECTED, doing="connect")
        fields: dict[str, object] = {"api_key": self._api_key}
        if self._session_uuid is not None:
            fields["connection_session_uuid"] = self._session_uuid
        if self._wanted:
            fields["extensions"] = self._wanted
        frame = encode(NewConnection(**fields))  # type: ignore[arg-type]
        self._state = SessionState.AUTHENTICATING
        return frame

    def send_task(
        self, task: TaskRequest | PreparedTask, *, delivered: Collection[str] = ()
    ) -> bytes:
        """Register a task (a request, or one :func:`prepare` encoded) as pending; return
        its frame.

        ``delivered``: results the task already delivered elsewhere, when it moves here
        from another session (imageUUIDs, or texts for text tasks). They count towards
        its completion and are never delivered again (invariant 2).

        Raises:
            InvalidState: the session is not OPEN.
            LocalProtocolError: a task with this taskUUID is already pending.
        """
        if self._state is not SessionState.OPEN:
            self._expect(SessionState.OPEN, doing="send a task")
        prepared = task if isinstance(task, PreparedTask) else prepare(task)
        task_uuid = prepared.task_uuid
        if task_uuid in self._pending:
            raise LocalProtocolError(f"taskUUID {task_uuid} is already pending")
        if delivered:
            seen = set(delivered)
            self._pending[task_uuid] = _Pending(
                prepared.frame, prepared.expects, prepared.expected, [], seen, len(seen)
            )
        else:
            self._pending[task_uuid] = prepared
        return prepared.frame

    def resend_task(self, task_uuid: str) -> bytes:
        """Return the frame of a pending task again, to resubmit it after a resume.

        Results it already received stay received: they are not delivered twice.
        """
        self._expect(SessionState.OPEN, doing="resend a task")
        pending = self._pending.get(task_uuid)
        if pending is None:
            raise InvalidState(f"task {task_uuid} is not pending")
        return pending.frame

    def pack(self, frames: Sequence[bytes]) -> Sequence[bytes]:
        """The frames to write for ``frames`` queued together (the seed's dialect sends
        each as it is; a dialect that batches tasks joins them here)."""
        return frames

    def send_ping(self) -> bytes:
        """Return a ``ping`` frame."""
        self._expect(SessionState.AUTHENTICATING, SessionState.OPEN, doing="ping")
        return encode(Ping())

    def cancel_task(self, task_uuid: str) -> bytes | None:
        """Stop tracking a task; return the ``cancelTask`` frame to send, if any.

        The frame is returned only when the server accepted the ``cancel``
        extension and the session is OPEN; later results for the task are
        reported as :class:`UnknownTask`.
        """
        if self._pending.pop(task_uuid, None) is None:
            return None
        if "cancel" in self._extensions and self._state is SessionState.OPEN:
            return encode(CancelTask(task_uuid=task_uuid))
        return None

    def connection_lost(self) -> None:
        """Record that the socket is gone; pending tasks wait for the next connect."""
        if self._state in (SessionState.AUTHENTICATING, SessionState.OPEN):
            self._state = SessionState.DISCONNECTED

    def close(self) -> list[str]:
        """Close for good; return the taskUUIDs that were still pending (now forgotten)."""
        self._state = SessionState.CLOSED
        dropped = list(self._pending)
        self._pending.clear()
        return dropped

    # -- receiving --

    def receive(self, data: bytes | str) -> list[Event]:
        """Feed one received frame; return what it means, in order.

        Raises:
            InvalidState: no socket is connected (IDLE, DISCONNECTED or CLOSED).
        """
        self._expect(SessionState.AUTHENTICATING, SessionState.OPEN, doing="receive")
        try:
            obj = loads(data)
            fast = read_images(obj)  # the hot path: most frames are plain newImages
            if fast is not None:
                return self._on_images(NewImages.wire_name, *fast)
            message = server_message(obj, data)
        except RemoteProtocolError as exc:
            return [FrameRejected(exc)]
        return self._dispatch(message)

    def _dispatch(self, message: ServerMessage) -> list[Event]:
        if isinstance(message, NewImages | UpscaleGanResult | RemoveBackgroundResult):
            total = message.total_available_results if isinstance(message, NewImages) else None
            return self._on_images(message.wire_name, message.images, total)
        if isinstance(message, ErrorMessage):
            return self._on_error(message)
        if isinstance(message, ReverseClip | PromptEnhancer):
            return self._on_texts(message.wire_name, message.texts)
        if isinstance(message, NewUploadedImageUUID | PreProcessControlNetResult):
            return self._on_reply(message)
        if isinstance(message, NewProgress):
            return self._on_progress(message)
        if isinstance(message, Pong):
            return [PongReceived()]
        return self._on_authenticated(message)

    def _on_authenticated(self, reply: NewConnectionSessionUUID) -> list[Event]:
        if self._state is not SessionState.AUTHENTICATING:
            error = RemoteProtocolError("newConnectionSessionUUID arrived while already open")
            return [FrameRejected(error)]
        previous, self._session_uuid = self._session_uuid, reply.connection_session_uuid
        self._extensions = frozenset(reply.extensions or ()) & frozenset(self._wanted)
        self._state = SessionState.OPEN
        resumed = previous is not None and previous == reply.connection_session_uuid
        known = reply.known_task_uuids if "resume" in self._extensions else None
        resubmit: tuple[str, ...] | None = None
        if known is not None:
            held = frozenset(known)
            resubmit = tuple(t for t in self._pending if t not in held)
        elif not resumed:
            resubmit = tuple(self._pending)  # a new session knows none of our tasks
        return [
            Authenticated(reply.connection_session_uuid, self._extensions, resumed, known, resubmit)
        ]

    def _on_images(self, name: str, images: tuple[Image, ...], total: int | None) -> list[Event]:
        events: list[Event] = []
        for image in images:
            task_uuid = image.task_uuid
            pending = self._matching(task_uuid, IMAGES, name, events)
            if pending is None:
                continue
            if pending.expected == 1 and isinstance(pending, PreparedTask):  # the common case
                del self._pending[task_uuid]
                events.append(ImageReceived(task_uuid, image, total))
                events.append(TaskCompleted(task_uuid, (image,)))
                continue
            pending = self._add(task_uuid, pending, image.image_uuid, image)
            if pending is None:
                continue
            events.append(ImageReceived(image.task_uuid, image, total))
            if pending.count >= pending.expected:
                events.append(self._complete(image.task_uuid))
        return events

    def _on_texts(self, name: str, texts: tuple[Text, ...]) -> list[Event]:
        events: list[Event] = []
        for item in texts:
            pending = self._matching(item.task_uuid, TEXTS, name, events)
            if pending is None:
                continue
            pending = self._add(item.task_uuid, pending, item.text, item.text)
            if pending is None:
                continue
            events.append(TextReceived(item.task_uuid, item.text))
            if pending.count >= pending.expected:
                events.append(self._complete(item.task_uuid))
        return events

    def _on_reply(self, reply: NewUploadedImageUUID | PreProcessControlNetResult) -> list[Event]:
        events: list[Event] = []
        kind = UPLOAD if isinstance(reply, NewUploadedImageUUID) else PREPROCESS
        if self._matching(reply.task_uuid, kind, reply.wire_name, events) is not None:
            events.append(self._complete(reply.task_uuid, reply))
        return events

    def _on_progress(self, message: NewProgress) -> list[Event]:
        pending = self._pending.get(message.task_uuid)
        if pending is None:
            return [UnknownTask(message.task_uuid, message.wire_name)]
        index = message.image_index
        if index is None:  # a server that makes its results one after another
            index = pending.count if isinstance(pending, _Pending) else 0
        task, step, steps = message.task_uuid, message.step, message.steps
        return [Progress(task, step, steps, message.preview_base64, index)]

    def _on_error(self, error: ErrorMessage) -> list[Event]:
        task_uuid = error.task_uuid
        if task_uuid is not None:
            if self._pending.pop(task_uuid, None) is None:
                return [UnknownTask(task_uuid, "error")]
            return [TaskFailed(task_uuid, error.error_id, error.error_message, error.error_code)]
        is_auth = error.error_id == ErrorId.INVALID_API_KEY
        if is_auth:
            self._state = SessionState.CLOSED
        elif self._state is SessionState.AUTHENTICATING:
            self._state = SessionState.DISCONNECTED
            self._session_uuid = None  # the server would not resume it: start afresh
        else:
            return [ServerError(error.error_id, error.error_message, error.error_code)]
        return [ConnectionFailed(error.error_id, error.error_message, authentication=is_auth)]

    def _matching(
        self, task_uuid: str, kind: str, name: str, events: list[Event]
    ) -> PreparedTask | _Pending | None:
        pending = self._pending.get(task_uuid)
        if pending is None:
            events.append(UnknownTask(task_uuid, name))
        elif pending.expects != kind:
            message = f"{name} for task {task_uuid}, which expects {pending.expects}"
            events.append(FrameRejected(RemoteProtocolError(message)))
            return None
        return pending

    def _add(
        self, task_uuid: str, pending: PreparedTask | _Pending, key: str, result: Any
    ) -> _Pending | None:
        """Record a result of a pending task; its _Pending, or None for a duplicate."""
        if isinstance(pending, PreparedTask):  # the first result: start keeping them
            pending = _Pending(pending.frame, pending.expects, pending.expected)
            self._pending[task_uuid] = pending
        return pending if pending.add(key, result) else None

    def _complete(
        self, task_uuid: str, reply: NewUploadedImageUUID | PreProcessControlNetResult | None = None
    ) -> TaskCompleted:
        pending = self._pending.pop(task_uuid)
        results = tuple(pending.results or ()) if isinstance(pending, _Pending) else ()
        if pending.expects == TEXTS:
            return TaskCompleted(task_uuid, (), results, reply)
        return TaskCompleted(task_uuid, results, (), reply)

    def _expect(self, *states: SessionState, doing: str) -> None:
        if self._state not in states:
            allowed = " or ".join(s.name for s in states)
            raise InvalidState(f"cannot {doing} in state {self._state.name} (needs {allowed})")
