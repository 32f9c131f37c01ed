"""Properties: valid messages round-trip; decode raises only RemoteProtocolError, whatever comes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    CancelTask,
    ControlNet,
    ErrorMessage,
    Image,
    Lora,
    Message,
    NewConnection,
    NewConnectionSessionUUID,
    NewImages,
    NewImageUpload,
    NewProgress,
    NewTask,
    NewUploadedImageUUID,
    Ping,
    Pong,
    PreProcessControlNetRequest,
    PreProcessControlNetResult,
    PromptEnhance,
    PromptEnhancer,
    RemoteProtocolError,
    RemoveBackgroundRequest,
    RemoveBackgroundResult,
    ReverseClip,
    ReverseImageClip,
    Text,
    UpscaleGanRequest,
    UpscaleGanResult,
    decode,
    decode_from_client,
    decode_from_server,
    encode,
)
from protocol.codec import _FROM_CLIENT, _FROM_SERVER
from protocol.tables import (
    CONTROLNET_PREPROCESSORS,
    LANGUAGES,
    MODELS,
    SCHEDULERS,
    SEED_MAX,
    SIZES,
    STYLES,
    ModelFamily,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

uuid4s = st.uuids(version=4).map(str)
texts = st.text(min_size=1, max_size=40)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
seeds = st.one_of(
    st.integers(1, 2**32), st.integers(2**63 - 5, 2**64 + 5), st.integers(1, SEED_MAX)
)
maybe = lambda strategy: st.none() | strategy  # noqa: E731
urls = st.sampled_from(["https://h.test/a.png", "http://127.0.0.1:9/u"])


def model(cls: type[Any], **strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Build ``cls`` from exactly these fields (no inference from annotations)."""
    return st.fixed_dictionaries(strategies).map(lambda fields: cls(**fields))


def optional_fields(**strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Some subset of the fields, so that 'unset' is exercised too."""
    return st.fixed_dictionaries({}, optional=strategies)


@st.composite
def control_nets(draw: st.DrawFn) -> ControlNet:
    guide = draw(st.sampled_from(["guide_image_uuid", "guide_image_url"]))
    fields: dict[str, Any] = {
        "preprocessor": draw(st.sampled_from(CONTROLNET_PREPROCESSORS[ModelFamily.SDXL])),
        "weight": draw(unit),
        guide: draw(uuid4s if guide == "guide_image_uuid" else urls),
        **draw(optional_fields(control_mode=st.sampled_from(["balanced", "prompt", "controlnet"]))),
    }
    if draw(st.booleans()):
        start = draw(st.integers(0, 19))
        fields |= {"start_step": start, "end_step": draw(st.integers(start + 1, 20))}
    else:
        start_p = draw(st.floats(0, 0.9))
        fields |= {
            "start_step_percentage": start_p,
            "end_step_percentage": draw(st.floats(start_p + 0.01, 1)),
        }
    return ControlNet(**fields)


@st.composite
def new_tasks(draw: st.DrawFn) -> NewTask:
    task_type = draw(st.sampled_from([1, 2, 3, 9, 10]))
    fields: dict[str, Any] = {
        "task_uuid": draw(uuid4s),
        "prompt_text": draw(texts),
        "task_type": task_type,
    }
    if task_type in (2, 3, 10):
        fields["image_initiator_uuid"] = draw(uuid4s)
        fields |= draw(optional_fields(strength=unit))
    if task_type == 3:
        fields["image_mask_initiator_uuid"] = draw(uuid4s)
    if task_type in (9, 10) or draw(st.booleans()):
        fields["control_net"] = draw(st.lists(control_nets(), min_size=1, max_size=3))
    fields |= draw(
        optional_fields(
            number_results=st.integers(1, 20),
            model_id=st.sampled_from([*MODELS, *map(int, MODELS), "civitai:132942@146296"]),
            size_id=st.sampled_from(list(SIZES)),
            g_scale=st.floats(0, 10),
            seed=maybe(seeds),
            scheduler_id=maybe(st.sampled_from(list(SCHEDULERS))),
            style_id=maybe(st.sampled_from(list(STYLES))),
            clip_skip=maybe(st.integers(0, 2)),
            prompt_language_id=maybe(st.sampled_from(list(LANGUAGES))),
            use_cache=maybe(st.booleans()),
            offset=st.integers(0, 100),
            check_nsfw=st.booleans(),
            use_prompt_weighting=st.booleans(),
            lora=maybe(st.lists(model(Lora, model_id=texts, weight=unit), max_size=2)),
            return_base64_image=st.booleans(),
        )
    )
    if draw(st.booleans()):
        fields |= {"upload_endpoint": draw(urls), "save_to_cache": draw(st.booleans())}
    return NewTask(**fields)


images = model(
    Image,
    image_src=urls,
    image_uuid=uuid4s,
    task_uuid=uuid4s,
    b_nsfw_content=st.booleans(),
    image_alt_text=maybe(texts),
    cost=maybe(st.floats(0, 10)),
    seed=maybe(seeds),
)
text_items = model(Text, task_uuid=uuid4s, text=st.text(max_size=40))

client_messages: st.SearchStrategy[Message] = st.one_of(
    model(
        NewConnection,
        api_key=texts,
        connection_session_uuid=maybe(uuid4s),
        extensions=maybe(st.lists(texts, max_size=3).map(tuple)),
    ),
    st.just(Ping()),
    model(CancelTask, task_uuid=uuid4s),
    new_tasks(),
    model(NewImageUpload, image_base64=texts, task_uuid=uuid4s),
    model(
        PreProcessControlNetRequest,
        task_uuid=uuid4s,
        pre_processor_type=st.just("canny"),
        guide_image_uuid=uuid4s,
        width=maybe(st.integers(64, 2048)),
        low_threshold_canny=st.just(10),
        high_threshold_canny=st.integers(11, 255),
    ),
    model(UpscaleGanRequest, image_uuid=uuid4s, task_uuid=uuid4s, upscale_factor=st.integers(2, 4)),
    model(RemoveBackgroundRequest, image_uuid=uuid4s, task_uuid=uuid4s),
    model(ReverseImageClip, image_uuid=uuid4s, task_uuid=uuid4s),
    model(
        PromptEnhance,
        prompt=texts,
        task_uuid=uuid4s,
        prompt_max_length=st.integers(1, 380),
        prompt_versions=st.integers(1, 5),
        prompt_language_id=maybe(st.sampled_from(list(LANGUAGES))),
    ),
)
server_messages: st.SearchStrategy[Message] = st.one_of(
    model(
        NewConnectionSessionUUID,
        connection_session_uuid=uuid4s,
        extensions=maybe(st.lists(texts, max_size=3).map(tuple)),
        known_task_uuids=maybe(st.lists(uuid4s, max_size=3).map(tuple)),
    ),
    st.just(Pong()),
    model(
        NewImages,
        images=st.lists(images, min_size=1, max_size=3).map(tuple),
        total_available_results=maybe(st.integers(0, 100)),
    ),
    model(NewProgress, task_uuid=uuid4s, step=st.integers(0, 50), steps=st.integers(1, 50)),
    model(NewUploadedImageUUID, new_image_uuid=uuid4s, new_image_src=urls, task_uuid=uuid4s),
    model(
        PreProcessControlNetResult,
        task_uuid=uuid4s,
        new_image_uuid=uuid4s,
        new_image_src=urls,
        init_image_uuid=maybe(uuid4s),
    ),
    model(UpscaleGanResult, images=st.lists(images, max_size=2).map(tuple)),
    model(RemoveBackgroundResult, images=st.lists(images, max_size=2).map(tuple)),
    model(ReverseClip, texts=st.lists(text_items, max_size=2).map(tuple)),
    model(PromptEnhancer, texts=st.lists(text_items, max_size=5).map(tuple)),
    model(
        ErrorMessage,
        error_id=st.integers(-(2**31), 2**63),
        error_message=st.text(max_size=30),
        task_uuid=maybe(uuid4s),
        error_code=maybe(texts),
    ),
)


@PROPERTY
@given(client_messages)
def test_client_messages_round_trip(message: Message) -> None:
    frame = encode(message)
    assert decode_from_client(frame) == message
    assert decode(frame) == message


@PROPERTY
@given(server_messages)
def test_server_messages_round_trip(message: Message) -> None:
    frame = encode(message)
    assert decode_from_server(frame) == message
    assert decode(frame) == message


def _decoders_raise_only_remote_errors(data: bytes | str) -> None:
    for decoder in (decode, decode_from_client, decode_from_server):
        try:
            decoder(data)
        except RemoteProtocolError:
            pass


@PROPERTY
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_input_raises_only_remote_protocol_error(data: bytes | str) -> None:
    _decoders_raise_only_remote_errors(data)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    uuid4s,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELD_NAMES = sorted(
    {
        info.alias or name
        for cls in (
            *_FROM_CLIENT.values(),
            *_FROM_SERVER.values(),
            Image,
            ControlNet,
            Lora,
            Text,
            ErrorMessage,
        )
        for name, info in cls.model_fields.items()
    }
)


@st.composite
def plausible_frames(draw: st.DrawFn) -> bytes:
    """Well-formed JSON with real message names and real field names, values at random."""
    body = draw(st.dictionaries(st.sampled_from(_FIELD_NAMES), json_values, max_size=8))
    if draw(st.integers(0, 9)) == 0:
        return json.dumps({"error": True, **body}).encode()
    name = draw(st.sampled_from(sorted({*_FROM_CLIENT, *_FROM_SERVER})))
    inner: Any = body
    if "images" in body or draw(st.booleans()):
        inner = {
            **body,
            "images": draw(
                st.lists(
                    st.dictionaries(st.sampled_from(_FIELD_NAMES), json_values, max_size=6),
                    max_size=2,
                )
            ),
        }
    return json.dumps({name: inner}).encode()


@PROPERTY
@given(plausible_frames())
def test_well_formed_frames_with_random_values_raise_only_remote_protocol_error(
    frame: bytes,
) -> None:
    _decoders_raise_only_remote_errors(frame)
