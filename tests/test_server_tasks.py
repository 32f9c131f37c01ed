"""The server's task table: finished tasks are frozen into tuples the collector does not
track, and thaw into records whose frames are the ones the live record had."""

from __future__ import annotations

import gc

from orchestrator.server.state import (
    ImageResult,
    ReplyResult,
    ServerSession,
    TaskRecord,
    TaskState,
    TextResult,
    result_frame,
)
from orchestrator.server.tasks import TaskTable, freeze, thaw
from protocol import NewImageUpload, NewTask, PromptEnhance, TaskRequest

TASK = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
OTHER = "9a1c5e3b-7d2f-4b8a-9c6e-1f0a2b3c4d5e"
EXTENSIONS = frozenset({"seed", "resume"})


def finished(request: TaskRequest, session: ServerSession, *results: object) -> TaskRecord:
    record = TaskRecord(request.task_uuid, "k", request, session, seed=7)
    record.results.extend(results)  # type: ignore[arg-type]
    record.state, record.finished_at = TaskState.DONE, 12.5
    return record


def test_a_frozen_task_renders_the_frames_its_record_did() -> None:
    session = ServerSession("s", "k", EXTENSIONS)
    cases = [
        finished(
            NewTask(task_uuid=TASK, prompt_text="a fox", number_results=2),
            session,
            ImageResult(TASK, "http://127.0.0.1:1/i/a.jpg", 0.01, 42, "a fox", inline=False),
            ImageResult(OTHER, "http://127.0.0.1:1/i/b.jpg", None, None),
        ),
        finished(PromptEnhance(task_uuid=TASK, prompt="a fox"), session, TextResult("a red fox")),
        finished(
            NewImageUpload(task_uuid=TASK, image_base64="aGk="),
            session,
            ReplyResult(OTHER, "http://127.0.0.1:1/i/u.png"),
        ),
    ]
    for record in cases:
        before = result_frame(record, record.results, EXTENSIONS, {})
        thawed = thaw(freeze(record), session)
        assert result_frame(thawed, thawed.results, EXTENSIONS, {}) == before
        assert thawed.kind is record.kind and thawed.state is TaskState.DONE


def test_a_failed_task_keeps_its_error_when_frozen() -> None:
    session = ServerSession("s", "k")
    record = finished(NewTask(task_uuid=TASK, prompt_text="a fox"), session)
    record.state, record.error = TaskState.FAILED, (1003, "the task was cancelled")
    thawed = thaw(freeze(record), session)
    assert thawed.state is TaskState.FAILED and thawed.error == (1003, "the task was cancelled")


def test_frozen_tasks_are_not_tracked_by_the_collector() -> None:
    session = ServerSession("s", "k")
    image = ImageResult(TASK, "http://127.0.0.1:1/i/a.jpg", 0.01, 42, "a fox", inline=True)
    entry = freeze(finished(NewTask(task_uuid=TASK, prompt_text="a fox"), session, image))
    gc.collect(0)  # the youngest generation's collection untracks it the first time
    assert not gc.is_tracked(entry)


def test_a_claim_moves_a_finished_task_to_the_asker_and_the_sweep_forgets_it() -> None:
    first, second = ServerSession("s1", "k"), ServerSession("s2", "k")
    sessions = {s.uuid: s for s in (first, second)}
    table = TaskTable(sessions.get)
    record = TaskRecord(TASK, "k", NewTask(task_uuid=TASK, prompt_text="a fox"), first)
    table.add(record)
    record.state, record.finished_at = TaskState.DONE, 10.0
    table.finish(record)
    first.undelivered.add(TASK)

    claimed = table.claim("k", TASK, second)
    assert claimed is not None and claimed[1] is first and claimed[0].session is second
    assert table.owned("k", TASK, first) is None
    assert table.owned("k", TASK, second) is not None
    assert table.live("k", TASK) is None  # finished: nothing to cancel

    table.sweep(now=20.0, retention=30.0)
    assert table.owned("k", TASK, second) is not None  # within the window
    second.undelivered.add(TASK)
    table.sweep(now=40.1, retention=30.0)
    assert table.claim("k", TASK, second) is None and TASK not in second.undelivered
