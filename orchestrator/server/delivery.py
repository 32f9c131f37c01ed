"""How the reference server sends a task's results and errors to the session that owns it.

A frame is rendered only when a connection will carry it: a detached session just notes the
task (``undelivered``), and a resume renders its frames afresh for the extensions then
negotiated. Images asked for inline carry their bytes as base64, read from the store.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from protocol import ServerMessage, encode

from .state import ImageResult, ReplyResult, Result, TaskRecord, error_message, result_message
from .store import ImageStore

__all__ = ["Delivery"]


class Delivery:
    """Results and errors, to the record's session (see the module docstring)."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store

    def results(self, record: TaskRecord, results: list[Result]) -> None:
        """Send ``results`` of ``record``, in one frame."""
        self._send(record, lambda extensions: self._render(record, results, extensions))

    def error(self, record: TaskRecord) -> None:
        """Send the error ``record`` failed with."""
        assert record.error is not None
        error_id, text = record.error
        self._send(
            record, lambda extensions: error_message(error_id, text, record.uuid, extensions)
        )

    def _send(self, record: TaskRecord, render: Callable[[frozenset[str]], ServerMessage]) -> None:
        session = record.session
        conn = session.connection
        if conn is None:
            session.undelivered.add(record.uuid)
            return
        conn.send(encode(render(session.extensions)), record.uuid)

    def _render(
        self, record: TaskRecord, results: list[Result], extensions: frozenset[str]
    ) -> ServerMessage:
        inline = {
            r.image_uuid: self._base64(r.image_uuid)
            for r in results
            if isinstance(r, ImageResult | ReplyResult) and r.inline
        }
        return result_message(record, results, extensions, inline)

    def _base64(self, image_uuid: str) -> str:
        stored = self._store.get(image_uuid)
        return base64.b64encode(stored.data).decode() if stored is not None else ""
