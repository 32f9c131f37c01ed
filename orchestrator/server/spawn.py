"""Starting tasks from callbacks: the parser hands the server each frame from the socket's
``data_received`` callback, where no task is running, and there anyio cannot tell which
event loop it is on (it asks the running task), so ``TaskGroup.start_soon`` fails. A
:class:`Spawner` takes the start from the callback and makes it from its own task, in the
task group it was given, one turn of the loop later: structured as before (the group still
owns, and cancels, what it starts)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

__all__ = ["Spawner"]


class Spawner:
    """``start_soon`` that works from a callback; :meth:`run` it in the owning group."""

    def __init__(self) -> None:
        self._pending: deque[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]]
        self._pending = deque()
        self._ready = asyncio.Event()  # asyncio's: set() needs no running task
        self._closed = False

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start ``fn(*args)`` in the group, from anywhere on the loop's thread."""
        self._pending.append((fn, args))
        self._ready.set()

    def close(self) -> None:
        """Start what is already asked, then end :meth:`run` (what it started goes on)."""
        self._closed = True
        self._ready.set()

    async def run(
        self, tg: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start what is asked, in ``tg``, until closed or cancelled."""
        task_status.started()
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                fn, args = self._pending.popleft()
                tg.start_soon(fn, *args)
            if self._closed:
                return
