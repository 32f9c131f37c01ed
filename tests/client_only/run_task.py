"""Run in a client-only install (no extras): one task against the given server.

Prints JSON: the images made, the server-stack modules loaded (none should be), and what
``Orchestrator()`` without endpoints says when the [server] extra is missing.
"""

from __future__ import annotations

import json
import sys

import anyio

from orchestrator import Orchestrator, UsageError


async def main(url: str, key: str) -> None:
    try:
        async with Orchestrator():
            hint = None
    except UsageError as exc:
        hint = str(exc)
    async with Orchestrator(url, api_key=key) as orch:
        result = await orch.text_to_image("a lighthouse at dusk", number_results=2, seed=3)
    loaded = sorted(name for name in ("numpy", "scipy", "PIL") if name in sys.modules)
    images = [{"imageUUID": i.image_uuid, "url": i.url} for i in result.images]
    print(json.dumps({"images": images, "loaded": loaded, "hint": hint}))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
