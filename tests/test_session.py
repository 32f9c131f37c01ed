"""The client session, driven with bytes and no event loop."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from protocol import (
    Authenticated,
    ConnectionFailed,
    FrameRejected,
    ImageReceived,
    InvalidState,
    LocalProtocolError,
    NewImageUpload,
    NewTask,
    PongReceived,
    PreProcessControlNetRequest,
    Progress,
    PromptEnhance,
    ServerError,
    Session,
    SessionState,
    TaskCompleted,
    TaskFailed,
    TextReceived,
    UnknownTask,
    UpscaleGanRequest,
)

SESSION = "0f3f7a52-2c1e-4d55-9d0a-6a8e0c1b9e11"


def tid() -> str:
    return str(uuid.uuid4())


def frame(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def reply(session: str = SESSION, **extra: Any) -> bytes:
    return frame({"newConnectionSessionUUID": {"connectionSessionUUID": session, **extra}})


def image(task: str, image_uuid: str | None = None, **extra: Any) -> dict[str, Any]:
    image_uuid = image_uuid or tid()
    return {
        "imageSrc": f"http://h/{image_uuid}.jpg",
        "imageUUID": image_uuid,
        "bNSFWContent": False,
        "taskUUID": task,
        "cost": 0.5,
        **extra,
    }


def images(*items: dict[str, Any]) -> bytes:
    return frame({"newImages": {"images": list(items)}})


def error(error_id: int, message: str = "boom", task: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": True, "errorId": error_id, "errorMessage": message}
    if task is not None:
        body["taskUUID"] = task
    return frame(body)


def open_session(*extensions: str, accepted: tuple[str, ...] | None = None) -> Session:
    session = Session("key", extensions=extensions)
    session.send_connect()
    extra = {"extensions": list(accepted)} if accepted is not None else {}
    (event,) = session.receive(reply(**extra))
    assert isinstance(event, Authenticated)
    return session


def text_to_image(session: Session, n: int = 1) -> str:
    task = tid()
    session.send_task(NewTask(task_uuid=task, prompt_text="p", number_results=n))
    return task


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# -- connecting ----------------------------------------------------------------------------


def test_connect_frame_carries_key_and_extensions_and_reply_opens() -> None:
    session = Session("secret", extensions=["seed", "resume", "seed"])
    assert session.state is SessionState.IDLE
    sent = json.loads(session.send_connect())
    assert sent == {"newConnection": {"apiKey": "secret", "extensions": ["seed", "resume"]}}
    assert session.state is SessionState.AUTHENTICATING
    (event,) = session.receive(reply(extensions=["seed", "progress"]))
    assert event == Authenticated(SESSION, frozenset({"seed"}), False, None, ())
    assert session.state is SessionState.OPEN
    assert session.session_uuid == SESSION
    assert session.extensions == {"seed"}  # only what was asked and accepted


def test_missing_extension_list_means_none_accepted() -> None:
    session = open_session("seed", "cancel")
    assert session.extensions == frozenset()


def test_tasks_are_refused_unless_open() -> None:
    session = Session("key")
    task = NewTask(task_uuid=tid(), prompt_text="p")
    with pytest.raises(InvalidState, match="IDLE"):
        session.send_task(task)
    with pytest.raises(InvalidState):
        session.receive(reply())
    session.send_connect()
    with pytest.raises(InvalidState, match="AUTHENTICATING"):
        session.send_task(task)
    with pytest.raises(InvalidState):
        session.send_connect()
    session.receive(reply())
    session.send_task(task)
    session.connection_lost()
    with pytest.raises(InvalidState, match="DISCONNECTED"):
        session.send_task(NewTask(task_uuid=tid(), prompt_text="p"))
    session.close()
    with pytest.raises(InvalidState, match="CLOSED"):
        session.send_connect()


def test_same_task_uuid_twice_is_refused() -> None:
    session = open_session()
    task = NewTask(task_uuid=tid(), prompt_text="p")
    session.send_task(task)
    with pytest.raises(LocalProtocolError, match="already pending"):
        session.send_task(task)
    assert session.in_flight == 1


# -- results -------------------------------------------------------------------------------


def test_three_tasks_interleaved_across_frames() -> None:
    session = open_session()
    a, b, c = (text_to_image(session, n=2) for _ in range(3))
    events = session.receive(images(image(a), image(b)))
    events += session.receive(images(image(c), image(a), image(c)))
    events += session.receive(images(image(b)))
    done = of(events, TaskCompleted)
    assert [d.task_uuid for d in done] == [a, c, b]
    assert all(len(d.images) == 2 for d in done)
    assert [e.task_uuid for e in of(events, ImageReceived)] == [a, b, c, a, c, b]
    assert session.in_flight == 0


def test_one_task_split_over_several_frames() -> None:
    session = open_session()
    task = text_to_image(session, n=4)
    sent = [image(task) for _ in range(4)]
    assert session.remaining(task) == 4
    first = session.receive(images(sent[0]))
    second = session.receive(images(sent[1], sent[2]))
    assert not of(first + second, TaskCompleted)
    assert session.is_pending(task) and session.remaining(task) == 1
    last = session.receive(images(sent[3]))
    (done,) = of(last, TaskCompleted)
    assert session.remaining(task) == 0
    assert [i.image_uuid for i in done.images] == [s["imageUUID"] for s in sent]
    assert done.cost == pytest.approx(2.0)


def test_duplicated_image_is_delivered_once_and_does_not_count() -> None:
    session = open_session()
    task = text_to_image(session, n=2)
    first = image(task)
    events = session.receive(images(first, first))
    events += session.receive(images(first))
    assert len(of(events, ImageReceived)) == 1
    assert not of(events, TaskCompleted)
    events = session.receive(images(image(task)))
    (done,) = of(events, TaskCompleted)
    assert len(done.images) == 2


def test_error_frame_fails_only_its_task_while_two_others_complete() -> None:
    session = open_session()
    a, b, c = (text_to_image(session) for _ in range(3))
    events = session.receive(images(image(a)))
    events += session.receive(error(1005, "render failed", task=b))
    events += session.receive(images(image(c)))
    assert [e.task_uuid for e in of(events, TaskCompleted)] == [a, c]
    (failed,) = of(events, TaskFailed)
    assert failed == TaskFailed(b, 1005, "render failed", None)
    assert not failed.retryable
    assert session.in_flight == 0
    assert session.state is SessionState.OPEN


def test_queue_full_is_a_retryable_failure() -> None:
    session = open_session()
    task = text_to_image(session)
    (failed,) = session.receive(error(1003, "queue full", task=task))
    assert isinstance(failed, TaskFailed) and failed.retryable


def test_task_less_error_after_auth_is_reported_and_session_goes_on() -> None:
    session = open_session()
    task = text_to_image(session)
    (event,) = session.receive(error(1008, "malformed frame"))
    assert event == ServerError(1008, "malformed frame", None)
    assert session.state is SessionState.OPEN
    assert session.is_pending(task)


def test_invalid_api_key_fails_the_connection_for_good() -> None:
    session = Session("wrong")
    session.send_connect()
    (event,) = session.receive(error(19, "invalid API key"))
    assert event == ConnectionFailed(19, "invalid API key", authentication=True)
    assert session.state is SessionState.CLOSED
    with pytest.raises(InvalidState):
        session.send_connect()


def test_task_less_error_while_authenticating_forgets_the_session_to_resume() -> None:
    session = open_session()
    task = text_to_image(session)
    session.connection_lost()
    assert json.loads(session.send_connect())["newConnection"]["connectionSessionUUID"] == SESSION
    (event,) = session.receive(error(1013, "session belongs to another key"))
    assert event == ConnectionFailed(1013, "session belongs to another key", authentication=False)
    assert session.state is SessionState.DISCONNECTED
    assert "connectionSessionUUID" not in json.loads(session.send_connect())["newConnection"]
    (auth,) = session.receive(reply("11111111-2222-4333-8444-555555555555"))
    assert isinstance(auth, Authenticated) and auth.resubmit == (task,)


def test_frames_for_unknown_tasks_are_reported_not_raised() -> None:
    session = open_session()
    mine = text_to_image(session)
    stranger = tid()
    events = session.receive(images(image(stranger), image(mine)))
    assert events[0] == UnknownTask(stranger, "newImages")
    assert isinstance(events[1], ImageReceived) and isinstance(events[2], TaskCompleted)
    assert session.receive(error(1005, task=stranger)) == [UnknownTask(stranger, "error")]
    late = session.receive(images(image(mine)))  # the task already completed
    assert late == [UnknownTask(mine, "newImages")]


def test_malformed_frames_are_rejected_and_the_session_goes_on() -> None:
    session = open_session()
    task = text_to_image(session)
    for bad in (b"{not json", b"[]", b'{"newImages": {"images": "x"}}', b'{"newTask": {}}'):
        (event,) = session.receive(bad)
        assert isinstance(event, FrameRejected)
    assert of(session.receive(images(image(task))), TaskCompleted)


def test_result_of_the_wrong_kind_is_rejected() -> None:
    session = open_session()
    task = text_to_image(session)
    upload_reply = {
        "newUploadedImageUUID": {
            "newImageUUID": tid(),
            "newImageSrc": "http://h/x.png",
            "taskUUID": task,
        }
    }
    (event,) = session.receive(frame(upload_reply))
    assert isinstance(event, FrameRejected) and "expects images" in str(event.error)
    assert session.is_pending(task)


def test_texts_complete_prompt_enhancement_after_promptVersions_distinct_texts() -> None:
    session = open_session()
    task = tid()
    session.send_task(PromptEnhance(task_uuid=task, prompt="a cat", prompt_versions=3))
    texts = [{"taskUUID": task, "text": t} for t in ("a cat, soft", "a cat, sharp", "a cat, dusk")]
    events = session.receive(frame({"newPromptEnhancer": {"texts": texts[:2] + texts[:1]}}))
    assert [e.text for e in of(events, TextReceived)] == ["a cat, soft", "a cat, sharp"]
    assert not of(events, TaskCompleted)
    (_, done) = session.receive(frame({"newPromptEnhancer": {"texts": texts[2:]}}))
    assert isinstance(done, TaskCompleted)
    assert done.texts == ("a cat, soft", "a cat, sharp", "a cat, dusk")


def test_upload_and_preprocess_complete_on_their_replies() -> None:
    session = open_session()
    upload, guide = tid(), tid()
    session.send_task(NewImageUpload(task_uuid=upload, image_base64="aGVsbG8="))
    session.send_task(
        PreProcessControlNetRequest(
            task_uuid=guide, pre_processor_type="canny", guide_image_uuid=tid()
        )
    )
    new_image = tid()
    (done,) = session.receive(
        frame(
            {
                "newUploadedImageUUID": {
                    "newImageUUID": new_image,
                    "newImageSrc": "http://h/i.png",
                    "taskUUID": upload,
                }
            }
        )
    )
    assert isinstance(done, TaskCompleted) and done.reply is not None
    assert done.reply.new_image_uuid == new_image
    (done,) = session.receive(
        frame(
            {
                "newPreProcessControlNet": {
                    "taskUUID": guide,
                    "newImageUUID": tid(),
                    "newImageSrc": "http://h/g.png",
                }
            }
        )
    )
    assert isinstance(done, TaskCompleted) and done.task_uuid == guide


def test_upscale_completes_on_one_image() -> None:
    session = open_session()
    task = tid()
    session.send_task(UpscaleGanRequest(task_uuid=task, image_uuid=tid(), upscale_factor=2))
    events = session.receive(frame({"newUpscaleGan": {"images": [image(task)]}}))
    assert [type(e) for e in events] == [ImageReceived, TaskCompleted]


def test_progress_and_pong() -> None:
    session = open_session("progress", accepted=("progress",))
    task = text_to_image(session)
    assert json.loads(session.send_ping()) == {"ping": True}
    assert session.receive(b'{"pong": true}') == [PongReceived()]
    (event,) = session.receive(frame({"newProgress": {"taskUUID": task, "step": 3, "steps": 20}}))
    assert event == Progress(task, 3, 20, None)


def test_seed_extension_reports_each_images_seed() -> None:
    session = open_session("seed", accepted=("seed",))
    task = text_to_image(session, n=2)
    events = session.receive(images(image(task, seed=41), image(task, seed=42)))
    assert [e.image.seed for e in of(events, ImageReceived)] == [41, 42]


def test_cancel_sends_cancelTask_only_when_negotiated() -> None:
    with_cancel = open_session("cancel", accepted=("cancel",))
    task = text_to_image(with_cancel)
    assert json.loads(with_cancel.cancel_task(task) or b"") == {"cancelTask": {"taskUUID": task}}
    assert with_cancel.in_flight == 0
    assert with_cancel.receive(images(image(task))) == [UnknownTask(task, "newImages")]
    without = open_session()
    task = text_to_image(without)
    assert without.cancel_task(task) is None
    assert not without.is_pending(task)
    assert without.cancel_task(task) is None  # already gone


# -- disconnects and resume ----------------------------------------------------------------


def test_resume_with_known_task_uuids_lists_exactly_the_unfinished_tasks() -> None:
    session = open_session("resume", accepted=("resume",))
    done, partial, held, lost = (text_to_image(session, n=2) for _ in range(4))
    kept = image(partial)
    session.receive(images(image(done), image(done), kept))
    session.connection_lost()
    assert session.state is SessionState.DISCONNECTED
    assert session.outstanding() == [partial, held, lost]
    sent = json.loads(session.send_connect())["newConnection"]
    assert sent["connectionSessionUUID"] == SESSION
    (auth,) = session.receive(reply(extensions=["resume"], knownTaskUUIDs=[held]))
    assert isinstance(auth, Authenticated) and auth.resumed
    assert auth.known_task_uuids == (held,)
    assert auth.resubmit == (partial, lost)
    assert [json.loads(session.resend_task(t))["newTask"]["taskUUID"] for t in auth.resubmit] == [
        partial,
        lost,
    ]
    # The server generates the resubmitted task again: the image we had is not delivered twice.
    events = session.receive(images(kept, image(partial)))
    assert len(of(events, ImageReceived)) == 1
    (completed,) = of(events, TaskCompleted)
    assert completed.task_uuid == partial and len(completed.images) == 2


def test_resume_without_the_extension_leaves_resubmission_to_the_caller() -> None:
    session = open_session()
    a, b = text_to_image(session), text_to_image(session)
    session.connection_lost()
    session.send_connect()
    (auth,) = session.receive(reply())
    assert isinstance(auth, Authenticated) and auth.resumed and auth.resubmit is None
    session.receive(images(image(a)))  # replayed while away
    assert session.outstanding() == [b]


def test_a_new_session_after_reconnect_means_resubmitting_everything() -> None:
    session = open_session()
    a, b = text_to_image(session), text_to_image(session)
    session.connection_lost()
    session.send_connect()
    (auth,) = session.receive(reply("11111111-2222-4333-8444-555555555555"))
    assert isinstance(auth, Authenticated) and not auth.resumed
    assert auth.resubmit == (a, b)


def test_close_hands_back_pending_tasks() -> None:
    session = open_session()
    a = text_to_image(session)
    assert session.close() == [a]
    assert session.in_flight == 0 and session.state is SessionState.CLOSED


def test_second_connection_reply_while_open_is_rejected() -> None:
    session = open_session()
    (event,) = session.receive(reply())
    assert isinstance(event, FrameRejected)


def test_a_task_moved_here_with_delivered_results_neither_repeats_nor_waits_for_them() -> None:
    session = open_session()
    task, first, second, third = tid(), tid(), tid(), tid()
    session.send_task(NewTask(task_uuid=task, prompt_text="x", number_results=3), delivered=[first])
    assert session.remaining(task) == 2
    # The image delivered elsewhere comes again: it is not a result, and does not count.
    events = session.receive(images(image(task, first), image(task, second)))
    assert [type(e) for e in events] == [ImageReceived]
    assert isinstance(events[0], ImageReceived) and events[0].image.image_uuid == second
    assert session.is_pending(task)
    events = session.receive(images(image(task, third)))
    assert [type(e) for e in events] == [ImageReceived, TaskCompleted]
    completed = events[-1]
    assert isinstance(completed, TaskCompleted)
    assert [i.image_uuid for i in completed.images] == [second, third]  # this session's
    assert not session.is_pending(task)


def test_a_text_task_moved_here_counts_the_texts_it_delivered() -> None:
    session = open_session()
    task = tid()
    session.send_task(
        PromptEnhance(task_uuid=task, prompt="a cat", prompt_versions=2), delivered=["a cat, one"]
    )
    texts = [{"taskUUID": task, "text": "a cat, one"}, {"taskUUID": task, "text": "a cat, two"}]
    events = session.receive(frame({"newPromptEnhancer": {"texts": texts}}))
    assert [type(e) for e in events] == [TextReceived, TaskCompleted]
    assert isinstance(events[0], TextReceived) and events[0].text == "a cat, two"


def test_derived_image_uuids_are_the_uuid_modules_spelling_of_the_digest() -> None:
    import hashlib

    from protocol.identity import image_uuid_for

    for task, index, scope in [(tid(), 0, ""), (tid().upper(), 7, ""), (tid(), 3, "key-id")]:
        name = f"{scope}/{task.lower()}/{index}" if scope else f"{task.lower()}/{index}"
        digest = bytearray(hashlib.sha256(name.encode()).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x40
        digest[8] = (digest[8] & 0x3F) | 0x80
        expected = uuid.UUID(bytes=bytes(digest))
        assert image_uuid_for(task, index, scope) == str(expected) and expected.version == 4
