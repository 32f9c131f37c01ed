"""Bulk runs on a Ray cluster (``orchestrator run --ray``) and the Ray Data stage, on a local
cluster started here (``ray.init(num_cpus=2)``) against ``orchestrator serve`` processes."""

from __future__ import annotations

import io
import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from PIL import Image

from orchestrator.bulk.cluster import RayRun
from orchestrator.bulk.stage import OrchestratorStage
from protocol.identity import uuid_for

from conftest import component
from serverkit import KEY, ServerProcess, server_process
from sinkkit import http_store

ray = component("ray", "ray (the [ray] extra)")
component("ray.data", "ray[data] (the [ray] extra)")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster for the module; its address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with server_process() as process:
        yield process


def spent(server: ServerProcess) -> float:
    """What the server has charged our key, read from its Stablecog API (less the probe)."""
    assert server.http_url is not None
    answer = httpx.post(
        f"{server.http_url}/v1/image/generation/create",
        json={"prompt": "probe", "num_outputs": 1},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    ).json()
    probe = 8 * 8 / 1e6 * 30 * 0.0001  # the fixed backend's 8x8 image at 30 steps
    return round(1000.0 - answer["remaining_credits"] - probe, 8)


def shard_ledgers(out: Path) -> dict[int, dict[str, Any]]:
    """Every shard's ledger rows, by line (a line in two shards fails the test)."""
    rows: dict[int, dict[str, Any]] = {}
    for path in sorted((out / "shards").glob("*/ledger.sqlite")):
        db = sqlite3.connect(path)
        db.row_factory = sqlite3.Row
        try:
            for row in db.execute("SELECT * FROM rows"):
                assert row["line"] not in rows, f"line {row['line']} is in two shards"
                rows[row["line"]] = dict(row)
        finally:
            db.close()
    return rows


def assert_dataset(out: Path, lines: int) -> list[dict[str, Any]]:
    """Every row done once; the manifest, the ledgers and the files agree."""
    ledger = shard_ledgers(out)
    assert sorted(ledger) == list(range(1, lines + 1))
    assert {row["status"] for row in ledger.values()} == {"done"}
    manifest = [orjson.loads(line) for line in (out / "manifest.jsonl").read_bytes().splitlines()]
    assert [m["line"] for m in manifest] == list(range(1, lines + 1))  # once each, in order
    images = {
        (n, r["imageUUID"], r["path"])
        for n, row in ledger.items()
        for r in orjson.loads(row["images"])
    }
    assert {(m["line"], m["imageUUID"], m["path"]) for m in manifest} == images
    assert {m["path"] for m in manifest} == {f"images/{p.name}" for p in (out / "images").iterdir()}
    for record in manifest[::97]:
        data = (out / record["path"]).read_bytes()
        assert len(data) == record["bytes"] and Image.open(io.BytesIO(data)).size == (8, 8)
    return manifest


def prompts(path: Path, count: int) -> Path:
    path.write_text("".join(f"prompt number {i}, a lighthouse\n" for i in range(count)))
    return path


async def test_a_killed_actor_s_shard_resumes_elsewhere_with_each_row_done_and_paid_once(
    tmp_path: Path, cluster: str, server: ServerProcess
) -> None:
    source, out = prompts(tmp_path / "prompts.txt", 2000), tmp_path / "dataset"
    before = spent(server)
    # Uploads of shard 0's rows from line 300 on are held until the kill: those rows are
    # in flight (generated, paid for, not yet delivered) when their actor dies.
    held, released = threading.Event(), threading.Event()

    def script(path: str, n: int) -> tuple[int, dict[str, str]]:
        line = int(path.rsplit("/", 1)[1].split("_")[0])
        if 300 <= line <= 1000 and not released.is_set():
            held.set()
            released.wait(60)
        return 200, {}

    problems: list[str] = []
    with http_store(script=script) as store:
        upload = f"{store.url}/copies/{{line}}_{{index}}.{{ext}}"
        settings: dict[str, Any] = {
            "actors": 2,
            "shards": 2,
            "endpoints": [server.url],
            "api_key": KEY,
            "upload": [upload],
            "concurrency": 16,
            "interval": 0.05,
            "on_problem": problems.append,
        }
        run = RayRun(source, out, **settings)
        summaries = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(summaries, run.run()))
            assert await anyio.to_thread.run_sync(held.wait, 120)
            in_flight = {
                line: row["task_uuid"]
                for line, row in shard_ledgers(out).items()
                if row["status"] == "submitted" and line <= 1000  # shard 0's
            }
            victim = run.running[0]
            ray.kill(victim)
            released.set()
        summary = summaries[0]
        assert summary.ok and summary.counts.done == 2000 and summary.manifest_lines == 2000
        assert "shard 0: its actor died; another takes it" in problems
        # (Rows finished just before the kill may not have written so yet.)
        assert any(line >= 300 for line in in_flight)
        after = shard_ledgers(out)
        assert all(after[line]["task_uuid"] == uuid for line, uuid in in_flight.items())
        manifest = assert_dataset(out, 2000)
        # The server made and charged each row once: a resent row was replayed.
        assert spent(server) - before == pytest.approx(sum(m["cost"] for m in manifest), abs=1e-8)
        assert sorted(int(p.split("/")[-1].split("_")[0]) for p in store.stored) == list(
            range(1, 2001)
        )

        # The same input again: nothing to do, nothing sent.
        charged = spent(server)
        again = await RayRun(source, out, **settings).run()
    assert again.ok and again.counts.done_before == 2000 and again.counts.images == 0
    assert spent(server) == pytest.approx(charged, abs=1e-8)
    assert assert_dataset(out, 2000) == manifest


async def _append(into: list[Any], awaitable: Any) -> None:
    into.append(await awaitable)


def test_the_ray_data_stage_turns_rows_into_results_once(
    cluster: str, server: ServerProcess
) -> None:
    rows: list[dict[str, Any]] = [{"id": i, "prompt": f"a red boat, {i}"} for i in range(200)]
    rows[57] = {"id": 57, "prompt": "too many steps", "steps": 9999}
    stage = {
        "endpoints": [server.url],
        "api_key": KEY,
        "key_column": "id",
        "defaults": {"number_results": 2},
    }

    def results() -> dict[int, dict[str, Any]]:
        dataset = ray.data.from_items(rows).map_batches(
            OrchestratorStage,
            fn_constructor_kwargs=stage,
            concurrency=2,
            batch_size=40,
            batch_format="pyarrow",
            num_cpus=0.5,
        )
        return {row["id"]: row for row in dataset.take_all()}

    before = spent(server)
    first = results()
    charged = spent(server) - before
    assert sorted(first) == list(range(200))
    bad = first.pop(57)
    assert "steps = 9999: must be at most 100" in bad["error"] and not len(bad["images"])
    for key, row in first.items():
        assert row["error"] is None and row["prompt"] == f"a red boat, {key}"
        assert len(row["images"]) == len(set(row["image_uuids"])) == 2
        assert all(Image.open(io.BytesIO(data)).size == (8, 8) for data in row["images"])
    request = orjson.dumps(
        {"number_results": 2, "prompt": "a red boat, 3", "task_type": "text_to_image"},
        option=orjson.OPT_SORT_KEYS,
    ).decode()
    assert first[3]["task_uuid"] == uuid_for(f"stage/3/{request}")
    assert charged == pytest.approx(sum(row["cost"] for row in first.values()), abs=1e-8)

    # Run again (as Ray Data retries a batch): the same tasks, replayed, not paid again.
    second = results()
    second.pop(57)
    assert spent(server) - before - charged == pytest.approx(0.0, abs=1e-8)
    assert {k: list(r["image_uuids"]) for k, r in second.items()} == {
        k: list(r["image_uuids"]) for k, r in first.items()
    }


def test_the_command_runs_on_the_cluster_and_resumes(tmp_path: Path, cluster: str) -> None:
    source, out = prompts(tmp_path / "prompts.txt", 60), tmp_path / "dataset"
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(source), "--out", str(out)]
    command += ["--ray", cluster, "--actors", "1", "--shards", "3", "--backend", "fixed"]
    command += ["--progress", "plain"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "done: 60 (0 before this run)" in first.stdout
    assert len(list((out / "shards").iterdir())) == 3
    assert_dataset(out, 60)
    single = subprocess.run(
        [*command[:7], "--backend", "fixed"], capture_output=True, text=True, timeout=60
    )
    assert single.returncode == 1
    assert "is a sharded dataset: run it again as it was (--ray)" in single.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "done: 60 (60 before this run)" in again.stdout
