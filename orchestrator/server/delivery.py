"""How the reference server sends a task's results and errors to the session that owns it.

A frame is rendered only when a connection will carry it: a detached session just notes the
task (``undelivered``), and a resume renders its frames afresh for the extensions then
negotiated, paced by the socket (:meth:`Delivery.continue_replay`). Images asked for
inline carry their bytes as base64, read from the store.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from protocol import encode

from .state import (
    Result,
    ServerSession,
    TaskRecord,
    TextResult,
    error_message,
    result_frame,
)
from .store import ImageStore

__all__ = ["Delivery"]


class Delivery:
    """Results and errors, to the record's session (see the module docstring)."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store

    def results(self, record: TaskRecord, results: list[Result]) -> None:
        """Send ``results`` of ``record``, in one frame."""
        self._send(record, lambda extensions: self._render(record, results, extensions))

    def everything(self, record: TaskRecord) -> None:
        """Send every result ``record`` has so far, and its error if it failed."""
        if record.results:
            self.results(record, record.results)
        if record.error is not None:
            self.error(record)

    def continue_replay(
        self, session: ServerSession, owned: Callable[[str], TaskRecord | None]
    ) -> None:
        """Go on with a resumed session's replay (``session.replay``); ``owned`` gives the
        record of a taskUUID that the session still owns.

        A replay goes out as fast as the socket takes it: it stops while the outbox is
        congested and goes on when it drains, so it cannot overflow a slow reader."""
        conn = session.connection
        while session.replay and conn is not None and not conn.congested:
            task_uuid, done = session.replay.popleft()
            session.undelivered.discard(task_uuid)  # a frame lost again puts it back
            record = owned(task_uuid)
            if record is None:
                continue
            # One result per frame, so that no frame holds a whole task's images.
            results = record.results
            while done < len(results) and not conn.congested:
                self.results(record, [results[done]])
                done += 1
            if done < len(results):
                session.replay.appendleft((task_uuid, done))
                session.undelivered.add(task_uuid)
                return
            if record.error is not None:
                self.error(record)

    def error(self, record: TaskRecord) -> None:
        """Send the error ``record`` failed with."""
        assert record.error is not None
        error_id, text = record.error
        self._send(
            record,
            lambda extensions: encode(error_message(error_id, text, record.uuid, extensions)),
        )

    def _send(self, record: TaskRecord, render: Callable[[frozenset[str]], bytes]) -> None:
        session = record.session
        conn = session.connection
        if conn is None:
            session.undelivered.add(record.uuid)
            return
        conn.send(render(session.extensions), record.uuid)

    def _render(
        self, record: TaskRecord, results: list[Result], extensions: frozenset[str]
    ) -> bytes:
        inline = {
            r.image_uuid: self._base64(r.image_uuid)
            for r in results
            if not isinstance(r, TextResult) and r.inline
        }
        return result_frame(record, results, extensions, inline)

    def _base64(self, image_uuid: str) -> str:
        stored = self._store.get(image_uuid)
        return base64.b64encode(stored.data).decode() if stored is not None else ""
