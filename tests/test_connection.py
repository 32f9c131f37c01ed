"""A connection reports to its listener, and to nothing else: the listener protocol alone.

A recording listener stands where the pool would; the connection talks to a fake server over
the in-memory transport, on fake time.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest

from orchestrator import AuthenticationError, Config, OrchestratorError, TextToImage
from orchestrator.connection import Connection, ConnectionListener
from orchestrator.handle import TaskHandle
from orchestrator.records import Stats, TaskRecord
from orchestrator.testing import FakeClock, FakeServer, MemoryTransport, image_uuid_for
from protocol.identity import new_task_uuid
from protocol.session import (
    ImageReceived,
    Progress,
    Session,
    TaskCompleted,
    TaskFailed,
    TextReceived,
)

pytestmark = [pytest.mark.timeout(30)]


class _NoOwner:
    def cancel(self, handle: TaskHandle, error: OrchestratorError) -> None:
        raise AssertionError("nothing cancels here")


@dataclass
class Recorder(ConnectionListener):
    """What the connection reported, in order, with what it looked like at each call."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    fatal: list[AuthenticationError] = field(default_factory=list)

    def on_open(self, conn: Connection) -> None:
        self.calls.append(("open", conn.endpoint))

    def on_down(self, conn: Connection, suspects: list[TaskRecord]) -> None:
        self.calls.append(("down", conn.endpoint))

    def on_fatal(self, error: AuthenticationError) -> None:
        self.fatal.append(error)
        self.calls.append(("fatal", error.error_id))

    def on_result(self, record: TaskRecord, event: ImageReceived | TextReceived | Progress) -> None:
        assert record.carrier is not None  # still in flight while its results arrive
        if isinstance(event, ImageReceived):
            self.calls.append(("image", event.image.image_uuid))
        else:
            self.calls.append((type(event).__name__, event.task_uuid))

    def on_completed(self, record: TaskRecord, event: TaskCompleted, endpoint: str) -> None:
        assert record.carrier is None  # retired: it has left the connection and its session
        self.calls.append(("completed", (record.task_uuid, len(event.images), endpoint)))

    def on_failed(self, record: TaskRecord, event: TaskFailed) -> None:
        assert record.carrier is None
        self.calls.append(("failed", (record.task_uuid, event.error_id)))


def record_for(number_results: int = 1) -> TaskRecord:
    spec = TextToImage(prompt="a fox", number_results=number_results)
    prepared = spec.prepare(new_task_uuid())
    return TaskRecord(prepared, (), TaskHandle(prepared.task_uuid, spec, _NoOwner()))


@asynccontextmanager
async def connected(
    server: FakeServer, recorder: Recorder, api_key: str | None = None
) -> AsyncIterator[Connection]:
    conn = Connection(
        recorder,
        "memory://a",
        Session(api_key or server.api_key, extensions=sorted(server.extensions)),
        config=Config(),
        transport=MemoryTransport(server),
        clock=FakeClock(),
        rng=random.Random(0),
        stats=Stats(),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(conn.run)
        await anyio.wait_all_tasks_blocked()
        yield conn
        conn.close()
        tg.cancel_scope.cancel()


async def test_results_are_reported_once_each_then_completion_after_retirement() -> None:
    recorder = Recorder()
    async with FakeServer(images_per_frame=1, duplicate_frames=True) as server:
        async with connected(server, recorder) as conn:
            assert recorder.calls == [("open", "memory://a")]
            record = record_for(number_results=2)
            conn.send_task(record)
            assert record.carrier is conn and conn.in_flight == 1
            await server.wait_received(1)
            await anyio.wait_all_tasks_blocked()
            task = record.task_uuid
            assert recorder.calls[1:] == [
                ("image", image_uuid_for(task, 0)),
                ("image", image_uuid_for(task, 1)),
                ("completed", (task, 2, "memory://a")),
            ]
            assert conn.in_flight == 0
            conn.check_consistent()


async def test_a_failed_task_is_reported_failed_and_a_lost_socket_down() -> None:
    recorder = Recorder()
    record = record_for()
    async with FakeServer(fail={record.task_uuid: (1007, "no such image")}) as server:
        async with connected(server, recorder) as conn:
            conn.send_task(record)
            await server.wait_received(1)
            await anyio.wait_all_tasks_blocked()
            assert recorder.calls[-1] == ("failed", (record.task_uuid, 1007))
            server.drop_all()
            await anyio.wait_all_tasks_blocked()
            assert recorder.calls[-1] == ("down", "memory://a")
            assert not conn.is_open() and not conn.is_closed()


async def test_a_cancelled_task_leaves_quietly_and_a_refused_key_is_fatal() -> None:
    recorder = Recorder()
    async with FakeServer(auto_reply=False) as server:
        async with connected(server, recorder) as conn:
            record = record_for()
            conn.send_task(record)
            await server.wait_received(1)
            conn.cancel(record)  # the pool's decision: nothing is reported back
            await anyio.wait_all_tasks_blocked()
            assert record.carrier is None and conn.in_flight == 0
            assert server.cancelled == [record.task_uuid]
            assert [name for name, _ in recorder.calls] == ["open"]
    refused = Recorder()
    async with FakeServer() as server:
        async with connected(server, refused, api_key="wrong") as conn:
            assert [name for name, _ in refused.calls] == ["fatal"]
            assert conn.is_closed() and refused.fatal[0].error_id == 19
