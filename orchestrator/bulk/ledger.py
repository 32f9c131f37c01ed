"""The ledger of a bulk run: one SQLite row per input row, what is done and what is not.

It is the run's memory across crashes. A row's line is its primary key; beside it the
row's key (a digest of its line and request, see :mod:`.rows`), its taskUUID and
``generation`` (bumped when a failed row is tried afresh, so the server sees a new task),
its status, attempts, error, cost, resolved seeds and image records (JSON: imageUUID,
seed, cost, and where each delivery put it, with size and checksum), and timings.

Statuses: ``submitted`` (sent, not finished: a rerun sends it again with the same
taskUUID), ``done``, ``failed`` (after its retries; ``--retry-failed`` tries again) and
``invalid`` (the row itself is bad; nothing was sent).

Writes come in batches, each one transaction, so the ledger costs a commit per batch, not
per row; a row is written ``done`` only once its files are durable, so after a crash the
ledger never names an image that is not there. WAL with ``synchronous=NORMAL``: a commit
survives the process being killed; on power loss the last commits may be lost, which makes
those rows run again (to the same paths), never a ledger that lies.

SQLite calls block, so :class:`Ledger` runs each one in a worker thread, one at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio

__all__ = ["Ledger", "LedgerRow", "Op"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    line INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    task_uuid TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    error TEXT,
    failure TEXT,
    cost REAL,
    seeds TEXT,
    images TEXT,
    submitted_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS rows_status ON rows (status);
"""

_SUBMITTED: Final = """
INSERT INTO rows (line, key, task_uuid, generation, status, attempts, request, submitted_at)
VALUES (?, ?, ?, ?, 'submitted', ?, ?, ?)
ON CONFLICT (line) DO UPDATE SET
    key = excluded.key, task_uuid = excluded.task_uuid, generation = excluded.generation,
    status = 'submitted', attempts = excluded.attempts, error = NULL, failure = NULL,
    submitted_at = excluded.submitted_at
"""
_DONE: Final = """
UPDATE rows SET status = 'done', cost = ?, seeds = ?, images = ?, finished_at = ?,
    error = NULL, failure = NULL
WHERE line = ?
"""
_FAILED: Final = """
UPDATE rows SET status = 'failed', error = ?, failure = ?, cost = ?, finished_at = ?
WHERE line = ?
"""
_INVALID: Final = """
INSERT INTO rows (line, key, status, request, error) VALUES (?, ?, 'invalid', ?, ?)
ON CONFLICT (line) DO UPDATE SET key = excluded.key, status = 'invalid',
    request = excluded.request, error = excluded.error
"""

#: One write: the statement and its parameters.
Op = tuple[str, tuple[Any, ...]]


def submitted(
    line: int, key: str, task_uuid: str, generation: int, attempts: int, request: str, at: float
) -> Op:
    """The row was sent (or sent again)."""
    return _SUBMITTED, (line, key, task_uuid, generation, attempts, request, at)


def done(line: int, cost: float | None, seeds: str, images: str, at: float) -> Op:
    """The row finished and its files are durable."""
    return _DONE, (cost, seeds, images, at, line)


def failed(line: int, error: str, failure: str, cost: float | None, at: float) -> Op:
    """The row failed after its retries (``failure``: ``task`` or ``delivery``; ``cost``:
    what it was charged all the same)."""
    return _FAILED, (error, failure, cost, at, line)


def invalid(line: int, key: str, request: str, error: str) -> Op:
    """The row cannot be a task."""
    return _INVALID, (line, key, request, error)


@dataclass(slots=True, frozen=True)
class LedgerRow:
    """What a rerun needs to know of a row already in the ledger."""

    line: int
    key: str
    status: str
    task_uuid: str | None
    generation: int
    attempts: int
    failure: str | None


class Ledger:
    """A run's SQLite ledger at ``path`` (created if missing), used from async code."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._limiter = anyio.CapacityLimiter(1)  # one thread at a time on the connection
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open (or create) the database."""
        self._db = await self._call(self._connect)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        return db

    async def close(self) -> None:
        """Close the database (its WAL is checkpointed into the file)."""
        if self._db is not None:
            db, self._db = self._db, None
            await self._call(db.close)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the ledger is not open")
        return self._db

    # -- writes --

    async def apply(self, ops: Sequence[Op]) -> None:
        """Write ``ops`` in order, in one transaction."""
        await self._call(self._apply, ops)

    def _apply(self, ops: Sequence[Op]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        try:
            for statement, params in ops:
                db.execute(statement, params)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def set_meta(self, values: dict[str, str]) -> None:
        """Record facts about the run (its input's fingerprint, ...)."""
        rows = [(name, value) for name, value in values.items()]
        statement = "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)"
        await self._call(lambda: self._conn().executemany(statement, rows))

    # -- reads --

    async def meta(self) -> dict[str, str]:
        """The facts recorded about the run."""
        rows = await self._call(
            lambda: self._conn().execute("SELECT name, value FROM meta").fetchall()
        )
        return dict(rows)

    async def rows_after(self, line: int, limit: int) -> list[LedgerRow]:
        """Up to ``limit`` rows after ``line``, in line order (a rerun walks them beside the
        input, so the ledger is never loaded whole)."""
        statement = (
            "SELECT line, key, status, task_uuid, generation, attempts, failure FROM rows "
            "WHERE line > ? ORDER BY line LIMIT ?"
        )
        rows = await self._call(lambda: self._conn().execute(statement, (line, limit)).fetchall())
        return [LedgerRow(*row) for row in rows]

    async def totals(self) -> dict[str, tuple[int, float]]:
        """Rows and summed cost by status."""
        statement = "SELECT status, COUNT(*), COALESCE(SUM(cost), 0) FROM rows GROUP BY status"
        rows = await self._call(lambda: self._conn().execute(statement).fetchall())
        return {status: (count, cost) for status, count, cost in rows}

    async def problems(self, limit: int) -> list[tuple[int, str, str]]:
        """The first ``limit`` failed or invalid rows: (line, status, error)."""
        statement = (
            "SELECT line, status, error FROM rows WHERE status IN ('failed', 'invalid') "
            "ORDER BY line LIMIT ?"
        )
        return await self._call(lambda: self._conn().execute(statement, (limit,)).fetchall())

    def done_rows(self, chunk: int = 1000) -> Iterator[tuple[Any, ...]]:
        """Every done row, in line order, read in chunks (call from a worker thread).

        Each is (line, key, task_uuid, request, cost, images, submitted_at, finished_at)."""
        statement = (
            "SELECT line, key, task_uuid, request, cost, images, submitted_at, finished_at "
            "FROM rows WHERE status = 'done' AND line > ? ORDER BY line LIMIT ?"
        )
        last = 0
        while True:
            rows = self._conn().execute(statement, (last, chunk)).fetchall()
            yield from rows
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    async def in_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the ledger's worker thread (for a long read, like the manifest's)."""
        return await self._call(fn)
