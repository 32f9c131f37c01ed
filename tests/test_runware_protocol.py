"""The current Runware dialect, sans I/O: messages, codec, translation and the session."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from protocol import (
    Authenticated,
    ConnectionFailed,
    ControlNet,
    FrameRejected,
    ImageReceived,
    InvalidState,
    LocalProtocolError,
    NewImageUpload,
    NewTask,
    PongReceived,
    PreProcessControlNetRequest,
    PromptEnhance,
    RemoteProtocolError,
    RemoveBackgroundRequest,
    ReverseImageClip,
    SessionState,
    TaskCompleted,
    TaskFailed,
    TextReceived,
    UnknownTask,
    UpscaleGanRequest,
)
from protocol.codec import prepare
from protocol.runware import (
    Authentication,
    AuthenticationResult,
    Caption,
    ControlNetPreprocess,
    ErrorItem,
    GetResponse,
    ImageInference,
    ImageItem,
    ImageUpload,
    Ping,
    PongItem,
    PreprocessItem,
    Refused,
    RemoveBackground,
    RunwareSession,
    StatusItem,
    TextItem,
    UploadItem,
    Upscale,
    current_frame,
    current_task,
    decode,
    decode_from_client,
    decode_from_server,
    encode_errors,
    encode_items,
    encode_tasks,
    legacy_task,
)
from protocol.runware import PromptEnhance as CurrentPromptEnhance
from protocol.runware.session import PACK_BYTES
from protocol.tables import ErrorId

SESSION = "0f3f7a52-2c1e-4d55-9d0a-6a8e0c1b9e11"


def tid() -> str:
    return str(uuid.uuid4())


def data(*items: dict[str, Any]) -> bytes:
    return json.dumps({"data": list(items)}).encode()


def image_item(task: str, image_uuid: str | None = None, **extra: Any) -> dict[str, Any]:
    image_uuid = image_uuid or tid()
    return {
        "taskType": "imageInference",
        "taskUUID": task,
        "imageUUID": image_uuid,
        "imageURL": f"http://h/{image_uuid}.jpg",
        "cost": 0.25,
        **extra,
    }


def open_session() -> RunwareSession:
    session = RunwareSession("key")
    session.send_connect()
    reply = data({"taskType": "authentication", "connectionSessionUUID": SESSION})
    (event,) = session.receive(reply)
    assert isinstance(event, Authenticated)
    return session


def send(session: RunwareSession, n: int = 1, **fields: Any) -> tuple[str, dict[str, Any]]:
    task = tid()
    frame = session.send_task(NewTask(task_uuid=task, prompt_text="p", number_results=n, **fields))
    (sent,) = json.loads(frame)
    return task, sent


# -- messages and codec --------------------------------------------------------------------

TASKS = [
    Authentication(api_key="k", connection_session_uuid=SESSION),
    Ping(),
    GetResponse(task_uuid=tid()),
    ImageInference(
        task_uuid=tid(),
        positive_prompt="a fox",
        negative_prompt="blur",
        model="civitai:101055@128078",
        width=768,
        height=512,
        number_results=2,
        steps=30,
        cfg_scale=6.5,
        seed=2**69,  # past 64 bits: kept exact both ways
        scheduler="Euler a",
        lora=[{"model": "civitai:1@2", "weight": 0.5}],
        delivery_method="async",
        output_type="base64Data",
    ),
    ImageUpload(task_uuid=tid(), image="data:image/png;base64,iVBORw0KGgo="),
    Upscale(task_uuid=tid(), inputs={"image": tid()}, upscale_factor=4, model="runware:504@1"),
    Upscale(task_uuid=tid(), input_image=tid(), task_type="imageUpscale"),
    RemoveBackground(task_uuid=tid(), inputs={"image": tid()}),
    Caption(task_uuid=tid(), input_image=tid()),
    ControlNetPreprocess(task_uuid=tid(), input_image=tid(), pre_processor_type="canny"),
    CurrentPromptEnhance(task_uuid=tid(), prompt="a cat", prompt_versions=3, prompt_max_length=64),
]
ITEMS = [
    AuthenticationResult(task_type="authentication", connection_session_uuid=SESSION),
    PongItem(task_type="ping"),
    ImageItem(
        task_type="upscale",
        task_uuid=tid(),
        image_uuid=tid(),
        image_url="http://h/i.jpg",
        seed=2**69,
        nsfw_content=True,
        cost=0.1,
    ),
    TextItem(task_type="caption", task_uuid=tid(), text="a red square"),
    UploadItem(task_type="imageUpload", task_uuid=tid(), image_uuid=tid(), image_url="http://h/u"),
    PreprocessItem(
        task_type="controlNetPreprocess",
        task_uuid=tid(),
        guide_image_uuid=tid(),
        guide_url="http://h/g.png",
    ),
    StatusItem(task_type="imageInference", task_uuid=tid(), status="processing"),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.task_type or t.wire_name)
def test_every_task_round_trips(task: Any) -> None:
    frame = encode_tasks([task])
    assert json.loads(frame)[0]["taskType"] == task.task_type or task.wire_name
    (back,) = decode_from_client(frame)
    assert back == task.model_copy(update={"task_type": task.task_type or task.wire_name})
    assert decode(frame) == [back]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: type(i).__name__)
def test_every_item_round_trips(item: Any) -> None:
    frame = encode_items([item])
    assert decode_from_server(frame) == [item]
    assert decode(frame) == [item]


def test_errors_round_trip() -> None:
    errors = [
        ErrorItem(code="invalidSteps", message="too many", task_uuid=tid(), parameter="steps"),
        ErrorItem(code="invalidApiKey", message="no"),
    ]
    assert decode_from_server(encode_errors(errors)) == errors


def test_one_bad_task_does_not_spoil_the_others_in_its_frame() -> None:
    good = {"taskType": "ping", "ping": True}
    tasks = decode_from_client(
        json.dumps(
            [good, {"taskType": "imageInference", "taskUUID": "t1"}, {"taskType": "dance"}, 3]
        )
    )
    assert isinstance(tasks[0], Ping)
    missing, unknown, not_object = tasks[1:]
    assert isinstance(missing, Refused) and missing.task_uuid == "t1"
    assert [e.field for e in missing.error.errors] == ["positivePrompt"]
    assert isinstance(unknown, Refused) and "dance" in unknown.error.message
    assert unknown.task_type is None
    assert isinstance(not_object, Refused)


@pytest.mark.parametrize(
    "frame", [b"{}", b"[]", b'{"nope": []}', b'{"data": 3}', b"not json", b'{"data": [1]}']
)
def test_frames_of_the_wrong_shape_are_remote_errors(frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        if frame.startswith(b"["):
            decode_from_client(frame)
        else:
            decode_from_server(frame)


# -- translation ---------------------------------------------------------------------------

GUIDE = ControlNet(
    preprocessor="canny", weight=0.5, start_step=0, end_step=10, guide_image_uuid=str(uuid.uuid4())
)
LEGACY = [
    NewTask(task_uuid=tid(), prompt_text="a fox -no blur", number_results=3, size_id=11),
    NewTask(
        task_uuid=tid(),
        prompt_text="a fox",
        model_id="civitai:2@3",
        width=640,
        height=448,
        steps=12,
        g_scale=4.0,
        seed=2**69,
        scheduler_id=18,
        clip_skip=1,
        check_nsfw=True,
        use_prompt_weighting=True,
        return_base64_image=True,
        lora=[{"model_id": "civitai:1@2", "weight": 0.3}],
    ),
    NewTask(
        task_uuid=tid(), prompt_text="a fox", task_type=2, image_initiator_uuid=tid(), strength=0.4
    ),
    NewTask(
        task_uuid=tid(),
        prompt_text="a fox",
        task_type=3,
        image_initiator_uuid=tid(),
        image_mask_initiator_uuid=tid(),
        strength=0.9,
    ),
    NewTask(task_uuid=tid(), prompt_text="a fox", task_type=9, model_id="13", control_net=[GUIDE]),
    UpscaleGanRequest(task_uuid=tid(), image_uuid=tid(), upscale_factor=3),
    RemoveBackgroundRequest(task_uuid=tid(), image_uuid=tid()),
    ReverseImageClip(task_uuid=tid(), image_uuid=tid()),
    PreProcessControlNetRequest(
        task_uuid=tid(),
        pre_processor_type="canny",
        guide_image_uuid=tid(),
        low_threshold_canny=10,
        high_threshold_canny=200,
    ),
    PromptEnhance(task_uuid=tid(), prompt="a cat", prompt_versions=4, prompt_max_length=100),
    NewImageUpload(task_uuid=tid(), image_base64="data:image/png;base64,iVBORw0KGgo="),
]


def _meaning(task: Any) -> dict[str, Any]:
    # What a task asks for, whichever way its size was said.
    fields = task.model_dump()
    if isinstance(task, NewTask):
        fields["width"], fields["height"] = task.dimensions
        fields.pop("sizeId")
    return fields


@pytest.mark.parametrize("legacy", LEGACY, ids=lambda t: f"{t.wire_name}-{t.task_uuid[:4]}")
def test_a_legacy_task_goes_out_and_comes_back_meaning_the_same(legacy: Any) -> None:
    prepared = current_task(prepare(legacy))
    (task,) = decode_from_client(prepared.frame)
    assert not isinstance(task, Refused), task
    assert task.delivery_method == "sync"  # results on the socket: nothing polls
    assert _meaning(legacy_task(task)) == _meaning(legacy)
    assert (prepared.expects, prepared.expected) == (
        prepare(legacy).expects,
        legacy.expected_results,
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"style_id": 2}, "styleId"),
        ({"prompt_language_id": 2}, "promptLanguageId"),
        ({"use_cache": False}, "useCache"),
        ({"offset": 3}, "offset"),
    ],
)
def test_what_the_current_dialect_cannot_say_is_refused_before_sending(
    fields: dict[str, Any], field: str
) -> None:
    session = open_session()
    with pytest.raises(LocalProtocolError) as caught:
        send(session, **fields)
    assert [e.field for e in caught.value.errors] == [field]
    assert session.in_flight == 0


def _refusal(**fields: Any) -> list[str]:
    base = {"taskType": "imageInference", "taskUUID": tid(), "positivePrompt": "a fox"}
    (task,) = decode_from_client(json.dumps([{**base, **fields}]))
    if isinstance(task, Refused):
        return [e.field for e in task.error.errors]
    with pytest.raises(RemoteProtocolError) as caught:
        legacy_task(task)
    return [e.field for e in caught.value.errors]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"steps": 500}, ["steps"]),
        ({"CFGScale": 50}, ["CFGScale"]),
        ({"width": 513, "height": 512}, ["width"]),
        ({"width": 512}, ["height"]),
        ({"numberResults": 0}, ["numberResults"]),
        ({"model": "no such model"}, ["model"]),
        ({"scheduler": "Nope"}, ["scheduler"]),
        ({"seedImage": "not-a-uuid"}, ["seedImage"]),
        ({"strength": 0.5}, ["strength"]),
        ({"lora": [{"model": "", "weight": 0.5}]}, ["lora[0].model"]),
        (
            {"controlNet": [{"guideImage": "x", "weight": 0.5, "startStep": 0, "endStep": 5}]},
            ["controlNet[0].preprocessor"],
        ),
        ({"webhookURL": "http://h/"}, ["webhookURL"]),
        ({"outputFormat": "WEBP"}, ["outputFormat"]),
        ({"deliveryMethod": "carrier pigeon"}, ["deliveryMethod"]),
    ],
)
def test_a_server_names_what_it_refuses_by_the_current_dialects_fields(
    fields: dict[str, Any], named: list[str]
) -> None:
    assert _refusal(**fields) == named


def test_legacy_frames_a_server_sends_become_current_ones() -> None:
    task = tid()
    legacy_image = {
        **{"imageSrc": "http://h/i.png", "imageUUID": "u", "taskUUID": task},
        **{"bNSFWContent": True, "cost": 0.5, "seed": 7, "imageBase64Data": "QUJD"},
    }
    assert current_frame({"newImages": {"images": [legacy_image], "totalAvailableResults": 4}}) == {
        "data": [
            {
                "taskType": "imageInference",
                "taskUUID": task,
                "imageUUID": "u",
                "imageURL": "http://h/i.png",
                "NSFWContent": True,
                "cost": 0.5,
                "seed": 7,
                "imageBase64Data": "QUJD",
                "imageDataURI": "data:image/png;base64,QUJD",
            }
        ]
    }
    upscaled = current_frame({"newUpscaleGan": {"images": [legacy_image]}})
    assert upscaled is not None and upscaled["data"][0]["taskType"] == "upscale"
    texts = {
        "newPromptEnhancer": {
            "texts": [{"taskUUID": task, "text": "a"}, {"taskUUID": task, "text": "b"}]
        }
    }
    assert [i["text"] for i in (current_frame(texts) or {})["data"]] == ["a", "b"]
    assert current_frame({"pong": True}) == {"data": [{"taskType": "ping", "pong": True}]}
    assert current_frame({"newProgress": {"taskUUID": task, "step": 1, "steps": 2}}) is None
    error = {"error": True, "errorId": ErrorId.QUEUE_FULL, "errorMessage": "full", "taskUUID": task}
    assert current_frame(error) == {
        "errors": [{"code": "rateLimitExceeded", "message": "full", "taskUUID": task}]
    }
    for frame in (upscaled, current_frame(texts), current_frame(error)):
        decode_from_server(json.dumps(frame))  # what the server writes, a client reads


# -- the session ---------------------------------------------------------------------------


def test_authentication_opens_the_session_and_a_resume_names_it() -> None:
    session = RunwareSession("secret")
    assert json.loads(session.send_connect()) == [
        {"taskType": "authentication", "apiKey": "secret"}
    ]
    reply = data({"taskType": "authentication", "connectionSessionUUID": SESSION})
    (event,) = session.receive(reply)
    assert event == Authenticated(SESSION, frozenset(), False, None, ())
    pending, _ = send(session)
    session.connection_lost()
    frame = json.loads(session.send_connect())
    assert frame == [
        {"taskType": "authentication", "apiKey": "secret", "connectionSessionUUID": SESSION}
    ]
    (event,) = session.receive(reply)
    # the same session back: the replay comes first, then what it lacks is sent again
    assert isinstance(event, Authenticated) and event.resumed and event.resubmit is None
    assert session.outstanding() == [pending]
    assert json.loads(session.resend_task(pending))[0]["taskUUID"] == pending


def test_results_of_several_tasks_in_one_frame_complete_each_once() -> None:
    session = open_session()
    one, sent = send(session)
    two, _ = send(session, n=2)
    text = tid()
    session.send_task(PromptEnhance(task_uuid=text, prompt="a cat", prompt_versions=2))
    assert sent["taskType"] == "imageInference" and sent["deliveryMethod"] == "sync"
    repeated = image_item(two)
    events = session.receive(
        data(
            {"taskType": "imageInference", "taskUUID": two, "status": "processing"},
            image_item(one),
            repeated,
            dict(repeated),  # the same image again: delivered once
            {"taskType": "promptEnhance", "taskUUID": text, "text": "a cat, lit"},
            image_item(two),
            {"taskType": "promptEnhance", "taskUUID": text, "text": "a cat, dark"},
        )
    )
    completed = [e.task_uuid for e in events if isinstance(e, TaskCompleted)]
    assert completed == [one, two, text]
    assert len([e for e in events if isinstance(e, ImageReceived)]) == 3
    assert [e.text for e in events if isinstance(e, TextReceived)] == ["a cat, lit", "a cat, dark"]
    assert session.in_flight == 0
    (late,) = session.receive(data(image_item(one)))
    assert isinstance(late, UnknownTask)


def test_an_error_entry_fails_its_task_and_an_error_status_too() -> None:
    session = open_session()
    one, _ = send(session)
    two, _ = send(session)
    other, _ = send(session)
    errors = {
        "errors": [
            {"code": "invalidSteps", "message": "too many", "taskUUID": one, "parameter": "steps"}
        ]
    }
    (failed,) = session.receive(json.dumps(errors))
    assert isinstance(failed, TaskFailed) and failed.error_id == ErrorId.VALIDATION_ERROR
    assert failed.error_code == "invalidSteps" and "steps" in failed.error_message
    status = {
        "taskType": "imageInference",
        "taskUUID": two,
        "status": "error",
        "error": {"code": "rateLimitExceeded", "message": "busy"},
    }
    (failed,) = session.receive(data(status))
    assert isinstance(failed, TaskFailed) and failed.retryable
    assert session.outstanding() == [other]


def test_a_refused_key_fails_the_connection_for_good() -> None:
    session = RunwareSession("bad")
    session.send_connect()
    (event,) = session.receive(json.dumps({"errors": [{"code": "invalidApiKey", "message": "no"}]}))
    assert isinstance(event, ConnectionFailed) and event.authentication
    assert session.state is SessionState.CLOSED


def test_malformed_frames_are_rejected_and_the_session_goes_on() -> None:
    session = open_session()
    task, _ = send(session)
    for bad in (b"[1]", b"nope", b'{"data": [{"taskType": "imageInference"}]}'):
        (event,) = session.receive(bad)
        assert isinstance(event, FrameRejected)
    (pong,) = session.receive(data({"taskType": "ping", "pong": True}))
    assert isinstance(pong, PongReceived)
    assert session.outstanding() == [task]


def test_tasks_queued_together_go_out_as_one_array_frame() -> None:
    session = open_session()
    frames = [send(session)[0] for _ in range(3)]
    sent = [session.resend_task(t) for t in frames]
    (packed,) = session.pack(sent)
    assert [t["taskUUID"] for t in json.loads(packed)] == frames
    big = [b"[" + b'{"x":"' + b"a" * (PACK_BYTES // 3) + b'"}]' for _ in range(3)]
    assert len(session.pack(big)) == 2  # batches stay near PACK_BYTES
    assert json.loads(session.send_ping()) == [{"taskType": "ping", "ping": True}]
    assert session.cancel_task(frames[0]) is None  # no cancel message in this dialect
    assert session.outstanding() == frames[1:]


def test_tasks_wait_for_the_session_to_open() -> None:
    session = RunwareSession("key")
    with pytest.raises(InvalidState):
        send(session)


# -- the fast path -------------------------------------------------------------------------

_VARIANTS: list[dict[str, Any]] = [
    {},
    {"NSFWContent": True, "seed": 5, "imageBase64Data": "QUJD"},
    {"taskType": "upscale"},
    {"taskType": "removeBackground", "cost": 0},
    {"status": "success"},  # a key the path does not take: the full decoder reads it
    {"imageURL": None, "imageDataURI": "data:image/png;base64,QUJD"},
    {"seed": 2**69},
    {"seed": 0},
    {"cost": "free"},
    {"NSFWContent": "yes"},
    {"taskType": "caption"},
    {"imageUUID": 7},
    {"extra": 1},
]


@pytest.mark.parametrize("variant", _VARIANTS, ids=[str(sorted(v)) for v in _VARIANTS])
def test_the_fast_path_reads_what_the_full_decoder_reads(variant: dict[str, Any]) -> None:
    from protocol.codec import parse
    from protocol.runware.fastpath import read_images
    from protocol.runware.results import results_of

    task = tid()
    item = {k: v for k, v in {**image_item(task), **variant}.items() if v is not None}
    frame = json.dumps({"data": [image_item(tid()), item]})
    fast = read_images(parse(frame))
    try:
        full = [results_of(i) for i in decode_from_server(frame)]
    except RemoteProtocolError:
        assert fast is None  # what the full decoder refuses, the fast path does not take
        return
    if fast is not None:
        assert [i.model_dump() for i in fast] == [i.model_dump() for i in full if i is not None]


def test_a_task_the_server_holds_already_is_asked_for_not_failed_nor_paid_twice() -> None:
    session = open_session()
    task, _ = send(session, n=2)
    assert json.loads(session.send_ping()) == [{"taskType": "ping", "ping": True}]
    conflict = {"errors": [{"code": "conflictTaskUUID", "message": "exists", "taskUUID": task}]}
    assert session.receive(json.dumps(conflict)) == []
    assert session.outstanding() == [task]
    ping, ask = json.loads(session.send_ping())  # each heartbeat asks until it is complete
    assert ask == {"taskType": "getResponse", "taskUUID": task} and ping["taskType"] == "ping"
    session.receive(data({"taskType": "imageInference", "taskUUID": task, "status": "processing"}))
    first = image_item(task)
    session.receive(data(first))
    assert len(json.loads(session.send_ping())) == 2
    events = session.receive(data(first, image_item(task)))  # the answer: all so far
    assert [type(e) for e in events] == [ImageReceived, TaskCompleted]
    assert json.loads(session.send_ping()) == [{"taskType": "ping", "ping": True}]
