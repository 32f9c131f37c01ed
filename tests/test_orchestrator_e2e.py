"""The orchestrator against the reference server on 127.0.0.1 (fixed backend: pixels do not
matter here), in this process and in server processes that get killed mid-run."""

from __future__ import annotations

import signal
from collections import Counter

import anyio
import pytest

from orchestrator import Config, Limits, Orchestrator, TaskResult, TextToImage, Timeouts
from orchestrator.server import FixedBackend

from serverkit import KEY, ServerProcess, running, server_process


def assert_each_image_once(results: list[TaskResult], per_task: int) -> None:
    counts = Counter(image.image_uuid for r in results for image in r.images)
    assert all(len(r.images) == per_task for r in results)
    assert max(counts.values()) == 1, "an image was delivered twice"
    assert len({r.task_uuid for r in results}) == len(results)


async def test_ten_thousand_tasks_over_four_connections() -> None:
    config = Config(limits=Limits(connections_per_endpoint=4, in_flight=2048))
    async with running(FixedBackend()) as server:
        async with Orchestrator(server.url, api_key=KEY, config=config) as orch:
            tasks = (TextToImage(prompt=f"fox {i}") for i in range(10_000))
            results = [r async for r in orch.map(tasks)]
            assert len(results) == 10_000
            assert_each_image_once(results, 1)
            assert [c.connects for c in orch.pool.connections] == [1, 1, 1, 1]
            assert all(c.in_flight == 0 for c in orch.pool.connections)
            orch.pool.check_consistent()


async def run_and_kill(
    orch: Orchestrator, server: ServerProcess, *, stop_first: bool, count: int = 4000
) -> list[TaskResult]:
    """Run ``count`` two-image tasks and kill ``server`` at the first result after the
    1,000th when tasks are in flight there. With ``stop_first`` it is frozen (SIGSTOP) at
    the 1,000th, so the tasks routed to it from then on are surely unanswered."""
    results: list[TaskResult] = []
    on_server = [c for c in orch.pool.connections if c.endpoint == server.url]
    tasks = (TextToImage(prompt=f"cat {i}", number_results=2) for i in range(count))
    async for result in orch.map(tasks, concurrency=512):
        results.append(result)
        if len(results) == 1000 and stop_first:
            server.process.send_signal(signal.SIGSTOP)
        alive = server.process.poll() is None
        if len(results) >= 1000 and alive and any(c.in_flight for c in on_server):
            server.kill()
    assert server.process.poll() is not None, "the server was never killed"
    return results


@pytest.mark.timeout(90)
async def test_a_killed_and_restarted_server_loses_nothing_and_repeats_nothing() -> None:
    config = Config(limits=Limits(connections_per_endpoint=2))
    with server_process() as first:
        async with (
            anyio.create_task_group() as tg,
            Orchestrator(first.url, api_key=KEY, config=config) as orch,
        ):
            restarted: list[ServerProcess] = []

            async def restart_when_killed() -> None:
                await anyio.to_thread.run_sync(first.process.wait)
                restarted.append(await anyio.to_thread.run_sync(ServerProcess, first.port))

            tg.start_soon(restart_when_killed)
            try:
                results = await run_and_kill(orch, first, stop_first=False)
            finally:
                for server in restarted:
                    server.kill()
            assert len(results) == 4000
            assert_each_image_once(results, 2)
            assert all(c.connects >= 2 for c in orch.pool.connections)
            assert orch.stats.resubmitted > 0


@pytest.mark.timeout(90)
async def test_two_endpoints_one_killed_its_tasks_finish_on_the_other() -> None:
    config = Config(timeouts=Timeouts(failover=0.5))
    with server_process() as a, server_process() as b:
        async with Orchestrator([a.url, b.url], api_key=KEY, config=config) as orch:
            results = await run_and_kill(orch, a, stop_first=True)
            assert len(results) == 4000
            assert_each_image_once(results, 2)
            endpoints = Counter(r.endpoint for r in results)
            assert endpoints[b.url] > endpoints[a.url] > 0
            assert orch.stats.moved > 0
