"""The server's result frames, built as dicts on the hot path, equal the models' encoding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.server.state import (
    ImageResult,
    ServerSession,
    TaskRecord,
    TextResult,
    result_frame,
    result_message,
)
from protocol import NewTask, PromptEnhance, UpscaleGanRequest
from protocol.codec import encode

TASK = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
SESSION = ServerSession(uuid="s", key_id="k")

image_results = st.builds(
    ImageResult,
    image_uuid=st.uuids().map(str),
    src=st.sampled_from(["https://im.example/a.png", "http://127.0.0.1:1/i/x.webp", ""]),
    cost=st.one_of(st.none(), st.floats(0, 10, allow_nan=False), st.just(0.0)),
    seed=st.one_of(st.none(), st.integers(1, 2**31 - 1)),
    alt_text=st.one_of(st.none(), st.text(max_size=12)),
)


def record(request: NewTask | PromptEnhance | UpscaleGanRequest, total: int | None) -> TaskRecord:
    return TaskRecord(
        uuid=TASK, key_id="k", request=request, session=SESSION, total_available=total
    )


@settings(max_examples=300, deadline=None)
@given(
    results=st.lists(image_results, min_size=1, max_size=6, unique_by=lambda r: r.image_uuid),
    number_results=st.integers(1, 20),
    total=st.one_of(st.none(), st.integers(0, 40)),
    seed_extension=st.booleans(),
    inline_mask=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_new_images_frames_equal_the_models_encoding(
    results: list[ImageResult],
    number_results: int,
    total: int | None,
    seed_extension: bool,
    inline_mask: list[bool],
) -> None:
    task = NewTask(task_uuid=TASK, prompt_text="a fox", number_results=number_results)
    extensions = frozenset({"seed", "resume"} if seed_extension else {"resume"})
    inline = {
        r.image_uuid: "aGVsbG8="
        for r, on in zip(results, inline_mask[: len(results)], strict=True)
        if on
    }
    rec = record(task, total)
    assert result_frame(rec, results, extensions, inline) == encode(
        result_message(rec, results, extensions, inline)
    )


def test_other_task_types_go_through_the_models() -> None:
    enhance = record(PromptEnhance(task_uuid=TASK, prompt="a fox"), None)
    texts = [TextResult("a fox, detailed"), TextResult("a fox at dawn")]
    assert result_frame(enhance, texts, frozenset(), {}) == encode(
        result_message(enhance, texts, frozenset(), {})
    )
    upscale = record(UpscaleGanRequest(task_uuid=TASK, image_uuid=TASK, upscale_factor=2), None)
    image = [ImageResult(image_uuid=TASK, src="https://im.example/u.png", cost=None, seed=None)]
    assert result_frame(upscale, image, frozenset({"seed"}), {}) == encode(
        result_message(upscale, image, frozenset({"seed"}), {})
    )
