"""Record the frames the vendor's current SDK exchanges with our server, both ways.

Usage (from the repository root, with .runware-venv made as .ci/run makes it):
    .venv/bin/python tests/runware/record.py > tests/fixtures/runware-sdk-frames.jsonl

Starts our server, a relay in front of it that writes every frame as one JSON line
(``{"from": "client" | "server", "frame": ...}``), and runs sdk_client.py through the
relay. The API key is replaced by a placeholder in what is written.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import websockets

from orchestrator.server import ReferenceServer, ServerConfig

HERE = Path(__file__).parent
KEY = "key-a"


async def main() -> None:
    lines: list[str] = []

    async def relay(client: websockets.ServerConnection) -> None:
        async with websockets.connect(server.url, max_size=None) as upstream:

            async def pump(source, sink, side: str) -> None:  # type: ignore[no-untyped-def]
                async for frame in source:
                    text = frame if isinstance(frame, str) else frame.decode()
                    lines.append(json.dumps({"from": side, "frame": json.loads(text)}))
                    await sink.send(frame)

            pumps = [
                asyncio.create_task(pump(client, upstream, "client")),
                asyncio.create_task(pump(upstream, client, "server")),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pumps:  # one side closed: so does the other
                task.cancel()

    config = ServerConfig(api_keys=(KEY,), http_port=None, backend="fixed")
    async with ReferenceServer(config) as server, websockets.serve(relay, "127.0.0.1", 0) as front:
        port = front.sockets[0].getsockname()[1]
        python = HERE.parent.parent / ".runware-venv" / "bin" / "python"
        await asyncio.to_thread(
            subprocess.run,
            [str(python), str(HERE / "sdk_client.py"), f"ws://127.0.0.1:{port}", KEY],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    for line in lines:
        print(line.replace(f'"apiKey": "{KEY}"', '"apiKey": "REDACTED"'))


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
