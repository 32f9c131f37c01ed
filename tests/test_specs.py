"""The public specs: table choices by id or name, and keyword options mypy can check."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path
from typing import get_type_hints

import pytest

from orchestrator import (
    EnhancePrompt,
    GenerationOptions,
    LocalProtocolError,
    PreprocessControlNet,
    PreprocessOptions,
    TextToImage,
)
from protocol.messages import NewTask, PromptEnhance
from protocol.tables import model_id_for, size_id_for

TASK = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


def test_every_table_choice_takes_its_name_or_its_id() -> None:
    by_name = TextToImage(
        prompt="p",
        model="SDXL v1.0",
        size="1024x1024",
        scheduler="DDIMScheduler",
        style="Anime",
        language="Afar",
    ).to_request(TASK)
    by_id = TextToImage(
        prompt="p",
        model=model_id_for("SDXL v1.0"),
        size=size_id_for(1024, 1024),
        scheduler=2,
        style=2,
        language=2,
    ).to_request(TASK)
    assert isinstance(by_name, NewTask) and by_name == by_id
    enhance = EnhancePrompt(prompt="p", language="Afar").to_request(TASK)
    assert isinstance(enhance, PromptEnhance) and enhance.prompt_language_id == 2


@pytest.mark.parametrize(
    ("field", "value", "wire"),
    [
        ("model", "no such model", "modelId"),
        ("size", "13x17", "sizeId"),
        ("scheduler", "NoScheduler", "schedulerId"),
        ("style", "Baroque!", "styleId"),
        ("language", "Klingon", "promptLanguageId"),
    ],
)
def test_an_unknown_name_is_refused_naming_the_field_and_the_rule(
    field: str, value: str, wire: str
) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        TextToImage(prompt="p", **{field: value}).prepare(TASK)
    (error,) = caught.value.errors
    assert (error.field, error.python_name, error.value) == (wire, field, value)
    assert error.rule.startswith("must be a")


def test_a_broken_rule_names_the_wire_field_and_the_specs_own_field() -> None:
    with pytest.raises(LocalProtocolError) as caught:
        TextToImage(prompt="p", guidance=99, size=10).prepare(TASK)
    names = {(e.field, e.python_name) for e in caught.value.errors}
    assert names == {("gScale", "guidance"), ("sizeId", "size")}
    with pytest.raises(LocalProtocolError) as caught:
        PreprocessControlNet(preprocessor="nope", guide_image_uuid=TASK).to_request(TASK)
    assert [e.python_name for e in caught.value.errors] == ["preprocessor"]


def fields_of(cls: type) -> dict[str, object]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def test_the_keyword_options_are_exactly_the_specs_fields() -> None:
    generation = fields_of(TextToImage)
    del generation["prompt"]
    assert get_type_hints(GenerationOptions) == generation
    preprocess = fields_of(PreprocessControlNet)
    del preprocess["preprocessor"]
    assert get_type_hints(PreprocessOptions) == preprocess


def test_mypy_catches_a_misspelt_option(tmp_path: Path) -> None:
    try:
        from mypy import api
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("mypy is not installed (the test extra has it)")
        pytest.skip("mypy is not installed")
    source = tmp_path / "caller.py"
    source.write_text(
        textwrap.dedent(
            """
            from orchestrator import Orchestrator

            async def main(orch: Orchestrator) -> None:
                await orch.text_to_image("a fox", number_results=2, seed=1)
                await orch.text_to_image("a fox", numbr_results=2)
                await orch.upscale("x", upscale_factor="four")
            """
        )
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", os.devnull, str(source)]
    )
    assert status == 1
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2, out
    assert 'Unexpected keyword argument "numbr_results"' in errors[0]
    assert "upscale_factor" in errors[1]
