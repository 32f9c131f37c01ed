"""A sharded run's plan (``shards.json``) and the shards' runs, without Ray: each shard is a
:class:`BulkRun` of its span, as a Ray actor runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from orchestrator import UsageError
from orchestrator.bulk import BulkRun, InputChanged
from orchestrator.bulk.rows import Format, read
from orchestrator.bulk.shards import Shard, join_manifests, plan

pytestmark = pytest.mark.timeout(60)

FIXED = {"backend": "fixed"}


def lines_of(source: Path, fmt: Format, shards: list[Shard]) -> list[list[int]]:
    return [[row.line for row in read(source, fmt, {}, None, s.span)] for s in shards]


@pytest.mark.parametrize("fmt", ["jsonl", "text", "csv"])
def test_the_shards_hold_every_row_once_in_order(tmp_path: Path, fmt: Format) -> None:
    source = tmp_path / f"rows.{'txt' if fmt == 'text' else fmt}"
    rows = [f"a prompt, {i} é" for i in range(23)]
    if fmt == "jsonl":
        text = "".join(
            orjson.dumps({"prompt": r}).decode() + "\n" + ("\n" if i % 5 == 0 else "")
            for i, r in enumerate(rows)
        )
    elif fmt == "csv":
        text = "prompt\n" + "".join(f'"{r}\nover two lines"\n' for r in rows)
    else:
        text = "".join(f"{r}\n" + ("\n" if i % 4 == 0 else "") for i, r in enumerate(rows))
    source.write_text(text)
    shards = plan(source, fmt, tmp_path, 5)
    assert [s.rows for s in shards] == [5, 5, 5, 4, 4]
    held = lines_of(source, fmt, shards)
    assert [len(lines) for lines in held] == [5, 5, 5, 4, 4]
    every = [row.line for row in read(source, fmt, {}, None)]
    assert sum(held, []) == every  # each row in one shard, in line order
    assert shards[-1].span.stop is None  # the last takes rows added later
    # The kept plan is the plan from then on, whatever is asked.
    assert plan(source, fmt, tmp_path, 2) == shards


def test_rows_added_later_join_the_last_shard_and_other_changes_are_refused(
    tmp_path: Path,
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(10)))
    shards = plan(source, "text", tmp_path, 3)
    with source.open("a") as file:
        file.write("prompt 10\nprompt 11\n")
    again = plan(source, "text", tmp_path, 3)
    assert again == shards and lines_of(source, "text", again)[-1] == [8, 9, 10, 11, 12]
    source.write_text(source.read_text().replace("prompt 4", "prompt four"))
    with pytest.raises(InputChanged, match="first 90 bytes differ"):
        plan(source, "text", tmp_path, 3)


async def test_shards_run_apart_make_the_dataset_one_run_makes(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(40)))
    whole = tmp_path / "whole"
    await BulkRun(source, whole, embedded=FIXED).run()
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shards = plan(source, "text", sharded, 3)
    for shard in reversed(shards):  # in any order
        summary = await BulkRun(source, sharded, embedded=FIXED, shard=shard).run()
        assert summary.ok and summary.counts.total == shard.rows == summary.counts.done
    assert join_manifests(sharded, shards) == 40
    keep = ("line", "key", "taskUUID", "request", "path")

    def records(out: Path) -> list[dict[str, object]]:
        text = (out / "manifest.jsonl").read_bytes().splitlines()
        return [{k: orjson.loads(line)[k] for k in keep} for line in text]

    assert records(sharded) == records(whole)
    with pytest.raises(UsageError, match="is a sharded dataset"):
        BulkRun(source, sharded, embedded=FIXED)
    with pytest.raises(UsageError, match="made by a run on one machine"):
        BulkRun(source, whole, embedded=FIXED, shard=shards[0])


def test_without_ray_the_runner_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.bulk.cluster import RayRun

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(UsageError, match=r"pip install -e '\.\[ray\]'"):
        RayRun(__file__, "unused")
