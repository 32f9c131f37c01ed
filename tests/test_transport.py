"""The WebSocket transport against a websockets server on 127.0.0.1, port 0."""

from __future__ import annotations

import http
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.utils import accept_key

from orchestrator import ConnectError, ConnectionClosed
from orchestrator.transport import Stream, WebSocketTransport

pytestmark = [pytest.mark.timeout(30)]

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler, **options: object) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **options) as srv:  # type: ignore[arg-type]
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def connect(url: str, *, max_frame: int = 2**20) -> Stream:
    return await WebSocketTransport().connect(url, max_frame=max_frame, compression=False)


async def receive_n(stream: Stream, n: int) -> list[bytes]:
    frames: list[bytes] = []
    while len(frames) < n:
        frames += await stream.receive()
    return frames


async def test_a_batch_goes_out_in_order_and_replies_come_back_in_order() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with server(echo) as url:
        stream = await connect(url)
        frames = [f'{{"n":{i}}}'.encode() for i in range(500)]
        await stream.send(frames)
        assert await receive_n(stream, 500) == frames
        await stream.aclose()


async def test_a_fragmented_message_arrives_whole() -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send(["[1,", "2,", "3]"])
        await ws.send("after")
        await ws.wait_closed()

    async with server(fragments) as url:
        stream = await connect(url)
        assert await receive_n(stream, 2) == [b"[1,2,3]", b"after"]
        await stream.aclose()


async def test_websocket_pings_from_the_server_are_answered() -> None:
    answered = anyio.Event()

    async def pinger(ws: ServerConnection) -> None:
        pong = await ws.ping()
        await pong
        answered.set()
        await ws.wait_closed()

    async with server(pinger) as url:
        stream = await connect(url)
        with anyio.fail_after(10):
            await answered.wait()
        await stream.aclose()


async def test_frames_before_a_close_are_delivered_then_closed_is_raised() -> None:
    async def goodbye(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send("two")
        await ws.close(1001, "going away")

    async with server(goodbye) as url:
        stream = await connect(url)
        assert await receive_n(stream, 2) == [b"one", b"two"]
        with pytest.raises(ConnectionClosed):
            await stream.receive()
        with pytest.raises(ConnectionClosed):
            await stream.send([b"late"])
        await stream.aclose()  # closing a closed stream is quiet


async def test_closing_runs_the_closing_handshake() -> None:
    codes: list[int | None] = []
    closed = anyio.Event()

    async def observe(ws: ServerConnection) -> None:
        await ws.wait_closed()
        codes.append(ws.close_code)
        closed.set()

    async with server(observe) as url:
        stream = await connect(url)
        await stream.aclose()
        with anyio.fail_after(10):
            await closed.wait()
    assert codes == [1000]


async def test_a_frame_over_the_limit_closes_the_stream() -> None:
    async def big(ws: ServerConnection) -> None:
        await ws.send("x" * 5000)
        await ws.wait_closed()

    async with server(big) as url:
        stream = await connect(url, max_frame=1000)
        with pytest.raises(ConnectionClosed):
            await stream.receive()
        await stream.aclose()


async def test_a_refused_handshake_is_a_connect_error() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(http.HTTPStatus.FORBIDDEN, "no\n")

    async def never(ws: ServerConnection) -> None:
        raise AssertionError("the handshake was refused")

    async with server(never, process_request=refuse) as url:
        with pytest.raises(ConnectError, match="403"):
            await connect(url)


async def test_nothing_listening_or_a_bad_url_is_a_connect_error() -> None:
    async with server(lambda ws: ws.wait_closed()) as url:
        pass  # the port is free again
    with pytest.raises(ConnectError):
        await connect(url)
    with pytest.raises(ConnectError, match="cannot connect"):
        await connect("http://127.0.0.1:1/")


async def test_request_headers_name_the_host() -> None:
    seen: list[Headers] = []

    async def look(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(ws.request.headers)
        await ws.wait_closed()

    async with server(look) as url:
        stream = await connect(url)
        await stream.send([b"{}"])
        await stream.aclose()
    assert seen and seen[0]["Host"] == url.removeprefix("ws://")


async def test_reading_pauses_past_the_high_water_mark_and_loses_nothing() -> None:
    frames = [f'{{"n":{i},"pad":"{"x" * 200}"}}'.encode() for i in range(300)]

    async def flood(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame.decode())
        await ws.wait_closed()

    async with server(flood) as url:
        transport = WebSocketTransport(read_high_water=1000)
        stream = await transport.connect(url, max_frame=2**20, compression=False)
        assert await receive_n(stream, 300) == frames
        await stream.aclose()


async def test_send_waits_while_the_peer_reads_nothing() -> None:
    read = anyio.Event()
    got: list[int] = []

    async def slow(ws: ServerConnection) -> None:
        await read.wait()
        async for message in ws:
            got.append(len(message))

    async with server(slow, max_queue=1, max_size=None) as url:
        stream = await connect(url)
        sent = anyio.Event()
        frame = b'"' + b"x" * (2**20 - 2) + b'"'

        async def send() -> None:
            await stream.send([frame] * 64)  # 64 MiB: more than the socket buffers hold
            sent.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            assert not sent.is_set()
            read.set()
        assert sent.is_set()
        await stream.aclose()
    assert got == [len(frame)] * 64


async def test_close_gives_up_on_a_peer_that_never_answers() -> None:
    accepted = anyio.Event()
    eof = anyio.Event()

    async def mute(client: anyio.abc.SocketStream) -> None:
        async with client:
            await answer_then_ignore(client)

    async def answer_then_ignore(client: anyio.abc.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await client.receive()
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = accept_key(key).encode()
        await client.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        accepted.set()
        try:
            while await client.receive():
                pass  # the close frame, unanswered
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            eof.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, mute)
        transport = WebSocketTransport(close_timeout=0.2)
        stream = await transport.connect(
            f"ws://127.0.0.1:{port}", max_frame=2**20, compression=False
        )
        await accepted.wait()
        with anyio.fail_after(10):
            await stream.aclose()  # returns after the close timeout, the socket dropped
            await eof.wait()
        tg.cancel_scope.cancel()


async def test_send_now_writes_the_first_frame_of_a_turn_and_leaves_the_rest_to_send() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with server(echo) as url:
        stream = await connect(url)
        assert stream.send_now(b'{"n":1}')  # written at once: a lone frame waits for nothing
        assert not stream.send_now(b'{"n":2}')  # the same turn: batched by send() instead
        await stream.send([b'{"n":2}'])
        await anyio.lowlevel.checkpoint()  # a new turn of the loop
        assert stream.send_now(b'{"n":3}')
        assert await receive_n(stream, 3) == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
        await stream.aclose()
        await anyio.lowlevel.checkpoint()
        assert not stream.send_now(b'{"n":4}')  # closed: nothing is sent
