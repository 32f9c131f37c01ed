"""Bulk runs on Ray: tasks/s of ``RayRun`` with 1 and 2 actors beside the single-process runner.

One ``orchestrator serve --backend fixed`` process (so the server's image work is not what is
measured); a local Ray cluster started once, before anything is timed. Per round,
interleaved, each mode runs ``--rows`` fresh prompts (so the server replays nothing) into a
new dataset directory:

- ``single``: ``BulkRun`` in this process (``--concurrency`` rows in flight);
- ``ray xN``: ``RayRun`` with N actors, each with ``--concurrency`` rows in flight, the input
  cut into 4 shards per actor. Its time includes starting its actors and joining the
  manifests: what a user waits for.

Prints tasks/s per mode (medians over rounds) and each Ray mode's ratio to ``single``. The
ratio says what a cluster's worth of actors buys only where the cores are there to run them:
on a machine with fewer cores than the actors, the server and the driver, it measures the
cost of the actors' hops instead.

Run: python bench/ray.py [--rows 20000] [--rounds 3] [--concurrency 256] [--actors 1 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _bench_bulk() -> Any:
    # bench/bulk.py's helpers, loaded by path: this file's name would hide Ray's package
    # were bench/ on sys.path.
    spec = importlib.util.spec_from_file_location("bench_bulk", BENCH / "bulk.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("bench_bulk") or importlib.util.module_from_spec(spec)
    if "bench_bulk" not in sys.modules:
        sys.modules["bench_bulk"] = module
        spec.loader.exec_module(module)
    return module


async def one(mode: str, args: argparse.Namespace, url: str, key: str, work: Path) -> float:
    """Seconds for one run of ``args.rows`` fresh rows in ``mode``."""
    from orchestrator.bulk import BulkRun
    from orchestrator.bulk.cluster import RayRun

    tag = f"{mode}-{time.monotonic_ns()}".replace(" ", "")
    source = _bench_bulk().write_prompts(work / f"{tag}.txt", args.rows, tag)
    client: dict[str, Any] = {"endpoints": [url], "api_key": key}
    client["concurrency"] = args.concurrency
    if mode == "single":
        run: Any = BulkRun(source, work / tag, **client)
    else:
        run = RayRun(source, work / tag, actors=int(mode.split("x")[1]), **client)
    started = time.perf_counter()
    summary = await run.run()
    seconds = time.perf_counter() - started
    assert summary.ok and summary.counts.done == args.rows, summary
    return seconds


async def measure(args: argparse.Namespace, url: str, key: str) -> dict[str, list[float]]:
    modes = ["single", *(f"ray x{n}" for n in args.actors)]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as work:
        for mode in modes:  # warm up: imports, the actors' first start
            small = argparse.Namespace(**{**vars(args), "rows": 500})
            await one(mode, small, url, key, Path(work))
        for _ in range(args.rounds):
            for mode in modes:
                times[mode].append(await one(mode, args, url, key, Path(work)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import anyio
    import ray

    external_server = _bench_bulk().external_server

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    with external_server() as (url, key):
        times = anyio.run(measure, args, url, key)
    ray.shutdown()
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    print(
        f"\n{args.rows} rows per run, {args.rounds} rounds, concurrency {args.concurrency} "
        f"per runner, fixed backend, {os.cpu_count()} cores"
    )
    for mode, seconds in medians.items():
        rate = args.rows / seconds
        ratio = "" if mode == "single" else f"  {medians['single'] / seconds:.2f}x single"
        rounds = ", ".join(f"{args.rows / s:.0f}" for s in times[mode])
        print(f"  {mode:8s} {rate:8.0f} tasks/s (median; rounds {rounds}){ratio}")


if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    sys.path.insert(0, str(ROOT))
    main()
