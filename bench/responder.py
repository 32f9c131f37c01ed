"""A minimal responder: answers every task at once with one frame, so a client's cost shows.

Speaks just enough of the protocol for the throughput bench: ``newConnection`` gets a
session, ``ping`` a pong, ``newTask`` one ``newImages`` frame with ``numberResults``
images (the five legacy keys). No validation, no queue, no compression.

It speaks the current Runware dialect too, to a socket whose frames are arrays: each
array is answered at once with one ``{"data": [...]}`` frame holding the answer to every
task in it (authentication, ping, and ``numberResults`` images for an imageInference,
whatever its ``deliveryMethod``: the results are in the first frame, so no client polls).

With ``--silent`` it answers no task: every task a client sends stays in flight, for the
memory rows of ``bench/throughput.py``. ``{"count": {"atLeast": N}}`` is answered
``{"count": M}`` once M >= N tasks have arrived on all sockets together, so a bench knows
when its frames are all out of the client.

Run: python bench/responder.py [--port 0] [--cpu N] [--silent]; prints ``listening on ws://...``.
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


class _Mode:
    silent = False  # --silent: tasks are counted, never answered
    received = 0  # tasks received (counted in silent mode only)
    arrived: asyncio.Event | None = None  # set (and replaced) at each task received


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


def _current(tasks: list[dict[str, object]]) -> bytes:
    items: list[dict[str, object]] = []
    for task in tasks:
        kind, task_uuid = task.get("taskType"), str(task.get("taskUUID"))
        if kind == "imageInference":
            count = task.get("numberResults", 1)
            for i in range(count if isinstance(count, int) else 1):
                image_uuid = task_uuid[:-4] + f"{i:04x}"
                items.append({"taskType": kind, "taskUUID": task_uuid, "imageUUID": image_uuid,
                              "imageURL": f"http://127.0.0.1/images/{image_uuid}.jpg",
                              "cost": 0.0001})  # fmt: skip
        elif kind == "authentication":
            items.append({"taskType": kind, "connectionSessionUUID": str(uuid.uuid4())})
        elif kind == "ping":
            items.append({"taskType": kind, "pong": True})
    return orjson.dumps({"data": items})


async def _answer(ws: ServerConnection) -> None:
    async for data in ws:
        message = orjson.loads(data)
        if isinstance(message, list):
            if not _Mode.silent or not any(t.get("taskType") == "imageInference" for t in message):
                await ws.send(_current(message), text=True)
            continue
        if "newTask" in message:
            body = message["newTask"]
            if _Mode.silent:
                _Mode.received += 1
                if _Mode.arrived is not None:
                    _Mode.arrived.set()
                    _Mode.arrived = None
                continue
            frame = _images(body["taskUUID"], body.get("numberResults", 1))
        elif "count" in message:
            frame = await _count(message["count"].get("atLeast", 0))
        elif "ping" in message:
            frame = _PONG
        elif "newConnection" in message:
            session = {"connectionSessionUUID": str(uuid.uuid4())}
            frame = orjson.dumps({"newConnectionSessionUUID": session})
        else:
            continue
        await ws.send(frame, text=True)


async def _count(at_least: int) -> bytes:
    while _Mode.received < at_least:
        if _Mode.arrived is None:
            _Mode.arrived = asyncio.Event()
        await _Mode.arrived.wait()
    return orjson.dumps({"count": _Mode.received})


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
    parser.add_argument("--silent", action="store_true", help="answer no task")
    args = parser.parse_args()
    _Mode.silent = args.silent
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(main(args.port))
