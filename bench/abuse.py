"""Attacks on the reference server, on loopback, with figures: stalls, memory, replies.

Each attack runs against a fresh ``orchestrator serve`` in its own process (from this tree,
or from ``--tree`` to measure another checkout the same way):

- ``unauthenticated 16 MiB frame``: a socket that never authenticated sends one 16 MiB frame
  while a prober, authenticated, pings; prints the prober's longest round trip (the event
  loop's stall; target under 50 ms) and the size of the reply the attacker got.
- ``authenticated 16 MiB frame``: the same frame from an authenticated socket (it is
  refused, the array too long; what remains is parsing it).
- ``never-reading client``: authenticates, asks for 1,000 base64 results, never reads; prints
  the server's RSS growth (target under 64 MiB) and whether the server dropped the socket.
- ``idle unauthenticated sockets``: 1,000 sockets finish the WebSocket handshake and say
  nothing; prints the RSS growth and how many the server had closed after its handshake
  timeout (target: all).
- ``16-megapixel upload upscaled``: uploads a 4096x4096 PNG (a few KiB compressed) and asks
  for a 4x upscale; prints the RSS growth and the reply (target: refused or bounded).

Run: python bench/abuse.py [--tree PATH] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image
from procstat import cpu_seconds, rss_mib
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
KEY = "abuse-key"
MiB = 2**20


@contextmanager
def server(tree: Path, *extra: str) -> Iterator[tuple[str, int]]:
    """``orchestrator serve`` from ``tree``; yields (url, pid)."""
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"]
    command += ["--api-key", KEY, "--workers", "1", *extra]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # In the tree's own directory: ``python -m`` puts the working directory first on the path.
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tree) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"server did not start: {line!r}")
            yield line.split()[-1], process.pid
        finally:
            process.kill()
            process.wait(30)
            if process.stdout is not None:
                process.stdout.close()


# -- a raw WebSocket client that reads only when told to ------------------------------------


def raw_socket(url: str) -> socket.socket:
    """A socket past the WebSocket handshake; frames are written by hand and never read."""
    host, port = url.removeprefix("ws://").split(":")
    sock = socket.create_connection((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    if b" 101 " not in response.split(b"\r\n", 1)[0]:
        raise ConnectionError(response.split(b"\r\n", 1)[0].decode())
    return sock


def text_frame(payload: bytes) -> bytes:
    """One masked text frame (a zero mask: the bytes go as they are)."""
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 2**16:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def read_some(sock: socket.socket, timeout: float) -> bytes:
    """What arrives within ``timeout``, ending 0.2 s after the last chunk."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            sock.settimeout(0.2)
    except (TimeoutError, ConnectionError):
        pass
    return data


# -- attacks -------------------------------------------------------------------------------


async def prober(url: str, stop: asyncio.Event) -> float:
    """Ping as fast as the server answers; return the longest round trip in ms."""
    longest = 0.0
    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"newConnection": {"apiKey": KEY}}))
        await ws.recv()
        while not stop.is_set():
            started = time.perf_counter()
            await ws.send('{"ping": true}')
            await ws.recv()
            longest = max(longest, time.perf_counter() - started)
            await asyncio.sleep(0.001)
    return longest * 1e3


def lora_flood() -> bytes:
    # A 16 MiB newTask of tiny lora entries: the most parsing and validation per byte.
    entry = b'{"modelId":"civitai:1@2","weight":0.5},'
    count = (16 * MiB - 200) // len(entry)
    body = b'{"newTask":{"taskUUID":"%s","promptText":"x","lora":[' % str(uuid.uuid4()).encode()
    return body + entry * (count - 1) + entry[:-1] + b"]}}"


async def unauthenticated_frame(tree: Path, authenticate: bool = False) -> str:
    payload = lora_flood()
    with server(tree) as (url, _pid):
        stop = asyncio.Event()
        probe = asyncio.create_task(prober(url, stop))
        await asyncio.sleep(0.3)
        sock = await asyncio.to_thread(raw_socket, url)
        if authenticate:
            sock.sendall(text_frame(json.dumps({"newConnection": {"apiKey": KEY}}).encode()))
            await asyncio.to_thread(read_some, sock, 0.5)
        started = time.perf_counter()
        await asyncio.to_thread(sock.sendall, text_frame(payload))
        reply = await asyncio.to_thread(read_some, sock, 5.0)
        elapsed = time.perf_counter() - started
        stop.set()
        stall = await probe
        sock.close()
    return (
        f"longest ping round trip {stall:.0f} ms (target < 50); reply {len(reply)} bytes "
        f"after {elapsed:.1f} s to a {len(payload) / MiB:.0f} MiB frame"
    )


async def never_reading(tree: Path) -> str:
    with server(tree) as (url, pid):
        sock = await asyncio.to_thread(raw_socket, url)
        sock.sendall(text_frame(json.dumps({"newConnection": {"apiKey": KEY}}).encode()))
        await asyncio.sleep(0.5)
        before = rss_mib(pid)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(50):
            task = {"taskUUID": str(uuid.uuid4()), "promptText": "a noisy field of colour"}
            task |= {"numberResults": 20, "returnBase64Image": True, "sizeId": 11}
            task |= {"useCache": False}
            sock.sendall(text_frame(json.dumps({"newTask": task}).encode()))
        peak, dropped = before, False
        busy, idle_for = cpu_seconds(pid), 0
        for _ in range(300):  # until the server goes idle: all made, paused or dropped
            await asyncio.sleep(0.5)
            peak = max(peak, rss_mib(pid))
            now = cpu_seconds(pid)
            idle_for = idle_for + 1 if now - busy < 0.05 else 0
            busy = now
            if idle_for >= 4:
                break
        try:
            sock.setblocking(False)
            dropped = sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            dropped = False
        except OSError:
            dropped = True
        sock.close()
    return (
        f"server RSS {before:.0f} -> peak {peak:.0f} MiB (+{peak - before:.0f}, target < 64); "
        f"socket dropped by the server: {dropped}"
    )


async def idle_sockets(tree: Path, count: int = 1000) -> str:
    with server(tree) as (url, pid):
        await asyncio.sleep(0.3)
        before = rss_mib(pid)
        socks = []
        for _ in range(count):
            socks.append(await asyncio.to_thread(raw_socket, url))
        opened = rss_mib(pid)
        await asyncio.sleep(12)  # past a handshake timeout of 10 s
        closed = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                sock.recv(65536)  # end of stream, or the server's close frame
                closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            sock.close()
    return (
        f"{count} sockets: server RSS {before:.0f} -> {opened:.0f} MiB "
        f"(+{opened - before:.0f}); closed by the server after 12 s: {closed}"
    )


def big_png(side: int = 4096) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (40, 90, 200)).save(out, "PNG", optimize=True)
    return out.getvalue()


async def upscale_bomb(tree: Path) -> str:
    data = big_png()
    with server(tree) as (url, pid):
        async with connect(url, max_size=None, ping_interval=None) as ws:
            await ws.send(json.dumps({"newConnection": {"apiKey": KEY}}))
            await ws.recv()
            before = rss_mib(pid)
            upload = {"taskUUID": str(uuid.uuid4()), "imageBase64": base64.b64encode(data).decode()}
            await ws.send(json.dumps({"newImageUpload": upload}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
            image_uuid = (reply.get("newUploadedImageUUID") or {}).get("newImageUUID")
            peak = rss_mib(pid)
            if image_uuid is None:
                growth = peak - before
                return f"upload of {len(data)} bytes answered {str(reply)[:120]}; +{growth:.0f} MiB"
            task = {"taskUUID": str(uuid.uuid4()), "imageUUID": image_uuid, "upscaleFactor": 4}
            await ws.send(json.dumps({"newUpscaleGan": task}))
            watch = asyncio.create_task(asyncio.wait_for(ws.recv(), 120))
            while not watch.done():
                peak = max(peak, rss_mib(pid))
                await asyncio.sleep(0.1)
            try:
                answer = str(watch.result())[:120]
            except Exception as exc:  # the server may die or time out
                answer = f"{type(exc).__name__}"
    return (
        f"a {len(data) // 1024} KiB 16-megapixel PNG, upscaled 4x: server RSS {before:.0f} -> "
        f"peak {peak:.0f} MiB (+{peak - before:.0f}); reply {answer}"
    )


async def authenticated_frame(tree: Path) -> str:
    return await unauthenticated_frame(tree, authenticate=True)


ATTACKS: dict[str, Callable[[Path], Awaitable[str]]] = {
    "unauthenticated 16 MiB frame": unauthenticated_frame,
    "authenticated 16 MiB frame": authenticated_frame,
    "never-reading client": never_reading,
    "idle unauthenticated sockets": idle_sockets,
    "16-megapixel upload upscaled": upscale_bomb,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to attack")
    parser.add_argument("--only", choices=sorted(ATTACKS), help="one attack")
    args = parser.parse_args()
    print(f"tree: {args.tree}")
    for name, attack in ATTACKS.items():
        if args.only and name != args.only:
            continue
        try:
            figure = asyncio.run(attack(args.tree))
        except Exception as exc:
            figure = f"the attack failed: {type(exc).__name__}: {exc}"
        print(f"{name}: {figure}", flush=True)


if __name__ == "__main__":
    main()
