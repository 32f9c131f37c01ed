"""The reference server's connections, sessions, scheduling and shutdown, over real sockets."""

from __future__ import annotations

import base64
import http.server
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from orchestrator.server import FixedBackend, ReferenceServer, ServerConfig, ServerLimits

from serverkit import CountingBackend, GatedBackend, client, new_uuid, running

pytestmark = [pytest.mark.timeout(60)]


# -- authentication and frames -------------------------------------------------------------


async def test_bad_or_missing_key_gets_error_19_and_the_socket_closes() -> None:
    async with running(FixedBackend()) as server:
        for frame in ({"newConnection": {"apiKey": "wrong"}}, {"newConnection": {}}):
            async with client(server, key="") as raw:
                await raw.send(frame)
                error = await raw.recv()
                assert error["error"] is True and error["errorId"] == 19
                assert "taskUUID" not in error
                with pytest.raises(ConnectionClosed) as closed:
                    await raw.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_task_before_authentication_is_refused_by_name() -> None:
    async with running(FixedBackend()) as server, client(server, key="") as raw:
        task = await raw.task()
        error = await raw.recv()
        assert (error["errorId"], error["taskUUID"]) == (1014, task)
        await raw.auth("key-a")  # the connection is still usable
        task = await raw.task()
        assert len(await raw.images(task, 1)) == 1


async def test_malformed_unknown_and_invalid_frames_get_error_frames_and_the_socket_goes_on() -> (
    None
):
    async with running(FixedBackend()) as server, client(server, extensions=["taskErrors"]) as raw:
        await raw.send("{not json")
        assert (await raw.recv())["errorId"] == 1008
        await raw.send("[1, 2]")
        assert (await raw.recv())["errorId"] == 1008
        task = new_uuid()
        await raw.send({"newThing": {"taskUUID": task}})
        unknown = await raw.recv()
        assert (unknown["errorId"], unknown["taskUUID"]) == (1009, task)
        assert unknown["errorCode"] == "unknownMessage"
        await raw.send({"newTask": {"taskUUID": task, "promptText": "x", "gScale": 11}})
        invalid = await raw.recv()
        assert (invalid["errorId"], invalid["taskUUID"]) == (1001, task)
        assert "gScale" in invalid["errorMessage"] and "10" in invalid["errorMessage"]
        await raw.send({"newTask": {"taskUUID": task, "promptText": "x", "taskType": 6}})
        assert (await raw.recv())["errorId"] == 1002
        await raw.send({"ping": True})
        assert await raw.recv() == {"pong": True}
        task = await raw.task()  # the same taskUUID was never accepted, so it still may be
        assert len(await raw.images(task, 1)) == 1


async def test_limits_inside_a_frame_name_the_task_and_the_rule() -> None:
    limits = ServerLimits(max_prompt_length=50, max_number_results=4)
    async with running(FixedBackend(), limits=limits) as server, client(server) as raw:
        task = await raw.task(promptText="x" * 51)
        error = await raw.recv()
        assert (error["errorId"], error["taskUUID"]) == (1011, task)
        assert "promptText" in error["errorMessage"] and "50" in error["errorMessage"]
        task = await raw.task(numberResults=5)
        error = await raw.recv()
        assert error["taskUUID"] == task and "numberResults" in error["errorMessage"]


async def test_an_oversized_frame_closes_with_1009() -> None:
    limits = ServerLimits(max_frame_bytes=4096)
    async with running(FixedBackend(), limits=limits) as server, client(server) as raw:
        await raw.task(promptText="y" * 8000)
        with pytest.raises(ConnectionClosed) as closed:
            await raw.recv()
        assert closed.value.sent is not None and closed.value.sent.code == 1009


# -- results -------------------------------------------------------------------------------


async def test_images_stream_with_only_the_legacy_keys_unless_negotiated() -> None:
    async with running(FixedBackend()) as server:
        async with client(server) as raw:
            task = await raw.task(numberResults=3, seed=41)
            images = await raw.images(task, 3)
            assert {frozenset(i) for i in images} == {
                frozenset({"imageSrc", "imageUUID", "bNSFWContent", "taskUUID", "cost"})
            }
        async with client(server, extensions=["seed"]) as raw:
            reply_seeds = [
                i["seed"] for i in await raw.images(await raw.task(numberResults=3, seed=41), 3)
            ]
            assert sorted(reply_seeds) == [41, 42, 43]
            missing = await raw.images(await raw.task(numberResults=2), 2)
            assert all(isinstance(i["seed"], int) and i["seed"] >= 1 for i in missing)


async def test_images_are_hosted_with_their_content_type_and_inline_on_request() -> None:
    async with running(FixedBackend()) as server, client(server) as raw:
        task = await raw.task(returnBase64Image=True)
        (image,) = await raw.images(task, 1)
        async with httpx.AsyncClient() as http:
            response = await http.get(image["imageSrc"])
            missing = await http.get(f"{server.public_url}/images/{new_uuid()}.jpg")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content.startswith(b"\xff\xd8\xff")
        assert base64.b64decode(image["imageBase64Data"]) == response.content
        assert missing.status_code == 404


async def test_a_repeated_prompt_is_served_from_the_cache_with_alt_text() -> None:
    backend = CountingBackend()
    async with running(backend) as server, client(server) as raw:
        first = await raw.images(await raw.task(promptText="a quiet harbour", numberResults=2), 2)
        assert all("imageAltText" not in i for i in first)
        task = await raw.task(promptText="a quiet harbour", numberResults=2)
        frames = await raw.until(lambda f: sum(len(x["newImages"]["images"]) for x in f) >= 2)
        cached = [i for f in frames for i in f["newImages"]["images"]]
        assert backend.runs == 1
        assert all(i["imageAltText"] == "a quiet harbour" and i["taskUUID"] == task for i in cached)
        assert frames[0]["newImages"]["totalAvailableResults"] == 2
        # New imageUUIDs (derived from the new task), the same hosted bytes.
        assert {i["imageUUID"] for i in cached}.isdisjoint({i["imageUUID"] for i in first})
        fresh = await raw.task(promptText="a quiet harbour", useCache=False)
        await raw.images(fresh, 1)
        assert backend.runs == 2


# -- sessions ------------------------------------------------------------------------------


async def test_resume_after_a_dropped_socket_delivers_what_was_made_meanwhile() -> None:
    backend = GatedBackend()
    async with running(backend) as server:
        try:
            async with client(server, extensions=["resume"]) as raw:
                task = await raw.task(numberResults=2)
                await backend.wait_started()
                session = raw.session_uuid
                raw.ws.transport.abort()  # the socket drops; nothing is closed politely
            await server.wait_connections(0)
            backend.gate.set()
            await backend.wait_finished()  # the results are made while the client is away
            async with client(server, key="") as again:
                reply = await again.auth(
                    "key-a", connectionSessionUUID=session, extensions=["resume"]
                )
                body = reply["newConnectionSessionUUID"]
                assert body["connectionSessionUUID"] == session
                assert body["knownTaskUUIDs"] == [task]
                assert len(await again.images(task, 2)) == 2
        finally:
            backend.gate.set()


async def test_a_legacy_resume_without_extensions_replays_results() -> None:
    backend = GatedBackend()
    async with running(backend) as server:
        try:
            async with client(server) as raw:
                task = await raw.task()
                await backend.wait_started()
                session = raw.session_uuid
            await server.wait_connections(0)
            backend.gate.set()
            await backend.wait_finished()
            async with client(server, key="") as again:
                reply = await again.auth("key-a", connectionSessionUUID=session)
                assert reply == {"newConnectionSessionUUID": {"connectionSessionUUID": session}}
                assert len(await again.images(task, 1)) == 1
        finally:
            backend.gate.set()


async def test_a_session_cannot_be_resumed_with_another_key() -> None:
    async with running(FixedBackend()) as server:
        async with client(server) as raw:
            session = raw.session_uuid
        async with client(server, key="") as other:
            await other.send(
                {"newConnection": {"apiKey": "key-b", "connectionSessionUUID": session}}
            )
            assert (await other.recv())["errorId"] == 1013


async def test_a_known_task_uuid_is_never_generated_twice_even_from_another_connection() -> None:
    backend = CountingBackend()
    async with running(backend) as server:
        async with client(server) as raw:
            task = await raw.task(numberResults=2, useCache=False)
            first = {i["imageUUID"] for i in await raw.images(task, 2)}
            await raw.task(taskUUID=task, numberResults=2, useCache=False)
            assert {i["imageUUID"] for i in await raw.images(task, 2)} == first
        async with client(server) as other:
            await other.task(taskUUID=task, numberResults=2, useCache=False)
            assert {i["imageUUID"] for i in await other.images(task, 2)} == first
        assert backend.runs == 1
        async with client(server, key="key-b") as stranger:  # dedupe is per API key
            await stranger.task(taskUUID=task, numberResults=2, useCache=False)
            await stranger.images(task, 2)
        assert backend.runs == 2


# -- scheduling ----------------------------------------------------------------------------


async def test_one_connection_flood_does_not_starve_another_connections_single_task() -> None:
    backend = GatedBackend()
    flood = 5000
    async with running(backend, workers=1) as server:
        try:
            async with client(server) as a, client(server) as b:
                tasks = [new_uuid() for _ in range(flood)]
                for task in tasks:
                    await a.send({"newTask": {"taskUUID": task, "promptText": "x"}})
                await a.send({"ping": True})  # frames are handled in order: all were accepted
                assert await a.recv() == {"pong": True}
                single = await b.task()
                await b.send({"ping": True})
                assert await b.recv() == {"pong": True}
                backend.gate.set()
                assert len(await b.images(single, 1)) == 1
                # At most the task already running and one more of A's went first.
                assert backend.order.index(single) <= 2
                done = await a.until(lambda f: len(f) >= flood)
                assert not [f for f in done if f.get("error")]
                assert {f["newImages"]["images"][0]["taskUUID"] for f in done} == set(tasks)
        finally:
            backend.gate.set()


async def test_a_full_queue_answers_with_an_error_frame_for_that_task() -> None:
    backend = GatedBackend()
    limits = ServerLimits(max_queued_per_connection=3)
    async with running(backend, workers=1, limits=limits) as server:
        try:
            async with client(server, extensions=["taskErrors"]) as raw:
                tasks = [await raw.task() for _ in range(5)]
                errors = [await raw.recv(), await raw.recv()]
                assert [(e["errorId"], e["taskUUID"]) for e in errors] == [
                    (1003, tasks[3]),
                    (1003, tasks[4]),
                ]
                assert errors[0]["errorCode"] == "queueFull"
                backend.gate.set()
                for task in tasks[:3]:
                    await raw.images(task, 1)
                retried = await raw.task(taskUUID=tasks[3])  # room again: accepted now
                await raw.images(retried, 1)
        finally:
            backend.gate.set()


async def test_pongs_are_answered_while_images_render() -> None:
    backend = GatedBackend()
    async with running(backend, workers=1) as server:
        try:
            async with client(server) as raw:
                await raw.task()
                await backend.wait_started()
                await raw.send({"ping": True})
                assert await raw.recv() == {"pong": True}
        finally:
            backend.gate.set()


async def test_cancel_frees_the_worker() -> None:
    class Endless(FixedBackend):
        blocking = True

        def run(self, job: Any, ctx: Any) -> None:
            if job.request.prompt_text == "endless":
                started.set()
                while True:  # stops when the task is cancelled: progress raises
                    ctx.progress(1, 2)
                    stop.wait(0.001)
            super().run(job, ctx)

    started, stop = threading.Event(), threading.Event()
    async with (
        running(Endless(), workers=1) as server,
        client(server, extensions=["cancel"]) as raw,
    ):
        try:
            task = await raw.task(promptText="endless")
            await anyio.to_thread.run_sync(started.wait, 30)
            await raw.send({"cancelTask": {"taskUUID": task}})
            error = await raw.recv()
            assert (error["errorId"], error["taskUUID"]) == (1010, task)
            after = await raw.task(promptText="quick")
            assert len(await raw.images(after, 1)) == 1
        finally:
            stop.set()


async def test_shutdown_with_tasks_in_flight_leaves_no_client_hanging() -> None:
    backend = GatedBackend()
    try:
        async with running(backend, workers=1) as server, client(server) as raw:
            tasks = {await raw.task() for _ in range(3)}
            await backend.wait_started()
            await raw.send({"ping": True})
            assert await raw.recv() == {"pong": True}
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.aclose, 0)
                errors = [await raw.recv() for _ in tasks]
                assert {e["taskUUID"] for e in errors} == tasks
                assert {e["errorId"] for e in errors} == {1012}
                with pytest.raises(ConnectionClosed):
                    await raw.recv()
    finally:
        backend.gate.set()


# -- push ----------------------------------------------------------------------------------


@pytest.fixture
def put_sink() -> Iterator[tuple[str, list[tuple[str, bytes, str]]]]:
    received: list[tuple[str, bytes, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 (the handler's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body, self.headers["Content-Type"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sink.server_address[1]}", received
    finally:
        sink.shutdown()
        sink.server_close()


async def test_upload_endpoint_receives_each_image_and_private_targets_are_refused(
    put_sink: tuple[str, list[tuple[str, bytes, str]]],
) -> None:
    base, received = put_sink
    async with running(FixedBackend(), allow_private_uploads=True) as server, client(server) as raw:
        task = await raw.task(numberResults=2, uploadEndpoint=f"{base}/up/{{imageUUID}}.{{ext}}")
        images = await raw.images(task, 2)
        assert sorted(p for p, _, _ in received) == sorted(
            f"/up/{i['imageUUID']}.jpg" for i in images
        )
        assert all(
            body.startswith(b"\xff\xd8") and kind == "image/jpeg" for _, body, kind in received
        )
    async with running(FixedBackend()) as server, client(server) as raw:
        task = await raw.task(uploadEndpoint=f"{base}/up")
        error = await raw.recv()
        assert (error["errorId"], error["taskUUID"]) == (1001, task)
        assert "uploadEndpoint" in error["errorMessage"] and "loopback" in error["errorMessage"]


# -- the command ---------------------------------------------------------------------------


def test_serve_prints_where_it_listens_first_and_stops_on_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "serve",
        "--port",
        "0",
        "--backend",
        "fixed",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("listening on ws://127.0.0.1:")
            port = int(first.rsplit(":", 1)[1])
            assert port > 0 and process.stdout.readline().startswith("api key: ")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()


async def test_sessions_and_task_records_expire_after_the_retention_window() -> None:
    now = [1000.0]
    backend = CountingBackend()
    config = ServerConfig(api_keys=("key-a",), retention=120.0)
    async with ReferenceServer(config, backend=backend, clock=lambda: now[0]) as server:
        async with client(server) as raw:
            session = raw.session_uuid
            task = await raw.task(useCache=False)
            await raw.images(task, 1)
        await server.wait_connections(0)
        now[0] += 60
        server.sweep()
        async with client(server, key="") as again:  # within the window: same session
            reply = await again.auth("key-a", connectionSessionUUID=session)
            assert reply["newConnectionSessionUUID"]["connectionSessionUUID"] == session
        await server.wait_connections(0)
        now[0] += 121
        server.sweep()
        async with client(server, key="") as late:
            reply = await late.auth("key-a", connectionSessionUUID=session)
            assert reply["newConnectionSessionUUID"]["connectionSessionUUID"] != session
            await late.task(taskUUID=task, useCache=False)
            await late.images(task, 1)
        assert backend.runs == 2  # forgotten after the window, so made again
