"""The timer heap: order, cancellation, bounded memory, and wake-ups, on fake time."""

from __future__ import annotations

import anyio
import pytest

from orchestrator.testing import FakeClock
from orchestrator.timers import Timers

pytestmark = [pytest.mark.timeout(30)]


async def settle(clock: FakeClock, seconds: float) -> None:
    await anyio.wait_all_tasks_blocked()
    clock.advance(seconds)
    await anyio.wait_all_tasks_blocked()


async def test_callbacks_fire_in_time_order_ties_in_creation_order() -> None:
    clock = FakeClock()
    timers = Timers(clock)
    fired: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(timers.run)
        for name, delay in [("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0)]:
            timers.call_later(delay, fired.append, name)
        await settle(clock, 0.5)
        assert fired == []
        await settle(clock, 1.5)  # t = 2
        assert fired == ["a", "b1", "b2"]
        await settle(clock, 1.0)
        assert fired == ["a", "b1", "b2", "c"] and len(timers) == 0
        tg.cancel_scope.cancel()


async def test_a_cancelled_timer_never_fires_and_cancel_is_idempotent() -> None:
    clock = FakeClock()
    timers = Timers(clock)
    fired: list[int] = []
    async with anyio.create_task_group() as tg:
        await tg.start(timers.run)
        keep = timers.call_later(1.0, fired.append, 1)
        drop = timers.call_later(1.0, fired.append, 2)
        drop.cancel()
        drop.cancel()
        assert drop.cancelled and not keep.cancelled and len(timers) == 1
        await settle(clock, 1.0)
        assert fired == [1] and keep.cancelled  # a fired timer counts as done
        keep.cancel()  # after firing: nothing to undo, nothing miscounted
        assert len(timers) == 0
        tg.cancel_scope.cancel()


async def test_memory_follows_the_live_timers_not_the_cancelled_ones() -> None:
    timers = Timers(FakeClock())
    made = [timers.call_later(300.0, print, i) for i in range(10_000)]
    for timer in made[:9_900]:
        timer.cancel()
    assert len(timers) == 100
    assert len(timers._heap) <= 2 * 100 + 64  # compacted as cancellations piled up
    assert made[9_950].when == 300.0


async def test_an_earlier_timer_wakes_a_loop_sleeping_on_a_later_one() -> None:
    clock = FakeClock()
    timers = Timers(clock)
    fired: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(timers.run)
        timers.call_later(100.0, fired.append, "late")
        await settle(clock, 1.0)
        timers.call_later(1.0, fired.append, "early")
        await settle(clock, 1.0)
        assert fired == ["early"]
        tg.cancel_scope.cancel()
