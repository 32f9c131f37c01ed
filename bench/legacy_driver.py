"""Drive the legacy Runware SDK (runware==0.1.5, its own virtual environment) for the bench.

Usage: legacy_driver.py URL KEY IN_FLIGHT CAP_SECONDS. Keeps IN_FLIGHT requestImages calls
outstanding until CAP_SECONDS pass, then prints one JSON object (``sdk_lanes.lanes``).
Leaves with os._exit: the SDK's loops would keep it alive.
"""

import asyncio
import json
import os
import sys

from runware.server import RunwareServer
from runware.types import IRequestImage
from sdk_lanes import lanes


async def main(url: str, key: str, in_flight: int, cap: float) -> dict:
    sdk = RunwareServer(api_key=key, url=url)
    await sdk.connect()

    async def call() -> bool:
        request = IRequestImage(
            positive_prompt="a red fox", number_of_images=1, model_id=13, image_size=1
        )
        return bool(await sdk.requestImages(request))

    return await lanes(call, in_flight, cap)


if __name__ == "__main__":
    try:
        url, key, in_flight, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        result = asyncio.run(main(url, key, in_flight, cap))
        print(json.dumps(result), flush=True)
        os._exit(0)
    except BaseException as exc:
        print(f"legacy driver failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
