"""The reference server's task table: every task record it holds, by API key and taskUUID.

A record is live from acceptance until it finishes; then it is **frozen** into a
:data:`Finished` tuple and kept for the retention window (invariant 1 of :mod:`.state`:
a taskUUID known for the key is never generated again). Why a tuple: a server at full speed
holds a retention window's worth of finished tasks, a million of them, and a tuple of
strings and numbers is one the collector stops tracking, where a record, its results list
and its results are objects that every collection of the old generation walks (measured:
the tracked records cost a third of the server's tasks/s and p99 over 600 ms).

A frozen task is **thawed** into a record only to render its frames again: a resubmission
of its taskUUID, or a resumed session's replay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final, get_args

from protocol import TaskRequest

from .state import (
    ImageResult,
    ReplyResult,
    Result,
    ServerSession,
    TaskRecord,
    TaskState,
    TextResult,
)

__all__ = ["Finished", "TaskTable", "freeze", "thaw"]

# Every task request's message type, in the catalogue's order (the union lists them once).
_KINDS: tuple[type[TaskRequest], ...] = get_args(TaskRequest)
_RESULT_TYPES: tuple[type[Result], ...] = (ImageResult, TextResult, ReplyResult)


def _fields_of(cls: type[Result]) -> Callable[[Any], tuple[Any, ...]]:
    # A getter of a result's fields in order, always as a tuple (attrgetter of one name
    # returns the bare value).
    names: tuple[str, ...] = cls.__slots__
    get = attrgetter(*names)
    return get if len(names) > 1 else lambda result: (get(result),)


# Each result type's index and the getter of its fields.
_FIELDS = {cls: (tag, _fields_of(cls)) for tag, cls in enumerate(_RESULT_TYPES)}

# (uuid, key_id, session uuid, kind, total_available, error id, error text, finished_at,
# failed, *results): kind is an index into _KINDS, and each result is its type's index
# into _RESULT_TYPES followed by its fields. One flat tuple of strings and numbers: the
# collector untracks such a tuple the first time it meets it, where a nested one would stay
# tracked until its inner tuples had been met in an earlier collection.
Finished = tuple[Any, ...]
_SESSION: Final = 2
_FINISHED_AT: Final = 7
_HEAD: Final = 9


def freeze(record: TaskRecord) -> Finished:
    """A finished record as a :data:`Finished` tuple."""
    assert record.finished_at is not None, f"task {record.uuid} has not finished"
    error_id, error_text = record.error or (None, None)
    head = (
        record.uuid,
        record.key_id,
        record.session.uuid,
        _KINDS.index(record.kind),
        record.total_available,
        error_id,
        error_text,
        record.finished_at,
        record.state is TaskState.FAILED,
    )
    results: list[Any] = []
    for r in record.results:
        tag, fields = _FIELDS[type(r)]
        results.append(tag)
        results.extend(fields(r))
    return (*head, *results)


def thaw(entry: Finished, session: ServerSession) -> TaskRecord:
    """The record ``entry`` was frozen from, owned by ``session``."""
    uuid, key_id, _, kind, total, error_id, error_text, finished_at, failed = entry[:_HEAD]
    results: list[Result] = []
    at = _HEAD
    while at < len(entry):
        cls = _RESULT_TYPES[entry[at]]
        width = len(cls.__slots__)
        results.append(cls(*entry[at + 1 : at + 1 + width]))
        at += 1 + width
    return TaskRecord(
        uuid,
        key_id,
        None,
        session,
        total_available=total,
        state=TaskState.FAILED if failed else TaskState.DONE,
        results=results,
        error=None if error_id is None else (error_id, error_text),
        finished_at=finished_at,
        kind=_KINDS[kind],
    )


class TaskTable:
    """Live and frozen task records (see the module docstring).

    Args:
        find_session: the session of a session uuid, while it is kept.
    """

    def __init__(self, find_session: Callable[[str], ServerSession | None]) -> None:
        self._find_session = find_session
        self._tasks: dict[str, dict[str, TaskRecord | Finished]] = {}
        # (finished_at, key_id, taskUUID) in the order tasks finished, to sweep.
        self._finished: deque[tuple[float, str, str]] = deque()

    def add(self, record: TaskRecord) -> None:
        """Hold a newly accepted record."""
        self._tasks.setdefault(record.key_id, {})[record.uuid] = record

    def live(self, key_id: str, task_uuid: str) -> TaskRecord | None:
        """The record of a task that has not finished, if there is one."""
        known = self._tasks.get(key_id, {}).get(task_uuid)
        return known if isinstance(known, TaskRecord) and not known.is_finished else None

    def claim(
        self, key_id: str, task_uuid: str, session: ServerSession
    ) -> tuple[TaskRecord, ServerSession | None] | None:
        """A known task, now owned by ``session``, and the session that owned it before.

        ``None`` for a taskUUID the key has not used (or whose record was swept)."""
        known = self._tasks.get(key_id, {}).get(task_uuid)
        if known is None:
            return None
        if isinstance(known, TaskRecord):
            previous, known.session = known.session, session
            return known, previous
        record = thaw(known, session)
        if known[_SESSION] != session.uuid:
            self._tasks[key_id][task_uuid] = freeze(record)  # frozen again, the asker's
        return record, self._find_session(known[_SESSION])

    def owned(self, key_id: str, task_uuid: str, session: ServerSession) -> TaskRecord | None:
        """The record of ``task_uuid`` if ``session`` owns it (thawed if it has finished)."""
        known = self._tasks.get(key_id, {}).get(task_uuid)
        if isinstance(known, tuple):
            return thaw(known, session) if known[_SESSION] == session.uuid else None
        return known if known is not None and known.session is session else None

    def finish(self, record: TaskRecord) -> None:
        """Freeze a record that has just finished; its holders may go on using it."""
        assert record.finished_at is not None, f"task {record.uuid} has not finished"
        self._finished.append((record.finished_at, record.key_id, record.uuid))
        record.request = None  # whoever still holds the record needs only its kind
        self._tasks[record.key_id][record.uuid] = freeze(record)

    def sweep(self, now: float, retention: float) -> None:
        """Forget tasks finished more than ``retention`` seconds ago."""
        # Tasks finish in clock order, so the oldest are at the front: a sweep costs what it
        # removes, not every task held (a full scan would stall the loop at scale).
        finished = self._finished
        while finished and now - finished[0][0] > retention:
            finished_at, key_id, task_uuid = finished.popleft()
            tasks = self._tasks.get(key_id, {})
            entry = tasks.get(task_uuid)
            if isinstance(entry, tuple) and entry[_FINISHED_AT] == finished_at:
                del tasks[task_uuid]
                session = self._find_session(entry[_SESSION])
                if session is not None:
                    session.undelivered.discard(task_uuid)
