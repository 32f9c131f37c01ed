"""Where a running job reports: on the loop (collected), or from a worker thread.

A backend calls :meth:`~.backends.JobContext.emit` and ``progress``; these two contexts
carry the calls to the scheduler, which decides what goes on the wire.
"""

from __future__ import annotations

import base64
from typing import Protocol

import anyio.from_thread

from .backends import JobCancelled, Output, PreviewFn
from .state import TaskRecord

__all__ = ["InlineContext", "ThreadContext"]


class _Reporter(Protocol):
    # The scheduler, as a job's context sees it.
    async def publish(self, record: TaskRecord, output: Output) -> None: ...

    def send_progress(
        self, record: TaskRecord, step: int, steps: int, index: int, preview: str | None
    ) -> None: ...


class InlineContext:
    """Job context for backends that run on the loop: outputs are collected, then published."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []

    def emit(self, output: Output) -> None:
        self.outputs.append(output)

    def progress(
        self, step: int, steps: int, index: int = 0, preview: PreviewFn | None = None
    ) -> None:
        pass


class ThreadContext:
    """Job context for worker threads: each call runs on the loop and waits for it.

    A job whose task was cancelled or failed (a shutdown fails them all) stops at its next
    call, and never calls into a loop that may be gone.
    """

    def __init__(self, scheduler: _Reporter, record: TaskRecord) -> None:
        self._scheduler = scheduler
        self._record = record
        extensions = record.session.extensions
        self._progress = "progress" in extensions
        self._preview = self._progress and "preview" in extensions

    def _check(self) -> None:
        if self._record.is_finished:
            raise JobCancelled(self._record.uuid)

    def emit(self, output: Output) -> None:
        self._check()
        anyio.from_thread.run(self._scheduler.publish, self._record, output)

    def progress(
        self, step: int, steps: int, index: int = 0, preview: PreviewFn | None = None
    ) -> None:
        self._check()
        if self._progress:
            # The preview is made here, in the worker thread, never on the loop.
            data = preview() if self._preview and preview is not None else None
            shown = None if data is None else base64.b64encode(data).decode()
            send = self._scheduler.send_progress
            anyio.from_thread.run_sync(send, self._record, step, steps, index, shown)
