"""The diffusers backend: images/s, seconds per step, and what the server adds per task.

For each size (64x64 and 512x512 by default) it prints, as medians of ``--repeats``
interleaved runs:

- ``direct``: the server's own pipeline called in this process, one image per call, nothing
  else;
- ``server``: the same tasks through the real server (``ReferenceServer`` with the
  ``diffusers`` backend, in this process) from an ``Orchestrator`` client over a real
  socket, one task in flight, so the difference is the wrapper: the job plumbing, the
  scheduler, the JPEG, the socket, the client. ``overhead`` is server / direct per task;
- ``batch 4``: ``numberResults: 4`` in one forward pass against four single passes (does
  batching pay on this device?);
- ``shared 4``: four one-image tasks in flight at once through a second server whose backend
  lets queued tasks share a pass (``batch_tasks``), against the same through the first
  server, which runs them one pass each. The pass counts are printed too.

With no ``--model-dir`` it builds the tiny random pipeline (``orchestrator.server.diffusion
.tiny``); give a real checkpoint directory (and a GPU) for real figures.

Run: python bench/diffusion.py [--model-dir DIR] [--device cuda] [--sizes 64,512]
[--steps 10] [--tasks 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local weights only, as the server loads them

import anyio
import anyio.to_thread
import torch

from orchestrator import Orchestrator, TextToImage
from orchestrator.server import DiffusionSettings, ReferenceServer, ServerConfig
from orchestrator.server.diffusion.backend import DiffusersBackend
from orchestrator.server.diffusion.tiny import build_tiny_pipeline

PROMPT = "a red cat on a blue sea"


def direct_run(pipe: Any, size: int, steps: int, tasks: int, batch: int = 1) -> float:
    """Seconds for ``tasks`` images straight from the pipeline, ``batch`` per call."""
    started = time.perf_counter()
    for first in range(0, tasks, batch):
        seeds = range(first + 1, first + 1 + batch)
        with torch.inference_mode():
            pipe(
                PROMPT,
                height=size,
                width=size,
                num_inference_steps=steps,
                num_images_per_prompt=batch,
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                output_type="np",
            )
    return time.perf_counter() - started


async def server_run(orch: Orchestrator, size: int, steps: int, tasks: int) -> float:
    """Seconds for ``tasks`` images through the server, one task in flight."""
    started = time.perf_counter()
    for i in range(tasks):
        spec = TextToImage(
            prompt=PROMPT, width=size, height=size, steps=steps, seed=i + 1, use_cache=False
        )
        await orch.run(spec)
    return time.perf_counter() - started


async def concurrent_run(orch: Orchestrator, size: int, steps: int, tasks: int) -> float:
    """Seconds for ``tasks`` one-image tasks through the server, all in flight at once."""
    specs = [
        TextToImage(
            prompt=f"{PROMPT} {i}", width=size, height=size, steps=steps, seed=i, use_cache=False
        )
        for i in range(1, tasks + 1)
    ]
    started = time.perf_counter()
    async for _ in orch.map(specs):
        pass
    return time.perf_counter() - started


async def measure(args: argparse.Namespace, model_dir: str) -> None:
    # One backend: the server runs it, and the direct runs call its very pipeline (same
    # weights, same device, in a worker thread as the server's jobs are). A second backend
    # on the same weights shares passes between tasks.
    settings = DiffusionSettings(model_dir=model_dir, device=args.device)
    backend = DiffusersBackend(settings)
    sharing = DiffusersBackend(dataclasses.replace(settings, batch_tasks=True))
    config = ServerConfig(backend="diffusers", http_port=None, workers=4)
    async with (
        ReferenceServer(config, backend=backend) as server,
        ReferenceServer(config, backend=sharing) as shared_server,
        Orchestrator(server.url, api_key=server.api_key) as orch,
        Orchestrator(shared_server.url, api_key=shared_server.api_key) as shared,
    ):
        p = backend.pipelines
        print(f"pipeline {p.family} on {p.device}, {torch.get_num_threads()} torch threads")
        print(
            f"{'size':>9} {'direct img/s':>13} {'s/step':>8} {'server img/s':>13}"
            f" {'overhead':>9} {'batch 4 vs 1':>13} {'shared 4 vs 1':>14} {'passes':>8}"
        )
        for size in args.sizes:
            await measure_size(args, p.text_to_image(), (orch, shared), (backend, sharing), size)
    print(
        "overhead: server seconds per task / direct seconds per task (1.000x = nothing added);"
        " batch 4 vs 1: seconds for 4 images in one pass / in four passes (< 1 pays);"
        " shared 4 vs 1: seconds for 4 tasks in flight, sharing passes / one pass each;"
        " passes: pipeline calls per timed run, sharing / not"
    )


async def measure_size(
    args: argparse.Namespace,
    pipe: Any,
    clients: tuple[Orchestrator, Orchestrator],
    backends: tuple[DiffusersBackend, DiffusersBackend],
    size: int,
) -> None:
    def direct(tasks: int, batch: int = 1) -> Any:
        return anyio.to_thread.run_sync(direct_run, pipe, size, args.steps, tasks, batch)

    orch, shared = clients
    await direct(1)  # warm-up: the first call at a size builds its caches
    await server_run(orch, size, args.steps, 1)
    await concurrent_run(shared, size, args.steps, 4)
    names = ("direct", "server", "single", "batched", "apart", "shared")
    runs: dict[str, list[float]] = {name: [] for name in names}
    passes: dict[int, list[int]] = {id(b): [] for b in backends}
    for _ in range(args.repeats):  # interleaved, so drift hits every figure alike
        runs["direct"].append(await direct(args.tasks))
        runs["server"].append(await server_run(orch, size, args.steps, args.tasks))
        runs["single"].append(await direct(4))
        runs["batched"].append(await direct(4, batch=4))
        for name, client, backend in zip(("apart", "shared"), clients, backends, strict=True):
            before = backend.device.calls
            runs[name].append(await concurrent_run(client, size, args.steps, 4))
            passes[id(backend)].append(backend.device.calls - before)
    med = {name: statistics.median(times) for name, times in runs.items()}
    per_direct, per_served = med["direct"] / args.tasks, med["server"] / args.tasks
    apart, sharing = (statistics.median(passes[id(b)]) for b in backends)
    print(
        f"{size:>4}x{size:<4} {1 / per_direct:>13.2f} {per_direct / args.steps:>8.4f}"
        f" {1 / per_served:>13.2f} {per_served / per_direct:>8.3f}x"
        f" {med['batched'] / med['single']:>12.3f}x {med['shared'] / med['apart']:>13.3f}x"
        f" {sharing:>3g} / {apart:g}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a diffusers pipeline directory (default: tiny)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when present)")
    parser.add_argument("--sizes", default="64,512", help="square sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--tasks", type=int, default=8, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per figure")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    if args.model_dir:
        anyio.run(measure, args, args.model_dir)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        anyio.run(measure, args, str(build_tiny_pipeline(Path(scratch) / "tiny")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
