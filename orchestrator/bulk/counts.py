"""A bulk run's figures: live :class:`Counts` (progress reads them) and its :class:`Summary`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..results import RunProgress

__all__ = ["Counts", "Summary"]


@dataclass(slots=True)
class Counts:
    """A run's live figures (progress reads them)."""

    total: int | None = None
    done: int = 0  # rows done, over every run of the directory
    done_before: int = 0  # of which, done by an earlier run
    failed: int = 0
    invalid: int = 0
    in_flight: int = 0
    retried: int = 0
    images: int = 0  # made by this run
    cost: float = 0.0  # spent, over every run
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Rows that need nothing more (done, failed or invalid)."""
        return self.done + self.failed + self.invalid

    def progress(self) -> RunProgress:
        """Where the run stands, as ``map`` says it (invalid rows count as failed)."""
        return RunProgress(self.done, self.failed + self.invalid, self.in_flight, self.total)


@dataclass(slots=True)
class Summary:
    """How a run ended."""

    counts: Counts
    out: Path
    manifest_lines: int
    stopped: str | None  # "budget", "stopped" or None when every row was tried
    problems: list[tuple[int, str, str]]  # the first failed or invalid rows: line, status, why
    seconds: float

    @property
    def ok(self) -> bool:
        """No row failed or was invalid."""
        return not (self.counts.failed or self.counts.invalid)
