"""Drive the vendor's current SDK (runware-sdk 1.8, its own virtual environment) for the bench.

Usage: runware_driver.py URL KEY IN_FLIGHT CAP_SECONDS. Keeps IN_FLIGHT ``run`` calls of
an imageInference outstanding until CAP_SECONDS pass (``deliveryMethod: sync``, the SDK's
single round trip), then prints one JSON object: tasks done, timeouts, elapsed seconds,
CPU seconds and the latencies.
"""

import asyncio
import json
import sys
import time

from runware import Runware

TASK = {
    "taskType": "imageInference",
    "model": "civitai:101055@128078",
    "positivePrompt": "a red fox",
    "width": 512,
    "height": 512,
    "deliveryMethod": "sync",
}


async def main(url: str, key: str, in_flight: int, cap: float) -> dict:
    latencies: list = []
    counts = {"done": 0, "timeouts": 0, "errors": 0}
    async with Runware(api_key=key, ws_base_url=url) as sdk:
        start = time.perf_counter()
        deadline = start + cap

        async def lane() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    await asyncio.wait_for(sdk.run(dict(TASK)), max(deadline - began, 0.001))
                except TimeoutError:
                    counts["timeouts"] += 1
                    continue
                except Exception:
                    counts["errors"] += 1
                    continue
                counts["done"] += 1
                latencies.append(time.perf_counter() - began)

        cpu = time.process_time()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return {
            **counts,
            "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu,
            "latencies": latencies,
        }


if __name__ == "__main__":
    url, key, in_flight, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, key, in_flight, cap))), flush=True)
