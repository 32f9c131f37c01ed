"""Run the legacy Runware SDK (runware==0.1.5, in its own virtual environment) against a server.

Usage: legacy_client.py URL API_KEY. Prints one JSON object (the images and enhanced prompts
the SDK returned) and leaves with os._exit: once its socket closes the SDK's heartbeat loop
spins and would keep the process alive.
"""

import asyncio
import json
import os
import sys

from runware.server import RunwareServer
from runware.types import IPromptEnhancer, IRequestImage


async def main(url: str, key: str) -> dict:
    sdk = RunwareServer(api_key=key, url=url)
    await sdk.connect()
    images = await sdk.requestImages(
        IRequestImage(
            positive_prompt="a red fox in the snow",
            negative_prompt="blurry",
            number_of_images=2,
            model_id=13,
            image_size=1,
            use_cache=False,
        )
    )
    prompts = await sdk.enhancePrompt(
        IPromptEnhancer(prompt="a cat", prompt_versions=3, prompt_max_length=64)
    )
    return {
        "images": [vars(image) for image in images or []],
        "prompts": [p.text for p in prompts or []],
    }


if __name__ == "__main__":
    try:
        result = asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), timeout=60))
        print(json.dumps(result), flush=True)
        os._exit(0)
    except BaseException as exc:  # any failure: say what, and exit without the SDK's loops
        print(f"legacy client failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
