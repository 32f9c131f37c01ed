"""The fast paths agree with the models: what they accept, the models accept, meaning the same."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import TextToImage
from protocol import LocalProtocolError, NewImages, RemoteProtocolError, decode_from_server
from protocol.codec import IMAGES, PreparedTask, loads, prepare
from protocol.fastpath import prepare_text_to_image, read_images
from protocol.messages import join_negative_prompt
from protocol.tables import MODELS, SEED_MAX, SIZES

TASK = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 130),
    st.sampled_from([0, 1, 2, 10, 100, 101, 298, 193, SEED_MAX, SEED_MAX + 1, 2**70]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 7.5, 10.0, 10.5, -0.0]),
    st.text(max_size=4),
    st.sampled_from(["4", "13", "civitai:1@2", "https://x.invalid/u", "x"]),
)
# Per field: valid values, including each bound the model enforces...
VALID: dict[str, list[Any]] = {
    "number_results": [1, 2, 5],
    "model": [*MODELS, *(int(m) for m in MODELS)],
    "size": [*SIZES, "512x512", "1024X1024"],
    "steps": [1, 20, 100],
    "guidance": [0, 0.0, 7.5, 10, 10.0],
    "seed": [1, 42, SEED_MAX],
    "scheduler": [*range(1, 27), "DDIMScheduler"],
    "style": [*range(1, 13), "Anime"],
    "clip_skip": [0, 1, 2],
    "language": [1, 192, 194, 298, "Afar"],
    "use_cache": [True, False],
    "save_to_cache": [True],
    "offset": [0, 1, 2],
    "check_nsfw": [True, False],
    "use_prompt_weighting": [True, False],
    "return_base64_image": [True, False],
}
# ...and values just past those bounds, or of another type.
INVALID: dict[str, list[Any]] = {
    "number_results": [0, -1, 1.0, True, "2"],
    "model": ["civitai:1@2", "0", 0, "x", 4.0, True],
    "size": [0, max(SIZES) + 1, True, 1.0, "1", "1x1"],
    "steps": [0, 101, 20.0, True, "20"],
    "guidance": [-0.01, 10.01, math.inf, -math.inf, math.nan, True, "7", -1, 11],
    "seed": [0, -1, SEED_MAX + 1, 1.0, True],
    "scheduler": [0, 27, True, 1.0, "Nope"],
    "style": [0, 13, 1.0, True],
    "clip_skip": [-1, 3, False, 1.0],
    "language": [0, 193, 299, True, "Klingon"],
    "use_cache": [0, 1, "yes", "true", 1.0],
    "save_to_cache": [False, 1, "true"],
    "offset": [-1, 0.0, True],
    "check_nsfw": [0, 1, "no"],
    "use_prompt_weighting": [0, "true"],
    "upload_endpoint": ["https://x.invalid/u", "ftp://x"],
    "return_base64_image": [1, "false"],
    "lora": [()],
}


@st.composite
def specs(draw: st.DrawFn) -> TextToImage:
    """Mostly valid specs, with at most one field made invalid or odd."""
    fields = {
        name: draw(st.sampled_from(valid)) for name, valid in VALID.items() if draw(st.booleans())
    }
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(INVALID)))
        fields[name] = draw(st.one_of(st.sampled_from(INVALID[name]), junk))
    prompt = draw(st.one_of(st.text(min_size=1, max_size=6), st.just(""), st.integers()))
    negative = draw(st.one_of(st.none(), st.text(max_size=4)))
    return TextToImage(prompt=prompt, negative_prompt=negative, **fields)


def fast(spec: TextToImage, task_uuid: str) -> PreparedTask | None:
    prompt_text = join_negative_prompt(spec.prompt, spec.negative_prompt)
    try:
        options = spec._options()  # a table choice given by an unknown name is refused here
    except LocalProtocolError:
        return None
    return prepare_text_to_image(task_uuid, prompt_text, spec.number_results, options)


def slow(spec: TextToImage, task_uuid: str) -> PreparedTask | None:
    try:
        return prepare(spec.to_request(task_uuid))
    except LocalProtocolError:
        return None


def same_task(a: PreparedTask, b: PreparedTask) -> None:
    assert (a.task_uuid, a.expects, a.expected) == (b.task_uuid, b.expects, b.expected)
    assert json.loads(a.frame) == json.loads(b.frame)  # the stdlib keeps big seeds exact


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.sampled_from([TASK, str(uuid.uuid4()), "not-a-uuid", TASK.upper()]))
def test_what_the_fast_encoder_accepts_the_model_accepts_and_encodes_the_same(
    spec: TextToImage, task_uuid: str
) -> None:
    quick, reference = fast(spec, task_uuid), slow(spec, task_uuid)
    if quick is not None:
        assert reference is not None, f"fast path accepted what the model refuses: {spec}"
        same_task(quick, reference)
    # Whichever path it takes, a spec prepares to the model's frame or the model's error.
    if reference is None:
        with pytest.raises(LocalProtocolError):
            spec.prepare(task_uuid)
    else:
        same_task(spec.prepare(task_uuid), reference)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_every_bound_of_every_field_is_the_models(name: str) -> None:
    for value in [*VALID.get(name, []), *INVALID[name]]:
        spec = TextToImage(prompt="p", **{name: value})
        quick, reference = fast(spec, TASK), slow(spec, TASK)
        if any(type(v) is type(value) and v == value for v in VALID.get(name, [])):
            assert quick is not None, f"{name}={value!r} should take the fast path"
        if quick is not None:
            assert reference is not None, f"fast path accepted {name}={value!r}"
            same_task(quick, reference)


def test_typical_tasks_take_the_fast_path() -> None:
    typical = [
        TextToImage(prompt="a red fox"),
        TextToImage(prompt="a red fox", negative_prompt="blur", use_cache=False),
        TextToImage(
            prompt="p",
            number_results=4,
            model=next(iter(MODELS)),
            size=next(iter(SIZES)),
            steps=30,
            guidance=7,
            seed=SEED_MAX,
            scheduler=1,
            style=1,
            clip_skip=2,
            language=1,
            save_to_cache=True,
            offset=0,
            check_nsfw=True,
            use_prompt_weighting=False,
            return_base64_image=True,
        ),
    ]
    for spec in typical:
        quick = fast(spec, TASK)
        assert quick is not None, spec
        reference = slow(spec, TASK)
        assert reference is not None
        same_task(quick, reference)
    for task_uuid, prompt, number in [("x", "p", 1), (TASK, "", 1), (TASK, "p", 0), (TASK, 1, 1)]:
        assert prepare_text_to_image(task_uuid, prompt, number, {}) is None


image_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.sampled_from([SEED_MAX + 1, 2**64, 0.5, math.inf]),
    st.text(max_size=3),
    st.sampled_from([TASK, "https://x.invalid/1.jpg", "data"]),
)
IMAGE_KEYS = (
    "imageSrc",
    "imageUUID",
    "taskUUID",
    "bNSFWContent",
    "imageAltText",
    "cost",
    "imageBase64Data",
    "seed",
    "extra",
)


@st.composite
def image_frames(draw: st.DrawFn) -> bytes:
    images = []
    for _ in range(draw(st.integers(0, 3))):
        image: dict[str, Any] = {"imageSrc": "https://x.invalid/1.jpg", "imageUUID": TASK}
        image["taskUUID"] = TASK
        for key in IMAGE_KEYS:
            if draw(st.integers(0, 3)) == 0:
                image[key] = draw(image_junk)
            elif draw(st.integers(0, 5)) == 0:
                image.pop(key, None)
        images.append(image)
    body: dict[str, Any] = {"images": draw(st.sampled_from([images, images, {}, None]))}
    if draw(st.integers(0, 4)) == 0:
        body["totalAvailableResults"] = draw(image_junk)
    frame: dict[str, Any] = {"newImages": body}
    if draw(st.integers(0, 6)) == 0:
        frame["pong"] = True
    return json.dumps(frame).encode()


@settings(max_examples=600, deadline=None)
@given(image_frames())
def test_what_the_fast_reader_accepts_the_decoder_reads_the_same(data: bytes) -> None:
    try:
        obj = loads(data)
    except RemoteProtocolError:  # not JSON (Infinity): nothing to read either way
        with pytest.raises(RemoteProtocolError):
            decode_from_server(data)
        return
    fast = read_images(obj)
    try:
        message = decode_from_server(data)
    except RemoteProtocolError:
        assert fast is None, f"fast path read what the decoder refuses: {data!r}"
        return
    if fast is not None:
        assert isinstance(message, NewImages)
        assert fast == (message.images, message.total_available_results)


def test_plain_and_our_servers_images_frames_take_the_fast_path() -> None:
    image = {"imageSrc": "https://x.invalid/1.jpg", "imageUUID": TASK, "taskUUID": TASK}
    data = orjson.dumps({"newImages": {"images": [image, {**image, "cost": 0.5}]}})
    fast = read_images(loads(data))
    assert fast is not None and len(fast[0]) == 2 and fast[0][1].cost == 0.5
    message = decode_from_server(data)
    assert isinstance(message, NewImages) and fast == (message.images, None)
    # Our own server's frames (with totalAvailableResults) take it too.
    body = {"images": [image], "totalAvailableResults": 7}
    assert read_images(loads(orjson.dumps({"newImages": body}))) == (fast[0][:1], 7)
    assert IMAGES == "images"


def test_a_prepared_frame_keeps_no_encoder_slack() -> None:
    # orjson's bytes sit in 4 KiB allocations: a pending task must not keep one each.
    import tracemalloc

    specs = [TextToImage(prompt=f"a red fox {i}") for i in range(500)]
    uuids = [str(uuid.uuid4()) for _ in specs]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        prepared = [spec.prepare(task) for spec, task in zip(specs, uuids, strict=True)]
        per_task = (tracemalloc.get_traced_memory()[0] - before) / len(prepared)
    finally:
        tracemalloc.stop()
    assert per_task < 1024, per_task
    assert all(len(p.frame) < 200 for p in prepared)
