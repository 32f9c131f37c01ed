"""A bulk run's records of what it made, and ``manifest.jsonl``, rebuilt from the ledger.

:func:`outputs` turns a finished task into the JSON the ledger keeps for its row: one
record per image (its imageUUID, seed, cost, size, checksum, its file under the run's
directory and the URLs of the other sinks) or per text. :func:`rebuild` writes the
manifest from the ledger's done rows, one line per record, into a temporary file that
replaces the old one only once it is complete and on disk: the manifest always says what
the ledger says, whatever happened to the previous run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ..results import TaskResult

__all__ = ["MANIFEST", "outputs", "rebuild", "write"]

MANIFEST = "manifest.jsonl"


def outputs(result: TaskResult, files: str, root: Path) -> list[dict[str, Any]]:
    """The records of a task's images (``files``: the label of the run's directory sink,
    whose paths are kept relative to ``root``) and texts."""
    records: list[dict[str, Any]] = []
    for index, image in enumerate(result.images):
        record: dict[str, Any] = {
            "index": index,
            "imageUUID": image.image_uuid,
            "seed": image.seed,
            "cost": image.cost,
            "nsfw": image.nsfw,
        }
        urls = []
        for delivery in image.deliveries:
            record.setdefault("width", delivery.width)
            record.setdefault("height", delivery.height)
            record.setdefault("bytes", delivery.bytes)
            record.setdefault("sha256", delivery.sha256)
            if delivery.sink == files:
                record["path"] = os.path.relpath(delivery.location, root)
            else:
                urls.append(delivery.location)
        if urls:
            record["urls"] = urls
        if image.uploaded_to:
            record["uploaded_to"] = image.uploaded_to
        records.append(record)
    records += [{"index": index, "text": text} for index, text in enumerate(result.texts)]
    return records


def lines(rows: Iterable[tuple[Any, ...]]) -> Iterable[bytes]:
    """The manifest's lines for the ledger's done rows (:meth:`Ledger.done_rows`)."""
    for line, key, task_uuid, request, cost, images, submitted_at, finished_at in rows:
        fields = orjson.loads(request)
        seconds = None if finished_at is None else round(finished_at - submitted_at, 6)
        common = {"key": key, "line": line, "taskUUID": task_uuid, "request": fields}
        timings = {"submitted_at": submitted_at, "finished_at": finished_at, "seconds": seconds}
        for record in orjson.loads(images or b"[]"):
            yield orjson.dumps(common | record | {"row_cost": cost} | timings) + b"\n"


def rebuild(rows: Iterable[tuple[Any, ...]], out: Path) -> int:
    """Write ``out/manifest.jsonl`` from the done rows (blocking: run it in a thread);
    return the number of lines."""
    return write(out, lines(rows))


def write(out: Path, texts: Iterable[bytes]) -> int:
    """Write ``out/manifest.jsonl`` of ``texts`` (whole lines), replacing the old one only
    once complete and on disk (blocking); return the number of lines."""
    target = out / MANIFEST
    temporary = out / f".{MANIFEST}.tmp"
    count = 0
    with temporary.open("wb") as file:
        for text in texts:
            file.write(text)
            count += 1
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    return count
