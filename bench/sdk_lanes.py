"""The load both SDK drivers put on a server: K lanes of one call each, for a capped time.

Imported by ``legacy_driver.py`` and ``runware_driver.py``, which run in the SDKs' own
environments (their folder is on ``sys.path`` as scripts), so it needs the standard library
only.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable


async def lanes(call: Callable[[], Awaitable[bool]], in_flight: int, cap: float) -> dict:
    """Keep ``in_flight`` calls outstanding until ``cap`` seconds pass. ``call()`` returns
    whether it got its images. Returns tasks done, timeouts (calls unanswered at
    the cap, or that raised a timeout), errors, elapsed and CPU seconds, and latencies."""
    latencies: list = []
    counts = {"done": 0, "timeouts": 0, "errors": 0}
    start = time.perf_counter()
    deadline = start + cap

    async def lane() -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                ok = await asyncio.wait_for(call(), max(deadline - began, 0.001))
            except TimeoutError:
                counts["timeouts"] += 1
                continue
            except Exception:
                counts["errors"] += 1
                continue
            if ok:
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
