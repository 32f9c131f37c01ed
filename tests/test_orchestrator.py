"""The orchestrator through the in-memory transport: deterministic, no sockets, fake time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from orchestrator import (
    AuthenticationError,
    Backoff,
    Config,
    ImageReady,
    ImageToImage,
    InvalidState,
    Limits,
    LocalProtocolError,
    Orchestrator,
    Progress,
    RemoteTaskError,
    TaskCancelled,
    TaskDone,
    TaskFailed,
    TaskTimeout,
    TextToImage,
    Timeouts,
)
from orchestrator.handle import TaskHandle
from orchestrator.testing import FakeClock, FakeServer, MemoryTransport, image_uuid_for
from protocol.tables import KNOWN_EXTENSIONS

CONFIG = Config(
    timeouts=Timeouts(heartbeat_interval=10, heartbeat_misses=2, replay_quiet=1, failover=5),
    backoff=Backoff(initial=0.1, jitter=0),
)


@dataclass
class Harness:
    server: FakeServer
    orch: Orchestrator
    clock: FakeClock

    async def advance(self, seconds: float) -> None:
        """Let everything run, move fake time on, and let everything run again."""
        await anyio.wait_all_tasks_blocked()
        self.clock.advance(seconds)
        await anyio.wait_all_tasks_blocked()


@asynccontextmanager
async def harness(config: Config = CONFIG, **server_options: object) -> AsyncIterator[Harness]:
    clock = FakeClock()
    async with FakeServer(**server_options) as server:  # type: ignore[arg-type]
        transport = MemoryTransport(server)
        async with Orchestrator(
            "memory://a", api_key=server.api_key, config=config, transport=transport, clock=clock
        ) as orch:
            yield Harness(server, orch, clock)
            orch.pool.check_consistent()


@asynccontextmanager
async def two_endpoints(
    a: FakeServer, b: FakeServer, clock: FakeClock
) -> AsyncIterator[Orchestrator]:
    """An orchestrator over memory://a and memory://b, on fake time."""
    transport = MemoryTransport({"memory://a": a, "memory://b": b})
    async with Orchestrator(
        ["memory://a", "memory://b"],
        api_key=a.api_key,
        config=CONFIG,
        transport=transport,
        clock=clock,
    ) as orch:
        yield orch


def image_frame(*images: tuple[str, int]) -> dict[str, object]:
    return {
        "newImages": {
            "images": [
                {
                    "imageSrc": f"https://x.invalid/{i}.jpg",
                    "imageUUID": image_uuid_for(task_uuid, i),
                    "taskUUID": task_uuid,
                    "cost": 0.5,
                }
                for task_uuid, i in images
            ]
        }
    }


async def test_interleaved_and_split_frames_reach_their_tasks_once() -> None:
    async with harness(auto_reply=False) as h:
        a = await h.orch.submit(TextToImage(prompt="a", number_results=3))
        b = await h.orch.submit(TextToImage(prompt="b", number_results=2))
        await h.server.wait_received(2)
        conn = h.server.connection
        conn.send(image_frame((a.task_uuid, 0), (b.task_uuid, 0)))
        conn.send(image_frame((b.task_uuid, 1), (a.task_uuid, 1)))
        conn.send(image_frame((a.task_uuid, 2)))
        result_a, result_b = await a.result(), await b.result()
    assert [i.image_uuid for i in result_a.images] == [
        image_uuid_for(a.task_uuid, i) for i in range(3)
    ]
    assert [i.image_uuid for i in result_b.images] == [
        image_uuid_for(b.task_uuid, i) for i in range(2)
    ]
    assert result_a.cost == 1.5


async def test_duplicate_images_are_delivered_once() -> None:
    async with harness(images_per_frame=1, duplicate_frames=True) as h:
        async with h.orch.submit(TextToImage(prompt="dup", number_results=4)) as handle:
            events = [event async for event in handle.events()]
        ready = [e for e in events if isinstance(e, ImageReady)]
        assert len(ready) == 4
        assert len({e.image.image_uuid for e in ready}) == 4
        assert isinstance(events[-1], TaskDone)
        await anyio.wait_all_tasks_blocked()
        assert h.orch.stats.unknown_frames == 1  # the copy of the last frame came too late


async def test_an_error_frame_fails_only_its_task_and_keeps_unknown_ids() -> None:
    bad, odd = str(uuid.uuid4()), str(uuid.uuid4())
    fail = {bad: (1007, "imageUUID not found"), odd: (4242, "something new")}
    async with harness(fail=fail) as h:
        with pytest.raises(RemoteTaskError) as caught:
            await h.orch.run(TextToImage(prompt="x", task_uuid=bad))
        assert (caught.value.error_id, caught.value.error_message) == (1007, "imageUUID not found")
        assert caught.value.error_code == "imageNotFound"
        with pytest.raises(RemoteTaskError) as caught:
            await h.orch.run(TextToImage(prompt="x", task_uuid=odd))
        assert caught.value.error_id == 4242 and caught.value.error_code is None
        assert len((await h.orch.run(TextToImage(prompt="fine"))).images) == 1


async def test_unknown_tasks_and_malformed_frames_are_reported_and_dropped() -> None:
    async with harness() as h:
        conn = h.server.connection
        conn.send(image_frame((str(uuid.uuid4()), 0)))
        conn.send(b"{not json")
        conn.send({"newImages": {"images": "nope"}})
        conn.send({"error": True, "errorId": 1008, "errorMessage": "about a frame"})
        result = await h.orch.run(TextToImage(prompt="still fine"))
        assert len(result.images) == 1
        stats = h.orch.stats
        assert (stats.unknown_frames, stats.rejected_frames, stats.server_errors) == (1, 2, 1)
        assert len(h.server.connections) == 1  # the connection went on


@pytest.mark.parametrize("forget", [False, True], ids=["replayed", "resubmitted"])
async def test_a_socket_dropped_mid_task_loses_nothing_and_repeats_nothing(forget: bool) -> None:
    # Frames sent: the session reply, then one image per frame; drop after two images.
    async with harness(images_per_frame=1, drop_after_frames=3, forget_on_drop=forget) as h:
        async with h.orch.submit(TextToImage(prompt="drop", number_results=4)) as handle:
            await h.server.wait_for(lambda: h.server.connection.closed)
            await anyio.wait_all_tasks_blocked()
            assert len(handle.images) == 2 and not handle.done()
            await h.advance(1)  # the reconnect backoff
            events = [e async for e in handle.events()]
        uuids = [e.image.image_uuid for e in events if isinstance(e, ImageReady)]
        assert uuids == [image_uuid_for(handle.task_uuid, i) for i in range(4)]
        assert len(h.server.connections) == 2
        assert h.server.times_received[handle.task_uuid] == (2 if forget else 1)


async def test_without_the_resume_extension_unfinished_tasks_are_resent_once_quiet() -> None:
    extensions = KNOWN_EXTENSIONS - {"resume"}
    async with harness(
        images_per_frame=1, drop_after_frames=2, forget_on_drop=True, extensions=extensions
    ) as h:
        async with h.orch.submit(TextToImage(prompt="q", number_results=3)) as handle:
            await h.server.wait_for(lambda: h.server.connection.closed)
            await h.advance(1)  # reconnect
            assert h.server.times_received[handle.task_uuid] == 1  # waiting for the replay
            await h.advance(1)  # the replay was quiet for replay_quiet
            result = await handle.result()
        assert len(result.images) == 3
        assert h.server.times_received[handle.task_uuid] == 2


async def test_a_server_that_never_answers_hits_the_deadline() -> None:
    async with harness(silent=True) as h:
        handle = await h.orch.submit(TextToImage(prompt="void"), deadline=30)
        await h.advance(29)
        assert not handle.done()
        await h.advance(1)
        with pytest.raises(TaskTimeout) as caught:
            await handle.result()
        assert isinstance(caught.value, TimeoutError)
        assert h.server.cancelled == [handle.task_uuid]  # the server is told to stop
        assert h.orch.pool.in_flight == 0


async def test_a_half_open_socket_is_detected_by_the_heartbeat() -> None:
    async with harness() as h:
        h.server.connection.freeze()  # reads nothing, sends nothing, stays open
        handle = await h.orch.submit(TextToImage(prompt="half-open"))
        for _ in range(3):  # ping, ping, then two intervals without a frame: dead
            await h.advance(10)
        await h.advance(1)  # reconnect backoff
        result = await handle.result()
        assert len(result.images) == 1
        assert len(h.server.connections) == 2
        assert h.server.times_received[handle.task_uuid] == 1  # the frozen socket read nothing


async def test_a_busy_connection_answering_pings_stays_up() -> None:
    async with harness(silent=True) as h:
        handle = await h.orch.submit(TextToImage(prompt="slow"))
        for _ in range(5):
            await h.advance(10)
        assert h.server.pings == 5 and len(h.server.connections) == 1
        handle.cancel()


async def test_an_authentication_failure_is_raised_at_once_and_not_retried() -> None:
    clock = FakeClock()
    async with FakeServer(api_key="right") as server:
        orch = Orchestrator(
            "memory://a",
            api_key="wrong",
            config=CONFIG,
            transport=MemoryTransport(server),
            clock=clock,
        )
        with pytest.raises(AuthenticationError) as caught:
            async with orch:
                pass
        assert caught.value.error_id == 19
        await anyio.wait_all_tasks_blocked()
        clock.advance(60)
        await anyio.wait_all_tasks_blocked()
        assert len(server.connections) == 1
        with pytest.raises(AuthenticationError):
            await orch.submit(TextToImage(prompt="x"))


async def test_cancellation_leaves_the_pool_consistent() -> None:
    config = Config(timeouts=CONFIG.timeouts, limits=Limits(in_flight=4))
    async with harness(config, silent=True) as h:
        pool = h.orch.pool
        running = [await h.orch.submit(TextToImage(prompt=f"{i}")) for i in range(3)]
        with anyio.CancelScope() as scope:  # cancelled while waiting for its result
            async with anyio.create_task_group() as tg:
                tg.start_soon(h.orch.run, TextToImage(prompt="waits for result"))
                await anyio.wait_all_tasks_blocked()
                assert pool.in_flight == 4
                tg.start_soon(h.orch.run, TextToImage(prompt="waits for room"))
                await anyio.wait_all_tasks_blocked()
                pool.check_consistent()
                scope.cancel()
        pool.check_consistent()
        assert pool.in_flight == 3
        running[0].cancel()
        await anyio.wait_all_tasks_blocked()
        pool.check_consistent()
        assert len(h.server.cancelled) == 2
        with pytest.raises(TaskCancelled):
            await running[0].result()
        h.server.silent = False
        assert len((await h.orch.run(TextToImage(prompt="after"))).images) == 1
        for handle in running[1:]:
            handle.cancel()


async def test_a_waiter_cancelled_in_the_queue_for_room_passes_its_turn_on() -> None:
    config = Config(timeouts=CONFIG.timeouts, limits=Limits(in_flight=1))
    async with harness(config, silent=True) as h:
        holder = await h.orch.submit(TextToImage(prompt="holds the only slot"))
        admitted: list[str] = []

        async def submit(name: str) -> None:
            handle = await h.orch.submit(TextToImage(prompt=name))
            admitted.append(name)
            handle.cancel()

        first = anyio.CancelScope()

        async def submit_first() -> None:
            with first:
                await submit("first")

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit_first)  # queued for room, then cancelled
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(submit, "second")
            await anyio.wait_all_tasks_blocked()
            first.cancel()
            await anyio.wait_all_tasks_blocked()
            assert admitted == []
            holder.cancel()  # the slot goes to the waiter still queued
            with anyio.fail_after(5):
                while not admitted:
                    await anyio.wait_all_tasks_blocked()
        assert admitted == ["second"]
        h.orch.pool.check_consistent()


async def test_back_pressure_holds_in_flight_at_the_limits() -> None:
    limits = Limits(in_flight=10, per_connection=3, connections_per_endpoint=2)
    config = Config(timeouts=CONFIG.timeouts, limits=limits)
    pulled = 0

    def endless() -> Iterator[TextToImage]:
        nonlocal pulled
        while True:
            pulled += 1
            yield TextToImage(prompt=f"task {pulled}")

    async with harness(config, auto_reply=False) as h:
        results = 0
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                nonlocal results
                async for _ in h.orch.map(endless(), concurrency=8):
                    results += 1
                    if results == 20:
                        tg.cancel_scope.cancel()

            tg.start_soon(consume)
            while results < 20:
                await anyio.wait_all_tasks_blocked()
                pool = h.orch.pool
                assert all(c.in_flight <= 3 for c in pool.connections)
                assert pool.in_flight <= 8 and pulled <= 8 + results
                assert len(h.server.pending()) == 6  # two connections of three
                h.server.reply(h.server.pending()[0])
        await anyio.wait_all_tasks_blocked()
        assert h.orch.pool.in_flight == 0


async def test_queue_full_is_back_pressure_retried_after_a_backoff() -> None:
    async with harness(queue_full=2) as h:
        handle = await h.orch.submit(TextToImage(prompt="busy"))
        await h.advance(0.1)
        await h.advance(0.2)
        result = await handle.result()
        assert len(result.images) == 1
        assert h.server.times_received[handle.task_uuid] == 3
        assert h.orch.stats.retried == 2


async def test_progress_then_images_then_done() -> None:
    async with harness(progress_steps=3) as h:
        async with h.orch.submit(TextToImage(prompt="p", number_results=2)) as handle:
            events = [e async for e in handle.events()]
        kinds = [type(e).__name__ for e in events]
        # The three steps arrived before the reader woke: the latest replaced the others.
        assert kinds == ["Progress"] + ["ImageReady"] * 2 + ["TaskDone"]
        assert [(e.step, e.image_index) for e in events if isinstance(e, Progress)] == [(3, 0)]
        assert [e.index for e in events if isinstance(e, ImageReady)] == [0, 1]
        replayed = [e async for e in handle.events()]  # from the start, after the end
        assert replayed == events


async def test_bad_input_is_refused_before_anything_is_sent() -> None:
    async with harness() as h:
        with pytest.raises(LocalProtocolError) as caught:
            await h.orch.submit(TextToImage(prompt="x", guidance=99))
        assert "gScale (guidance)" in str(caught.value)
        assert h.server.received == [] and h.orch.pool.in_flight == 0
        task_uuid = str(uuid.uuid4())
        first = await h.orch.submit(TextToImage(prompt="x", task_uuid=task_uuid))
        await first.result()
        h.server.silent = True
        again = await h.orch.submit(TextToImage(prompt="x", task_uuid=task_uuid))
        with pytest.raises(InvalidState):
            await h.orch.submit(TextToImage(prompt="x", task_uuid=task_uuid))
        again.cancel()


async def test_map_raises_the_first_failure_or_yields_it_in_place() -> None:
    bad = str(uuid.uuid4())
    async with harness(fail={bad: (1001, "promptText is too long")}) as h:
        tasks = [TextToImage(prompt="ok"), TextToImage(prompt="bad", task_uuid=bad)]
        invalid = TextToImage(prompt="x", number_results=0)
        outcomes = [r async for r in h.orch.map([*tasks, invalid], return_exceptions=True)]
        names = sorted(type(o).__name__ for o in outcomes)
        assert names == ["LocalProtocolError", "RemoteTaskError", "TaskResult"]
        with pytest.raises(RemoteTaskError):
            async for _ in h.orch.map(tasks):
                pass


async def test_closing_cancels_live_tasks_with_the_cause() -> None:
    async with harness(silent=True) as h:
        handle = await h.orch.submit(TextToImage(prompt="never"))
        async with h.orch.submit(TextToImage(prompt="events")) as streaming:
            pass
    events = [e async for e in streaming.events()]  # streamed after it ended: still all
    assert len(events) == 1 and isinstance(events[0], TaskFailed)
    assert isinstance(events[0].error, TaskCancelled)
    with pytest.raises(TaskCancelled) as caught:
        await handle.result()
    assert isinstance(caught.value.__cause__, InvalidState)


async def test_failover_moves_tasks_off_a_dead_endpoint_and_pins_follow_images() -> None:
    clock = FakeClock()
    async with FakeServer(silent=True) as a, FakeServer() as b:
        async with two_endpoints(a, b, clock) as orch:
            handles = [
                await orch.submit(TextToImage(prompt=f"{i}", number_results=2)) for i in range(6)
            ]
            await anyio.wait_all_tasks_blocked()
            assert len(a.pending()) == 3  # least in flight: half each
            a.refuse_connections = True
            a.drop_all()
            for _ in range(4):
                await anyio.wait_all_tasks_blocked()
                clock.advance(2)
            results = [await h.result() for h in handles]
            assert all(len(r.images) == 2 for r in results)
            assert {r.endpoint for r in results} == {"memory://b"}
            assert orch.stats.moved == 3
            # A task reading an image goes where that image is.
            a.refuse_connections = False
            a.silent = False
            clock.advance(20)
            await anyio.wait_all_tasks_blocked()
            source = results[0].images[0].image_uuid
            follow = await orch.run(ImageToImage(prompt="more", init_image_uuid=source))
            assert follow.endpoint == "memory://b"
            orch.pool.check_consistent()


async def test_after_failover_the_new_session_neither_repeats_nor_awaits_what_a_delivered() -> None:
    clock = FakeClock()
    async with FakeServer(auto_reply=False) as a, FakeServer(auto_reply=False) as b:
        async with two_endpoints(a, b, clock) as orch:
            handle = await orch.submit(TextToImage(prompt="moved", number_results=3))
            task = handle.task_uuid
            await a.wait_received(1)
            a.connection.send(image_frame((task, 0)))
            await anyio.wait_all_tasks_blocked()
            assert [i.image_uuid for i in handle.images] == [image_uuid_for(task, 0)]
            a.refuse_connections = True
            a.drop_all()
            while task not in b.pending():  # failover: the task moves to b
                await anyio.wait_all_tasks_blocked()
                clock.advance(1)
            # b makes the same images (same derivation): image 0 again, then image 1.
            b.connection.send(image_frame((task, 0), (task, 1)))
            await anyio.wait_all_tasks_blocked()
            assert [i.image_uuid for i in handle.images] == [
                image_uuid_for(task, i) for i in range(2)
            ]
            assert not handle.done()  # the copy of image 0 did not count towards the three
            b.connection.send(image_frame((task, 2)))
            result = await handle.result()
            assert [i.image_uuid for i in result.images] == [
                image_uuid_for(task, i) for i in range(3)
            ]
            assert result.endpoint == "memory://b" and orch.stats.moved == 1
            ready = [e async for e in handle.events() if isinstance(e, ImageReady)]
            assert len(ready) == 3
            orch.pool.check_consistent()


async def test_every_task_type_completes_through_its_own_reply() -> None:
    async with harness(images_per_frame=1) as h:
        orch = h.orch
        made = await orch.text_to_image("a fox", number_results=3, seed=7)
        assert len({i.image_uuid for i in made.images}) == 3
        source = made.images[0].image_uuid
        assert len((await orch.image_to_image("a fox", source, strength=0.4)).images) == 1
        assert len((await orch.inpaint("a fox", source, made.images[1].image_uuid)).images) == 1
        assert len((await orch.upscale(source, upscale_factor=4)).images) == 1
        assert len((await orch.remove_background(source)).images) == 1
        assert (await orch.image_to_text(source)).text.startswith("text 0")
        assert len(set((await orch.enhance_prompt("a fox", prompt_versions=3)).texts)) == 3
        assert (await orch.upload_image(b"\x89PNG fake")).image.image_uuid == image_uuid_for(
            h.server.received[-1].task_uuid, 0
        )
        guide = await orch.controlnet_preprocess("canny", guide_image_uuid=source)
        assert guide.images[0].image_uuid == image_uuid_for(guide.task_uuid, 0)
        kinds = [type(r).__name__ for r in h.server.received]
        assert kinds == [
            "NewTask",
            "NewTask",
            "NewTask",
            "UpscaleGanRequest",
            "RemoveBackgroundRequest",
            "ReverseImageClip",
            "PromptEnhance",
            "NewImageUpload",
            "PreProcessControlNetRequest",
        ]


async def test_result_and_events_wait_on_one_handle_together() -> None:
    async with harness(auto_reply=False) as h:
        handle = await h.orch.submit(TextToImage(prompt="shared", number_results=2))
        seen: list[str] = []
        results: list[int] = []

        async def stream() -> None:
            seen.extend([type(e).__name__ async for e in handle.events()])

        async def wait() -> None:
            results.append(len((await handle.result()).images))

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            tg.start_soon(wait)
            impatient = anyio.CancelScope()  # a third waiter gives up early
            tg.start_soon(wait_in, impatient, handle)
            await anyio.wait_all_tasks_blocked()
            impatient.cancel()
            await anyio.wait_all_tasks_blocked()
            assert isinstance(handle._waiters, list) and len(handle._waiters) == 2  # it left
            await h.server.wait_received(1)
            h.server.reply(handle.task_uuid)
        assert seen == ["ImageReady", "ImageReady", "TaskDone"] and results == [2]
        assert handle._waiters is None  # nobody left registered, the cancelled one included


async def wait_in(scope: anyio.CancelScope, handle: TaskHandle) -> None:
    with scope:
        await handle.result()
