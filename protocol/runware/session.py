"""The client session in the current dialect: the legacy session, translated at its edges.

Theory of operation
===================

:class:`RunwareSession` is a :class:`protocol.session.Session`: the same states, the
same transitions and the same invariants (see that module). What a task is, when it is
complete, which result is new: all of it is decided by the code they share. Only the
bytes differ:

- ``send_connect`` is ``[{"taskType": "authentication", "apiKey": ...,
  "connectionSessionUUID"?}]``, and the ``authentication`` item of the reply opens the
  session. The current dialect negotiates none of this project's extensions: a resume
  is told apart by the session UUID coming back unchanged, and tasks are sent again
  once the replay has gone quiet (invariant 5).
- ``send_task`` takes the same prepared tasks (legacy frames, which every spec
  encodes) and sends each as the current task that does the same
  (:func:`protocol.runware.translate.task_of`), with ``deliveryMethod: sync``: results
  come on the socket as they are made, so no task waits on polling.
- :meth:`RunwareSession.pack` joins the tasks queued in one turn of the caller's loop
  into one array frame, as the current dialect allows.
- ``receive`` reads ``{"data": [...]}`` items and ``{"errors": [...]}`` entries,
  several tasks per frame, and feeds what they carry to the shared result handling as
  legacy results. Acknowledgements and status items carry nothing and are skipped.
- ``cancel_task`` stops tracking the task; the current dialect has no cancel message.
- A task sent again after a resume that the server says it holds already
  (``conflictTaskUUID``: it runs there, from the socket that was lost) is not failed, nor
  sent a third time: its results are asked for with ``getResponse``, carried by each
  heartbeat until they are all in. Only such tasks are ever polled.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from ..codec import (
    IMAGES,
    PREPROCESS,
    TEXTS,
    UPLOAD,
    PreparedTask,
    dumps,
    exact_loads,
    kept,
    loads,
    parse,
    prepare,
)
from ..errors import FieldError, LocalProtocolError, RemoteProtocolError
from ..messages import (
    Image,
    NewConnectionSessionUUID,
    NewUploadedImageUUID,
    PreProcessControlNetResult,
    TaskRequest,
    Text,
)
from ..session import Event, FrameRejected, PongReceived, Session, SessionState
from ..validation import field_errors
from . import messages as m
from .codec import decode_from_server, task_class
from .fastpath import read_images
from .results import failure_of, results_of
from .translate import task_of

__all__ = ["PACK_BYTES", "RunwareSession", "current_task", "prepare_current"]

#: Tasks joined into one frame by :meth:`RunwareSession.pack`, up to about this many bytes
#: (a frame of one large task may be more).
PACK_BYTES: Final = 1 << 20
_ARRAY: Final = ord("[")
_PING: Final = dumps([{"taskType": m.Ping.wire_name, "ping": True}])
#: The error code of a task sent again with a taskUUID the server already holds.
CONFLICT: Final = "conflictTaskUUID"


def current_task(prepared: PreparedTask) -> PreparedTask:
    """``prepared`` as a current-dialect frame (``[{...}]``); the same if it is one.

    Raises:
        LocalProtocolError: the task says something the current dialect cannot.
    """
    data = prepared.frame
    if data[0] == _ARRAY:
        return prepared
    frame = loads(data)
    if type(next(iter(frame.values())).get("seed")) is float:  # past 64 bits: orjson read
        frame = exact_loads(data)  # it as a float; the standard library keeps it exact
    task = task_of(frame)
    # Joined, the frame is a bytes object of its exact size (orjson's own has slack).
    encoded = b"[" + dumps(task) + b"]"
    return PreparedTask(prepared.task_uuid, encoded, prepared.expects, prepared.expected)


# What completes a task of each current type that makes results, and which field says how
# many (the count is 1 when it says nothing).
_COMPLETES: Final = {
    m.ImageInference.wire_name: (IMAGES, "numberResults"),
    m.Upscale.wire_name: (IMAGES, None),
    m.RemoveBackground.wire_name: (IMAGES, None),
    m.Caption.wire_name: (TEXTS, None),
    m.PromptEnhance.wire_name: (TEXTS, "promptVersions"),
    m.ImageUpload.wire_name: (UPLOAD, None),
    m.ControlNetPreprocess.wire_name: (PREPROCESS, None),
}


def prepare_current(task: Mapping[str, Any], task_uuid: str) -> PreparedTask:
    """A task written in the current dialect, encoded as it is, for what the specs do not
    say (a live service's ``outputFormat``, ``vae``, ``refiner``, ...). The fields this
    package knows are checked as :mod:`.messages` types them; the others go as written,
    for the server to judge. ``deliveryMethod`` defaults to ``sync``.

    Raises:
        LocalProtocolError: the task type makes no results here, or a known field is wrong.
    """
    name = task.get("taskType")
    cls = task_class(name)
    if cls is None or cls.wire_name not in _COMPLETES:
        rule = f"must be one of {', '.join(_COMPLETES)} (or an older name of one)"
        raise LocalProtocolError("invalid task", (FieldError("taskType", "", name, rule),))
    body = {"deliveryMethod": "sync", **task, "taskType": name, "taskUUID": task_uuid}
    known = {k: v for k, v in body.items() if k in _aliases(cls)}
    try:
        checked = cls.model_validate(known)
    except ValidationError as exc:
        raise LocalProtocolError(f"invalid {cls.wire_name}", field_errors(exc)) from None
    expects, count_field = _COMPLETES[cls.wire_name]
    count = getattr(checked, _python_name(cls, count_field), 1) if count_field else 1
    return PreparedTask(task_uuid, kept(dumps([body])), expects, count or 1)


def _aliases(cls: type[m.Task]) -> set[str]:
    return {info.alias or name for name, info in cls.model_fields.items()}


def _python_name(cls: type[m.Task], alias: str) -> str:
    return next(name for name, info in cls.model_fields.items() if info.alias == alias)


class RunwareSession(Session):
    """A :class:`~protocol.session.Session` that speaks the current Runware dialect.

    Args:
        api_key: the key sent in the ``authentication`` task.
        session_uuid: a ``connectionSessionUUID`` to resume from the first connect.
    """

    dialect = "runware"

    def __init__(self, api_key: str, *, session_uuid: str | None = None, **_: Any) -> None:
        super().__init__(api_key, session_uuid=session_uuid)
        self._asking: set[str] = set()  # tasks the server already holds: getResponse

    def send_connect(self) -> bytes:
        self._expect(SessionState.IDLE, SessionState.DISCONNECTED, doing="connect")
        task: dict[str, Any] = {"taskType": m.Authentication.wire_name, "apiKey": self._api_key}
        if self._session_uuid is not None:
            task["connectionSessionUUID"] = self._session_uuid
        self._state = SessionState.AUTHENTICATING
        return dumps([task])

    def send_task(
        self, task: TaskRequest | PreparedTask, *, delivered: Collection[str] = ()
    ) -> bytes:
        if self._state is not SessionState.OPEN:
            self._expect(SessionState.OPEN, doing="send a task")
        prepared = task if isinstance(task, PreparedTask) else prepare(task)
        return super().send_task(current_task(prepared), delivered=delivered)

    def send_ping(self) -> bytes:
        """The heartbeat, with a ``getResponse`` for each task the server said it holds
        already (``conflictTaskUUID``: sent before a disconnect, and not delivered here)."""
        self._expect(SessionState.AUTHENTICATING, SessionState.OPEN, doing="ping")
        self._asking &= self._pending.keys()
        if not self._asking or self._state is not SessionState.OPEN:
            return _PING
        asks = [{"taskType": m.GetResponse.wire_name, "taskUUID": t} for t in self._asking]
        return dumps([{"taskType": m.Ping.wire_name, "ping": True}, *asks])

    def cancel_task(self, task_uuid: str) -> bytes | None:
        self._pending.pop(task_uuid, None)
        return None

    def pack(self, frames: Sequence[bytes]) -> Sequence[bytes]:
        """Join consecutive task frames into array frames of up to :data:`PACK_BYTES`."""
        out: list[bytes] = []
        run: list[bytes] = []
        size = 0
        for frame in frames:
            if run and size + len(frame) > PACK_BYTES:
                out.append(_joined(run))
                run, size = [], 0
            run.append(frame)
            size += len(frame)
        if run:
            out.append(_joined(run))
        return out

    # -- receiving --

    def receive(self, data: bytes | str) -> list[Event]:
        self._expect(SessionState.AUTHENTICATING, SessionState.OPEN, doing="receive")
        try:
            obj = parse(data)
            images = read_images(obj)  # the hot path: a frame of image items
            if images is not None:
                return self._on_images(m.ImageInference.wire_name, images, None)
            decoded = decode_from_server(data)
        except RemoteProtocolError as exc:
            return [FrameRejected(exc)]
        events: list[Event] = []
        for item in decoded:
            events.extend(self._on_item(item))
        return events

    def _on_item(self, item: m.ResultItem | m.ErrorItem) -> list[Event]:
        if isinstance(item, m.ErrorItem):
            if item.code == CONFLICT and item.task_uuid in self._pending:
                self._asking.add(item.task_uuid)  # it runs there already: ask, never pay twice
                return []
            return self._on_error(failure_of(item))
        if isinstance(item, m.AuthenticationResult):
            reply = NewConnectionSessionUUID.model_construct(
                connection_session_uuid=item.connection_session_uuid,
                extensions=None,
                known_task_uuids=None,
            )
            return self._on_authenticated(reply)
        if isinstance(item, m.PongItem):
            return [PongReceived()]
        if isinstance(item, m.StatusItem) and item.status == "error":
            return self._on_error(failure_of(item.failure()))
        result = results_of(item)
        if isinstance(result, Image):
            return self._on_images(item.task_type, (result,), None)
        if isinstance(result, Text):
            return self._on_texts(item.task_type, (result,))
        if isinstance(result, NewUploadedImageUUID | PreProcessControlNetResult):
            return self._on_reply(result)
        return []  # an acknowledgement or a status: nothing arrived yet


def _joined(frames: list[bytes]) -> bytes:
    if len(frames) == 1:
        return frames[0]
    return b"[" + b",".join(frame[1:-1] for frame in frames) + b"]"
