"""The orchestrator against careless callers and misbehaving servers: fail fast, fail alone.

Through the in-memory transport on fake time, or real sockets where the point is a socket.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection, serve

from orchestrator import (
    Backoff,
    Config,
    ConnectError,
    Limits,
    LocalProtocolError,
    Orchestrator,
    RemoteTaskError,
    TaskRejected,
    TaskTimeout,
    TextToImage,
    Timeouts,
    TransportError,
    UploadImage,
    UsageError,
)
from orchestrator.testing import FakeClock, FakeServer, MemoryTransport, image_uuid_for
from protocol.messages import NewImageUpload
from protocol.session import Progress

pytestmark = [pytest.mark.timeout(30)]

FAST = Config(
    timeouts=Timeouts(connect=1, heartbeat_interval=10, failover=5),
    backoff=Backoff(initial=0.01, jitter=0),
)


@asynccontextmanager
async def fake(
    server: FakeServer, config: Config = FAST, *, real_time: bool = False
) -> AsyncIterator[Orchestrator]:
    # Fake time unless the test needs reconnects (their backoff sleeps are real, and short).
    transport = MemoryTransport(server)
    clock = None if real_time else FakeClock()
    async with Orchestrator(
        "memory://a", api_key=server.api_key, config=config, transport=transport, clock=clock
    ) as orch:
        yield orch
        orch.pool.check_consistent()


# -- careless callers ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8765", "127.0.0.1:8765", "ws://", "x y"])
def test_an_endpoint_that_is_not_a_websocket_url_is_refused_at_once(endpoint: str) -> None:
    with pytest.raises(UsageError, match="must be a ws:// or wss:// URL"):
        Orchestrator(endpoint, api_key="k")


@pytest.mark.parametrize("deadline", [math.nan, -1, 0, math.inf, "5", True])
async def test_a_bad_deadline_is_refused_before_admission_and_leaks_nothing(deadline: Any) -> None:
    async with FakeServer() as server, fake(server) as orch:
        with pytest.raises(UsageError, match="deadline"):
            await orch.submit(TextToImage(prompt="x"), deadline=deadline)
        assert orch.pool.in_flight == 0 and server.received == []
        assert len((await orch.run(TextToImage(prompt="still fine"))).images) == 1


@pytest.mark.parametrize("task", [{"prompt": "x"}, None, "a fox", 42])
async def test_something_that_is_not_a_task_is_a_usage_error(task: Any) -> None:
    async with FakeServer() as server, fake(server) as orch:
        with pytest.raises(UsageError, match="a task is a spec"):
            await orch.run(task)


def test_settings_of_the_wrong_type_are_refused() -> None:
    for build in (
        lambda: Timeouts(task="5"),  # type: ignore[arg-type]
        lambda: Limits(max_frame=True),
        lambda: Limits(in_flight=2.5),  # type: ignore[arg-type]
        lambda: Timeouts(connect=math.nan),
        lambda: Backoff(initial="0.1"),  # type: ignore[arg-type]
    ):
        with pytest.raises(UsageError):
            build()


def test_bools_are_not_coerced_and_seed_zero_gets_a_hint() -> None:
    with pytest.raises(LocalProtocolError, match="useCache"):
        TextToImage(prompt="x", use_cache="yes").prepare(str(uuid.uuid4()))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="leave it out for a random seed"):
        TextToImage(prompt="x", seed=0).prepare(str(uuid.uuid4()))


async def test_upload_image_reads_a_path(tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n fake")
    async with FakeServer() as server, fake(server) as orch:
        result = await orch.upload_image(image)
        assert result.image.image_uuid == image_uuid_for(result.task_uuid, 0)
        request = server.received[-1]
        assert isinstance(request, NewImageUpload)
        assert base64.b64decode(request.image_base64) == image.read_bytes()
        with pytest.raises(UsageError, match="no file to read"):
            await orch.upload_image(tmp_path / "missing.png")
    with pytest.raises(UsageError, match="no file to read"):
        UploadImage(image=tmp_path / "missing.png").to_request(str(uuid.uuid4()))


def test_remote_task_errors_say_whether_they_are_retryable() -> None:
    assert RemoteTaskError("t", 1003, "queue full").retryable
    assert not RemoteTaskError("t", 1001, "bad field").retryable
    assert not RemoteTaskError("t", 4242, "unknown").retryable


# -- servers that fail ----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_endpoint_fails_tasks_fast_with_the_cause() -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    with anyio.fail_after(10):  # far below the 300 s task deadline
        async with Orchestrator(url, api_key="k", config=FAST) as orch:
            with pytest.raises(ConnectError, match="no endpoint could be reached") as caught:
                await orch.run(TextToImage(prompt="x"))
            assert caught.value.__cause__ is not None
            with pytest.raises(ConnectError):  # and the next one at once
                await orch.run(TextToImage(prompt="y"))


async def test_a_task_timeout_says_what_the_task_was_waiting_for() -> None:
    config = Config(timeouts=Timeouts(task=5))
    clock = FakeClock()
    async with FakeServer(silent=True) as server:
        async with Orchestrator(
            "memory://a",
            api_key=server.api_key,
            config=config,
            transport=MemoryTransport(server),
            clock=clock,
        ) as orch:
            handle = await orch.submit(TextToImage(prompt="x"))
            await anyio.wait_all_tasks_blocked()
            clock.advance(6)
            with pytest.raises(TaskTimeout, match="sent to memory://a, which had not answered"):
                await handle.result()


async def test_a_task_that_brings_the_server_down_fails_alone() -> None:
    poison = str(uuid.uuid4())
    server = FakeServer(auto_reply=False, poison={poison})
    async with server, fake(server, real_time=True) as orch:
        others = [await orch.submit(TextToImage(prompt=f"{i}")) for i in range(3)]
        bad = await orch.submit(TextToImage(prompt="bad", task_uuid=poison))
        with anyio.fail_after(10):
            with pytest.raises(TaskRejected, match="closed the connection just after"):
                await bad.result()
        await anyio.wait_all_tasks_blocked()
        for handle in others:
            server.reply(handle.task_uuid)
        for handle in others:
            assert len((await handle.result()).images) == 1


async def test_a_frame_over_the_servers_limit_fails_that_task_and_later_ones_unsent() -> None:
    async with FakeServer(max_frame=2000) as server, fake(server, real_time=True) as orch:
        big = await orch.submit(TextToImage(prompt="x" * 3000))
        small = await orch.submit(TextToImage(prompt="small"))
        with anyio.fail_after(10):
            with pytest.raises(TaskRejected, match="1009"):
                await big.result()
            assert len((await small.result()).images) == 1
            received = len(server.received)
            with pytest.raises(TaskRejected, match="1009"):
                await orch.run(TextToImage(prompt="y" * 3000))
        assert len(server.received) == received  # refused before sending


async def test_results_sent_before_the_resume_reply_reach_their_task() -> None:
    connections: list[ServerConnection] = []
    first_task: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        hello = json.loads(await ws.recv())["newConnection"]
        if len(connections) == 1:
            reply = {"connectionSessionUUID": str(uuid.uuid4())}
            await ws.send(json.dumps({"newConnectionSessionUUID": reply}))
            first_task.append(json.loads(await ws.recv())["newTask"]["taskUUID"])
            return  # drop the socket with the task unanswered
        task = first_task[0]
        image = {"imageUUID": str(uuid.uuid4()), "taskUUID": task, "imageSrc": "http://x/1.jpg"}
        await ws.send(json.dumps({"newImages": {"images": [image]}}))  # before the reply
        session = hello["connectionSessionUUID"]
        reply = {"connectionSessionUUID": session, "knownTaskUUIDs": [task]}
        await ws.send(json.dumps({"newConnectionSessionUUID": {**reply, "extensions": ["resume"]}}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with Orchestrator(f"ws://127.0.0.1:{port}", api_key="k", config=FAST) as orch:
            with anyio.fail_after(10):
                result = await orch.run(TextToImage(prompt="x"))
        assert len(result.images) == 1 and result.task_uuid == first_task[0]


async def test_a_handle_nobody_iterates_keeps_only_the_latest_progress_without_preview() -> None:
    async with FakeServer(progress_steps=50, auto_reply=False) as server, fake(server) as orch:
        handle = await orch.submit(TextToImage(prompt="x"))
        await server.wait_received(1)
        server.reply(handle.task_uuid)
        await handle.result()
        events = [e async for e in handle.events()]
        progress = [e for e in events if isinstance(e, Progress)]
        assert len(progress) == 1 and progress[0].step == 50
        assert progress[0].preview_base64 is None


async def test_which_task_errors_are_retried_is_a_setting() -> None:
    config = Config(retry_error_ids=frozenset())  # opt out: fail at the first refusal
    async with FakeServer(queue_full=1) as server, fake(server, config) as orch:
        with pytest.raises(RemoteTaskError) as caught:
            await orch.run(TextToImage(prompt="x"))
        assert caught.value.error_id == 1003 and caught.value.retryable
    with pytest.raises(UsageError, match="retry_error_ids"):
        Config(retry_error_ids=frozenset({"1005"}))  # type: ignore[arg-type]


async def test_upload_image_fetches_an_http_url_first() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = b"\x89PNG\r\n\x1a\n from a URL"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/a.png"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http_server.server_port}"
    try:
        async with FakeServer() as server, fake(server) as orch:
            await orch.upload_image(f"{base}/a.png")
            request = server.received[-1]
            assert isinstance(request, NewImageUpload)
            assert base64.b64decode(request.image_base64) == body
            with pytest.raises(TransportError, match="HTTP 404"):
                await orch.upload_image(f"{base}/missing.png")
    finally:
        http_server.shutdown()
        http_server.server_close()
