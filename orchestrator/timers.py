"""Injected time: the clock protocol, and one timer heap for every deadline and retry.

The orchestrator never reads the loop's clock directly. Tests pass
``orchestrator.testing.FakeClock`` and move time by hand, so deadlines, heartbeats
and backoffs are exercised without waiting.

A :class:`Timers` heap serves thousands of per-task deadlines with one background
task: a timer costs a heap push, cancelling it is a flag, and the heap is rebuilt
when cancelled entries outnumber live ones, so memory follows the live timers.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

__all__ = ["Clock", "SystemClock", "Timer", "Timers", "race_timeout"]

T = TypeVar("T")
A = TypeVar("A")


class Clock(Protocol):
    """Where the orchestrator reads time and sleeps."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The event loop's clock."""

    def now(self) -> float:
        """Seconds on the monotonic clock the event loop reads too."""
        # time.monotonic is what asyncio's loop.time() returns; anyio.current_time() is the
        # same value found through a backend lookup that costs microseconds per task.
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await anyio.sleep(seconds)


class Timer(list[Any]):
    """A callback due at a time; :meth:`cancel` makes it a no-op.

    A timer is its own heap entry, ``[when, seq, callback, arg, owner]``, compared as a
    list (by time, then by order of creation), and holds its callback's argument rather
    than a closure: one object per timer, which matters to the cyclic garbage collector
    with thousands of deadlines live. A cancelled or fired timer has no callback.
    """

    __slots__ = ()

    @property
    def when(self) -> float:
        """When the callback is due, on the clock of the :class:`Timers` that made it."""
        return float(self[0])

    @property
    def cancelled(self) -> bool:
        """Whether it was cancelled or has fired."""
        return self[2] is None

    def cancel(self) -> None:
        """Do not run the callback (idempotent)."""
        if self[2] is not None:
            self[2] = self[3] = None  # and drop the argument: it may be a large object
            self[4]._on_cancel()


class Timers:
    """Run callbacks at their time, from one task started with :meth:`run`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._wakeup = anyio.Event()
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[[A], None], arg: A) -> Timer:
        """Run ``callback(arg)`` after ``delay`` seconds; return a handle to cancel it."""
        when = self._clock.now() + delay
        timer = Timer((when, next(self._seq), callback, arg, self))
        heap = self._heap
        if not heap or when < heap[0][0]:
            self._wakeup.set()  # the loop sleeps until a later time; let it look again
        heapq.heappush(heap, timer)
        return timer

    def _on_cancel(self) -> None:
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [timer for timer in self._heap if timer[2] is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _run_due(self) -> None:
        now = self._clock.now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)
            callback, arg = timer[2], timer[3]
            if callback is None:
                self._cancelled -= 1
                continue
            timer[2] = timer[3] = None  # fired: a later cancel() must not count it again
            callback(arg)
            heap = self._heap  # a callback may have cancelled enough to compact it

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fire timers as they fall due, until cancelled."""
        task_status.started()
        while True:
            self._run_due()
            self._wakeup = anyio.Event()
            if not self._heap:
                await self._wakeup.wait()
                continue
            delay = self._heap[0][0] - self._clock.now()
            await _first_of(partial(self._clock.sleep, max(delay, 0.0)), self._wakeup.wait)


async def _first_of(*waits: Callable[[], Awaitable[None]]) -> None:
    async with anyio.create_task_group() as tg:

        async def finish(wait: Callable[[], Awaitable[None]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(finish, wait)


async def race_timeout(clock: Clock, seconds: float, fn: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``fn()``; return its result, or None when ``seconds`` pass first on ``clock``.

    An exception from ``fn`` is raised as it is (not wrapped in a group).
    """
    result: list[T] = []
    errors: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def body() -> None:
            try:
                result.append(await fn())
            except Exception as exc:
                errors.append(exc)
            finally:
                tg.cancel_scope.cancel()

        async def expire() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(body)
        tg.start_soon(expire)
    if errors:
        raise errors[0]
    return result[0] if result else None
