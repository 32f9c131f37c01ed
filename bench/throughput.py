"""Client throughput: the orchestrator against a hand-written floor and the legacy SDK.

For K = 1, 64, 1,024 and 10,000 tasks in flight, one run prints tasks/s, p50/p99 latency
and client CPU microseconds per task for:

- ``floor``: a minimal websockets + orjson client with a dict of futures (K lanes);
- ``orch run``: the orchestrator, K lanes each awaiting ``orch.run(task)``;
- ``orch map``: the orchestrator, ``orch.map(tasks, concurrency=K)``;
- ``legacy``: the Runware SDK ``runware==0.1.5`` in its own virtual environment (K = 1,
  64, 1,024 only, each run capped in time; calls unanswered at the cap count as timeouts).

They talk to a minimal responder in its own process (``bench/responder.py``: answers every
task at once, so the client's cost is what is measured), then once more to the reference
server (``orchestrator serve --backend fixed``). Client and server are pinned to different
cores. Each figure is the median of ``--repeats`` runs; the verdict compares, at K = 1,024,
the orchestrator's CPU per task with the floor's (target: at most 1.5x) and its tasks/s with
the legacy SDK's (target: at least 10x).

Run: python bench/throughput.py [--quick] [--repeats 3] [--legacy-python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from orchestrator import Config, Limits, Orchestrator, TextToImage

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


@dataclass
class Run:
    tasks: int
    elapsed: float
    cpu: float
    latencies: list[float]
    timeouts: int = 0

    @property
    def rate(self) -> float:
        return self.tasks / self.elapsed

    @property
    def cpu_us(self) -> float:
        return self.cpu / max(self.tasks, 1) * 1e6

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


# -- the clients ---------------------------------------------------------------------------


async def floor(url: str, total: int, in_flight: int) -> Run:
    """The floor: websockets + orjson, a dict of futures, K lanes."""
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[None]] = {}
    latencies: list[float] = []
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await ws.send(orjson.dumps({"newConnection": {"apiKey": KEY}}), text=True)
        await ws.recv()

        async def reader() -> None:
            async for frame in ws:
                message = orjson.loads(frame)
                for image in message.get("newImages", {}).get("images", ()):
                    future = waiting.pop(image["taskUUID"], None)
                    if future is not None:
                        future.set_result(None)

        remaining = [total]

        async def lane() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                task_uuid = str(uuid.uuid4())
                future = waiting[task_uuid] = loop.create_future()
                started = time.perf_counter()
                body = {"taskUUID": task_uuid, "promptText": "a red fox", "useCache": False}
                await ws.send(orjson.dumps({"newTask": body}), text=True)
                await future
                latencies.append(time.perf_counter() - started)

        reading = asyncio.create_task(reader())
        return await _timed(total, latencies, lambda: _lanes(lane, in_flight), reading)


def _config(in_flight: int) -> Config:
    # One socket, like the floor, and room for every lane on it.
    limit = max(in_flight, 1)
    return Config(limits=Limits(in_flight=limit, per_connection=limit))


async def orch_run(url: str, total: int, in_flight: int) -> Run:
    """The orchestrator as a service uses it: K lanes awaiting ``orch.run``."""
    latencies: list[float] = []
    async with Orchestrator(url, api_key=KEY, config=_config(in_flight)) as orch:
        remaining = [total]

        async def lane() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                started = time.perf_counter()
                await orch.run(TextToImage(prompt="a red fox", use_cache=False))
                latencies.append(time.perf_counter() - started)

        return await _timed(total, latencies, lambda: _lanes(lane, in_flight))


async def orch_map(url: str, total: int, in_flight: int) -> Run:
    """The orchestrator as a bulk job uses it: ``orch.map`` with ``concurrency=K``."""
    latencies: list[float] = []
    started: dict[str, float] = {}

    def tasks() -> Iterator[TextToImage]:
        for _ in range(total):
            task_uuid = str(uuid.uuid4())
            started[task_uuid] = time.perf_counter()
            yield TextToImage(prompt="a red fox", use_cache=False, task_uuid=task_uuid)

    async with Orchestrator(url, api_key=KEY, config=_config(in_flight)) as orch:

        async def consume() -> None:
            async for result in orch.map(tasks(), concurrency=in_flight):
                latencies.append(time.perf_counter() - started.pop(result.task_uuid))

        return await _timed(total, latencies, consume)


async def _lanes(lane: Callable[[], Awaitable[None]], count: int) -> None:
    await asyncio.gather(*(lane() for _ in range(count)))


async def _timed(
    total: int,
    latencies: list[float],
    work: Callable[[], Awaitable[None]],
    background: asyncio.Task[None] | None = None,
) -> Run:
    cpu, start = time.process_time(), time.perf_counter()
    await work()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if background is not None:
        background.cancel()
    return Run(total, elapsed, cpu, latencies)


def legacy(python: str, url: str, in_flight: int, cap: float) -> Run:
    """The legacy SDK in its own interpreter (its CPU is measured there)."""
    command = [python, str(ROOT / "bench" / "legacy_driver.py"), url, KEY, str(in_flight)]
    done = subprocess.run(
        [*command, str(cap)], capture_output=True, text=True, timeout=cap + 120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or "legacy driver failed")
    out = json.loads(done.stdout)
    return Run(out["done"], out["elapsed"], out["cpu"], out["latencies"], out["timeouts"])


# -- servers -------------------------------------------------------------------------------


@contextmanager
def server(kind: str) -> Iterator[str]:
    """Start the responder or the reference server in its own process, on core 1."""
    if kind == "responder":
        command = [sys.executable, str(ROOT / "bench" / "responder.py"), "--port", "0"]
    else:
        command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"]
        command += ["--backend", "fixed", "--api-key", KEY, "--max-queue", "100000"]
        command += ["--workers", "1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            _pin(process.pid, 1)
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"{kind} did not start: {line!r}")
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


def _pin(pid: int, core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(pid, {core})


# -- the table -----------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    """The run with the median tasks/s (its own CPU and latencies go with it)."""
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def row(server_kind: str, client: str, k: int, run: Run) -> str:
    timeouts = f"{run.timeouts:>8}" if client == "legacy" else f"{'':>8}"
    return (
        f"{server_kind:<10} {client:<9} {k:>6} {run.tasks:>7} {run.rate:>9.0f} "
        f"{run.percentile(0.5):>8.1f} {run.percentile(0.99):>8.1f} {run.cpu_us:>8.1f}{timeouts}"
    )


def totals(k: int, scale: float) -> int:
    base = {1: 2_000, 64: 20_000, 1024: 30_000, 10_000: 40_000}[k]
    return max(int(base * scale), 2 * k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--legacy-python", default=str(ROOT / ".legacy-venv" / "bin" / "python"))
    parser.add_argument("--legacy-cap", type=float, default=10.0, help="seconds per legacy run")
    args = parser.parse_args()
    scale, repeats = (0.2, 1) if args.quick else (1.0, args.repeats)
    has_legacy = Path(args.legacy_python).exists()
    _pin(os.getpid(), 0)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; client on core 0,")
    print(f"server on core 1; median of {repeats} run(s); legacy SDK: {has_legacy}")
    print()
    header = f"{'server':<10} {'client':<9} {'K':>6} {'tasks':>7} {'tasks/s':>9} "
    print(header + f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us':>8} {'timeouts':>8}")
    clients = {"floor": floor, "orch run": orch_run, "orch map": orch_map}
    summary: dict[tuple[str, str], Run] = {}
    for server_kind in ("responder", "reference"):
        with server(server_kind) as url:
            for k in (1, 64, 1024, 10_000):
                for name, client in clients.items():
                    runs = [asyncio.run(client(url, totals(k, scale), k)) for _ in range(repeats)]
                    summary[(server_kind, f"{name}@{k}")] = run = median_run(runs)
                    print(row(server_kind, name, k, run), flush=True)
                if has_legacy and k <= 1024:
                    run = legacy(args.legacy_python, url, k, args.legacy_cap)
                    summary[(server_kind, f"legacy@{k}")] = run
                    print(row(server_kind, "legacy", k, run), flush=True)
    print()
    verdict(summary, has_legacy)


def verdict(summary: dict[tuple[str, str], Run], has_legacy: bool) -> None:
    """Print the targets at K = 1,024 against the responder."""
    base = summary[("responder", "floor@1024")]
    for name in ("orch run", "orch map"):
        run = summary[("responder", f"{name}@1024")]
        ratio = run.cpu_us / base.cpu_us
        status = "met" if ratio <= 1.5 else "NOT met"
        print(f"{name} @1024: CPU/task {ratio:.2f}x the floor's (target <= 1.5x): {status}")
        if has_legacy:
            speedup = run.rate / max(summary[("responder", "legacy@1024")].rate, 1e-9)
            status = "met" if speedup >= 10 else "NOT met"
            print(
                f"{name} @1024: {speedup:.0f}x the legacy SDK's tasks/s (target >= 10x): {status}"
            )
    rates = [summary[("responder", f"floor@{k}")].rate for k in (64, 1024)]
    print(f"floor tasks/s at 64 and 1,024 in flight: {statistics.mean(rates):.0f} (mean)")


if __name__ == "__main__":
    main()
