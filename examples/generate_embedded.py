"""Generate images on the embedded reference server and save them: no account, no network.

    python examples/generate_embedded.py "a lighthouse at dusk" -n 4 --out out/

Starts the reference server in this process (127.0.0.1, a free port, a generated key),
drives the protocol's sans-I/O session over one websocket, and downloads each image from
the URL the server hosts it at.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from orchestrator.server import serve_embedded
from protocol import ImageReceived, NewTask, Session, TaskCompleted, TaskFailed


async def generate(prompt: str, count: int, out: Path, seed: int | None) -> list[Path]:
    saved: list[Path] = []
    async with serve_embedded() as server, connect(server.url) as ws, httpx.AsyncClient() as http:
        session = Session(server.api_key, extensions=["seed"])
        await ws.send(session.send_connect(), text=True)
        session.receive(await ws.recv())
        task = NewTask(
            task_uuid=str(uuid.uuid4()), prompt_text=prompt, number_results=count, seed=seed
        )
        await ws.send(session.send_task(task), text=True)
        while session.is_pending(task.task_uuid):
            for event in session.receive(await ws.recv()):
                if isinstance(event, ImageReceived):
                    image = event.image
                    path = out / f"{image.image_uuid}.{image.image_src.rsplit('.', 1)[1]}"
                    body = (await http.get(image.image_src)).content
                    await asyncio.to_thread(path.write_bytes, body)
                    print(f"{path}  seed={image.seed}  cost={image.cost}")
                    saved.append(path)
                elif isinstance(event, TaskFailed):
                    raise SystemExit(f"task failed: {event.error_message}")
                elif isinstance(event, TaskCompleted):
                    print(f"{len(event.images)} images in {out}/, cost {event.cost:.6f}")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("-n", "--number", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(generate(args.prompt, args.number, args.out, args.seed))


if __name__ == "__main__":
    main()
