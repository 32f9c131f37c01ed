"""What waits to go to one browser: in order, bounded however slowly it reads.

Theory of operation
===================

1. A message is *keyed* when only its latest version matters (an image's progress step,
   the figures panel): a keyed message replaces the one of the same key still waiting, in
   its place, so a card never moves backwards and a slow reader just sees fewer steps.
2. Every other message (an image, a failure, a task's end) is kept: it waits its turn,
   and :meth:`Outbox.put` blocks while ``limit`` of them wait. The blocked sender is the
   pump of one generation; it stops reading its task's events, whose log is bounded by the
   task (its results and one step per image: :class:`~orchestrator.TaskHandle`).
3. So a browser that reads nothing costs at most ``limit`` kept messages plus one per key
   (the page's keys are bounded by its generations and their images), and the
   orchestrator buffers nothing for it beyond that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

import anyio

__all__ = ["Outbox"]


class Outbox:
    """Messages for one browser (see the module docstring). One reader; many writers."""

    def __init__(self, limit: int = 256) -> None:
        if limit < 1:
            raise ValueError(f"limit = {limit}: must be at least 1")
        self.limit = limit
        self._cells: deque[list[Any]] = deque()  # [key or None, message]
        self._keyed: dict[Hashable, list[Any]] = {}
        self._kept = 0  # unkeyed messages waiting
        self._changed = anyio.Event()

    def __len__(self) -> int:
        """Messages waiting."""
        return len(self._cells)

    @property
    def kept(self) -> int:
        """Unkeyed messages waiting (at most ``limit``)."""
        return self._kept

    async def put(self, message: Any, key: Hashable | None = None) -> None:
        """Queue ``message``; a keyed one replaces the waiting one of its key. An unkeyed
        one waits while ``limit`` others do."""
        if key is not None:
            cell = self._keyed.get(key)
            if cell is not None:
                cell[1] = message
                return
            cell = self._keyed[key] = [key, message]
        else:
            while self._kept >= self.limit:
                await self._wait()
            cell = [None, message]
            self._kept += 1
        self._cells.append(cell)
        self._notify()

    async def get(self) -> Any:
        """The oldest waiting message (waits for one)."""
        while not self._cells:
            await self._wait()
        key, message = self._cells.popleft()
        if key is None:
            self._kept -= 1
        else:
            del self._keyed[key]
        self._notify()
        return message

    async def _wait(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
