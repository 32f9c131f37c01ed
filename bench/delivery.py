"""Delivery: 2,000 images of ~100 KB pushed to a local HTTP sink, images/s and memory.

Three processes on 127.0.0.1: the reference server with a backend that emits one
pre-encoded ~100 KB JPEG at once (so the server is not what is measured), an HTTP sink
that reads and discards every PUT, and the client. Each client mode runs in its own process
(so each has its own peak RSS), twice, interleaved:

- ``results only``: ``orch.map`` over the tasks, no sink (the baseline);
- ``fetch + PUT``: the same with the sink: each image fetched from its URL, then PUT;
- ``inline + PUT``: images sent inline (``return_base64_image``), then PUT.

Prints images/s (and the ratio to the baseline of the same round) and the client's RSS and
peak RSS after 500 and after 2,000 images: delivery must not grow with the count.

Run: python bench/delivery.py [--images 2000] [--rounds 2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("results only", "fetch + PUT", "inline + PUT")


def _noise_jpeg(target: int = 100_000) -> bytes:
    # Noise does not compress: a JPEG of random pixels near ``target`` bytes.
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    side = 128
    while True:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=90)
        if out.tell() >= target:
            return out.getvalue()
        side += 16


def serve() -> None:
    """The reference server with a backend that emits one ~100 KB JPEG at once."""
    import anyio

    from orchestrator.server import ImageOutput, Job, JobContext, ReferenceServer, ServerConfig

    data = _noise_jpeg()

    class NoiseBackend:
        name = "noise"
        blocking = False

        def run(self, job: Job, ctx: JobContext) -> None:
            ctx.emit(ImageOutput(0, data, "jpeg", 1, 1, job.seed))

    async def main() -> None:
        config = ServerConfig(
            api_keys=("bench",), port=0, workers=1, max_store_bytes=2**31, image_ttl=600
        )
        async with ReferenceServer(config, backend=NoiseBackend()) as server:  # type: ignore[arg-type]
            print(server.url, len(data), flush=True)
            await anyio.sleep_forever()

    anyio.run(main)


def sink() -> None:
    """An HTTP sink that reads every PUT and keeps nothing but the count."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            remaining = int(self.headers.get("Content-Length", "0"))
            while remaining:
                remaining -= len(self.rfile.read(min(remaining, 65536)))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


def client(mode: str, url: str, sink_url: str, images: int, concurrency: int) -> None:
    """One mode's run; prints a JSON line of its figures."""
    import anyio
    from procstat import rss_mib

    from orchestrator import Config, DeliverySettings, Orchestrator, TextToImage

    def memory() -> dict[str, float]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"rss": rss_mib(os.getpid()), "peak": peak}

    async def main() -> dict[str, Any]:
        sinks = [] if mode == "results only" else [f"{sink_url}/{{task_uuid}}.{{ext}}"]
        inline = mode == "inline + PUT"
        config = Config(delivery=DeliverySettings(concurrency=concurrency))
        figures: dict[str, Any] = {"mode": mode}
        async with Orchestrator(url, api_key="bench", config=config, deliver_to=sinks) as orch:
            tasks = (
                TextToImage(prompt=f"noise {i}", return_base64_image=inline or None)
                for i in range(images)
            )
            start, cpu, done = time.perf_counter(), time.process_time(), 0
            async for result in orch.map(tasks, concurrency=64):
                done += 1
                assert all(d.ok for d in result.image.deliveries), result.image.deliveries
                if done in (500, images):
                    figures[f"at {done}"] = memory()
            figures["rate"] = images / (time.perf_counter() - start)
            figures["cpu_ms"] = (time.process_time() - cpu) / images * 1000
        return figures

    print(json.dumps(anyio.run(main)), flush=True)


@contextmanager
def child(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def run_client(mode: str, url: str, sink_url: str, images: int, concurrency: int) -> Any:
    args = ["--client", mode, "--url", url, "--sink-url", sink_url]
    args += ["--images", str(images), "--concurrency", str(concurrency)]
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="DeliverySettings")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sink-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.sink:
        return sink()
    if args.client:
        return client(args.client, args.url, args.sink_url, args.images, args.concurrency)
    runs: dict[str, list[Any]] = {mode: [] for mode in MODES}
    with child("--serve") as (_, served), child("--sink") as (_, sink_url):
        url, size = served.split()
        print(f"{args.images} images of {int(size):,} bytes, concurrency {args.concurrency}")
        for _ in range(args.rounds):
            for mode in MODES:
                runs[mode].append(run_client(mode, url, sink_url, args.images, args.concurrency))
    base = statistics.median(r["rate"] for r in runs["results only"])
    for mode in MODES:
        rate = statistics.median(r["rate"] for r in runs[mode])
        cells = []
        for at in (500, args.images):
            rss = statistics.median(r[f"at {at}"]["rss"] for r in runs[mode])
            peak = statistics.median(r[f"at {at}"]["peak"] for r in runs[mode])
            cells.append(f"at {at}: RSS {rss:6.1f} MiB peak {peak:6.1f}")
        cpu = statistics.median(r["cpu_ms"] for r in runs[mode])
        print(
            f"{mode:<13} {rate:7.0f} images/s {rate / base:5.2f}x  client {cpu:5.2f} ms/image  "
            + "  ".join(cells)
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    main()
