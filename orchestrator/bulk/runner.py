"""The bulk runner: an input file in, a dataset out, resumable after a crash.

Theory of operation
===================

A run owns a directory: ``ledger.sqlite`` (:mod:`.ledger`), ``images/`` and
``manifest.jsonl``. It walks the input (:mod:`.rows`, read in batches off the event loop)
beside the ledger's rows of the same lines, both in line order, so neither is ever held
whole. For each row:

- ``done`` or ``invalid`` in the ledger: nothing to do;
- ``failed``: skipped, unless ``retry_failed`` (a task that failed gets a new generation,
  hence a new taskUUID, since the server remembers the old one's failure; a row whose
  delivery failed keeps its taskUUID, so a server that still holds it replays it);
- ``submitted`` (a crash left it in flight) or absent: sent, with the taskUUID derived
  from its key: a server that still holds the task replays it instead of generating and
  charging again.

Rows in flight are bounded by ``concurrency``. A row's images go to ``images/`` under
names made of its line (``{line:07d}_{index}.{ext}``, so a row run again after a crash
writes the same paths, never a second copy) and to the ``upload`` sinks; the task
finishes only once they are durable, and only then is its ``done`` written to the ledger.
A failure the network or a timeout caused is tried again (``attempts`` in all); any other
fails the row, which is quarantined in the ledger with its reason and the run goes on. A
row the spec refuses is ``invalid`` with its line and the rule.

Budget: the first task runs alone to learn the price of an image (the highest seen is
the estimate from then on); no task is sent once the cost spent (over every run of this
directory) plus the estimate of those in flight would pass the budget.

:meth:`BulkRun.stop` stops sending and lets the rows in flight finish; cancelling the run
abandons them (they stay ``submitted``, and a rerun sends them again). Either way what
finished is in the ledger, and the manifest is rebuilt from it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import orjson

from ..client import Orchestrator
from ..config import Config
from ..delivery import DirectorySink, Sink, sink
from ..errors import (
    LocalProtocolError,
    OrchestratorError,
    OrchestratorTimeout,
    RemoteTaskError,
    TaskCancelled,
    TaskError,
    TransportError,
    UploadError,
    UsageError,
)
from ..handle import TaskHandle
from ..vocabularies import steps
from . import ledger as records
from .counts import Counts, Summary
from .foreign import normalizer
from .ledger import Ledger, LedgerRow
from .manifest import outputs, rebuild
from .resume import InputChanged, check_unchanged, exclusive, fingerprint, sweep_temporary, walk
from .rows import WHOLE, BadRow, Format, Row, count_rows, detect_format, one_line, read
from .shards import PLAN, Shard, shard_dir

__all__ = ["BulkRun", "Counts", "Summary"]

LEDGER: Final = "ledger.sqlite"
IMAGES: Final = "images/{line:07d}_{index}.{ext}"
_MAX_PENDING_OPS: Final = 8192  # ledger writes waiting before submitting waits for them


@dataclass(slots=True)
class _Live:
    row: Row
    task_uuid: str
    generation: int
    attempts: int
    submitted_at: float
    estimate: float = 0.0  # the cost it is expected to add, while in flight
    tries: int = 0  # sent by this run (``attempts`` counts every run's)


class BulkRun:
    """One bulk run of ``source`` into the directory ``out``.

    Args:
        source: the input file (JSON lines, CSV or text; see :mod:`.rows`).
        out: the dataset's directory (created); its ledger makes a rerun resume.
        orchestrator: an entered :class:`Orchestrator` to run on; by default the run makes
            one from ``endpoints``, ``api_key``, ``config`` and ``embedded`` (the embedded
            default when no endpoint is given).
        defaults: fields every row gets unless it sets them (``{"steps": 30}``).
        vocabulary: rows are requests of that seed API instead (see :mod:`.foreign`).
        upload: more sinks for every image (templates may use ``{line}`` and ``{key}``
            and the rows' ``metadata``).
        concurrency: rows in flight at most.
        budget: the most the run may spend, in the server's cost unit.
        retry_failed: send the rows that failed in an earlier run again.
        attempts: tries per row for failures of the network or of time.
        fmt: the input's format, when its suffix does not say it.
        on_problem: called with a line for each bad or failed row, as it happens.
        shard: run only this shard of a sharded dataset (:mod:`.shards`): its rows, its
            ledger and manifest under ``shards/NNNNN/``, the dataset's ``images/``.
    """

    def __init__(
        self,
        source: str | Path,
        out: str | Path,
        *,
        orchestrator: Orchestrator | None = None,
        endpoints: Sequence[str] | None = None,
        api_key: str | None = None,
        config: Config | None = None,
        embedded: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        upload: Sequence[str | Sink] = (),
        concurrency: int = 256,
        budget: float | None = None,
        retry_failed: bool = False,
        attempts: int = 3,
        fmt: Format | None = None,
        on_problem: Callable[[str], None] | None = None,
        vocabulary: str | None = None,
        shard: Shard | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency = {concurrency}: must be at least 1")
        if attempts < 1:
            raise UsageError(f"attempts = {attempts}: must be at least 1")
        if budget is not None and not budget >= 0:
            raise UsageError(f"budget = {budget}: must be a number >= 0")
        self.source, self.out = Path(source), Path(out)
        if not self.source.is_file():
            raise UsageError(f"input {self.source}: no such file")
        self.fmt: Format = fmt or detect_format(self.source)
        self.defaults = dict(defaults or {})
        self._normalize = None if vocabulary is None else normalizer(vocabulary)
        if vocabulary is not None:  # its rows are that API's: our defaults do not apply
            if self.defaults:
                raise UsageError("row defaults are our fields: a vocabulary's rows set theirs")
            self.defaults = {"vocabulary": vocabulary}  # the input's fingerprint has it
        self._orch = orchestrator
        # Made (and its endpoints checked) now, entered when the run starts.
        self._own = None
        if orchestrator is None:
            self._own = Orchestrator(endpoints, api_key=api_key, config=config, embedded=embedded)
        self.shard = shard
        self._span = WHOLE if shard is None else shard.span
        # Where the ledger and the manifest are: the dataset's directory, or its shard's.
        self.state = self.out if shard is None else shard_dir(self.out, shard.index)
        if shard is None and (self.out / PLAN).exists():
            raise UsageError(f"{self.out} is a sharded dataset: run it again as it was (--ray)")
        if shard is not None and (self.out / LEDGER).exists():
            raise UsageError(f"{self.out} was made by a run on one machine: rerun it so")
        self.state.mkdir(parents=True, exist_ok=True)
        self._files = DirectorySink(self.out / IMAGES)  # checked (and made) now
        self._sinks: tuple[Sink, ...] = (self._files, *(sink(s) for s in upload))
        self.concurrency, self.budget = concurrency, budget
        self.retry_failed, self.attempts = retry_failed, attempts
        self.on_problem = on_problem or (lambda line: None)
        self.counts = Counts()
        self.ledger = Ledger(self.state / LEDGER)
        self._stopping = False
        self._stopped: str | None = None
        self._live: dict[TaskHandle, _Live] = {}
        self._finished: deque[TaskHandle] = deque()
        self._retry: deque[tuple[float, _Live]] = deque()
        self._wake = anyio.Event()
        self._ops: list[records.Op] = []
        self._ops_ready = anyio.Event()
        self._flushed = anyio.Event()
        self._applying = anyio.Lock()
        self._price: float | None = None  # the highest cost of one image seen
        self._preparing = 0  # rows taking their steps before their task
        self._steps: anyio.abc.TaskGroup
        self._in_flight_cost = 0.0

    def stop(self) -> None:
        """Stop sending rows; those in flight finish (Ctrl-C's first press)."""
        self._stopping = True
        self._stopped = self._stopped or "stopped"
        self._wake.set()

    # -- the run --

    async def run(self) -> Summary:
        """Run every row that is not done; return the summary (see the module docstring)."""
        async with exclusive(self.state, wait=0.0 if self.shard is None else 30.0):
            return await self._run()

    async def _run(self) -> Summary:
        await self.ledger.open()
        try:
            await self._check_input()
            await self._prepare_counts()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._flusher)
                    try:
                        await self._run_rows()
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self._flush_all()
                        tg.cancel_scope.cancel()
            finally:
                # Even when abandoned: the manifest says what the ledger says.
                with anyio.CancelScope(shield=True):
                    summary = await self._finish()
            return summary
        finally:
            with anyio.CancelScope(shield=True):
                await self.ledger.close()

    async def _run_rows(self) -> None:
        if self._orch is not None:
            await self._loop(self._orch)
            return
        assert self._own is not None
        async with self._own as orch:
            await self._loop(orch)

    async def _finish(self) -> Summary:
        problems = await self.ledger.problems(20)
        lines = await self.ledger.in_thread(lambda: rebuild(self.ledger.done_rows(), self.state))
        await self.ledger.set_meta({"clean": "1"})
        seconds = time.monotonic() - self.counts.started
        return Summary(self.counts, self.out, lines, self._stopped, problems, seconds)

    # -- the input against the ledger --

    async def _check_input(self) -> None:
        meta = await self.ledger.meta()
        facts = await fingerprint(self.source, self.fmt, self.defaults)
        if meta and any(meta.get(name) != value for name, value in facts.items()):
            # Refused unless rows were only added at the end.
            await check_unchanged(self._walk(), self.ledger, self.source, self.out)
        if meta.get("clean") == "0":  # the last run did not end: clear up after it
            mine = None if self.shard is None else self._span.holds
            await anyio.to_thread.run_sync(sweep_temporary, self._files.root, mine)
            await self.ledger.in_thread(lambda: rebuild(self.ledger.done_rows(), self.state))
        await self.ledger.set_meta(facts | {"source": str(self.source), "clean": "0"})

    def _walk(self) -> AsyncIterator[tuple[Row | BadRow, LedgerRow | None]]:
        rows = read(self.source, self.fmt, self.defaults, self._normalize, self._span)
        return walk(rows, self.ledger)

    async def _prepare_counts(self) -> None:
        counts = self.counts
        counts.total = await anyio.to_thread.run_sync(count_rows, self.source, self.fmt, self._span)
        totals = await self.ledger.totals()
        counts.done = counts.done_before = totals.get("done", (0, 0.0))[0]
        counts.cost = sum(cost for _, cost in totals.values())
        counts.invalid = totals.get("invalid", (0, 0.0))[0]
        counts.failed = 0 if self.retry_failed else totals.get("failed", (0, 0.0))[0]

    # -- sending --

    async def _loop(self, orch: Orchestrator) -> None:
        # Rows with steps before their task take them in this group, beside the loop.
        async with anyio.create_task_group() as self._steps:
            await self._send_rows(orch)

    async def _send_rows(self, orch: Orchestrator) -> None:
        source = aiter(self._walk())
        waiting: _Live | None = None  # the next row to send, held while the budget waits
        exhausted = False
        while True:
            self._collect()
            busy = len(self._live) + self._preparing
            room = busy < self.concurrency and not self._stopping
            if len(self._ops) > _MAX_PENDING_OPS:
                await self._flushed.wait()  # the flusher catches up
            elif room and self._retry and self._retry[0][0] <= anyio.current_time():
                await self._send(orch, self._retry.popleft()[1])
            elif room and (waiting is not None or not exhausted):
                if waiting is None:
                    item = await anext(source, None)
                    if item is None:
                        exhausted = True
                    else:
                        waiting = self._plan(*item)
                    continue
                allowed = self._affordable()
                if allowed:
                    await self._send(orch, waiting)
                    waiting = None
                elif allowed is False:
                    self.stop()
                    self._stopped = "budget"
                else:
                    await self._sleep()  # for the first result, and the price it tells
            else:
                if self._stopping:
                    self._retry.clear()  # still ``submitted``: a rerun sends them
                idle = not (self._live or self._retry or self._preparing)
                if idle and (exhausted or self._stopping):
                    return
                await self._sleep()

    async def _sleep(self) -> None:
        # Until a task finishes, a retry is due, or stop() is called.
        self._wake = anyio.Event()
        wait = self._retry[0][0] - anyio.current_time() if self._retry else None
        with anyio.move_on_after(wait):
            await self._wake.wait()

    def _affordable(self) -> bool | None:
        # True: send the next row; None: wait for a price; False: the budget is reached.
        if self.budget is None:
            return True
        if self._price is None:
            return None if self._live else self.counts.cost < self.budget
        spent = self.counts.cost + self._in_flight_cost
        return spent + self._price <= self.budget if spent < self.budget else False

    def _plan(self, row: Row | BadRow, known: LedgerRow | None) -> _Live | None:
        # What to send for a row, or None when there is nothing to (a bad row is recorded).
        if known is not None and known.key != row.key:
            raise InputChanged(f"input {self.source} changed during the run (line {row.line})")
        status = known.status if known is not None else None
        if status in ("done", "invalid") or (status == "failed" and not self.retry_failed):
            return None
        if isinstance(row, BadRow):
            self._invalid(row.line, row.key, row.request, row.error)
            return None
        generation, attempts, task_uuid = 0, 0, None
        if known is not None:
            generation, attempts, task_uuid = known.generation, known.attempts, known.task_uuid
            if status == "failed" and known.failure != "delivery":
                generation, task_uuid = generation + 1, None
        task_uuid = task_uuid or row.task_uuid(generation)
        return _Live(row, task_uuid, generation, attempts, time.time())

    async def _send(self, orch: Orchestrator, live: _Live) -> None:
        row = live.row
        live.attempts += 1
        live.tries += 1
        submitted = (live.task_uuid, live.generation, live.attempts, row.request)
        self._op(records.submitted(row.line, row.key, *submitted, live.submitted_at))
        if row.steps is None:
            await self._submit(orch, live, {})
        else:  # uploads, the prompt enhancer: in their own task, so the next rows go on
            self._preparing += 1
            self._steps.start_soon(self._send_after_steps, orch, live)

    async def _send_after_steps(self, orch: Orchestrator, live: _Live) -> None:
        assert live.row.steps is not None
        try:
            more = await steps(orch, live.row.steps)
        except (UploadError, TaskError, TransportError, OrchestratorTimeout) as exc:
            self._fail(live, "task", f"line {live.row.line}: {one_line(exc)}", None)
            return
        else:
            await self._submit(orch, live, more)
        finally:
            self._preparing -= 1
            self._wake.set()

    async def _submit(self, orch: Orchestrator, live: _Live, more: dict[str, str]) -> None:
        row = live.row
        metadata = row.metadata | {"line": row.line, "key": row.key}
        spec = row.spec(live.task_uuid, self._sinks, metadata, **more)
        if hasattr(spec, "return_base64_image") and spec.return_base64_image is None:
            spec.return_base64_image = True  # the bytes come with the result: no second GET
        try:
            handle = await orch.submit(spec)
        except LocalProtocolError as exc:  # a value out of range: the row is bad
            self._invalid(row.line, row.key, row.request, f"line {row.line}: {one_line(exc)}")
            return
        self._live[handle] = live
        self.counts.in_flight += 1
        live.estimate = (self._price or 0.0) * int(row.fields.get("number_results", 1))
        self._in_flight_cost += live.estimate
        handle.add_done_callback(self._on_done)

    def _on_done(self, handle: TaskHandle) -> None:
        self._finished.append(handle)
        self._wake.set()

    # -- results --

    def _collect(self) -> None:
        while self._finished:
            handle = self._finished.popleft()
            live = self._live.pop(handle)
            self.counts.in_flight -= 1
            self._in_flight_cost -= live.estimate
            try:
                result = handle.result_nowait()
            except OrchestratorError as exc:
                self._failed_task(live, exc)
            else:
                self._done(live, result)

    def _failed_task(self, live: _Live, exc: OrchestratorError) -> None:
        retryable = isinstance(exc, OrchestratorTimeout | TransportError) or (
            isinstance(exc, RemoteTaskError) and exc.retryable
        )
        if retryable and live.tries < self.attempts and not self._stopping:
            self.counts.retried += 1
            delay = min(30.0, 0.5 * 2 ** (live.tries - 1))
            self._retry.append((anyio.current_time() + delay, live))
            return
        if isinstance(exc, TaskCancelled):
            return  # abandoned: still ``submitted`` in the ledger, and a rerun sends it
        self._fail(live, "task", one_line(exc), None)

    def _done(self, live: _Live, result: Any) -> None:
        row = live.row
        failures = [d for image in result.images for d in image.deliveries if not d.ok]
        cost = result.cost if any(i.cost is not None for i in result.images) else None
        self.counts.cost += cost or 0.0
        self._learn_price(result)
        if failures:
            first = failures[0]
            self._fail(live, "delivery", f"delivery to {first.sink} failed: {first.error}", cost)
            return
        images = orjson.dumps(outputs(result, self._files.label, self.out)).decode()
        seeds = orjson.dumps([image.seed for image in result.images]).decode()
        self._op(records.done(row.line, cost, seeds, images, time.time()))
        self.counts.done += 1
        self.counts.images += len(result.images)

    def _learn_price(self, result: Any) -> None:
        costs = [image.cost for image in result.images if image.cost is not None]
        if self.budget is not None and not costs and self._price is None:
            self.on_problem("the server reports no cost: the budget cannot be kept")
        self._price = max([self._price or 0.0, *costs])

    def _fail(self, live: _Live, failure: str, error: str, cost: float | None) -> None:
        self._op(records.failed(live.row.line, error, failure, cost, time.time()))
        self.counts.failed += 1
        self.on_problem(f"line {live.row.line} failed: {error}")

    def _invalid(self, line: int, key: str, request: str, error: str) -> None:
        self._op(records.invalid(line, key, request, error))
        self.counts.invalid += 1
        self.on_problem(error)

    # -- ledger writes --

    def _op(self, op: records.Op) -> None:
        self._ops.append(op)
        self._ops_ready.set()

    def _take_ops(self) -> list[records.Op]:
        ops, self._ops = self._ops, []
        return ops

    async def _flusher(self) -> None:
        # One batch at a time: while one commits, the next gathers.
        while True:
            await self._ops_ready.wait()
            self._ops_ready = anyio.Event()
            await self._apply()
            self._flushed.set()
            self._flushed = anyio.Event()

    async def _apply(self) -> None:
        # The lock makes the last flush wait for one in progress; ops a cancelled apply
        # never wrote (it waited for the ledger's thread) go back, for the last flush.
        async with self._applying:
            ops = self._take_ops()
            if not ops:
                return
            try:
                await self.ledger.apply(ops)
            except BaseException:
                self._ops[:0] = ops
                raise

    async def _flush_all(self) -> None:
        await self._apply()
