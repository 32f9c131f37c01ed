"""Bulk runs: a prompt file in, a dataset out, resumable after a crash (``orchestrator run``)."""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from PIL import Image

from orchestrator import Config, Timeouts, UsageError
from orchestrator.bulk import BulkRun, InputChanged
from orchestrator.bulk.rows import Row, normalize
from orchestrator.delivery.types import dimensions

from serverkit import KEY, GatedBackend, running
from sinkkit import http_store

pytestmark = pytest.mark.timeout(90)

FIXED = {"backend": "fixed"}


def ledger_rows(out: Path) -> dict[int, dict[str, Any]]:
    db = sqlite3.connect(out / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return {row["line"]: dict(row) for row in db.execute("SELECT * FROM rows")}
    finally:
        db.close()


def manifest(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / "manifest.jsonl").read_bytes().splitlines()]


def image_files(out: Path) -> set[str]:
    return {f"images/{p.name}" for p in (out / "images").iterdir()}


def assert_consistent(out: Path, rows: int) -> list[dict[str, Any]]:
    """Every row done once; the manifest, the ledger's images and the files agree."""
    ledger = ledger_rows(out)
    assert len(ledger) == rows
    assert {row["status"] for row in ledger.values()} == {"done"}
    images = [
        (line, record["imageUUID"], record["path"])
        for line, row in ledger.items()
        for record in orjson.loads(row["images"])
    ]
    lines = manifest(out)
    assert sorted((m["line"], m["imageUUID"], m["path"]) for m in lines) == sorted(images)
    assert len({uuid for _, uuid, _ in images}) == len(images)  # no imageUUID twice
    assert {path for _, _, path in images} == image_files(out)  # no file but these
    for line in lines:
        data = (out / line["path"]).read_bytes()
        assert len(data) == line["bytes"]
        assert (line["width"], line["height"]) == Image.open(io.BytesIO(data)).size
    return lines


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "run", *args]


def prompts(path: Path, count: int) -> Path:
    path.write_text("".join(f"prompt number {i}, a small house\n" for i in range(count)))
    return path


# -- the kill -9 test ---------------------------------------------------------------------


def run_until(command: list[str], done: int) -> subprocess.Popen[str]:
    """Start ``command``; return once its progress line shows ``done`` rows done."""
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert process.stderr is not None
    for text in process.stderr:
        if text.startswith("progress:") and int(text.split("(")[1].split()[0]) >= done:
            return process
    process.communicate(timeout=30)
    pytest.fail(f"the run ended before {done} rows were done (status {process.returncode})")


def test_a_run_killed_part_way_resumes_with_nothing_lost_or_made_twice(tmp_path: Path) -> None:
    source, out = prompts(tmp_path / "prompts.txt", 500), tmp_path / "dataset"
    command = cli(str(source), "--out", str(out), "--concurrency", "16", "--progress", "plain")
    process = run_until([*command, "--progress-interval", "0.05"], done=60)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)

    before = ledger_rows(out)
    in_flight = {line: row["task_uuid"] for line, row in before.items() if row["status"] != "done"}
    done_before = {line for line, row in before.items() if row["status"] == "done"}
    assert in_flight, "the kill came when no row was in flight"
    assert 0 < len(done_before) < 500

    result = subprocess.run(command, capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stderr
    assert f"done: 500 ({len(done_before)} before this run)" in result.stdout
    after = ledger_rows(out)
    assert all(after[line]["task_uuid"] == uuid for line, uuid in in_flight.items())
    assert all(after[line]["finished_at"] == before[line]["finished_at"] for line in done_before)
    assert len(assert_consistent(out, 500)) == 500


def test_ctrl_c_finishes_the_rows_in_flight_and_the_rerun_goes_on(tmp_path: Path) -> None:
    source, out = prompts(tmp_path / "prompts.txt", 300), tmp_path / "dataset"
    command = cli(str(source), "--out", str(out), "--concurrency", "8", "--progress", "plain")
    process = run_until([*command, "--progress-interval", "0.05"], done=20)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    stopped = ledger_rows(out)
    assert {row["status"] for row in stopped.values()} == {"done"}  # nothing left in flight
    assert len(stopped) < 300

    result = subprocess.run(command, capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stderr
    assert_consistent(out, 300)


# -- formats and rows ---------------------------------------------------------------------


async def test_every_input_format_makes_the_same_dataset_rows(tmp_path: Path) -> None:
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(
        '{"prompt": "a fox", "numberResults": 2, "seed": 5}\n'
        "\n"
        '{"promptText": "a hen", "size_id": "512x512", "steps": 12}\n'
    )
    csv = tmp_path / "rows.csv"
    csv.write_text("prompt,number_results,seed,steps\na fox,2,5,\na hen,,,12\n")
    text = tmp_path / "rows.txt"
    text.write_text("a fox\n\na hen\n")
    made = {}
    for source in (jsonl, csv, text):
        out = tmp_path / source.suffix[1:]
        summary = await BulkRun(source, out, embedded=FIXED).run()
        assert summary.ok and summary.counts.done == 2
        made[source.suffix] = assert_consistent(out, 2)
    assert [m["request"] for m in made[".jsonl"]] == [
        {"prompt": "a fox", "number_results": 2, "seed": 5, "task_type": "text_to_image"},
        {"prompt": "a fox", "number_results": 2, "seed": 5, "task_type": "text_to_image"},
        {"prompt": "a hen", "size": "512x512", "steps": 12, "task_type": "text_to_image"},
    ]
    assert [m["line"] for m in made[".jsonl"]] == [1, 1, 3]  # blank lines are not rows
    assert [m["request"]["steps"] for m in made[".csv"] if m["line"] == 3] == [12]
    assert [m["seed"] for m in made[".csv"] if m["line"] == 2] == [5, 6]
    assert [m["request"] for m in made[".txt"]] == [
        {"prompt": "a fox", "task_type": "text_to_image"},
        {"prompt": "a hen", "task_type": "text_to_image"},
    ]


def test_a_row_has_one_key_whatever_its_spelling() -> None:
    spellings = [
        {"prompt": "x", "number_results": 2, "size": 11},
        {"promptText": "x", "numberResults": 2, "sizeId": 11},
        {"prompt_text": "x", "numberResults": 2, "size_id": 11, "task_type": 1},
    ]
    rows = [normalize(4, raw, {}, typed=True) for raw in spellings]
    assert all(isinstance(row, Row) for row in rows)
    assert len({row.key for row in rows}) == 1  # type: ignore[union-attr]
    other_line = normalize(5, spellings[0], {}, typed=True)
    assert isinstance(other_line, Row) and other_line.key != rows[0].key  # type: ignore[union-attr]
    uuid = rows[0].task_uuid()  # type: ignore[union-attr]
    assert uuid[14] == "4" and uuid[19] in "89ab" and uuid == rows[1].task_uuid()  # type: ignore[union-attr]


async def test_bad_rows_are_reported_with_their_line_and_the_others_go_on(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(
        '{"prompt": "fine one"}\n'
        "{not json\n"
        '{"prompt": "a", "bogus": 1}\n'
        '{"prompt": "b", "steps": 9999}\n'
        '{"task_type": "upscale"}\n'
        '{"prompt": "fine two"}\n'
    )
    problems: list[str] = []
    out = tmp_path / "out"
    summary = await BulkRun(source, out, embedded=FIXED, on_problem=problems.append).run()
    assert not summary.ok and summary.counts.done == 2 and summary.counts.invalid == 4
    assert problems[0].startswith("line 2: invalid JSON")
    assert problems[1].startswith("line 3: bogus: not a field of text_to_image")
    assert problems[2] == "line 4: invalid newTask; steps = 9999: must be at most 100"
    assert problems[3] == "line 5: image_uuid: required for upscale"
    ledger = ledger_rows(out)
    assert [ledger[line]["status"] for line in range(1, 7)] == ["done"] + ["invalid"] * 4 + ["done"]
    assert [p[0] for p in summary.problems] == [2, 3, 4, 5]
    assert len(manifest(out)) == 2


def test_the_command_exits_1_and_lists_bad_rows(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    out = tmp_path / "out"
    command = cli(str(source), "--out", str(out), "--backend", "fixed", "--progress", "none")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "invalid: line 2: invalid newTask; promptText (prompt)" in result.stdout
    assert "done: 1 (0 before this run)" in result.stdout


# -- budget, retries, changed input -------------------------------------------------------


async def test_the_budget_stops_the_run_and_a_higher_one_continues(tmp_path: Path) -> None:
    source, out = prompts(tmp_path / "p.txt", 12), tmp_path / "out"
    probe = await BulkRun(
        prompts(tmp_path / "one.txt", 1), tmp_path / "probe", embedded=FIXED
    ).run()
    price = probe.counts.cost
    assert price > 0

    first = await BulkRun(source, out, embedded=FIXED, budget=3.5 * price).run()
    assert first.stopped == "budget" and first.ok
    assert first.counts.done == 3 and first.counts.cost <= 3.5 * price
    assert len(manifest(out)) == 3

    second = await BulkRun(source, out, embedded=FIXED, budget=8.2 * price).run()
    assert second.stopped == "budget" and second.counts.done == 8
    assert second.counts.done_before == 3 and second.counts.cost <= 8.2 * price

    last = await BulkRun(source, out, embedded=FIXED, budget=100 * price).run()
    assert last.stopped is None and last.counts.done == 12
    assert_consistent(out, 12)


async def test_failed_rows_are_quarantined_and_retry_failed_sends_them_again(
    tmp_path: Path,
) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(
        '{"prompt": "fine"}\n'
        '{"task_type": "upscale", "image_uuid": "2b12fd84-bf41-404d-8fd9-38874d3e0537"}\n'
    )
    out = tmp_path / "out"
    first = await BulkRun(source, out, embedded=FIXED).run()
    assert first.counts.done == 1 and first.counts.failed == 1 and not first.ok
    failed = ledger_rows(out)[2]
    assert failed["status"] == "failed" and failed["failure"] == "task" and failed["error"]

    again = await BulkRun(source, out, embedded=FIXED).run()  # without the flag: left alone
    assert again.counts.failed == 1 and ledger_rows(out)[2]["attempts"] == failed["attempts"]

    retried = await BulkRun(source, out, embedded=FIXED, retry_failed=True).run()
    assert retried.counts.failed == 1
    row = ledger_rows(out)[2]
    assert row["generation"] == 1 and row["task_uuid"] != failed["task_uuid"]


async def test_a_row_that_times_out_is_tried_again_then_quarantined(tmp_path: Path) -> None:
    backend = GatedBackend()  # never opens while the run lasts: every try times out
    source, out = prompts(tmp_path / "p.txt", 1), tmp_path / "out"
    config = Config(timeouts=Timeouts(task=0.3))
    async with running(backend) as server:
        try:
            summary = await BulkRun(
                source, out, endpoints=[server.url], api_key=KEY, config=config, attempts=2
            ).run()
        finally:
            backend.gate.set()
    assert summary.counts.retried == 1 and summary.counts.failed == 1
    row = ledger_rows(out)[1]
    assert row["status"] == "failed" and row["attempts"] == 2 and row["failure"] == "task"
    assert backend.order == [row["task_uuid"]]  # the retry was the same task: never run twice


async def test_a_failed_delivery_is_retried_with_the_same_task_uuid(tmp_path: Path) -> None:
    source, out = prompts(tmp_path / "p.txt", 3), tmp_path / "out"
    refusing = True

    def script(path: str, n: int) -> tuple[int, dict[str, str]]:
        return (403, {}) if refusing and "0000002" in path else (200, {})

    with http_store(script=script) as store:
        upload = [f"{store.url}/{{line:07d}}-{{index}}.{{ext}}"]
        first = await BulkRun(source, out, embedded=FIXED, upload=upload).run()
        assert first.counts.failed == 1 and first.counts.done == 2
        failed = ledger_rows(out)[2]
        assert failed["failure"] == "delivery" and "403" in failed["error"]
        refusing = False
        retried = await BulkRun(source, out, embedded=FIXED, upload=upload, retry_failed=True).run()
        assert retried.ok and retried.counts.done == 3
        assert ledger_rows(out)[2]["task_uuid"] == failed["task_uuid"]
        assert "/0000002-0.jpg" in store.stored
    lines = assert_consistent(out, 3)
    assert all(m["urls"] == [f"{store.url}/{m['line']:07d}-0.jpg"] for m in lines)


async def test_a_changed_input_is_refused_and_added_rows_are_not(tmp_path: Path) -> None:
    source, out = prompts(tmp_path / "p.txt", 4), tmp_path / "out"
    await BulkRun(source, out, embedded=FIXED).run()
    original = source.read_text()

    source.write_text(original.replace("prompt number 2", "prompt number two"))
    with pytest.raises(InputChanged, match="line 3 differs"):
        await BulkRun(source, out, embedded=FIXED).run()
    with pytest.raises(InputChanged, match="or the row defaults changed"):
        await BulkRun(source.with_name("p.txt"), out, embedded=FIXED, defaults={"steps": 5}).run()
    source.write_text("".join(original.splitlines(keepends=True)[:3]))
    with pytest.raises(InputChanged, match="line 4 is gone"):
        await BulkRun(source, out, embedded=FIXED).run()
    assert_consistent(out, 4)  # nothing was sent or written

    source.write_text(original + "one more row\n")
    summary = await BulkRun(source, out, embedded=FIXED).run()
    assert summary.counts.done == 5 and summary.counts.done_before == 4
    assert_consistent(out, 5)


# -- image sizes ---------------------------------------------------------------------------


def encoded(fmt: str, size: tuple[int, int], **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("GIF", {}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_image_sizes_are_read_from_the_header(fmt: str, options: dict[str, Any]) -> None:
    assert dimensions(encoded(fmt, (321, 123), **options)) == (321, 123)
    assert dimensions(encoded(fmt, (321, 123), **options)[:9]) is None
    assert dimensions(b"not an image") is None


async def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    source, out = prompts(tmp_path / "p.txt", 2), tmp_path / "out"
    backend = GatedBackend()
    async with running(backend) as server:
        first = BulkRun(source, out, endpoints=[server.url], api_key=KEY)
        second = BulkRun(source, out, endpoints=[server.url], api_key=KEY)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await backend.wait_started()  # the first run holds the directory
            with pytest.raises(UsageError, match="another run is using"):
                await second.run()
            backend.gate.set()
    assert_consistent(out, 2)


def test_csv_cells_are_read_as_their_fields_types() -> None:
    lora = '[{"modelId": "civitai:58390@62833", "weight": 0.8}]'
    cells = {"prompt": "x", "model": "4", "seed": "12", "guidance": "7.5", "check_nsfw": "yes"}
    row = normalize(2, cells | {"lora": lora, "size": "1024x1024"}, {}, typed=False)
    assert isinstance(row, Row)
    assert row.fields["seed"] == 12 and row.fields["guidance"] == 7.5
    assert row.fields["model"] == 4 and row.fields["size"] == "1024x1024"
    assert row.fields["check_nsfw"] is True and row.fields["lora"][0].weight == 0.8
    row.spec(row.task_uuid(), (), {}).prepare(row.task_uuid())  # the protocol takes it all
    for name, cell, rule in [
        ("seed", "twelve", "must be a whole number"),
        ("guidance", "lots", "must be a number"),
        ("check_nsfw", "maybe", "must be true or false"),
        ("lora", "[{", "must be a JSON list"),
    ]:
        bad = normalize(2, {"prompt": "x", name: cell}, {}, typed=False)
        assert bad.error == f"line 2: {name} = {cell!r}: {rule}"  # type: ignore[union-attr]


def test_the_summary_names_what_is_left_and_why(tmp_path: Path) -> None:
    from orchestrator.bulk import Counts, Summary
    from orchestrator.bulk.progress import print_summary

    counts = Counts(total=10, done=6, done_before=2, failed=1, invalid=1, images=4, cost=0.5)
    summary = Summary(counts, tmp_path, 6, "budget", [(3, "failed", "line 3: boom")], 1.0)
    for rich in (False, True):
        out = io.StringIO()
        print_summary(summary, rich=rich, stream=out)
        text = out.getvalue()
        assert "rerun with a higher --budget" in text and "boom" in text
        assert "6 (2 before this run)" in text
