"""Drive the vendor's current SDK (runware-sdk 1.8, its own virtual environment) for the bench.

Usage: runware_driver.py URL KEY IN_FLIGHT CAP_SECONDS. Keeps IN_FLIGHT ``run`` calls of
an imageInference outstanding until CAP_SECONDS pass (``deliveryMethod: sync``, the SDK's
single round trip), then prints one JSON object (``sdk_lanes.lanes``).
"""

import asyncio
import json
import sys

from runware import Runware
from sdk_lanes import lanes

TASK = {
    "taskType": "imageInference",
    "model": "civitai:101055@128078",
    "positivePrompt": "a red fox",
    "width": 512,
    "height": 512,
    "deliveryMethod": "sync",
}


async def main(url: str, key: str, in_flight: int, cap: float) -> dict:
    async with Runware(api_key=key, ws_base_url=url) as sdk:

        async def call() -> bool:
            return bool(await sdk.run(dict(TASK)))

        return await lanes(call, in_flight, cap)


if __name__ == "__main__":
    url, key, in_flight, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, key, in_flight, cap))), flush=True)
