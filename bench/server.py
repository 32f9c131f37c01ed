"""Throughput of the reference server, with and without the image work, in one run.

1. The procedural backend alone, in this process on one core: 512x512 images/s (render and
   JPEG encode), median of repeats.
2. The server in its own process (``orchestrator serve``), driven over loopback by a minimal
   websockets + orjson client with a dict of futures, keeping K tasks in flight for K = 1, 64
   and 1,024: tasks/s and p50/p99 latency, with the ``fixed`` backend (image work excluded:
   one tiny pre-encoded image) and the ``procedural`` one (512x512 images rendered).

Run: python bench/server.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from throughput import floor

from orchestrator.server import imaging

KEY = "bench-key"


def images_per_second_one_core(repeats: int = 5, images: int = 20) -> float:
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(images):
            pixels = imaging.render("a lighthouse at dusk", r * images + i, 512, 512, "4")
            imaging.encode(pixels, "jpeg")
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


@contextmanager
def server_process(backend: str) -> Iterator[str]:
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"]
    command += ["--backend", backend, "--api-key", KEY, "--max-queue", "100000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"server did not start: {line!r}")
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(timeout=30)


async def drive(url: str, total: int, in_flight: int) -> tuple[float, float, float]:
    """Run ``total`` tasks keeping ``in_flight`` outstanding; (tasks/s, p50 ms, p99 ms)."""
    run = await floor(url, total, in_flight)  # the minimal client of bench/throughput.py
    return run.rate, run.percentile(0.5), run.percentile(0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks, for a smoke run")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(f"procedural backend, one core: {images_per_second_one_core():.0f} images/s at 512x512")
    print()
    print(
        f"{'backend':<11} {'in flight':>9} {'tasks':>6} {'tasks/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for backend, base in (("fixed", 20_000), ("procedural", 600)):
        with server_process(backend) as url:
            for in_flight in (1, 64, 1024):
                total = (
                    max(int(base * scale), in_flight * 2)
                    if in_flight > 1
                    else int(base * scale / 10)
                )
                rate, p50, p99 = asyncio.run(drive(url, total, in_flight))
                print(
                    f"{backend:<11} {in_flight:>9} {total:>6} {rate:>9.0f} {p50:>8.1f} {p99:>8.1f}"
                )


if __name__ == "__main__":
    main()
