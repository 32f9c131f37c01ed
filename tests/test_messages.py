"""Every request constraint: the error names the wire field, the Python name, value and rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import (
    FieldError,
    LocalProtocolError,
    NewConnection,
    NewTask,
    PreProcessControlNetRequest,
    PromptEnhance,
    RemoteProtocolError,
    UpscaleGanRequest,
    decode_from_client,
    join_negative_prompt,
    split_negative_prompt,
)
from protocol.tables import SEED_MAX, TaskType

T = "2b12fd84-bf41-404d-8fd9-38874d3e0537"
IMG = "87e9f0eb-ab36-4c17-95ca-4ae4ac48e383"
GUIDE = {
    "preprocessor": "canny",
    "weight": 0.5,
    "startStep": 0,
    "endStep": 10,
    "guideImageUUID": IMG,
}


def task(**fields: Any) -> dict[str, Any]:
    return {"newTask": {"taskUUID": T, "promptText": "a fox", **fields}}


# (frame, wire field, python name, bad value, fragment of the rule)
CASES: list[tuple[dict[str, Any], str, str, Any, str]] = [
    (
        task(taskUUID="6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
        "taskUUID",
        "task_uuid",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "UUIDv4",
    ),
    (task(numberResults=0), "numberResults", "number_results", 0, "at least 1"),
    (task(numberResults="2"), "numberResults", "number_results", "2", "integer"),
    (task(gScale=10.5), "gScale", "g_scale", 10.5, "at most 10"),
    (task(gScale=-1), "gScale", "g_scale", -1, "at least 0"),
    (task(clipSkip=3), "clipSkip", "clip_skip", 3, "at most 2"),
    (task(seed=0), "seed", "seed", 0, "at least 1"),
    (task(seed=SEED_MAX + 1), "seed", "seed", SEED_MAX + 1, "at most 922337203470729216000"),
    (task(seed=True), "seed", "seed", True, "integer"),
    (
        task(lora=[{"modelId": "civitai:1@2", "weight": 1.5}]),
        "lora[0].weight",
        "lora[0].weight",
        1.5,
        "at most 1",
    ),
    (
        task(taskType=9, controlNet=[{**GUIDE, "weight": -0.1}]),
        "controlNet[0].weight",
        "control_net[0].weight",
        -0.1,
        "at least 0",
    ),
    (
        task(
            taskType=9, controlNet=[{**GUIDE, "startStepPercentage": 0.1, "endStepPercentage": 0.5}]
        ),
        "controlNet[0].startStepPercentage",
        "control_net[0].start_step_percentage",
        0.1,
        "not both",
    ),
    (
        task(taskType=9, controlNet=[{**GUIDE, "startStep": 10, "endStep": 5}]),
        "controlNet[0].endStep",
        "control_net[0].end_step",
        5,
        "after startStep",
    ),
    (
        task(taskType=9, controlNet=[{**GUIDE, "endStep": 30}]),
        "controlNet[0].endStep",
        "control_net[0].end_step",
        30,
        "at most steps (20)",
    ),
    (
        task(
            taskType=9,
            controlNet=[
                {
                    **GUIDE,
                    "startStep": None,
                    "endStep": None,
                    "startStepPercentage": 0.6,
                    "endStepPercentage": 0.4,
                }
            ],
        ),
        "controlNet[0].endStepPercentage",
        "control_net[0].end_step_percentage",
        0.4,
        "after",
    ),
    (
        task(taskType=9, controlNet=[{**GUIDE, "controlMode": "strong"}]),
        "controlNet[0].controlMode",
        "control_net[0].control_mode",
        "strong",
        "'balanced', 'prompt' or 'controlnet'",
    ),
    (
        task(taskType=9, modelId="4", controlNet=[{**GUIDE, "preprocessor": "openpose"}]),
        "controlNet[0].preprocessor",
        "control_net[0].preprocessor",
        "openpose",
        "not available for modelId '4'",
    ),
    (
        task(taskType=9, controlNet=[{**GUIDE, "preprocessor": "xray"}]),
        "controlNet[0].preprocessor",
        "control_net[0].preprocessor",
        "xray",
        "known ControlNet preprocessor",
    ),
    (
        task(taskType=9, controlNet=[{**GUIDE, "guideImageUrl": "https://h/g.png"}]),
        "controlNet[0].guideImageUUID",
        "control_net[0].guide_image_uuid",
        None,
        "exactly one",
    ),
    (task(promptLanguageId=299), "promptLanguageId", "prompt_language_id", 299, "1-298"),
    (task(promptLanguageId=193), "promptLanguageId", "prompt_language_id", 193, "not 193"),
    (task(sizeId=10), "sizeId", "size_id", 10, "known sizeId (1, 2, 3"),
    (task(schedulerId=27), "schedulerId", "scheduler_id", 27, "known schedulerId (1-26)"),
    (task(styleId=13), "styleId", "style_id", 13, "known styleId (1-12)"),
    (task(modelId="99"), "modelId", "model_id", "99", "known model id"),
    (task(modelId=True), "modelId", "model_id", True, "string or an integer"),
    (task(steps=0), "steps", "steps", 0, "at least 1"),
    (task(offset=-1), "offset", "offset", -1, "at least 0"),
    (task(promptText=""), "promptText", "prompt_text", "", "at least 1 character"),
    (task(uploadEndpoint="ftp://h/x"), "uploadEndpoint", "upload_endpoint", "ftp://h/x", "http"),
    (task(saveToCache=False), "saveToCache", "save_to_cache", False, "only with an uploadEndpoint"),
    (task(taskType=5), "taskType", "task_type", 5, "1, 2, 3, 9 or 10"),
    (
        task(taskType=2),
        "imageInitiatorUUID",
        "image_initiator_uuid",
        None,
        "required for taskType 2 (Image to Image)",
    ),
    (
        task(taskType=3, imageInitiatorUUID=IMG),
        "imageMaskInitiatorUUID",
        "image_mask_initiator_uuid",
        None,
        "required for taskType 3 (Inpainting)",
    ),
    (
        task(taskType=1, imageInitiatorUUID=IMG),
        "imageInitiatorUUID",
        "image_initiator_uuid",
        IMG,
        "not used by taskType 1",
    ),
    (
        task(taskType=2, imageInitiatorUUID=IMG, imageMaskInitiatorUUID=IMG),
        "imageMaskInitiatorUUID",
        "image_mask_initiator_uuid",
        IMG,
        "not used by taskType 2",
    ),
    (task(taskType=9), "controlNet", "control_net", None, "required for taskType 9"),
    (
        task(taskType=10, controlNet=[GUIDE]),
        "imageInitiatorUUID",
        "image_initiator_uuid",
        None,
        "required for taskType 10",
    ),
    (task(strength=0.5), "strength", "strength", 0.5, "not used by taskType 1"),
    (
        {"newUpscaleGan": {"imageUUID": IMG, "taskUUID": T, "upscaleFactor": 5}},
        "upscaleFactor",
        "upscale_factor",
        5,
        "at most 4",
    ),
    (
        {"newUpscaleGan": {"imageUUID": IMG, "taskUUID": T, "upscaleFactor": 1}},
        "upscaleFactor",
        "upscale_factor",
        1,
        "at least 2",
    ),
    (
        {"newPromptEnhance": {"prompt": "x", "taskUUID": T, "promptVersions": 6}},
        "promptVersions",
        "prompt_versions",
        6,
        "at most 5",
    ),
    (
        {"newPromptEnhance": {"prompt": "x", "taskUUID": T, "promptMaxLength": 381}},
        "promptMaxLength",
        "prompt_max_length",
        381,
        "at most 380",
    ),
    (
        {"newPromptEnhance": {"prompt": "x", "taskUUID": T, "promptLanguageId": 0}},
        "promptLanguageId",
        "prompt_language_id",
        0,
        "1-298",
    ),
    (
        {"newImageUpload": {"imageBase64": "aGk=", "taskUUID": T, "taskType": 8}},
        "taskType",
        "task_type",
        8,
        "must be 7",
    ),
    (
        {
            "newPreProcessControlNet": {
                "taskUUID": T,
                "preProcessorType": "canny",
                "guideImageUUID": IMG,
                "lowThresholdCanny": 200,
                "highThresholdCanny": 100,
            }
        },
        "highThresholdCanny",
        "high_threshold_canny",
        100,
        "above lowThresholdCanny",
    ),
    ({"newConnection": {"apiKey": ""}}, "apiKey", "api_key", "", "at least 1 character"),
]


def _ids(case: tuple[Any, ...]) -> str:
    return f"{next(iter(case[0]))}.{case[1]}={case[3]!r}"[:60]


def _only(errors: tuple[FieldError, ...], field: str) -> FieldError:
    matching = [e for e in errors if e.field == field]
    assert matching, f"no error for {field}: {errors}"
    return matching[0]


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_decoded_violation_names_wire_field_value_and_rule(case: tuple[Any, ...]) -> None:
    frame, field, python_name, value, rule = case
    with pytest.raises(RemoteProtocolError) as info:
        decode_from_client(json.dumps(frame))
    error = _only(info.value.errors, field)
    assert error.python_name == python_name
    assert error.value == value and type(error.value) is type(value)
    assert rule in error.rule
    assert field in str(info.value) and rule in str(info.value)


def test_python_construction_raises_local_error_with_both_names() -> None:
    with pytest.raises(LocalProtocolError) as info:
        NewTask(task_uuid=T, prompt_text="x", g_scale=12.5)
    (error,) = info.value.errors
    assert (error.field, error.python_name, error.value) == ("gScale", "g_scale", 12.5)
    assert "gScale (g_scale) = 12.5: must be at most 10" in str(info.value)
    assert not isinstance(info.value, RemoteProtocolError)


def test_python_construction_accepts_wire_names_too() -> None:
    by_alias = NewTask.model_validate({"taskUUID": T, "promptText": "x", "gScale": 3})
    assert by_alias == NewTask(task_uuid=T, prompt_text="x", g_scale=3)


def test_messages_are_frozen() -> None:
    message = NewTask(task_uuid=T, prompt_text="x")
    with pytest.raises(Exception, match="frozen"):
        message.prompt_text = "y"  # type: ignore[misc]


def test_valid_tasks_of_each_generation_type() -> None:
    NewTask(
        task_uuid=T,
        prompt_text="x",
        task_type=TaskType.IMAGE_TO_IMAGE,
        image_initiator_uuid=IMG,
        strength=0.3,
    )
    NewTask(
        task_uuid=T,
        prompt_text="x",
        task_type=3,
        image_initiator_uuid=IMG,
        image_mask_initiator_uuid=IMG,
    )
    NewTask.model_validate(
        task(
            taskType=9,
            modelId="civitai:4201@130072",
            controlNet=[{**GUIDE, "preprocessor": "openpose"}],
        )["newTask"]
    )
    NewTask.model_validate(
        task(
            taskType=10,
            imageInitiatorUUID=IMG,
            controlNet=[
                {
                    **GUIDE,
                    "startStep": None,
                    "endStep": None,
                    "startStepPercentage": 0,
                    "endStepPercentage": 1,
                }
            ],
        )["newTask"]
    )
    UpscaleGanRequest(image_uuid=IMG, task_uuid=T, upscale_factor=3)
    PromptEnhance(prompt="x", task_uuid=T, prompt_versions=5, prompt_max_length=380)
    PreProcessControlNetRequest(
        task_uuid=T, pre_processor_type="canny", guide_image_url="https://h/g.png"
    )
    NewConnection(api_key="k", extensions=("seed",))


def test_expected_results_per_task_type() -> None:
    assert NewTask(task_uuid=T, prompt_text="x", number_results=7).expected_results == 7
    assert PromptEnhance(prompt="x", task_uuid=T, prompt_versions=4).expected_results == 4
    assert UpscaleGanRequest(image_uuid=IMG, task_uuid=T, upscale_factor=2).expected_results == 1


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a red fox -no blurry", ("a red fox", "blurry")),
        ("a red fox", ("a red fox", None)),
        ("a fox -no blurry, dark -no more", ("a fox", "blurry, dark -no more")),
        ("a fox -nothing", ("a fox -nothing", None)),
        ("a fox -no ", ("a fox", None)),
    ],
)
def test_legacy_negative_prompt_convention(text: str, parts: tuple[str, str | None]) -> None:
    assert split_negative_prompt(text) == parts


def test_negative_prompt_join_round_trips() -> None:
    joined = join_negative_prompt("a red fox", "blurry")
    assert joined == "a red fox -no blurry"
    assert split_negative_prompt(joined) == ("a red fox", "blurry")
    assert join_negative_prompt("a red fox", None) == "a red fox"


def test_api_key_is_not_in_repr() -> None:
    assert "hunter2" not in repr(NewConnection(api_key="hunter2"))
