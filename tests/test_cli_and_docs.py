"""The command line, the README's promises and the examples."""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from orchestrator.cli import _parser, main
from protocol.tables import ERRORS

from conftest import ROOT
from serverkit import server_process
from sinkkit import http_store


def test_check_reports_each_line_and_fails_on_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames.jsonl"
    frames.write_text(
        '{"ping": true}\n'
        "\n"
        '{"newTask": {"taskUUID": "2b12fd84-bf41-404d-8fd9-38874d3e0537", '
        '"promptText": "x", "gScale": 12}}\n'
    )
    assert main(["check", str(frames), "--from", "client"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "line 1: ok ping"
    assert out[1] == "line 3: invalid newTask"
    assert out[2].strip() == "gScale (g_scale) = 12: must be at most 10"


def test_check_passes_the_legacy_frames(shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = shared / "fixtures" / "legacy-sdk-client-frames.jsonl"
    assert main(["check", str(frames), "--from", "client"]) == 0
    assert capsys.readouterr().out.count(": ok ") == 5


def test_server_frames_are_refused_when_checked_as_client_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames.jsonl"
    frames.write_text('{"pong": true}\n')
    assert main(["check", str(frames), "--from", "client"]) == 1
    assert main(["check", str(frames), "--from", "server"]) == 0


def test_check_reads_the_current_dialect_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = ROOT / "tests" / "fixtures" / "runware-sdk-frames.jsonl"
    entries = [orjson.loads(line) for line in recorded.read_bytes().splitlines()]
    for side in ("client", "server"):
        frames = tmp_path / f"{side}.jsonl"
        lines = [orjson.dumps(e["frame"]) for e in entries if e["from"] == side]
        frames.write_bytes(b"\n".join(lines))
        assert main(["check", str(frames), "--from", side, "--dialect", "runware"]) == 0
        assert main(["check", str(frames), "--dialect", "runware"]) == 0
    out = capsys.readouterr().out
    assert "ok authentication" in out and "ok upscale" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('[{"taskType": "imageInference", "taskUUID": "t", "CFGScale": "high"}]\n')
    assert main(["check", str(bad), "--from", "client", "--dialect", "runware"]) == 1
    out = capsys.readouterr().out
    assert "positivePrompt" in out and "CFGScale" in out


def test_console_script_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("orchestrator ")


def test_readme_error_table_matches_the_tables() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- error-table -->")[1].split("<!-- /error-table -->")[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \| (yes|no) \|$", block, re.M)
    expected = [
        (str(int(i)), e.code, e.description, "yes" if e.retryable else "no")
        for i, e in ERRORS.items()
    ]
    assert rows == expected


def test_offline_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "session_offline.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "task done: 2 images" in result.stdout
    assert "seed=42" in result.stdout and "seed=43" in result.stdout


@pytest.mark.timeout(120)
def test_readme_main_command_makes_a_dataset(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- main-command -->")[1].split("<!-- /main-command -->")[0]
    command = block.strip().strip("`").strip().split("&&")[-1].split()  # after the install
    assert command[:2] == [".venv/bin/orchestrator", "run"]
    args = [str(tmp_path / "dataset") if arg == "dataset/" else arg for arg in command[1:]]
    assert str(tmp_path / "dataset") in args
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args, "--progress", "plain"],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
        cwd=ROOT,
    )
    rows = (ROOT / "examples" / "prompts.jsonl").read_text().splitlines()
    manifest = (tmp_path / "dataset" / "manifest.jsonl").read_bytes().splitlines()
    lines = [orjson.loads(line) for line in manifest]
    asked = [orjson.loads(row) for row in rows]
    wanted = sum(row.get("number_results", row.get("numberResults", 1)) for row in asked)
    assert len(rows) >= 24 and len(lines) == wanted
    assert f"done: {len(rows)} (0 before this run)" in done.stdout
    for line in lines:
        data = (tmp_path / "dataset" / line["path"]).read_bytes()
        assert data[:3] == b"\xff\xd8\xff" and hashlib.sha256(data).hexdigest() == line["sha256"]


def test_generate_writes_images_and_prints_their_paths(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "generate", "a red fox", "-n", "2"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    written = sorted(tmp_path.glob("*.jpg"))
    assert len(written) == 2 and all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in written)
    assert str(written[0]) in done.stdout and "wrote 2 images" in done.stdout


@pytest.mark.timeout(120)
def test_the_other_apis_example_prints_each_apis_answer() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "other_apis.py")],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["vocabularies"] == "akiio, modelslab, imagetoimage, stablecog"
    assert len(orjson.loads(lines["stablecog"])["outputs"]) == 2
    assert orjson.loads(lines["modelslab"])["status"] == "success"
    assert orjson.loads(lines["akiio"])["success"] is True


@pytest.mark.timeout(120)
def test_streaming_example_writes_each_image_as_it_arrives(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "generate_embedded.py"), "a red fox", "-n", "2"]
        + ["--out", str(tmp_path), "--seed", "42"],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    written = sorted(tmp_path.glob("*.jpg"))
    assert len(written) == 2 and all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in written)
    assert "step 1/" in done.stdout and "seed=42" in done.stdout and "seed=43" in done.stdout
    assert done.stdout.index("step 1/") < done.stdout.index("seed=42")
    assert "done: 2 images" in done.stdout


def test_generate_uploads_and_prints_a_json_line_per_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with http_store() as store, server_process() as server:
        argv = ["generate", "a fox", "-n", "2", "--endpoint", server.url, "--api-key", "key-a"]
        upload = f"{store.url}/{{task_uuid}}/{{index}}.{{ext}}"
        assert main([*argv, "--out", str(tmp_path), "--upload", upload, "--json"]) == 0
    captured = capsys.readouterr()
    lines = [orjson.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 2 and "wrote 2 images" in captured.err
    for line in lines:
        assert line["prompt"] == "a fox" and isinstance(line["seed"], int)
        local, remote = sorted(line["stored"], key=lambda s: s["location"].startswith("http"))
        data = Path(local["location"]).read_bytes()
        assert line["sha256"] == hashlib.sha256(data).hexdigest() == remote["sha256"]
        assert store.stored[remote["location"].removeprefix(store.url)] == [data]


def test_generate_names_a_failed_upload_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with http_store(script=lambda path, n: (403, {})) as store, server_process() as server:
        argv = ["generate", "a fox", "--endpoint", server.url, "--api-key", "key-a"]
        assert main([*argv, "--upload", store.url + "/", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "HTTP 403" in captured.err and "delivered 0 of 1" in captured.out
    assert "wrote 1 images" in captured.out  # the directory still got it


def test_generate_with_a_refused_key_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "x", "--endpoint", "ws://127.0.0.1:1"]) == 2  # a key is required
    with server_process() as server:
        args = ["generate", "x", "--endpoint", server.url, "--api-key", "wrong"]
        assert main([*args, "--out", str(tmp_path)]) == 1
    assert "authentication failed (errorId 19)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_errors_are_one_line_for_a_missing_file_a_busy_port_and_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    assert main(["check", str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No such file or directory") and err.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1 and "address already in use" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with server_process() as server:
        argv = ["generate", "x", "--endpoint", server.url, "--api-key", "key-a"]
        assert main([*argv, "--out", str(blocked / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_help_shows_every_option_with_its_default_and_no_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--help"], ["serve", "--help"], ["generate", "--help"], ["check", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "``" not in out and "usage: orchestrator" in out
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"orchestrator {name} {action.dest}: no help text"
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "(default: 8765)" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_the_current_dialect_example_runs_both_ways_on_the_embedded_server() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "current_dialect.py")],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    lines = done.stdout.splitlines()
    images = [line for line in lines if line.startswith("image ")]
    assert len(images) == 2 and "seed=7" in images[0] and "seed=8" in images[1]
    assert any(line.startswith("upscaled http://127.0.0.1:") for line in lines)
    prompts = [line for line in lines if line.startswith("prompt a cat")]
    assert len(set(prompts)) == 2


@pytest.mark.timeout(120)
def test_generate_and_run_speak_the_current_dialect_when_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["generate", "a red fox", "-n", "2", "--seed", "5", "--dialect", "runware"]
    assert main([*args, "--out", str(out)]) == 0
    assert len(list(out.glob("*.jpg"))) == 2
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n{"prompt": "a dog", "number_results": 2}\n')
    dataset = tmp_path / "dataset"
    assert main(["run", str(prompts), "--out", str(dataset), "--dialect", "runware"]) == 0
    manifest = (dataset / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 3
    # what the current dialect cannot say fails its row, named, and the others are made
    prompts.write_text('{"prompt": "a cat"}\n{"prompt": "a hat", "style": 2}\n')
    again = tmp_path / "again"
    main(["run", str(prompts), "--out", str(again), "--dialect", "runware"])
    assert "styleId" in capsys.readouterr().err
    assert len((again / "manifest.jsonl").read_text().splitlines()) == 1


def test_readme_scheduler_table_says_what_each_id_runs() -> None:
    from orchestrator.server.diffusion.schedulers import SCHEDULER_MAP

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| schedulerId | Seed name | Runs as |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| [^|]+ \| (.+) \|$", table, re.MULTILINE))
    assert sorted(map(int, rows)) == sorted(SCHEDULER_MAP)
    for scheduler_id, choice in SCHEDULER_MAP.items():
        row = rows[str(scheduler_id)]
        if choice.refused:
            assert row.startswith("refused: "), row
        elif choice.cls is None:
            assert "own scheduler" in row
        else:
            assert row.startswith(f"`{choice.cls}`"), row
            assert all(f"{name}=" in row for name in choice.options), row


def test_the_clis_backend_choices_are_the_servers() -> None:
    from orchestrator.server import BACKEND_NAMES
    from orchestrator.serving import BACKEND_CHOICES

    assert BACKEND_CHOICES == BACKEND_NAMES
