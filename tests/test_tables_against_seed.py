"""Reads the seed document itself and checks protocol/tables.py entry by entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import tables

# Deliberate repairs of the seed's text; everything else must match it exactly.
REPAIRS = {"Bokmรฅl": "Bokmål", "prepreocess": "preprocess"}


@pytest.fixture
def seed(shared: Path) -> str:
    text = (shared / "seeds" / "004_454269be6a0100b3.txt").read_text(encoding="utf-8")
    for broken, fixed in REPAIRS.items():
        assert broken in text  # the repair still applies to the document as it is
        text = text.replace(broken, fixed)
    return text


def section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_sizes(seed: str) -> None:
    found = {
        int(m[1]): (int(m[3]), int(m[4]), m[2].strip())
        for m in re.finditer(
            r"^(\d+) //(.+?)\n+'width' => (\d+),\n'height' => (\d+)",
            section(seed, "Image sizes", "Task types"),
            re.M,
        )
    }
    assert len(found) == 14
    mine = {
        i: (s.width, s.height, s.label + (" - SDXL" if s.sdxl else ""))
        for i, s in tables.SIZES.items()
    }
    assert mine == found
    for size_id, (width, height, _) in found.items():
        assert tables.size_for(size_id) == (width, height)
        assert tables.size_id_for(width, height) == size_id


def test_task_types(seed: str) -> None:
    found = {
        int(m[1]): m[2].strip()
        for m in re.finditer(r"^(\d+)\s+(.+)$", section(seed, "Task types", "Model IDs"), re.M)
    }
    assert list(found) == list(range(1, 12))
    assert {int(t): name for t, name in tables.TASK_TYPE_NAMES.items()} == found
    assert [t.value for t in tables.TaskType] == list(range(1, 12))


def test_models(seed: str) -> None:
    found = dict(re.findall(r"^(\d+) => (.+)$", section(seed, "Model IDs", "Language IDs"), re.M))
    assert dict(tables.MODELS) == found
    for model_id, name in found.items():
        assert tables.model_name(int(model_id)) == name
        assert tables.model_id_for(name.upper()) == model_id


def test_languages(seed: str) -> None:
    found = {
        int(m[1]): m[2].strip()
        for m in re.finditer(
            r"^(\d+)\s+(.+)$", section(seed, "Language IDs", "ControlNet PreProcessors"), re.M
        )
    }
    assert len(found) == 297 and 193 not in found and max(found) == 298
    assert dict(tables.LANGUAGES) == found
    for language_id, name in found.items():
        assert tables.language_name(language_id) == name
    assert tables.language_id_for("norwegian bokmål") == 247


def test_controlnet_preprocessors(seed: str) -> None:
    block = section(seed, "ControlNet PreProcessors", "Scheduler IDs")
    sd15 = section(block, "SD 1.5", "SDXL").split()
    sdxl = block.split("SDXL\n", 2)[-1].split()
    assert list(tables.CONTROLNET_PREPROCESSORS[tables.ModelFamily.SD15]) == sd15
    assert list(tables.CONTROLNET_PREPROCESSORS[tables.ModelFamily.SDXL]) == sdxl
    assert tables.preprocessors_for(4) == tuple(sdxl)
    assert tables.preprocessors_for("13") == tuple(sd15)
    assert tables.preprocessors_for("civitai:1@2") == tuple(sd15)


def test_control_modes(seed: str) -> None:
    line = re.search(r"controlMode has 3 options: (.+)", seed)
    assert line is not None
    assert tuple(x.strip() for x in line[1].split(",")) == tables.CONTROL_MODES


def quoted_table(seed: str, start: str, end: str) -> dict[int, str]:
    """The seed's ``N => "Name"`` lines between two headings."""
    return {
        int(i): name
        for i, name in re.findall(r'^(\d+) => "(.+?)"', section(seed, start, end), re.M)
    }


def test_schedulers(seed: str) -> None:
    found = quoted_table(seed, "Scheduler IDs", "Style ID")
    assert list(found) == list(range(1, 27))
    assert dict(tables.SCHEDULERS) == found
    for scheduler_id, name in found.items():
        assert tables.scheduler_id_for(name.lower()) == scheduler_id
        assert tables.scheduler_name(scheduler_id) == name


def test_styles(seed: str) -> None:
    found = quoted_table(seed, "Style ID", "Results format")
    assert list(found) == list(range(1, 13))
    assert dict(tables.STYLES) == found
    for style_id, name in found.items():
        assert tables.style_id_for(name) == style_id and tables.style_name(style_id) == name


def test_seed_range_and_defaults(seed: str) -> None:
    assert "from 1 to 922,337,203,470,729,216,000" in seed
    assert (tables.SEED_MIN, tables.SEED_MAX) == (1, 922_337_203_470_729_216_000)
    assert tables.SEED_MAX > 2**64
    assert "Default is 20" in seed and tables.DEFAULT_STEPS == 20
    assert "4 => SDXL v1.0" in seed and tables.DEFAULT_MODEL_ID == "4"


def test_unknown_lookups_raise_lookup_error_naming_the_table() -> None:
    with pytest.raises(LookupError, match="unknown sizeId: 10"):
        tables.size_for(10)
    with pytest.raises(LookupError, match="unknown language name"):
        tables.language_id_for("Klingon")
    with pytest.raises(LookupError, match="unknown promptLanguageId: 193"):
        tables.language_name(193)


def test_error_table() -> None:
    assert tables.ErrorId.INVALID_API_KEY == 19
    assert tables.error_code_for(19) == "invalidApiKey"
    assert tables.error_code_for(424242) is None
    codes = [info.code for info in tables.ERRORS.values()]
    assert len(codes) == len(set(codes)) == len(tables.ErrorId)
    assert {e for e in tables.ErrorId if tables.is_retryable(e)} == {
        tables.ErrorId.QUEUE_FULL,
        tables.ErrorId.SERVER_SHUTTING_DOWN,
    }
