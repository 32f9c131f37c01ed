"""Bulk runs of rows in another seed API's shape (``orchestrator run --vocabulary NAME``)."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from PIL import Image

from orchestrator import UsageError
from orchestrator.bulk import BulkRun
from orchestrator.delivery.types import dimensions

from serverkit import KEY, GatedBackend, running
from sinkkit import http_store

pytestmark = pytest.mark.timeout(90)


def statuses(out: Path) -> dict[int, tuple[str, str | None]]:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return {
            line: (status, error)
            for line, status, error in db.execute("SELECT line, status, error FROM rows")
        }
    finally:
        db.close()


def manifest(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / "manifest.jsonl").read_bytes().splitlines()]


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 90, 200)).save(out, "PNG")
    return out.getvalue()


async def test_modelslab_rows_become_a_dataset_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    with http_store() as store:
        store.stored["/init.png"].append(png(512, 512))
        rows = [
            {"prompt": "a red fox", "samples": "2", "width": "768", "height": "512"},
            {
                "prompt": "a blue whale",
                "enhance_prompt": "no",
                "seed": 42,
                "metadata": {"tag": "w"},
            },
            {"prompt": "a green hill", "samples": 5},  # over the documented maximum
            {"prompt": "a kite", "webhook": "http://127.0.0.1:1/hook"},  # not a bulk run's job
            {"prompt": "a cat", "init_image": f"{store.url}/init.png", "strength": 0.5},
            {"prompt": "a dog", "init_image": f"{store.url}/missing.png"},  # a 404
        ]
        source = tmp_path / "requests.jsonl"
        source.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
        out = tmp_path / "out"
        problems: list[str] = []
        summary = await BulkRun(
            source, out, vocabulary="modelslab", on_problem=problems.append
        ).run()
        again = await BulkRun(source, out, vocabulary="modelslab").run()
    ledger = statuses(out)
    assert [ledger[line][0] for line in range(1, 7)] == [
        "done",
        "done",
        "invalid",
        "invalid",
        "done",
        "failed",
    ]
    assert "line 3: invalid ModelsLab request; samples = 5: must be at most 4" == ledger[3][1]
    assert "webhook: not sent by bulk runs" in (ledger[4][1] or "")
    assert "line 6: init_image:" in (ledger[6][1] or "") and "404" in (ledger[6][1] or "")
    records = manifest(out)
    assert sorted(r["line"] for r in records) == [1, 1, 2, 5]
    by_line = {r["line"]: r for r in records}
    assert (by_line[1]["width"], by_line[1]["height"]) == (768, 512)
    assert by_line[2]["seed"] == 42
    # The manifest keeps each row's request as it was written, in that API's names.
    assert by_line[2]["request"] == {
        "vocabulary": "modelslab",
        "request": {"prompt": "a blue whale", "enhance_prompt": "no", "seed": 42},
        "metadata": {"tag": "w"},
    }
    for record in records:
        assert dimensions((out / record["path"]).read_bytes()) == (
            record["width"],
            record["height"],
        )
    assert summary.counts.done == 3 and summary.counts.invalid == 2 and summary.counts.failed == 1
    assert len(problems) == 3
    assert again.counts.done_before == 3 and again.counts.images == 0  # nothing sent twice


async def test_stablecog_csv_rows_with_its_own_column_names(tmp_path: Path) -> None:
    source = tmp_path / "requests.csv"
    source.write_text(
        "prompt,num_outputs,width,height,inference_steps\n"
        "red cat wearing a purple hat,2,512,512,20\n"
        "a lighthouse,1,1024,1024,30\n"  # over Stablecog's pixel-steps budget
    )
    out = tmp_path / "out"
    summary = await BulkRun(source, out, vocabulary="stablecog").run()
    ledger = statuses(out)
    assert ledger[2][0] == "done" and ledger[3][0] == "invalid"
    assert "inference_steps" in (ledger[3][1] or "")
    assert [(r["width"], r["height"]) for r in manifest(out)] == [(512, 512), (512, 512)]
    assert summary.counts.images == 2


async def test_a_vocabulary_takes_no_row_defaults_and_must_exist(tmp_path: Path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("a cat\n")
    with pytest.raises(UsageError, match="row defaults are our fields"):
        BulkRun(source, tmp_path / "out", vocabulary="akiio", defaults={"steps": 5})
    with pytest.raises(UsageError, match="unknown vocabulary"):
        BulkRun(source, tmp_path / "out2", vocabulary="dalle")


def test_the_command_takes_a_vocabulary(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a quiet harbour\na red barn\n")  # text lines: each its request's prompt
    out = tmp_path / "out"
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(source), "--out", str(out)]
    command += ["--vocabulary", "akiio", "--progress", "none"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [(r["width"], r["height"]) for r in manifest(out)] == [(1024, 1024)] * 2
    bad = subprocess.run([*command[:-4], "--vocabulary", "dalle"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'dalle'" in bad.stderr


class CountingGate(GatedBackend):
    """Jobs wait at the gate; ``three`` is set once three are waiting together."""

    def __init__(self) -> None:
        super().__init__()
        self.three = threading.Event()
        self.waiting = 0
        self.lock = threading.Lock()

    def run(self, job: Any, ctx: Any) -> None:
        with self.lock:
            self.waiting += 1
            if self.waiting == 3:
                self.three.set()
        super().run(job, ctx)


async def test_rows_take_their_steps_side_by_side(tmp_path: Path) -> None:
    # Each row's prompt enhancement waits at the gate: were rows' steps taken one at a
    # time, a second would never start before the gate opens.
    source = tmp_path / "requests.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps({"prompt": f"a fox {i}"}) for i in range(3)))
    backend = CountingGate()
    async with running(backend, api_keys=(KEY,), workers=4) as server:
        run = BulkRun(
            source, tmp_path / "out", endpoints=[server.url], api_key=KEY, vocabulary="modelslab"
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.run)
            await anyio.to_thread.run_sync(backend.three.wait, 20)
            assert backend.waiting == 3  # three enhancements at once, before any task
            backend.gate.set()
    assert run.counts.done == 3
