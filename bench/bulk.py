"""Bulk runs: the ledger's cost per task against plain ``orch.map``, and memory by input size.

Throughput (``--tasks`` rows, default 10,000; the server's ``fixed`` backend, so the server is
not what is measured), on two servers: the embedded default (in this process) and an
external ``orchestrator serve`` process. Per round, interleaved, each on fresh prompts (so no
server replays an earlier round's tasks):

- ``map``: ``orch.map`` over the same specs, no sink: what the orchestrator alone costs;
- ``map + files``: ``orch.map`` with the same directory sink the bulk run writes to (each
  image written to a temporary file, fsynced, renamed): the like-for-like baseline;
- ``bulk``: ``BulkRun`` on the same orchestrator: the input read and normalized, the
  ledger, the files, the manifest.

Prints tasks/s per mode (medians over rounds) and the ledger's overhead, bulk's time per
task over ``map + files``' (the target: under 1.3x).

Memory: ``BulkRun`` on 10,000 and on 100,000 input lines, each in a fresh process against
an ``orchestrator serve`` process (which holds every image it hosts, for its time to live),
printing the client's peak RSS (the input is streamed and the ledger walked in chunks: it
must not grow with the input).

Run: python bench/bulk.py [--tasks 10000] [--rounds 3] [--concurrency 256] [--memory-only]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("map", "map + files", "bulk")


def write_prompts(path: Path, count: int, tag: str) -> Path:
    with path.open("w") as file:
        for i in range(count):
            file.write(f"{tag} prompt {i}: a lighthouse at dusk\n")
    return path


async def one_mode(orch: Any, mode: str, count: int, concurrency: int, work: Path) -> float:
    """Seconds for ``count`` tasks in ``mode`` on the entered orchestrator ``orch``."""
    from orchestrator import TextToImage
    from orchestrator.bulk import BulkRun
    from orchestrator.delivery import DirectorySink

    tag = f"{mode}-{time.monotonic_ns()}"
    out = work / tag.replace(" ", "").replace("+", "")
    if mode == "bulk":
        source = write_prompts(work / f"{out.name}.txt", count, tag)
        started = time.perf_counter()
        summary = await BulkRun(source, out, orchestrator=orch, concurrency=concurrency).run()
        seconds = time.perf_counter() - started
        assert summary.counts.done == count, summary
        return seconds
    sinks = [DirectorySink(out / "images/{task_uuid}_{index}.{ext}")] if "files" in mode else []
    specs = (
        TextToImage(prompt=f"{tag} prompt {i}", return_base64_image=True, deliver_to=sinks)
        for i in range(count)
    )
    started = time.perf_counter()
    done = 0
    async for _ in orch.map(specs, concurrency=concurrency):
        done += 1
    seconds = time.perf_counter() - started
    assert done == count
    return seconds


async def throughput(orch: Any, args: argparse.Namespace, label: str) -> None:
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as work:
        await one_mode(orch, "bulk", 500, args.concurrency, Path(work))  # warm up
        for _ in range(args.rounds):
            for mode in MODES:
                times[mode].append(
                    await one_mode(orch, mode, args.tasks, args.concurrency, Path(work))
                )
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"\n{label}: {args.tasks} tasks, {args.rounds} rounds, concurrency {args.concurrency}")
    for mode in MODES:
        rate = args.tasks / medians[mode]
        per_task = medians[mode] / args.tasks * 1e6
        print(f"  {mode:12s} {rate:8.0f} tasks/s  {per_task:7.1f} us/task (median)")
    ratio = medians["bulk"] / medians["map + files"]
    ratios = [b / f for b, f in zip(times["bulk"], times["map + files"], strict=True)]
    print(
        f"  ledger overhead: bulk / (map + files) = {ratio:.2f}x (rounds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); bulk / map = "
        f"{medians['bulk'] / medians['map']:.2f}x"
    )


async def embedded(args: argparse.Namespace) -> None:
    from orchestrator import Orchestrator

    async with Orchestrator(embedded={"backend": "fixed"}) as orch:
        await throughput(orch, args, "embedded default (fixed backend, in this process)")


async def external(args: argparse.Namespace) -> None:
    from orchestrator import Orchestrator

    with external_server() as (url, key):
        async with Orchestrator(url, api_key=key) as orch:
            await throughput(orch, args, f"external orchestrator serve (fixed backend) at {url}")


def memory_child(lines: int, url: str, key: str) -> None:
    """Run a bulk run of ``lines`` rows in this process and print its peak RSS."""
    import anyio

    from orchestrator.bulk import BulkRun

    with tempfile.TemporaryDirectory(prefix="bench-bulk-mem-") as work:
        source = write_prompts(Path(work) / "p.txt", lines, f"memory-{lines}-{time.time_ns()}")
        run = BulkRun(source, Path(work) / "out", endpoints=[url], api_key=key, concurrency=256)
        started = time.perf_counter()
        summary = anyio.run(run.run)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = summary.counts.done / seconds
    print(f"  {lines:7d} lines: peak RSS {peak:6.1f} MiB, {rate:.0f} tasks/s", flush=True)


def memory(sizes: list[int]) -> None:
    # The client's memory alone: the server (which hosts every image for its time to live)
    # runs in a process of its own.
    print("\nmemory (the bulk run in a fresh process per input; fixed backend in another)")
    with external_server() as (url, key):
        for lines in sizes:
            command = [sys.executable, __file__, "--child", str(lines), url, key]
            subprocess.run(command, check=True)


@contextmanager
def external_server() -> Iterator[tuple[str, str]]:
    """``orchestrator serve --port 0 --backend fixed`` in a process of its own."""
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"]
    server = subprocess.Popen([*command, "--backend", "fixed"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        key = server.stdout.readline().split()[-1]
        yield url, key
    finally:
        server.terminate()
        server.communicate(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(int(args.child[0]), args.child[1], args.child[2])
        return
    import anyio

    if not args.memory_only:
        anyio.run(embedded, args)
        anyio.run(external, args)
    memory(args.memory)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
