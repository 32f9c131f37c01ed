"""The reference server against hostile peers: nothing stalls it, bloats it or mixes tenants.

Over real sockets on 127.0.0.1; each test would have failed before the hardening.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import orjson
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from orchestrator.server import FixedBackend, ImageOutput, Job, JobContext, ServerLimits
from protocol import NewTask
from protocol.identity import image_uuid_for

from serverkit import CountingBackend, client, new_uuid, running

pytestmark = [pytest.mark.timeout(60)]


# -- before authentication -----------------------------------------------------------------


async def test_before_authentication_a_large_frame_closes_the_socket_unread() -> None:
    async with running(FixedBackend()) as server, client(server, key="") as raw:
        await raw.send({"newConnection": {"apiKey": "x" * 8000}})  # over the 4 KiB allowed
        with pytest.raises(ConnectionClosed) as closed:
            await raw.recv()
        assert closed.value.sent is not None and closed.value.sent.code == 1009


async def test_before_authentication_nothing_but_newconnection_is_validated() -> None:
    async with running(FixedBackend()) as server, client(server, key="") as raw:
        task = new_uuid()
        bad = {"taskUUID": task, "promptText": "x", "gScale": 99, **{f"x{i}": i for i in range(40)}}
        await raw.send({"newTask": bad})
        error = await raw.recv()
        assert (error["errorId"], error["taskUUID"]) == (1014, task)  # not 1001: unread
        assert len(orjson.dumps(error)) < 200


async def test_a_socket_that_never_authenticates_is_closed_after_the_handshake_timeout() -> None:
    async with running(FixedBackend(), handshake_timeout=0.2) as server:
        async with client(server, key="") as raw:
            with anyio.fail_after(5):
                error = await raw.recv()
                assert error["errorId"] == 1014 and "within 0.2 s" in error["errorMessage"]
                with pytest.raises(ConnectionClosed):
                    await raw.recv()
        async with client(server) as raw:  # an authenticated one stays
            await anyio.sleep(0.4)  # (past the timeout, on purpose: nothing may happen)
            task = await raw.task()
            assert len(await raw.images(task, 1)) == 1


async def test_a_bad_newconnection_closes_the_socket() -> None:
    async with running(FixedBackend()) as server, client(server, key="") as raw:
        await raw.send({"newConnection": {"apiKey": "key-a", "extensions": "seed"}})
        assert (await raw.recv())["errorId"] == 1001
        with pytest.raises(ConnectionClosed):
            await raw.recv()


# -- sizes ---------------------------------------------------------------------------------


async def test_lists_strings_and_error_reports_are_bounded() -> None:
    async with running(FixedBackend()) as server, client(server) as raw:
        lora = [{"modelId": "civitai:1@2", "weight": 0.5}] * 5_000  # under the 1 MiB gate
        task = await raw.task(lora=lora)
        error = await raw.recv()
        assert error["taskUUID"] == task and "at most 8 items (got 5000)" in error["errorMessage"]
        task = await raw.task(modelId="civitai:" + "1" * 300 + "@2")
        assert "at most 256 characters" in (await raw.recv())["errorMessage"]
        task = await raw.task(**{f"extra{i}": i for i in range(200)})
        error = await raw.recv()
        assert "and 192 more broken rule(s)" in error["errorMessage"]
        assert len(error["errorMessage"]) < 2000


async def test_frames_json_refuses_are_malformed() -> None:
    async with running(FixedBackend()) as server, client(server) as raw:
        for text in ('{"newTask": {"gScale": NaN}}', '{"newTask": {"promptText": "\\ud800"}}'):
            await raw.send(text)
            assert (await raw.recv())["errorId"] == 1008


class BigBackend(CountingBackend):
    """Each result a 256 KiB image, so a few fill any socket buffer."""

    def run(self, job: Job, ctx: JobContext) -> None:
        self.runs += 1
        data = b"\xff\xd8\xff" + bytes(256 * 1024)
        assert isinstance(job.request, NewTask)
        for index in range(job.request.number_results):
            ctx.emit(ImageOutput(index, data, "jpeg", 8, 8, job.seed + index))


def never_reading_socket(url: str) -> socket.socket:
    # A small receive buffer, and nobody reading it: the server's writes back up.
    host, port = url.removeprefix("ws://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade"
        "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
        "\r\n\r\n".encode()
    )
    return sock


def masked(frame: dict[str, Any]) -> bytes:
    payload = orjson.dumps(frame)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def test_a_client_that_never_reads_is_paced_then_dropped_and_resumes_with_nothing_lost() -> (
    None
):
    backend = BigBackend()
    limits = ServerLimits(outbox_soft_bytes=1 * 2**20, outbox_hard_bytes=3 * 2**20)
    async with running(backend, limits=limits, workers=1) as server:
        sock = never_reading_socket(server.url)
        sock.sendall(masked({"newConnection": {"apiKey": "key-a", "extensions": ["resume"]}}))
        reply = b""
        while b"connectionSessionUUID" not in reply or not reply.endswith(b"}}"):
            reply += await anyio.to_thread.run_sync(sock.recv, 4096)
        session = json.loads(reply[reply.index(b"{") :])["newConnectionSessionUUID"]
        tasks = [new_uuid() for _ in range(6)]  # 4 MiB of base64 each, 24 in all
        for task in tasks:
            body = {"taskUUID": task, "promptText": "a fox", "returnBase64Image": True}
            body |= {"useCache": False, "numberResults": 12}
            sock.sendall(masked({"newTask": body}))
        with anyio.fail_after(20):
            await server.wait_connections(0)  # dropped past the hard limit
        assert backend.runs < len(tasks)  # the lane waited while the outbox was full
        sock.close()
        async with connect(server.url, max_size=None) as ws:
            resume = {"apiKey": "key-a", "connectionSessionUUID": session["connectionSessionUUID"]}
            await ws.send(json.dumps({"newConnection": {**resume, "extensions": ["resume"]}}))
            known = json.loads(await ws.recv())["newConnectionSessionUUID"]["knownTaskUUIDs"]
            assert set(known) <= set(tasks)
            for task in set(tasks) - set(known):  # what the server never accepted
                body = {"taskUUID": task, "promptText": "a fox", "useCache": False}
                body["numberResults"] = 12
                await ws.send(json.dumps({"newTask": body}))
            images: set[str] = set()
            with anyio.fail_after(30):
                while len(images) < 12 * len(tasks):
                    frame = json.loads(await ws.recv())
                    images |= {i["imageUUID"] for i in frame.get("newImages", {}).get("images", ())}
        assert backend.runs == len(tasks)  # each made once


# -- images --------------------------------------------------------------------------------


def blank_png(side: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


async def test_image_bombs_are_refused_before_decoding_and_upscales_are_bounded() -> None:
    limits = ServerLimits(max_image_pixels=1024 * 1024)
    async with running(limits=limits) as server, client(server) as raw:
        task = await raw.task("newImageUpload", imageBase64=blank_png(1025))  # tiny bytes
        error = await raw.reply("newUploadedImageUUID", task)
        assert error["errorId"] == 1001 and "more than the 1048576 pixels" in error["errorMessage"]
        eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n").decode()
        task = await raw.task("newImageUpload", imageBase64=eps)
        error = await raw.reply("newUploadedImageUUID", task)
        assert "not a readable PNG, JPEG or WebP" in error["errorMessage"]
        task = await raw.task("newImageUpload", imageBase64=blank_png(600))
        uploaded = (await raw.reply("newUploadedImageUUID", task))["newUploadedImageUUID"]
        task = await raw.task("newUpscaleGan", imageUUID=uploaded["newImageUUID"], upscaleFactor=2)
        error = await raw.reply("newUpscaleGan", task)
        assert error["errorId"] == 1011 and "1200x1200" in error["errorMessage"]


# -- guide images by URL -------------------------------------------------------------------


async def test_guides_by_url_are_counted_and_a_trickling_one_holds_no_worker() -> None:
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"\x89")
            self.wfile.flush()
            release.wait(10)

        def log_message(self, *args: object) -> None:
            pass

    http_server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http_server.server_port}/guide.png"
    limits = ServerLimits(max_fetched_images=2, fetch_timeout=1.0)
    try:
        async with (
            running(FixedBackend(), limits=limits, workers=1, allow_private_uploads=True) as server,
            client(server) as raw,
        ):
            guide = {"preprocessor": "canny", "weight": 1, "startStep": 0, "endStep": 10}
            guides = [{**guide, "guideImageUrl": url}] * 3
            task = await raw.task(taskType=9, controlNet=guides)
            error = await raw.recv()
            assert error["errorId"] == 1011 and error["taskUUID"] == task
            assert "at most 2 images by URL" in error["errorMessage"]
            slow = await raw.task(
                "newPreProcessControlNet", preProcessorType="canny", guideImageUrl=url
            )
            quick = await raw.task()
            assert len(await raw.images(quick, 1)) == 1  # the one worker was free
            error = await raw.reply("newPreProcessControlNet", slow)
            assert error["errorId"] == 1007 and "within 1 s" in error["errorMessage"]
    finally:
        release.set()
        http_server.shutdown()
        http_server.server_close()


# -- tenants -------------------------------------------------------------------------------


async def test_one_key_can_neither_overwrite_nor_read_anothers_images_or_cache() -> None:
    async with running() as server:
        task = new_uuid()
        async with client(server, "key-a") as a:
            await a.task(taskUUID=task, promptText="a red square", seed=5)
            (mine,) = await a.images(task, 1)
        async with client(server, "key-b") as b:
            await b.task(taskUUID=task, promptText="a blue circle", seed=6)
            (theirs,) = await b.images(task, 1)
            again = await b.task(promptText="a red square", seed=5)
            (fresh,) = await b.images(again, 1)
        assert mine["imageUUID"] != theirs["imageUUID"]
        assert mine["imageUUID"] != image_uuid_for(task, 0)  # scoped, not the bare derivation
        assert "imageAltText" not in fresh and fresh["cost"] > 0  # made, not key a's cached one
        async with httpx.AsyncClient() as http:
            first = (await http.get(mine["imageSrc"])).content
            second = (await http.get(theirs["imageSrc"])).content
        assert first != second


# -- connections and HTTP -----------------------------------------------------------------


async def test_past_the_connection_limit_new_sockets_are_refused_cleanly() -> None:
    async with running(FixedBackend(), max_connections=2) as server:
        async with client(server), client(server):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.url):
                    pass
            assert refused.value.response.status_code == 503
        await server.wait_connections(0)
        async with client(server) as raw:  # room again
            assert len(await raw.images(await raw.task(), 1)) == 1


async def test_hosting_answers_head_without_a_body_and_other_methods_with_405() -> None:
    async with running() as server, client(server) as raw:
        task = await raw.task()
        (image,) = await raw.images(task, 1)
        async with httpx.AsyncClient() as http:
            head = await http.head(image["imageSrc"])
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["Content-Length"]) > 0
            post = await http.post(image["imageSrc"])  # (a body is refused before this)
            assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"


async def test_accept_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    async with running(FixedBackend()):
        for _ in range(50):  # what the loop logs at each failed accept() when out of fds
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
        logging.getLogger("asyncio").error("something else")
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert messages == ["socket.accept() out of system resource", "something else"]


async def test_a_big_frame_must_be_an_upload_and_an_upload_may_be_big() -> None:
    limits = ServerLimits(max_structured_frame_bytes=64 * 1024)
    async with running(limits=limits) as server, client(server) as raw:
        await raw.task(promptText="x" * 70_000)  # refused unparsed, whatever it holds
        error = await raw.recv()
        assert error["errorId"] == 1011 and "for newImageUpload only" in error["errorMessage"]
        out = io.BytesIO()
        noise = Image.frombytes("RGB", (200, 200), bytes(range(256)) * 468 + bytes(192))
        noise.save(out, "PNG", compress_level=0)
        assert len(out.getvalue()) > 100 * 1024
        task = await raw.task(
            "newImageUpload", imageBase64=base64.b64encode(out.getvalue()).decode()
        )
        reply = await raw.reply("newUploadedImageUUID", task)
        assert "newUploadedImageUUID" in reply, reply


async def test_fragmented_binary_and_back_to_back_messages_all_arrive_in_order() -> None:
    # The server reads messages straight off its parser: a message split across frames, one
    # sent as binary, and frames sent before the server has read anything all count whole;
    # one worker runs them in the order they were read.
    async with running(workers=1) as server, connect(server.url, compression=None) as ws:
        first, second = new_uuid(), new_uuid()
        auth = orjson.dumps({"newConnection": {"apiKey": "key-a"}})
        task = orjson.dumps({"newTask": {"taskUUID": first, "promptText": "a fox", "taskType": 1}})
        await ws.send(auth.decode())
        await ws.send([task[:7].decode(), task[7:30].decode(), task[30:].decode()])
        await ws.send(
            orjson.dumps({"newTask": {"taskUUID": second, "promptText": "a cat", "taskType": 1}})
        )
        frames = [orjson.loads(await ws.recv())]
        assert "newConnectionSessionUUID" in frames[0], frames[0]
        seen: list[str] = []
        while len(seen) < 2:
            frame = orjson.loads(await ws.recv())
            assert "error" not in frame, frame
            for image in frame.get("newImages", {}).get("images", ()):
                if image["taskUUID"] not in seen:
                    seen.append(image["taskUUID"])
        assert seen == [first, second]
