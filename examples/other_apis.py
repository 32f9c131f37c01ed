"""Requests written for the other seed APIs, run on the embedded server: no account anywhere.

    python examples/other_apis.py

Each request is the shape its API documents (a Stablecog body, a ModelsLab body with numbers
as strings, an AKI.IO call); each answer is the shape that API returns.
"""

from __future__ import annotations

import json

import anyio

from orchestrator import VOCABULARIES, Credits, Orchestrator

REQUESTS = {
    "stablecog": {"prompt": "red cat wearing a purple hat", "num_outputs": 2},
    "modelslab": {"prompt": "a lighthouse", "width": "768", "height": "512", "samples": "1"},
    "akiio": {"prompt": "a quiet harbour", "width": 640, "height": 384, "quality": "fast"},
}


def short(value: object) -> object:
    # Data URIs and base64 are long: show their start.
    if isinstance(value, str) and len(value) > 80:
        return value[:60] + "..."
    if isinstance(value, list):
        return [short(v) for v in value]
    if isinstance(value, dict):
        return {k: short(v) for k, v in value.items()}
    return value


async def main() -> None:
    print("vocabularies:", ", ".join(VOCABULARIES))
    credits = Credits(10.0)
    async with Orchestrator() as orch:
        for name, request in REQUESTS.items():
            answer = await orch.submit_as(name, request, credits=credits)
            print(f"{name}: {json.dumps(short(answer))}")


if __name__ == "__main__":
    anyio.run(main)
