"""Run the vendor's current SDK (runware-sdk 1.8, in its own virtual environment) against a
server.

Usage: sdk_client.py URL API_KEY. Prints one JSON object: what each call returned, and the
error the SDK raised for a bad field. (tests/test_runware_sdk.py runs it; record.py runs it
through a relay to record the frames.)
"""

import asyncio
import json
import sys

from runware import Runware, RunwareError

SDXL = "civitai:101055@128078"


async def main(url: str, key: str) -> dict:
    async with Runware(api_key=key, ws_base_url=url, timeout=60_000) as sdk:
        polled = await sdk.run(  # the SDK's default delivery: acknowledged, then polled
            {
                "taskType": "imageInference",
                "model": SDXL,
                "positivePrompt": "a red fox in the snow",
                "negativePrompt": "blurry",
                "width": 512,
                "height": 512,
                "numberResults": 2,
            }
        )
        # What a polling client reads: every result of the task so far, in one answer.
        fetched = await sdk.get_response({"taskUUID": polled[0]["taskUUID"]})
        pushed = await sdk.run(
            {
                "taskType": "imageInference",
                "model": SDXL,
                "positivePrompt": "a lighthouse at dusk",
                "width": 768,
                "height": 512,
                "seed": 42,
                "deliveryMethod": "sync",
            }
        )
        source = pushed[0]["imageUUID"]
        upscaled = await sdk.run(
            {
                "taskType": "upscale",
                "model": "runware:504@1",
                "inputs": {"image": source},
                "upscaleFactor": 2,
                "deliveryMethod": "sync",
            }
        )
        cut_out = await sdk.run(
            {
                "taskType": "removeBackground",
                "model": "runware:109@1",
                "inputs": {"image": source},
                "deliveryMethod": "sync",
            }
        )
        prompts = await sdk.run(
            {
                "taskType": "promptEnhance",
                "model": "runware:llama-3-1-8b@prompt-enhancer",
                "prompt": "a cat",
                "promptVersions": 2,
                "promptMaxLength": 64,
                "deliveryMethod": "sync",
            }
        )
        try:
            await sdk.run(
                {
                    "taskType": "imageInference",
                    "model": SDXL,
                    "positivePrompt": "a cat",
                    "width": 512,
                    "height": 512,
                    "steps": 500,
                    "deliveryMethod": "sync",
                }
            )
            error = None
        except RunwareError as exc:
            error = {"code": exc.code, "parameter": exc.parameter, "message": str(exc)}
    return {
        "polled": polled,
        "fetched": fetched,
        "pushed": pushed,
        "upscaled": upscaled,
        "cut_out": cut_out,
        "prompts": prompts,
        "error": error,
    }


if __name__ == "__main__":
    result = asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), timeout=90))
    print(json.dumps(result))
