"""How a bulk run shows itself: a live bar on a terminal, plain lines elsewhere, a summary.

The reporter reads the run's :class:`~.runner.Counts` a few times a second instead of
being told of every row: a run at thousands of rows a second pays nothing per row for
its display.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Literal

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .runner import Counts, Summary

__all__ = ["Mode", "report", "summary_lines", "print_summary"]

Mode = Literal["auto", "rich", "plain", "none"]


def _rates(counts: Counts) -> tuple[float, float, float | None]:
    # (images/s and rows/s of this run, seconds left or None)
    elapsed = max(time.monotonic() - counts.started, 1e-9)
    rows = (counts.finished - counts.done_before) / elapsed
    images = counts.images / elapsed
    left = None
    if counts.total is not None and rows > 0:
        left = max(counts.total - counts.finished, 0) / rows
    return images, rows, left


def line(counts: Counts) -> str:
    """One plain progress line."""
    images, _, left = _rates(counts)
    total = "?" if counts.total is None else str(counts.total)
    eta = "" if left is None else f", eta {left:.0f}s"
    return (
        f"progress: {counts.finished}/{total} rows ({counts.done} done, {counts.failed} "
        f"failed, {counts.invalid} invalid), {counts.in_flight} in flight, "
        f"{images:.1f} images/s{eta}"
    )


async def report(
    counts: Counts, mode: Mode = "auto", *, interval: float = 2.0, stream: IO[str] | None = None
) -> None:
    """Show ``counts`` until cancelled: a rich bar (``auto`` on a terminal), or a plain line
    every ``interval`` seconds."""
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "rich" if stream.isatty() else "plain"
    if mode == "none":
        await anyio.sleep_forever()
    if mode == "plain":
        try:
            while True:
                await anyio.sleep(interval)
                print(line(counts), file=stream, flush=True)
        finally:
            print(line(counts), file=stream, flush=True)
    await _rich(counts, Console(file=stream))


async def _rich(counts: Counts, console: Console) -> None:
    columns = (
        TextColumn("[bold]rows"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[images]:.1f} img/s"),
        TextColumn("in flight {task.fields[in_flight]}"),
        TextColumn("[red]failed {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, refresh_per_second=5) as bar:
        task = bar.add_task("rows", total=counts.total, images=0.0, in_flight=0, failed=0)
        try:
            while True:
                images, _, _ = _rates(counts)
                failed = counts.failed + counts.invalid
                bar.update(
                    task,
                    total=counts.total,  # known once the input is counted
                    completed=counts.finished,
                    images=images,
                    in_flight=counts.in_flight,
                    failed=failed,
                )
                await anyio.sleep(0.2)
        finally:
            bar.update(task, completed=counts.finished, in_flight=counts.in_flight)


def summary_lines(summary: Summary) -> list[tuple[str, str]]:
    """The summary's figures, as (name, value) pairs."""
    counts = summary.counts
    images, _, _ = _rates(counts)
    rows = [
        ("rows", str(counts.total)),
        ("done", f"{counts.done} ({counts.done_before} before this run)"),
        ("failed", str(counts.failed)),
        ("invalid", str(counts.invalid)),
        ("images made", f"{counts.images} ({images:.1f}/s)"),
        ("cost", f"{counts.cost:.6g}"),
        ("seconds", f"{summary.seconds:.1f}"),
        ("manifest", f"{summary.out / 'manifest.jsonl'} ({summary.manifest_lines} lines)"),
    ]
    if counts.retried:
        rows.insert(4, ("retried", str(counts.retried)))
    if summary.stopped == "budget":
        rows.append(("stopped", "the budget is reached: rerun with a higher --budget"))
    elif summary.stopped:
        rows.append(("stopped", "before the end: rerun the same command to go on"))
    return rows


def print_summary(summary: Summary, *, rich: bool, stream: IO[str] | None = None) -> None:
    """Print the summary: a table (``rich``) or plain lines, then the rows that failed."""
    stream = stream or sys.stdout
    problems = [(str(line), status, error) for line, status, error in summary.problems]
    if rich:
        console = Console(file=stream)
        table = Table(title="bulk run", show_header=False)
        for name, value in summary_lines(summary):
            table.add_row(name, value)
        console.print(table)
        if problems:
            failed = Table("line", "status", "why", title="rows that failed")
            for row in problems:
                failed.add_row(*row)
            console.print(failed)
        return
    for name, value in summary_lines(summary):
        print(f"{name}: {value}", file=stream)
    for number, status, error in problems:
        print(f"{status}: line {number}: {error.removeprefix(f'line {number}: ')}", file=stream)
