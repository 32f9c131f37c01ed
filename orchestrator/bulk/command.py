"""``orchestrator run``: a prompt file in, a dataset out, on this machine or on Ray.

The parser is built at start-up; Ray is imported only when ``--ray`` runs, so that an
install without the [ray] extra gets a one-line hint instead of a trace.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson

from protocol.vocabularies import VOCABULARIES

from ..errors import UsageError
from ..options import add_dialect, choice, dialect_config, endpoint_has_key
from ..serving import add_embedded, embedded_settings
from .progress import print_summary, report
from .resume import InputChanged
from .rows import is_field
from .runner import BulkRun

__all__ = ["add_run", "run_command"]


def add_run(run: argparse.ArgumentParser) -> None:
    """The ``run`` command's options."""
    run.add_argument("input", type=Path, help="JSON lines, CSV with a header, or text lines")
    run.add_argument("--out", type=Path, required=True, help="the dataset's directory")
    run.add_argument(
        "--endpoint", action="append", default=[], help="ws:// URL (repeatable; default: embedded)"
    )
    run.add_argument("--api-key", help="the key for --endpoint")
    add_dialect(run)
    run.add_argument("--concurrency", type=int, default=256, help="rows in flight at most")
    run.add_argument(
        "--upload",
        action="append",
        default=[],
        metavar="TEMPLATE",
        help="a sink for every image too (repeatable); placeholders as for generate, and "
        "{line} {key} and the rows' metadata",
    )
    run.add_argument("--budget", type=float, help="stop sending once this cost would be passed")
    run.add_argument(
        "--retry-failed", action="store_true", help="send the rows that failed before again"
    )
    run.add_argument("--attempts", type=int, default=3, help="tries per row on network errors")
    run.add_argument("--format", choices=("jsonl", "csv", "text"), help="default: by suffix")
    run.add_argument(
        "--vocabulary",
        choices=tuple(VOCABULARIES),
        help="rows are requests of that seed API, in its own names (README: the five APIs)",
    )
    defaults = run.add_argument_group("row defaults (a row's own value wins)")
    defaults.add_argument("--task-type", help="text_to_image (default), upscale, ...")
    defaults.add_argument("--model", help="a model id, name or AIR id")
    defaults.add_argument("--size", "--size-id", type=choice, help="a sizeId or WIDTHxHEIGHT")
    defaults.add_argument("-n", "--number-results", type=int, help="images per row")
    defaults.add_argument("--steps", type=int, help="inference steps")
    defaults.add_argument("--guidance", type=float, help="gScale")
    defaults.add_argument("--scheduler", type=choice, help="a scheduler id or name")
    defaults.add_argument("--style", type=choice, help="a style id or name")
    defaults.add_argument("--negative-prompt", help="what to keep out of every image")
    defaults.add_argument("--seed", type=int, help="the same seed for every row")
    defaults.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other field (VALUE read as JSON, else as text; repeatable)",
    )
    add_embedded(run)
    run.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="auto: a live bar on a terminal, else plain lines (on stderr)",
    )
    run.add_argument(
        "--progress-interval", type=float, default=2.0, help="seconds between plain lines"
    )
    cluster = run.add_argument_group("on a Ray cluster (the [ray] extra)")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the shards on Ray actors: the cluster at ADDRESS, else the running one, "
        "else a local one",
    )
    cluster.add_argument("--actors", type=int, default=2, help="actors at once (with --ray)")
    cluster.add_argument(
        "--shards", type=int, help="shards at the first run (default: 4 per actor; kept after)"
    )
    run.set_defaults(run=run_command)


_DEFAULT_FLAGS = (
    *("task_type", "model", "size", "number_results", "steps", "guidance", "scheduler"),
    *("style", "negative_prompt", "seed"),
)


def _row_defaults(args: argparse.Namespace) -> dict[str, Any]:
    defaults = {name: getattr(args, name) for name in _DEFAULT_FLAGS}
    for pair in args.set:
        name, equals, text = pair.partition("=")
        if not equals or not is_field(name):
            raise UsageError(f"--set {pair!r}: must be FIELD=VALUE with a task field")
        try:
            defaults[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            defaults[name] = text
    return {name: value for name, value in defaults.items() if value is not None}


def run_command(args: argparse.Namespace) -> int:
    """Run ``orchestrator run``; return the exit status."""
    if not endpoint_has_key(args):
        return 2
    try:
        embedded = embedded_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings: dict[str, Any] = {
        "endpoints": args.endpoint or None,
        "api_key": args.api_key,
        "config": dialect_config(args),
        "embedded": embedded,
        "defaults": _row_defaults(args),
        "upload": args.upload,
        "concurrency": args.concurrency,
        "budget": args.budget,
        "retry_failed": args.retry_failed,
        "attempts": args.attempts,
        "fmt": args.format,
        "vocabulary": args.vocabulary,
        "on_problem": lambda text: print(text, file=sys.stderr, flush=True),
    }
    try:
        if args.ray is None:
            bulk: Any = BulkRun(args.input, args.out, **settings)
        else:
            from .cluster import RayRun

            address = args.ray or None
            cluster = {"actors": args.actors, "shards": args.shards, "address": address}
            bulk = RayRun(args.input, args.out, **settings, **cluster)
        return anyio.run(_run_async, bulk, args)
    except InputChanged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _run_async(bulk: Any, args: argparse.Namespace) -> int:
    done: list[Any] = []
    refused: list[InputChanged] = []
    interrupted = False

    async def run_it(scope: anyio.CancelScope) -> None:
        try:
            done.append(await bulk.run())
        except InputChanged as exc:  # raised as itself, not inside the task group's group
            refused.append(exc)
        scope.cancel()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it, tg.cancel_scope)
            tg.start_soon(
                partial(report, bulk.counts, args.progress, interval=args.progress_interval)
            )
            async for signum in signals:  # the first: finish what is in flight; the second: go
                if interrupted:
                    print("abandoning the rows in flight", file=sys.stderr, flush=True)
                    tg.cancel_scope.cancel()
                    break
                interrupted = True
                name = signal.Signals(signum).name
                print(
                    f"{name}: finishing the rows in flight (again to abandon them)",
                    file=sys.stderr,
                    flush=True,
                )
                bulk.stop()
    if refused:
        raise refused[0]
    if not done:
        return 130
    summary = done[0]
    print_summary(
        summary, rich=args.progress == "rich" or (args.progress == "auto" and sys.stdout.isatty())
    )
    if interrupted:
        return 130
    return 0 if summary.ok else 1
