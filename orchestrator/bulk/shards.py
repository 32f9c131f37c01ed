"""A sharded run's plan: the input cut into spans of lines, each run on its own.

A run spread over many processes (:mod:`.cluster`, on Ray) cuts its input once, at its
first run, into shards: contiguous spans of rows (:class:`~.rows.Span`), the last open to
the end, so rows added to the input later fall in it. The plan is kept in the dataset's
directory (``shards.json``) with the size and digest of the input it was made from; every
later run reuses it, whatever its number of workers, so a row stays in its shard for good.

Each shard keeps its own ledger under ``shards/NNNNN/`` (one writer each: SQLite needs no
more) beside the dataset's shared ``images/``, whose names are made of the line, so two
shards never write one file. The dataset's ``manifest.jsonl`` is the shards' manifests
joined in order (:func:`join_manifests`): the rows' line order, as a run on one machine
writes it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from ..errors import UsageError
from .manifest import MANIFEST, write
from .resume import InputChanged
from .rows import Format, Span, count_rows, csv_records

__all__ = ["PLAN", "Shard", "join_manifests", "plan", "shard_dir"]

PLAN: Final = "shards.json"


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard: its number and its span of the input (``rows`` when planned)."""

    index: int
    span: Span
    rows: int


def shard_dir(out: Path, index: int) -> Path:
    """Where shard ``index`` of the dataset ``out`` keeps its ledger and manifest."""
    return out / "shards" / f"{index:05d}"


def plan(source: Path, fmt: Format, out: Path, count: int) -> list[Shard]:
    """The dataset's shards: the kept plan, checked against the input, or a new plan of
    ``count`` shards, kept (blocking: run it in a thread)."""
    kept = out / PLAN
    if kept.exists():
        return _load(kept, source, fmt)
    if count < 1:
        raise UsageError(f"shards = {count}: must be at least 1")
    size = source.stat().st_size
    shards = _cut(source, fmt, count)
    text = {
        "format": fmt,
        "input_bytes": size,
        "input_sha256": _digest(source, size),
        "shards": [[s.span.first, s.span.stop, s.span.offset, s.rows] for s in shards],
    }
    temporary = out / f".{PLAN}.tmp"
    temporary.write_bytes(orjson.dumps(text, option=orjson.OPT_INDENT_2))
    os.replace(temporary, kept)
    return shards


def _load(kept: Path, source: Path, fmt: Format) -> list[Shard]:
    text = orjson.loads(kept.read_bytes())
    planned = text["input_bytes"]
    if text["format"] != fmt:
        raise InputChanged(f"{kept} was planned for {text['format']} input, not {fmt}")
    # Rows added at the end are fine (the last shard takes them); any other change is not.
    if source.stat().st_size < planned or _digest(source, planned) != text["input_sha256"]:
        raise InputChanged(
            f"input {source} is not the one {kept} was cut from (its first {planned} bytes "
            "differ): rerun with that input, or use another --out"
        )
    return [
        Shard(index, Span(first, stop, offset), rows)
        for index, (first, stop, offset, rows) in enumerate(text["shards"])
    ]


def _cut(source: Path, fmt: Format, count: int) -> list[Shard]:
    # Two streamed passes: count the rows, then find where each shard's first row starts.
    total = count_rows(source, fmt)
    count = max(1, min(count, total))
    per, extra = divmod(total, count)
    sizes = [per + (1 if index < extra else 0) for index in range(count)]
    starts: list[tuple[int, int]] = []  # (line, offset) of each shard's first row
    wanted = iter(_firsts(sizes))
    target = next(wanted, None)
    for ordinal, (line, offset) in enumerate(_row_starts(source, fmt)):
        if ordinal == target:
            starts.append((line, offset))
            target = next(wanted, None)
    if not starts:  # an empty input: one shard for whatever comes
        return [Shard(0, Span(), 0)]
    shards = []
    for index, (line, offset) in enumerate(starts):
        stop = starts[index + 1][0] if index + 1 < len(starts) else None
        first = 1 if index == 0 else line  # the first shard takes what precedes its row
        shards.append(Shard(index, Span(first, stop, 0 if index == 0 else offset), sizes[index]))
    return shards


def _firsts(sizes: list[int]) -> Iterator[int]:
    # The ordinal of each shard's first row.
    at = 0
    for size in sizes:
        yield at
        at += size


def _row_starts(source: Path, fmt: Format) -> Iterator[tuple[int, int]]:
    # Each row's line and the byte its line starts at (0 for CSV: read from the top).
    if fmt == "csv":
        for line in csv_records(source):
            yield line, 0
        return
    with source.open("rb") as file:
        offset = 0
        for line, raw in enumerate(file, start=1):
            if raw.strip():
                yield line, offset
            offset += len(raw)


def _digest(source: Path, size: int) -> str:
    digest = hashlib.sha256()
    left = size
    with source.open("rb") as file:
        while left and (chunk := file.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def join_manifests(out: Path, shards: list[Shard]) -> int:
    """Write ``out/manifest.jsonl`` from the shards' manifests, in order (as
    :func:`.manifest.write` does); return its lines (blocking: run it in a thread)."""
    return write(out, _shard_lines(out, shards))


def _shard_lines(out: Path, shards: list[Shard]) -> Iterator[bytes]:
    for shard in shards:
        part = shard_dir(out, shard.index) / MANIFEST
        if part.exists():  # else no run has reached the shard yet
            with part.open("rb") as source:
                yield from source
