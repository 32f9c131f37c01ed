"""How a rerun finds its place: the input walked beside the ledger, and a changed input refused.

The input and the ledger are both in line order, so a rerun walks them side by side
(:func:`walk`), a batch at a time, holding neither whole. Before that, the input's
fingerprint (its digest, format and the row defaults) is compared with the one the ledger
recorded; when it differs, every row's key is compared with the ledger's row of the same
line (:func:`check_unchanged`): rows added at the end are fine, any other change is refused
with the lines it touched, never mixed into the dataset.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Final

import anyio
import orjson

from ..errors import UsageError
from .ledger import Ledger, LedgerRow
from .rows import BadRow, Row

__all__ = [
    "InputChanged",
    "check_unchanged",
    "exclusive",
    "fingerprint",
    "sweep_temporary",
    "walk",
]

_BATCH: Final = 512  # rows read per trip to a worker thread
_LOOKAHEAD: Final = 2048  # ledger rows read per query


class InputChanged(UsageError):
    """The input is not the one this directory's ledger was made from."""


async def fingerprint(source: Path, fmt: str, defaults: Mapping[str, Any]) -> dict[str, str]:
    """What the ledger records of the input, to tell a rerun on the same input at once."""
    return {
        "input_sha256": await anyio.to_thread.run_sync(_sha256, source),
        "input_format": fmt,
        "defaults": orjson.dumps(defaults, option=orjson.OPT_SORT_KEYS, default=str).decode(),
    }


async def walk(
    rows: Iterator[Row | BadRow], ledger: Ledger
) -> AsyncIterator[tuple[Row | BadRow, LedgerRow | None]]:
    """Each input row with the ledger's row of its line (or None), read off the event loop."""
    known: deque[LedgerRow] = deque()
    fetched, ledger_done = 0, False
    while batch := await anyio.to_thread.run_sync(lambda: list(islice(rows, _BATCH))):
        for row in batch:
            while True:
                if not known and not ledger_done:
                    more = await ledger.rows_after(fetched, _LOOKAHEAD)
                    ledger_done = len(more) < _LOOKAHEAD
                    fetched = more[-1].line if more else fetched
                    known.extend(more)
                if known and known[0].line < row.line:  # a line the input no longer has
                    known.popleft()
                    continue
                break
            yield row, (known.popleft() if known and known[0].line == row.line else None)


async def check_unchanged(
    pairs: AsyncIterator[tuple[Row | BadRow, LedgerRow | None]],
    ledger: Ledger,
    source: Path,
    out: Path,
) -> None:
    """Raise InputChanged unless every row the ledger knows is the same in the input."""
    changed: list[str] = []
    count, last = 0, 0
    async for row, known in pairs:
        last = row.line
        if known is not None and known.key != row.key:
            count += 1
            if len(changed) < 5:
                changed.append(str(row.line))
    beyond = await ledger.rows_after(last, 1)
    if not count and not beyond:
        return
    what = []
    if count:
        lines = ", ".join(changed) + (" and more" if count > len(changed) else "")
        what.append(f"line {lines} differs" if count == 1 else f"lines {lines} differ")
    if beyond:
        what.append(f"line {beyond[0].line} is gone from it")
    raise InputChanged(
        f"input {source} is not the one the ledger in {out} was made from "
        f"({'; '.join(what)}, or the row defaults changed): rerun with that input and those "
        "settings, or use another --out"
    )


def sweep_temporary(directory: Path, lines: Callable[[int], bool] | None = None) -> int:
    """Remove the temporary files a killed run left half-written (``.NAME.HEX.tmp``, as
    delivery writes them), only those of rows whose line ``lines`` holds when given (the
    files are named by line: another shard's writes go on); return how many (blocking: run
    it in a thread)."""
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp") and entry.is_file()):
                continue
            line = name[1:].partition("_")[0]
            if lines is not None and not (line.isdigit() and lines(int(line))):
                continue
            os.unlink(entry.path)
            removed += 1
    return removed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@asynccontextmanager
async def exclusive(out: Path, wait: float = 0.0) -> AsyncIterator[None]:
    """Hold the directory ``out`` for one run: a second is refused (it would send the same
    rows twice), after waiting up to ``wait`` seconds for the first to let go (a shard's
    new worker, while its killed one's process goes). The lock is the kernel's, so a run
    killed with -9 leaves none."""
    with (out / ".lock").open("a") as lock:
        deadline = anyio.current_time() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if anyio.current_time() >= deadline:
                    busy = f"another run is using {out}: wait for it, or stop it"
                    raise UsageError(busy) from None
            await anyio.sleep(0.1)
        yield
