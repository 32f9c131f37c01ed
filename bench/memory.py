"""Memory per in-flight task, and RSS over a long run: the memory rows of ``throughput.py``.

Bytes per in-flight task are what ``tracemalloc`` sees allocated, and still held, once N
tasks have reached a responder that answers none of them (``responder.py --silent``),
divided by N. Four shapes of client:

- ``floor lanes``: the hand-written floor, one coroutine per task awaiting its future;
- ``floor futures``: the floor's dict of futures alone, no coroutine per task;
- ``orch lanes``: one coroutine per task awaiting ``orch.run(task)`` (a service);
- ``orch handles``: the handles of ``await orch.submit(task)`` kept in a list (a bulk job).

The soak runs many tasks through ``orch.map`` against the answering responder and prints
the process's RSS at each tenth of the way: flat means nothing per task is kept.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Iterator

import orjson
from procstat import rss_mib
from websockets.asyncio.client import ClientConnection, connect

from orchestrator import Config, Limits, Orchestrator, TaskHandle, TextToImage

KEY = "bench-key"
SHAPES = ("floor lanes", "floor futures", "orch lanes", "orch handles")


async def _received(probe: ClientConnection, at_least: int = 0) -> int:
    # The silent responder answers once that many tasks have reached it (see responder.py):
    # the client's own tasks write the frames meanwhile.
    await probe.send(orjson.dumps({"count": {"atLeast": at_least}}), text=True)
    answer: int = orjson.loads(await probe.recv())["count"]
    return answer


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


#: Lets go of what a shape held while it was measured.
Release = Callable[[], Awaitable[None]]


async def _floor(ws: ClientConnection, n: int, lanes: bool) -> Release:
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[None]] = {}

    async def lane() -> None:  # the floor's lane (throughput.py), for one task
        task_uuid = str(uuid.uuid4())
        future = waiting[task_uuid] = loop.create_future()
        body = {"taskUUID": task_uuid, "promptText": "a red fox", "useCache": False}
        await ws.send(orjson.dumps({"newTask": body}), text=True)
        await future

    tasks = []
    for _ in range(n):
        if lanes:
            tasks.append(asyncio.create_task(lane()))
        else:
            task_uuid = str(uuid.uuid4())
            waiting[task_uuid] = loop.create_future()
            body = {"taskUUID": task_uuid, "promptText": "a red fox", "useCache": False}
            await ws.send(orjson.dumps({"newTask": body}), text=True)

    async def release() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiting.clear()

    return release


async def _orch(orch: Orchestrator, n: int, lanes: bool) -> Release:
    tasks: list[asyncio.Task[object]] = []
    handles: list[TaskHandle] = []
    for _ in range(n):
        task = TextToImage(prompt="a red fox", use_cache=False)
        if lanes:
            tasks.append(asyncio.create_task(orch.run(task)))
        else:
            handles.append(await orch.submit(task))

    async def release() -> None:
        for task in tasks:
            task.cancel()
        for handle in handles:
            handle.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return release


async def bytes_per_task(url: str, shape: str, n: int) -> float:
    """Bytes held per in-flight task of ``shape`` with ``n`` tasks in flight."""
    async with connect(url, max_size=None, compression=None, ping_interval=None) as probe:
        start = await _received(probe)
        if shape.startswith("floor"):
            async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
                await ws.send(orjson.dumps({"newConnection": {"apiKey": KEY}}), text=True)
                await ws.recv()
                return await _measure(probe, start, n, lambda: _floor(ws, n, "lanes" in shape))
        config = Config(limits=Limits(in_flight=n, per_connection=n))
        async with Orchestrator(url, api_key=KEY, config=config) as orch:
            return await _measure(probe, start, n, lambda: _orch(orch, n, "lanes" in shape))


async def _measure(
    probe: ClientConnection, start: int, n: int, fill: Callable[[], Awaitable[Release]]
) -> float:
    tracemalloc.start()
    try:
        before = _traced()
        release = await fill()
        await _received(probe, start + n)
        used = _traced() - before
    finally:
        tracemalloc.stop()
    await release()
    return used / n


# -- soak ------------------------------------------------------------------------------------


async def soak(url: str, total: int, in_flight: int = 1024) -> list[tuple[int, float, float]]:
    """Run ``total`` tasks through ``orch.map``; (tasks done, RSS MiB, seconds) at each tenth."""
    step = max(total // 10, 1)
    series: list[tuple[int, float, float]] = []
    config = Config(limits=Limits(in_flight=in_flight, per_connection=in_flight))

    def tasks() -> Iterator[TextToImage]:
        for _ in range(total):
            yield TextToImage(prompt="a red fox", use_cache=False)

    start = time.perf_counter()
    async with Orchestrator(url, api_key=KEY, config=config) as orch:
        done = 0
        async for _ in orch.map(tasks(), concurrency=in_flight):
            done += 1
            if done % step == 0:
                series.append((done, rss_mib(os.getpid()), time.perf_counter() - start))
                print(f"  soak: {done:>9} tasks  RSS {series[-1][1]:7.1f} MiB", flush=True)
    return series
