"""The current Runware dialect, both ways, on the embedded server: no account anywhere.

    python examples/current_dialect.py

The orchestrator speaks the dialect the service speaks today (``Config(dialect="runware")``:
JSON arrays of tasks, ``{"data": [...]}`` replies); the embedded server, which tells the
dialects apart by a socket's first frame, answers in it. Against the live service, pass its
URL and your key: ``Orchestrator("wss://ws-api.runware.ai/v1", api_key=KEY, config=...)``.
"""

from __future__ import annotations

import anyio

from orchestrator import Config, Orchestrator


async def main() -> None:
    async with Orchestrator(config=Config(dialect="runware")) as orch:
        made = await orch.text_to_image(
            "a lighthouse at dusk", negative_prompt="fog", number_results=2, seed=7
        )
        for image in made.images:
            print(f"image {image.image_uuid} seed={image.seed} {image.url}")
        bigger = await orch.upscale(made.images[0].image_uuid, 2)
        print(f"upscaled {bigger.image.url}")
        prompts = await orch.enhance_prompt("a cat", 2)
        for text in prompts.texts:
            print(f"prompt {text}")


if __name__ == "__main__":
    anyio.run(main)
