"""Drive the legacy Runware SDK (runware==0.1.5, its own virtual environment) for the bench.

Usage: legacy_driver.py URL KEY IN_FLIGHT CAP_SECONDS. Keeps IN_FLIGHT requestImages calls
outstanding until CAP_SECONDS pass, then prints one JSON object: tasks done, timeouts
(calls still unanswered at the cap, or that raised a timeout), elapsed seconds, CPU
seconds and the latencies. Leaves with os._exit: the SDK's loops would keep it alive.
"""

import asyncio
import json
import os
import sys
import time

from runware.server import RunwareServer
from runware.types import IRequestImage


async def main(url: str, key: str, in_flight: int, cap: float) -> dict:
    sdk = RunwareServer(api_key=key, url=url)
    await sdk.connect()
    latencies: list = []
    counts = {"done": 0, "timeouts": 0, "errors": 0}
    start = time.perf_counter()
    deadline = start + cap

    async def lane() -> None:
        while time.perf_counter() < deadline:
            request = IRequestImage(
                positive_prompt="a red fox", number_of_images=1, model_id=13, image_size=1
            )
            began = time.perf_counter()
            try:
                images = await asyncio.wait_for(
                    sdk.requestImages(request), max(deadline - began, 0.001)
                )
            except TimeoutError:
                counts["timeouts"] += 1
                continue
            except Exception:
                counts["errors"] += 1
                continue
            if images:
                counts["done"] += 1
                latencies.append(time.perf_counter() - began)
            else:
                counts["errors"] += 1

    cpu = time.process_time()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return {
        **counts,
        "elapsed": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "latencies": latencies,
    }


if __name__ == "__main__":
    try:
        url, key, in_flight, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        result = asyncio.run(main(url, key, in_flight, cap))
        print(json.dumps(result), flush=True)
        os._exit(0)
    except BaseException as exc:
        print(f"legacy driver failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
