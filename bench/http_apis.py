"""The reference server's HTTP APIs under load: 500 concurrent requests of each seed API.

``orchestrator serve --backend fixed --workers 1`` runs in its own process (image work
excluded: one tiny pre-encoded image); for each API this process sends ``--requests`` (500)
requests at once, each on its own keep-alive connection, and prints requests/s, p50 and p99
latency, the server's CPU per request, the errors (any answer that is not that API's
success) and the images it got against those it asked for (none lost). The requests are
built once by httpx and written as raw bytes by a minimal asyncio HTTP/1.1 client: httpx
itself spends ~10 ms of CPU per request here, ten times the server's, and would be what
is measured. The WebSocket path's figures before and after the HTTP APIs came are
``python bench/compare.py BASELINE_TREE --server``.

Run: python bench/http_apis.py [--requests 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from PIL import Image
from procstat import cpu_seconds

KEY = "bench-key"


@dataclass
class Api:
    name: str
    request: httpx.Request  # built once; its bytes are what each connection writes
    images: Callable[[dict[str, Any]], int]  # images in a success answer, 0 otherwise
    per_request: int  # images each request asks for


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (512, 512), (30, 60, 90)).save(out, "PNG")
    return out.getvalue()


def apis(base: str) -> list[Api]:
    bearer = {"Authorization": f"Bearer {KEY}"}
    aki = {"key": KEY, "prompt": "a lighthouse", "width": 512, "height": 512}
    modelslab = {"key": KEY, "prompt": "a lighthouse", "samples": "2", "enhance_prompt": "no"}
    form = {"prompt": "black hair", "image_strength": "0.35", "steps": "20"}
    minimal = {"prompt": "red cat wearing a purple hat"}  # Stablecog's own minimal request
    return [
        Api(
            "akiio",
            httpx.Request("POST", f"{base}/api/call/sdxl", json=aki),
            lambda a: len(a.get("images", [])) if a.get("success") else 0,
            1,
        ),
        Api(
            "modelslab",
            httpx.Request("POST", f"{base}/api/v6/images/text2img", json=modelslab),
            lambda a: len(a.get("output", [])) if a.get("status") == "success" else 0,
            2,
        ),
        Api(
            "imagetoimage",
            httpx.Request(
                "POST",
                f"{base}/api/generate/basic/imageToImage",
                data=form,
                files={"init_image": ("init.png", _png())},
                headers={"Authorization": KEY},
            ),
            lambda a: 1 if a.get("code") == 0 else 0,
            1,
        ),
        Api(
            "stablecog",
            httpx.Request(
                "POST", f"{base}/v1/image/generation/create", json=minimal, headers=bearer
            ),
            lambda a: len(a.get("outputs", [])),
            4,
        ),
    ]


def raw(request: httpx.Request) -> bytes:
    """The request as HTTP/1.1 bytes."""
    body = request.read()
    head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(host: str, port: int, data: bytes) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        return status, await reader.readexactly(length)
    finally:
        writer.close()


@contextmanager
def server() -> Iterator[tuple[str, int]]:
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0", "--backend"]
    command += ["fixed", "--api-key", KEY, "--workers", "1", "--max-queue", "100000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline(), process.stdout.readline()]
            if not lines[1].startswith("http on "):
                raise RuntimeError(f"server did not start: {lines!r}")
            yield lines[1].split()[-1], process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


async def load(api: Api, requests: int) -> tuple[float, float, float, int, int]:
    """(requests/s, p50 ms, p99 ms, errors, images) for ``requests`` sent at once."""
    data = raw(api.request)
    host, port = api.request.url.host, api.request.url.port or 80
    latencies: list[float] = []
    errors = images = 0

    async def one() -> None:
        nonlocal errors, images
        start = time.perf_counter()
        try:
            status, body = await exchange(host, port, data)
            got = api.images(orjson.loads(body)) if status == 200 else 0
        except (OSError, ValueError, asyncio.IncompleteReadError):
            got = 0
        latencies.append(time.perf_counter() - start)
        errors += got != api.per_request
        images += got

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1e3
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
    return requests / elapsed, p50, p99, errors, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.requests} concurrent requests per API, fixed backend, median of {args.repeats}")
    header = f"{'api':<13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'srv us/req':>10}"
    print(f"{header} {'errors':>7} {'images':>13}")
    with server() as (base, pid):
        for api in apis(base):
            runs, cpu = [], 0.0
            for _ in range(args.repeats):
                before = cpu_seconds(pid)
                runs.append(asyncio.run(load(api, args.requests)))
                cpu += cpu_seconds(pid) - before
            rate = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs)
            p99 = statistics.median(r[2] for r in runs)
            errors = sum(r[3] for r in runs)
            images = sum(r[4] for r in runs)
            wanted = api.per_request * args.requests * args.repeats
            per = cpu / (args.requests * args.repeats) * 1e6
            row = f"{api.name:<13} {rate:>8.0f} {p50:>8.1f} {p99:>8.1f} {per:>10.0f} {errors:>7}"
            print(f"{row} {images:>6}/{wanted}")


if __name__ == "__main__":
    main()
