"""A minimal responder: answers every task at once with one frame, so a client's cost shows.

Speaks just enough of the protocol for the throughput bench: ``newConnection`` gets a
session, ``ping`` a pong, ``newTask`` one ``newImages`` frame with ``numberResults``
images (the five legacy keys). No validation, no queue, no compression.

Run: python bench/responder.py [--port 0] [--cpu N]; prints ``listening on ws://...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

_PONG = b'{"pong":true}'


def _images(task_uuid: str, count: int) -> bytes:
    images = [
        {
            "imageSrc": f"http://127.0.0.1/images/{task_uuid}-{i}.jpg",
            "imageUUID": task_uuid[:-4] + f"{i:04x}",
            "bNSFWContent": False,
            "taskUUID": task_uuid,
            "cost": 0.0001,
        }
        for i in range(count)
    ]
    return orjson.dumps({"newImages": {"images": images}})


async def _handle(ws: ServerConnection) -> None:
    try:
        await _answer(ws)
    except ConnectionClosed:
        pass  # clients that leave without a close frame (the legacy SDK) are no error here


async def _answer(ws: ServerConnection) -> None:
    async for data in ws:
        message = orjson.loads(data)
        if "newTask" in message:
            body = message["newTask"]
            frame = _images(body["taskUUID"], body.get("numberResults", 1))
        elif "ping" in message:
            frame = _PONG
        elif "newConnection" in message:
            session = {"connectionSessionUUID": str(uuid.uuid4())}
            frame = orjson.dumps({"newConnectionSessionUUID": session})
        else:
            continue
        await ws.send(frame, text=True)


async def main(port: int) -> None:
    async with serve(
        _handle, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, help="pin the process to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(main(args.port))
