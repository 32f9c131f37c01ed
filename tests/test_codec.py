"""The codec: golden frames, fixtures of every message type, big seeds, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol import (
    ErrorMessage,
    NewImages,
    NewTask,
    PreProcessControlNetRequest,
    PreProcessControlNetResult,
    RemoteProtocolError,
    RemoveBackgroundRequest,
    RemoveBackgroundResult,
    UpscaleGanRequest,
    UpscaleGanResult,
    decode,
    decode_from_client,
    decode_from_server,
    encode,
)
from protocol.tables import SEED_MAX

from conftest import FIXTURES

TASK = "2b12fd84-bf41-404d-8fd9-38874d3e0537"

CLIENT_FIXTURES = sorted((FIXTURES / "messages" / "client").glob("*.json"))
SERVER_FIXTURES = sorted((FIXTURES / "messages" / "server").glob("*.json"))


def test_every_message_type_has_a_fixture() -> None:
    from protocol.codec import _FROM_CLIENT, _FROM_SERVER

    assert {p.stem for p in CLIENT_FIXTURES} == set(_FROM_CLIENT)
    assert {p.stem for p in SERVER_FIXTURES} == {*_FROM_SERVER, "error"}


@pytest.mark.parametrize(
    "path", CLIENT_FIXTURES + SERVER_FIXTURES, ids=lambda p: p.parent.name + "/" + p.stem
)
def test_fixture_round_trips(path: Path) -> None:
    raw = path.read_bytes()
    directional = decode_from_client if path.parent.name == "client" else decode_from_server
    message = directional(raw)
    assert decode(raw) == message  # the direction-free decoder agrees
    assert message.wire_name == path.stem
    assert json.loads(encode(message)) == json.loads(raw)
    assert decode(encode(message)) == message


SEED_NEW_IMAGES = b"""{
"newImages": {
"images": [
{
"imageSrc": "https://im.picfinder.ai/image/ii/e1e7b7b8-046d-48f6-b09b-381d67bef00d.jpg",
"imageUUID": "87e9f0eb-ab36-4c17-95ca-4ae4ac48e383",
"bNSFWContent": false,
"imageAltText": "country house on top of a hill, idyllic, french countryside, beautiful, nature, warm lighting, crisp detail, high definition",
"taskUUID": "99e54383-551d-4029-9928-bc83177e26ea"
},
{
"imageSrc": "https://im.picfinder.ai/image/ii/216877ea-f993-4333-a4c5-c97f534637fc.jpg",
"imageUUID": "ba45e405-6042-4796-896a-105c1ab72cf2",
"bNSFWContent": false,
"imageAltText": "country house on top of a hill, idyllic, french countryside, beautiful, nature, warm lighting, crisp detail, high definition",
"taskUUID": "99e54383-551d-4029-9928-bc83177e26ea"
}
],
"totalAvailableResults": 18
}
}"""


def test_seed_new_images_example_decodes_and_reencodes_identically(shared: Path) -> None:
    seed_text = (shared / "seeds" / "004_454269be6a0100b3.txt").read_text(encoding="utf-8")
    # The example above is the seed's, verbatim.
    assert SEED_NEW_IMAGES.decode() in seed_text
    message = decode_from_server(SEED_NEW_IMAGES)
    assert isinstance(message, NewImages)
    assert message.total_available_results == 18
    assert [i.cost for i in message.images] == [None, None]  # the example has no cost
    assert message.images[1].image_uuid == "ba45e405-6042-4796-896a-105c1ab72cf2"
    assert json.loads(encode(message)) == json.loads(SEED_NEW_IMAGES)


def test_seed_request_example_filled_with_values_validates() -> None:
    # The seed's request shape ("numberResults": int, ...) with values; its ControlNet list
    # comes with a task of type 1, which stays valid: the reference shows it so.
    guide = "e357d143-4dde-414e-8c83-964ff2b3ce78"
    filled = {
        "newTask": {
            "taskUUID": TASK,
            "promptText": "country house on top of a hill",
            "numberResults": 2,
            "modelId": "13",
            "sizeId": 1,
            "taskType": 1,
            "promptLanguageId": None,
            "offset": 0,
            "lora": [
                {"modelId": "civitai:132942@146296", "weight": 0.7},
                {"modelId": "civitai:58390@62833", "weight": 0.3},
            ],
            "controlNet": [
                {
                    "preprocessor": p,
                    "weight": 0.5,
                    "startStep": 0,
                    "endStep": 20,
                    "guideImageUUID": guide,
                    "controlMode": m,
                }
                for p, m in (("canny", "balanced"), ("openpose", "prompt"), ("mlsd", "controlnet"))
            ],
        }
    }
    message = decode_from_client(json.dumps(filled))
    assert isinstance(message, NewTask)
    assert message.control_net is not None and len(message.control_net) == 3
    assert json.loads(encode(message)) == filled


def test_legacy_sdk_frames_decode(shared: Path) -> None:
    lines = (shared / "fixtures" / "legacy-sdk-client-frames.jsonl").read_bytes().splitlines()
    messages = [decode_from_client(line) for line in lines if line.strip()]
    assert [m.wire_name for m in messages] == [
        "newConnection",
        "ping",
        "newTask",
        "newPromptEnhance",
        "newImageUpload",
    ]
    task = messages[2]
    assert isinstance(task, NewTask)
    assert task.model_id == 13  # kept as received: an integer
    assert task.positive_prompt == "a red fox"
    assert task.negative_prompt == "blurry"
    assert task.use_cache is False
    for line, message in zip(lines, messages, strict=True):
        assert json.loads(encode(message)) == json.loads(line)


@pytest.mark.parametrize("seed", [1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, SEED_MAX])
def test_large_seeds_round_trip_exactly(seed: int) -> None:
    task = NewTask(task_uuid=TASK, prompt_text="x", seed=seed)
    frame = encode(task)
    assert str(seed).encode() in frame
    decoded = decode(frame)
    assert isinstance(decoded, NewTask)
    assert decoded.seed == seed and type(decoded.seed) is int


def test_large_seed_in_an_image_round_trips() -> None:
    frame = (FIXTURES / "messages" / "server" / "newImages.json").read_bytes()
    message = decode_from_server(frame)
    assert isinstance(message, NewImages)
    assert message.images[0].seed == SEED_MAX
    assert b"922337203470729216000" in encode(message)


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"newTask"', "must be a JSON object, not a string"),
        (b"{}", "exactly one top-level key"),
        (b'{"ping": true, "pong": true}', "exactly one top-level key"),
        (b'{"newThing": {}}', "unknown message type 'newThing'"),
        (b'{"newTask": []}', "newTask must be a JSON object, not an array"),
        (b'{"ping": false}', "ping must be true"),
        (b'{"newTask": {"taskUUID": "nope", "promptText": "x"}}', "taskUUID"),
        (
            b'{"newTask": {"taskUUID": "%s", "promptText": "x", "seed": 922337203470729216001}}'
            % TASK.encode(),
            "seed = 922337203470729216001: must be at most",
        ),
        (
            b'{"newTask": {"taskUUID": "%s", "promptText": "x", "seed": %s}}'
            % (TASK.encode(), b"9" * 400),
            "seed",
        ),
        (
            b'{"newTask": {"taskUUID": "%s", "promptText": "x", "seed": 1.5}}' % TASK.encode(),
            "seed = 1.5: must be an integer",
        ),
        (
            b'{"newTask": {"taskUUID": "%s", "promptText": "x", "gScale": NaN}}' % TASK.encode(),
            "not valid JSON",
        ),
        (b'{"error": true}', "errorId"),
    ],
)
def test_bad_frames_raise_remote_protocol_error(frame: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(frame)
    assert fragment in str(info.value)


def test_direction_specific_decoders_refuse_the_other_direction() -> None:
    ping = b'{"ping": true}'
    with pytest.raises(RemoteProtocolError, match="sent by clients only"):
        decode_from_server(ping)
    with pytest.raises(RemoteProtocolError, match="sent by servers only"):
        decode_from_client(b'{"pong": true}')
    with pytest.raises(RemoteProtocolError, match="newTask"):
        decode_from_client(b'{"newTask": {"images": []}}')


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"newUpscaleGan": {"imageUUID": TASK, "taskUUID": TASK, "upscaleFactor": 2}},
            UpscaleGanRequest,
        ),
        ({"newUpscaleGan": {"images": []}}, UpscaleGanResult),
        ({"newRemoveBackground": {"imageUUID": TASK, "taskUUID": TASK}}, RemoveBackgroundRequest),
        ({"newRemoveBackground": {"images": []}}, RemoveBackgroundResult),
        (
            {
                "newPreProcessControlNet": {
                    "taskUUID": TASK,
                    "preProcessorType": "canny",
                    "guideImageUUID": TASK,
                }
            },
            PreProcessControlNetRequest,
        ),
        (
            {
                "newPreProcessControlNet": {
                    "taskUUID": TASK,
                    "newImageUUID": TASK,
                    "newImageSrc": "http://h/i.png",
                }
            },
            PreProcessControlNetResult,
        ),
    ],
)
def test_decode_tells_shared_names_apart_by_their_fields(
    body: dict[str, object], expected: type
) -> None:
    assert type(decode(json.dumps(body))) is expected


def test_responses_keep_unknown_keys() -> None:
    frame = {
        "newImages": {
            "images": [
                {
                    "imageSrc": "http://h/a.jpg",
                    "imageUUID": TASK,
                    "taskUUID": TASK,
                    "bNSFWContent": False,
                    "cost": 0.1,
                    "futureField": {"a": 1},
                }
            ],
            "futureTotal": 3,
        }
    }
    message = decode_from_server(json.dumps(frame))
    assert isinstance(message, NewImages)
    assert message.model_extra == {"futureTotal": 3}
    assert message.images[0].model_extra == {"futureField": {"a": 1}}
    assert json.loads(encode(message)) == frame


def test_requests_reject_unknown_keys_naming_them() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_from_client(
            json.dumps({"newTask": {"taskUUID": TASK, "promptText": "x", "gscale": 3}})
        )
    (error,) = info.value.errors
    assert error.field == "gscale"
    assert error.rule == "is not a field of this message"


def test_error_frame_keeps_unknown_ids_and_is_flat() -> None:
    message = decode_from_server(b'{"error": true, "errorId": 77777, "errorMessage": "new"}')
    assert isinstance(message, ErrorMessage)
    assert message.error_id == 77777 and message.task_uuid is None
    assert json.loads(encode(message)) == {"error": True, "errorId": 77777, "errorMessage": "new"}
    built = ErrorMessage(error_id=19, error_message="invalid API key")
    assert json.loads(encode(built)) == {
        "error": True,
        "errorId": 19,
        "errorMessage": "invalid API key",
    }


def test_encode_writes_only_fields_that_were_set() -> None:
    frame = json.loads(encode(NewTask(task_uuid=TASK, prompt_text="x")))
    assert frame == {"newTask": {"taskUUID": TASK, "promptText": "x"}}
