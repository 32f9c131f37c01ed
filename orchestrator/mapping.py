"""``Orchestrator.map``: many tasks, a bounded number at a time, results as they finish.

Apart from the facade because it is a loop of its own: it pulls the source lazily, keeps
at most ``limit`` tasks taken and not yet yielded, and counts where the run stands for
``on_progress`` (a :class:`~.results.RunProgress`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sized,
)
from dataclasses import replace
from typing import Any, cast

import anyio

from protocol.messages import TaskRequest

from .errors import LocalProtocolError, OrchestratorError
from .handle import TaskHandle
from .results import RunProgress
from .specs import TaskSpec

__all__ = ["MapRun"]

Task = TaskSpec | TaskRequest
_END = object()  # the end of the source


class MapRun:
    """One ``map()`` call: ``submit`` admits a task (waiting for room), ``limit`` bounds the
    tasks taken and not yet yielded."""

    def __init__(
        self,
        submit: Callable[[Task], Awaitable[TaskHandle]],
        limit: int,
        on_progress: Callable[[RunProgress], None] | None = None,
    ) -> None:
        self._submit = submit
        self._limit = limit
        self._on_progress = on_progress
        self._finished: deque[TaskHandle] = deque()
        self._active: set[TaskHandle] = set()
        self._wake: list[anyio.Event] = []
        self.progress = RunProgress(0, 0, 0)

    def _on_done(self, handle: TaskHandle) -> None:
        self._finished.append(handle)
        if self._wake:
            self._wake.pop().set()

    def _count(self, *, failed: bool | None = None) -> None:
        # failed None: a task was submitted; else one finished (well or not).
        progress = self.progress
        if failed is True:
            progress.failed += 1
        elif failed is False:
            progress.done += 1
        progress.in_flight = len(self._active)
        if self._on_progress is not None:
            self._on_progress(replace(progress))  # a copy: the callback may keep it

    async def results(
        self, tasks: Iterable[Task] | AsyncIterable[Task], *, return_exceptions: bool
    ) -> AsyncIterator[Any]:
        """Yield each task's result (or, with ``return_exceptions``, its error) as it ends."""
        if isinstance(tasks, Sized):
            self.progress.total = len(tasks)
        # A plain iterable is pulled with next(): no coroutine per task.
        sync_source = None if isinstance(tasks, AsyncIterable) else iter(tasks)
        async_source = aiter(tasks) if isinstance(tasks, AsyncIterable) else None
        exhausted = False
        try:
            while True:
                while not exhausted and len(self._active) < self._limit:
                    if sync_source is not None:
                        task = next(sync_source, _END)
                    else:
                        assert async_source is not None
                        task = await anext(async_source, _END)
                    if task is _END:
                        exhausted = True
                        break
                    try:
                        handle = await self._submit(cast(Task, task))
                    except LocalProtocolError as exc:  # this task's input broke a rule
                        if not return_exceptions:
                            raise
                        self._count(failed=True)
                        yield exc
                        continue
                    self._active.add(handle)
                    handle.add_done_callback(self._on_done)
                    self._count()
                if not self._finished:
                    if exhausted and not self._active:
                        return
                    event = anyio.Event()
                    self._wake.append(event)
                    await event.wait()
                    continue
                while self._finished:
                    handle = self._finished.popleft()
                    self._active.discard(handle)
                    try:
                        result = handle.result_nowait()
                    except OrchestratorError as exc:
                        self._count(failed=True)
                        if not return_exceptions:
                            raise
                        yield exc
                    else:
                        self._count(failed=False)
                        yield result
        finally:
            for handle in self._active:
                handle.cancel()
            if isinstance(async_source, AsyncGenerator):
                await async_source.aclose()
