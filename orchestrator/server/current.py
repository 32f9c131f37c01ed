"""The reference server in the current Runware dialect, on the same port as the seed's.

A socket speaks the dialect of its first frame: a JSON array is the current dialect
(the seed's frames are objects). From then on, :class:`CurrentDialect` reads its frames:
each task of an array is translated into the legacy message that does the same
(:func:`protocol.runware.legacy_task`, which names what it refuses by the current
dialect's fields) and handled exactly as that message would be, by the same sessions,
scheduler, keys, limits, hosting and cost. What the server sends such a socket is
translated on the way out (:func:`to_current`, the connection's ``translate``), so
results, replays and errors need no second path.

Delivery: ``deliveryMethod: sync`` tasks get their results on the socket as they are
made. ``async`` tasks are acknowledged at once (a ``status: processing`` item), then
get their results on the socket all the same, so no client of ours waits on polling;
``getResponse`` answers with what a task has so far (what a polling client reads).
Sessions resume with ``connectionSessionUUID``; a resumed session gets the results
produced while it was away, as in the seed's dialect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from protocol.codec import dumps, parse
from protocol.errors import RemoteProtocolError
from protocol.messages import NewConnection
from protocol.runware import messages as m
from protocol.runware.codec import Refused, decode_from_client
from protocol.runware.results import current_frame
from protocol.runware.tables import current_code
from protocol.runware.translate import ServerTask, legacy_task
from protocol.tables import ErrorId

from .connection import Connection
from .state import ServerSession, TaskRecord

__all__ = ["CurrentDialect", "is_current", "to_current"]

#: The extensions a current-dialect socket's session has: each image says its seed, and
#: every error its code (what the current dialect's items and errors carry).
EXTENSIONS: Final = ("seed", "taskErrors")
_PONG: Final = dumps({"data": [{"taskType": m.Ping.wire_name, "pong": True}]})
_CURRENT_PREFIXES: Final = (b'{"data"', b'{"errors"')

Accept = Callable[[Connection, ServerSession, ServerTask], Awaitable[None] | None]


def is_current(first_frame: bytes) -> bool:
    """Whether a socket's first frame is in the current dialect (an array)."""
    return first_frame.lstrip()[:1] == b"["


def to_current(frame: bytes) -> bytes | None:
    """A frame the server would send, in the current dialect (``None``: it has none)."""
    if frame.startswith(_CURRENT_PREFIXES):
        return frame  # written in the current dialect already
    converted = current_frame(parse(frame))
    return None if converted is None else dumps(converted)


def error_frame(code: str, message: str, task_uuid: str | None = None, **more: str | None) -> bytes:
    """An ``{"errors": [...]}`` frame of one error (fields that are ``None`` are left out)."""
    entry: dict[str, Any] = {"code": code, "message": message, "taskUUID": task_uuid, **more}
    return dumps({"errors": [{k: v for k, v in entry.items() if v is not None}]})


class CurrentDialect:
    """Reads current-dialect frames into the server's rooms. See the module docstring.

    Args:
        authenticate: what a ``newConnection`` does (the sessions room).
        accept: what a legacy task does (the scheduler, after any upload check).
        report: what a repeated taskUUID does: the task's results so far (``getResponse``).
    """

    def __init__(
        self,
        *,
        authenticate: Callable[[Connection, NewConnection], None],
        accept: Accept,
        report: Callable[[ServerSession, str], TaskRecord | None],
    ) -> None:
        self._authenticate = authenticate
        self._accept = accept
        self._report = report

    def on_frame(self, conn: Connection, frame: bytes) -> Awaitable[None] | None:
        """Handle one frame; what must be awaited to finish it, if anything (the tasks
        after a task that awaits wait for it, in order)."""
        try:
            tasks = decode_from_client(frame)
        except RemoteProtocolError as exc:
            conn.send(error_frame(current_code(ErrorId.MALFORMED_FRAME), str(exc)))
            return None
        for index, task in enumerate(tasks):
            later = self._one(conn, task)
            if later is not None:
                return self._then(later, conn, tasks[index + 1 :])
        return None

    async def _then(
        self, later: Awaitable[None], conn: Connection, rest: list[m.Task | Refused]
    ) -> None:
        await later
        for task in rest:
            more = self._one(conn, task)
            if more is not None:
                await more

    def _one(self, conn: Connection, task: m.Task | Refused) -> Awaitable[None] | None:
        if isinstance(task, Refused):
            _refuse(conn, task)
        elif isinstance(task, m.Ping):
            conn.send(_PONG)
        elif isinstance(task, m.Authentication):
            self._sign_in(conn, task)
        elif conn.session is None:
            text = (
                "send an authentication task first"
                if not conn.authenticated
                else ("this connection's session was resumed elsewhere: authenticate again")
            )
            conn.send(error_frame(current_code(ErrorId.NOT_AUTHENTICATED), text, _uuid_of(task)))
        elif isinstance(task, m.GetResponse):
            self._get_response(conn, conn.session, task)
        else:
            return self._work(conn, conn.session, task)
        return None

    def _sign_in(self, conn: Connection, task: m.Authentication) -> None:
        fields = {"apiKey": task.api_key, "extensions": EXTENSIONS}
        if task.connection_session_uuid is not None:
            fields["connectionSessionUUID"] = task.connection_session_uuid
        try:
            message = NewConnection.model_validate(fields)
        except ValueError as exc:
            conn.send(error_frame(current_code(ErrorId.SESSION_REFUSED), f"invalid session: {exc}"))
            conn.close(1008, "invalid authentication")
            return
        self._authenticate(conn, message)

    def _get_response(self, conn: Connection, session: ServerSession, task: m.GetResponse) -> None:
        record = self._report(session, task.task_uuid)
        if record is None:
            text = "no task with this taskUUID (or it finished too long ago)"
            conn.send(error_frame("taskNotFound", text, task.task_uuid, taskType="getResponse"))
        elif not record.results and record.error is None:
            conn.send(_status(record.uuid, "processing"))

    def _work(
        self, conn: Connection, session: ServerSession, task: m.Task
    ) -> Awaitable[None] | None:
        try:
            legacy = legacy_task(task)
        except RemoteProtocolError as exc:
            _refuse(conn, Refused(exc, _uuid_of(task), task.wire_name))
            return None
        if getattr(task, "delivery_method", None) == "async":
            conn.send(_status(legacy.task_uuid, "processing", task.wire_name))
        return self._accept(conn, session, legacy)


def _refuse(conn: Connection, refused: Refused) -> None:
    error = refused.error
    first = error.errors[0] if error.errors else None
    message = "; ".join(str(e) for e in error.errors) or error.message
    parameter: str | None
    if refused.task_type is None:
        code, parameter = current_code(ErrorId.UNKNOWN_TASK_TYPE), "taskType"
    else:  # a field of a known task
        parameter = first.field if first is not None and first.field else None
        missing = first is not None and first.rule == "is required"
        code = current_code(ErrorId.VALIDATION_ERROR, parameter, missing=missing)
    frame = error_frame(
        code, message, refused.task_uuid, parameter=parameter, taskType=refused.task_type
    )
    conn.send(frame)


def _status(task_uuid: str, status: str, task_type: str = "imageInference") -> bytes:
    item = {"taskType": task_type, "taskUUID": task_uuid, "status": status}
    return dumps({"data": [item]})


def _uuid_of(task: m.Task) -> str | None:
    return getattr(task, "task_uuid", None)
