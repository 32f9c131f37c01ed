"""The ``width``/``height`` extension of ``newTask``: sizes the sizeId table lacks, refused
before sending when broken, honoured by our server."""

from __future__ import annotations

import uuid

import pytest

from orchestrator import LocalProtocolError, Orchestrator, TextToImage
from protocol.codec import decode_from_client, encode
from protocol.messages import NewTask

from serverkit import KEY, running


def task(**fields: object) -> NewTask:
    return NewTask(**{"taskUUID": str(uuid.uuid4()), "promptText": "a", **fields})


def test_a_free_size_replaces_the_size_id_and_round_trips() -> None:
    made = task(width=768, height=1000)
    assert made.dimensions == (768, 1000)
    assert decode_from_client(encode(made)) == made
    assert task().dimensions == (512, 512)  # sizeId 1, the default
    assert "width" not in encode(task()).decode()  # sent only when set


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"width": 768}, "height", "required with the other"),
        ({"width": 768, "height": 1001}, "height", "multiple of 8"),
        ({"width": 32, "height": 64}, "width", "at least 64"),
        ({"width": 4096, "height": 64}, "width", "at most 2048"),
        ({"width": 768, "height": 768, "sizeId": 1}, "sizeId", "cannot be given with width"),
    ],
)
def test_a_broken_free_size_names_the_field(
    fields: dict[str, object], field: str, rule: str
) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        task(**fields)
    assert field in str(caught.value) and rule in str(caught.value)


async def test_our_server_draws_the_free_size() -> None:
    async with running(api_keys=(KEY,)) as server:
        async with Orchestrator(server.url, api_key=KEY) as orch:
            result = await orch.run(TextToImage(prompt="a red fox", width=904, height=600))
            data = await result.image.read()
    from orchestrator.delivery.types import dimensions

    assert dimensions(data) == (904, 600)


async def test_a_spec_with_half_a_free_size_is_refused_before_sending() -> None:
    with pytest.raises(LocalProtocolError, match="height"):
        TextToImage(prompt="a", width=904).prepare(str(uuid.uuid4()))
