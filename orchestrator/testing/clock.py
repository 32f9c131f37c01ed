"""Fake time: a clock whose sleeps return only when the test moves time on."""

from __future__ import annotations

import heapq
import itertools

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """A clock for tests: ``sleep`` returns only when :meth:`advance` passes its time."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The fake time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake time has moved ``seconds`` on."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time on and wake every sleeper whose time has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (cancelled ones included until they fall due)."""
        return len(self._sleepers)
