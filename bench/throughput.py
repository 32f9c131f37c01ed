"""Throughput and memory: the orchestrator against a hand-written floor, in one run.

For K = 1, 64, 1,024 and 10,000 tasks in flight it prints tasks/s, p50/p99 latency, client
CPU microseconds per task and the server's CPU microseconds per task for:

- ``floor``: a minimal websockets + orjson client with a dict of futures (K lanes);
- ``orch run``: the orchestrator, K lanes each awaiting ``orch.run(task)``;
- ``orch map``: the orchestrator, ``orch.map(tasks, concurrency=K)``;
- ``orch run rw``, ``orch map rw``: the same in the current Runware dialect
  (``Config(dialect="runware")``, against the responder);
- ``legacy``: the Runware SDK ``runware==0.1.5`` in its own virtual environment (K = 1,
  64, 1,024 only, each run capped in time; calls unanswered at the cap count as timeouts);
- ``runware-sdk``: the vendor's current SDK, 1.8, in the current dialect, the same way.

They talk to a minimal responder in its own process (``bench/responder.py``: answers every
task at once, so the client's cost is what is measured), then to the reference server
(``orchestrator serve --backend fixed --workers 1``). Client and server are pinned to
different cores. The clients take turns within each repeat (interleaved), and each figure
is the median of ``--repeats`` runs.

Then the bytes each in-flight task holds at 10,000 and 100,000 in flight (``bench/memory.py``,
against the responder in ``--silent`` mode), and, with ``--soak N``, the RSS series of N tasks
through ``orch.map``.

The verdict prints each target of the performance issue as a ratio measured in this run:
client CPU per task at K = 1,024 at most 1.0x the floor's; latency p50 at K = 1 at most 1.1x
the floor's; bytes per in-flight task at most 2x the floor's lanes; the reference server at
least 0.8x the responder's tasks/s under the floor at K = 64 and 1,024, with p99 at 1,024
under 150 ms; at least 10x the legacy SDK's tasks/s; in the current dialect, at least 3x
runware-sdk's tasks/s at K = 1,024, for no more than 1.2x the client CPU per task of the
legacy dialect.

Run: python bench/throughput.py [--quick] [--repeats 3] [--soak 1000000] [--legacy-python PATH]
[--runware-python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson
from memory import SHAPES, bytes_per_task, soak
from procstat import cpu_seconds
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
    server_cpu: float = 0.0  # the server process's CPU seconds over the run

    @property
    def server_cpu_us(self) -> float:
        return self.server_cpu / max(self.tasks, 1) * 1e6

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


def _config(in_flight: int, dialect: str) -> Config:
    # One socket, like the floor, and room for every lane on it.
    limit = max(in_flight, 1)
    return Config(limits=Limits(in_flight=limit, per_connection=limit), dialect=dialect)


def _task(dialect: str, task_uuid: str | None = None) -> TextToImage:
    # The floor's task; the current dialect has no cache, so no useCache to turn off.
    if dialect == "runware":
        return TextToImage(prompt="a red fox", task_uuid=task_uuid)
    return TextToImage(prompt="a red fox", use_cache=False, task_uuid=task_uuid)


async def orch_run(url: str, total: int, in_flight: int, dialect: str = "legacy") -> Run:
    """The orchestrator as a service uses it: K lanes awaiting ``orch.run``."""
    latencies: list[float] = []
    async with Orchestrator(url, api_key=KEY, config=_config(in_flight, dialect)) as orch:
        remaining = [total]

        async def lane() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                started = time.perf_counter()
                await orch.run(_task(dialect))
                latencies.append(time.perf_counter() - started)

        return await _timed(total, latencies, lambda: _lanes(lane, in_flight))


async def orch_map(url: str, total: int, in_flight: int, dialect: str = "legacy") -> Run:
    """The orchestrator as a bulk job uses it: ``orch.map`` with ``concurrency=K``."""
    latencies: list[float] = []
    started: dict[str, float] = {}

    def tasks() -> Iterator[TextToImage]:
        for _ in range(total):
            task_uuid = str(uuid.uuid4())
            started[task_uuid] = time.perf_counter()
            yield _task(dialect, task_uuid)

    async with Orchestrator(url, api_key=KEY, config=_config(in_flight, dialect)) as orch:

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


def sdk(driver: str, python: str, url: str, in_flight: int, cap: float) -> Run:
    """An SDK (``legacy_driver.py``, ``runware_driver.py``) in its own interpreter (its CPU
    is measured there)."""
    command = [python, str(ROOT / "bench" / driver), url, KEY, str(in_flight)]
    done = subprocess.run(
        [*command, str(cap)], capture_output=True, text=True, timeout=cap + 120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"{driver} failed")
    out = json.loads(done.stdout)
    return Run(out["done"], out["elapsed"], out["cpu"], out["latencies"], out["timeouts"])


# -- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    pid: int

    def cpu(self) -> float:
        """The server process's CPU seconds so far (0 where /proc does not tell)."""
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return 0.0


@contextmanager
def server(kind: str, tree: Path | None = None) -> Iterator[Server]:
    """Start the responder (``--silent`` too) or the reference server (from ``tree`` when
    given) in its own process, on core 1."""
    if kind.startswith("responder"):
        command = [sys.executable, str(ROOT / "bench" / "responder.py"), "--port", "0"]
        command += ["--silent"] if kind == "responder-silent" else []
    else:
        command = [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"]
        command += ["--backend", "fixed", "--api-key", KEY, "--max-queue", "100000"]
        command += ["--workers", "1"]
    # ``python -m`` puts its working directory first on sys.path: run it in the tree.
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tree) as process:
        try:
            _pin(process.pid, 1)
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"{kind} did not start: {line!r}")
            yield Server(line.split()[-1], process.pid)
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
    timeouts = f"{run.timeouts:>8}" if client in SDKS else f"{'':>8}"
    server_cpu = f"{run.server_cpu_us:>8.1f}" if run.server_cpu else f"{'':>8}"
    return (
        f"{server_kind:<10} {client:<11} {k:>6} {run.tasks:>7} {run.rate:>9.0f} "
        f"{run.percentile(0.5):>8.1f} {run.percentile(0.99):>8.1f} {run.cpu_us:>8.1f}"
        f"{server_cpu}{timeouts}"
    )


def totals(k: int, scale: float) -> int:
    base = {1: 2_000, 64: 20_000, 1024: 30_000, 10_000: 40_000}[k]
    return max(int(base * scale), 2 * k)


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[Run]]] = {
    "floor": floor,
    "orch run": orch_run,
    "orch map": orch_map,
    # The current Runware dialect (against the responder only):
    "orch run rw": partial(orch_run, dialect="runware"),
    "orch map rw": partial(orch_map, dialect="runware"),
}
#: The SDKs, each in its own environment: (driver, the option naming its interpreter).
SDKS: dict[str, tuple[str, str]] = {
    "legacy": ("legacy_driver.py", "legacy_python"),
    "runware-sdk": ("runware_driver.py", "runware_python"),
}
Summary = dict[tuple[str, str], Run]


def measure(srv: Server, name: str, total: int, k: int) -> Run:
    """One run of a client, with the server's CPU over it."""
    cpu = srv.cpu()
    run = asyncio.run(CLIENTS[name](srv.url, total, k))
    run.server_cpu = srv.cpu() - cpu
    return run


def throughput(args: argparse.Namespace, scale: float, repeats: int, summary: Summary) -> None:
    header = f"{'server':<10} {'client':<11} {'K':>6} {'tasks':>7} {'tasks/s':>9} "
    print(header + f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us':>8} {'srv us':>8} {'timeouts':>8}")
    for server_kind in ("responder", "reference"):
        with server(server_kind) as srv:
            names = [n for n in CLIENTS if server_kind == "responder" or not n.endswith(" rw")]
            for k in (1, 64, 1024, 10_000):
                runs: dict[str, list[Run]] = {name: [] for name in names}
                for _ in range(repeats):  # interleaved: each client once per repeat
                    for name in names:
                        runs[name].append(measure(srv, name, totals(k, scale), k))
                for name in names:
                    summary[(server_kind, f"{name}@{k}")] = run = median_run(runs[name])
                    print(row(server_kind, name, k, run), flush=True)
                for name, (driver, option) in SDKS.items():
                    if k <= 1024 and name in args.sdks:
                        python = getattr(args, option)
                        run = sdk(driver, python, srv.url, k, args.sdk_cap)
                        summary[(server_kind, f"{name}@{k}")] = run
                        print(row(server_kind, name, k, run), flush=True)


def memory_rows(counts: tuple[int, ...]) -> dict[tuple[str, int], float]:
    """Bytes per in-flight task for each shape of client (see bench/memory.py)."""
    print(f"{'client':<14} {'in flight':>9} {'bytes/task':>11} {'x floor lanes':>14}")
    held: dict[tuple[str, int], float] = {}
    with server("responder-silent") as srv:
        for n in counts:
            for shape in SHAPES:
                held[(shape, n)] = per_task = asyncio.run(bytes_per_task(srv.url, shape, n))
                ratio = per_task / held[("floor lanes", n)]
                print(f"{shape:<14} {n:>9} {per_task:>11.0f} {ratio:>13.2f}x", flush=True)
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--soak", type=int, metavar="N", help="also run N tasks, print RSS")
    parser.add_argument("--legacy-python", default=str(ROOT / ".legacy-venv" / "bin" / "python"))
    parser.add_argument("--runware-python", default=str(ROOT / ".runware-venv" / "bin" / "python"))
    parser.add_argument("--sdk-cap", type=float, default=10.0, help="seconds per SDK run")
    args = parser.parse_args()
    scale, repeats = (0.2, 1) if args.quick else (1.0, args.repeats)
    args.sdks = {n for n, (_, option) in SDKS.items() if Path(getattr(args, option)).exists()}
    _pin(os.getpid(), 0)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; client on core 0,")
    print(f"server on core 1; median of {repeats} interleaved run(s); SDKs: {sorted(args.sdks)}")
    print()
    summary: Summary = {}
    throughput(args, scale, repeats, summary)
    print()
    held = memory_rows((2_000, 20_000) if args.quick else (10_000, 100_000))
    series = None
    if args.soak:
        print()
        print(f"soak: {args.soak} tasks through orch.map, 1,024 in flight, against the responder")
        with server("responder") as srv:
            series = asyncio.run(soak(srv.url, args.soak))
    print()
    verdict(summary, held, series, args.sdks)


def _line(text: str, ratio: float, target: float, at_most: bool = True) -> None:
    met = ratio <= target if at_most else ratio >= target
    bound = "<=" if at_most else ">="
    print(f"{text}: {ratio:.2f} (target {bound} {target:g}): {'met' if met else 'NOT met'}")


def verdict(
    summary: Summary,
    held: dict[tuple[str, int], float],
    series: list[tuple[int, float, float]] | None,
    sdks: set[str],
) -> None:
    """Print each target as a ratio measured in this run."""
    floor_1024 = summary[("responder", "floor@1024")]
    floor_1 = summary[("responder", "floor@1")]
    for name in ("orch run", "orch map"):
        run = summary[("responder", f"{name}@1024")]
        _line(f"{name} @1024: CPU/task, x the floor's", run.cpu_us / floor_1024.cpu_us, 1.0)
        one = summary[("responder", f"{name}@1")]
        p50 = one.percentile(0.5) / floor_1.percentile(0.5)
        _line(f"{name} @1: latency p50, x the floor's", p50, 1.1)
        if "legacy" in sdks:
            speedup = run.rate / max(summary[("responder", "legacy@1024")].rate, 1e-9)
            _line(f"{name} @1024: tasks/s, x the legacy SDK's", speedup, 10, at_most=False)
        current = summary[("responder", f"{name} rw@1024")]
        ratio = current.cpu_us / run.cpu_us
        _line(f"{name} rw @1024: CPU/task, x the legacy dialect's", ratio, 1.2)
        if "runware-sdk" in sdks:
            speedup = current.rate / max(summary[("responder", "runware-sdk@1024")].rate, 1e-9)
            _line(f"{name} rw @1024: tasks/s, x runware-sdk's", speedup, 3, at_most=False)
    for (shape, n), per_task in held.items():
        if shape.startswith("orch"):
            ratio = per_task / held[("floor lanes", n)]
            _line(f"{shape} @{n}: bytes/task, x the floor's lanes", ratio, 2.0)
    for k in (64, 1024):
        ratio = (
            summary[("reference", f"floor@{k}")].rate / summary[("responder", f"floor@{k}")].rate
        )
        _line(
            f"reference server @{k}: tasks/s under the floor, x the responder's", ratio, 0.8, False
        )
    p99 = summary[("reference", "floor@1024")].percentile(0.99)
    _line("reference server @1024: latency p99 under the floor, ms", p99, 150)
    if series:
        first, last = series[0][1], series[-1][1]
        _line(f"soak: RSS at {series[-1][0]} tasks, x at {series[0][0]}", last / first, 1.1)


if __name__ == "__main__":
    main()
