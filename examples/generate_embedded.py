"""Generate images with the orchestrator on the embedded reference server: no account anywhere.

    python examples/generate_embedded.py "a lighthouse at dusk" -n 4 --out out/

Streams the task's events as they happen (progress steps, then each image), and writes
each image from the bytes the server sent with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from orchestrator import ImageReady, Orchestrator, Progress, TaskDone, TaskFailed, TextToImage


async def generate(prompt: str, count: int, out: Path, seed: int | None) -> list[Path]:
    await anyio.Path(out).mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    task = TextToImage(prompt=prompt, number_results=count, seed=seed, return_base64_image=True)
    async with Orchestrator() as orch, orch.submit(task) as handle:
        async for event in handle.events():
            if isinstance(event, Progress):
                print(f"image {event.image_index}: step {event.step}/{event.steps}")
            elif isinstance(event, ImageReady):
                path = out / f"{event.image.image_uuid}.jpg"
                await anyio.Path(path).write_bytes(event.image.data() or b"")
                saved.append(path)
                print(f"{path} seed={event.image.seed} cost={event.image.cost}")
            elif isinstance(event, TaskDone):
                print(f"done: {len(event.result.images)} images, cost {event.result.cost:.6f}")
            elif isinstance(event, TaskFailed):
                raise event.error
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("-n", type=int, default=4, help="number of images")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    anyio.run(generate, args.prompt, args.n, args.out, args.seed)


if __name__ == "__main__":
    main()
