"""Bulk runs on a Ray cluster: the input cut into shards, each run by an actor.

``orchestrator run prompts.jsonl --out dataset/ --ray [ADDRESS]`` on the command line;
from code::

    from orchestrator.bulk.cluster import RayRun

    summary = await RayRun("prompts.jsonl", "dataset/", actors=8, endpoints=[...]).run()

Theory of operation
===================

Plain actors carry a run, not Ray Data: exactly-once needs every row to have one owner
that records, durably, what it finished, so that whoever takes over knows what is left.
A shard gives that owner: a span of the input (:mod:`.shards`) with its own ledger, run
by the same :class:`~.runner.BulkRun` as on one machine. Ray Data's retries would run a
failed batch again from its start, with no record of which of its rows were done and no
place to resume a dataset from after the driver itself is gone.

The driver (:meth:`RayRun.run`, where the command runs):

1. holds the dataset directory (one driver per dataset) and cuts the input into shards
   once; later runs reuse the kept plan, with any number of actors;
2. starts ``actors`` :class:`ShardWorker` actors. Each holds one
   :class:`~orchestrator.Orchestrator` (its own persistent sockets, opened once) for
   every shard it runs;
3. hands each idle actor the next shard. The actor runs the shard's rows against its
   ledger under ``shards/NNNNN/`` and writes their images to the dataset's ``images/``
   (or to the sinks, which every actor reaches);
4. every ``interval`` asks each actor for its shard's figures and sums them into
   :attr:`RayRun.counts` (what progress shows). It holds nothing per row: per shard, a
   few numbers;
5. when an actor dies (``ray.kill``, a lost node), starts another for its shard. The
   shard's ledger says what was done; the rows the dead actor had in flight go out again
   with the same taskUUIDs (derived from their keys), so a server that holds them replays
   them instead of generating and charging again, and their images land under the same
   names: no row is written twice;
6. joins the shards' manifests into ``manifest.jsonl``, in line order.

A shard whose actors die ``max_deaths`` times fails the run (:class:`ShardLost`);
its rows stay in its ledger and a rerun goes on from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio

from ..client import Orchestrator
from ..config import Config
from ..errors import OrchestratorError, UsageError
from .counts import Counts, Summary
from .resume import exclusive
from .rows import Format, detect_format
from .runner import BulkRun
from .shards import Shard, join_manifests, plan

__all__ = ["KeptOrchestrator", "RayRun", "ShardLost", "ShardWorker", "import_ray"]

INSTALL: Final = "the Ray runner needs the [ray] extra: pip install -e '.[ray]'"
#: The figures an actor reports of its shard (the rest of Counts is the driver's).
_FIGURES: Final = ("total", "done", "done_before", "failed", "invalid", "in_flight")
_SUMS: Final = (*_FIGURES, "retried", "images", "cost")


class ShardLost(OrchestratorError):
    """A shard's actors kept dying; its ledger keeps what they did, and a rerun goes on."""


def import_ray() -> Any:
    """The ``ray`` module, or UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


class KeptOrchestrator:
    """An :class:`Orchestrator` entered once, on first use, in a task of its own that
    outlives each call: an actor's sockets persist from call to call. (Ray runs an
    actor's calls, and Ray Data an async stage's batches, on one asyncio loop.)"""

    def __init__(self, client: Mapping[str, Any]) -> None:
        self._client = dict(client)  # Orchestrator's arguments
        self._orch: asyncio.Future[Orchestrator] | None = None
        self._closed = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def get(self) -> Orchestrator:
        """The orchestrator, entered (its error, when it cannot be)."""
        if self._orch is None:
            loop = asyncio.get_running_loop()
            self._orch = loop.create_future()
            self._keeper = loop.create_task(self._keep(self._orch))
        return await asyncio.shield(self._orch)

    async def _keep(self, ready: asyncio.Future[Orchestrator]) -> None:
        try:
            async with Orchestrator(**self._client) as orch:
                ready.set_result(orch)
                await self._closed.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    async def close(self) -> None:
        """Close it (its sockets, or its embedded server)."""
        self._closed.set()
        if self._keeper is not None:
            await asyncio.gather(self._keeper, return_exceptions=True)


class ShardWorker:
    """A Ray actor (async: its figures are read while a shard runs): one
    :class:`Orchestrator`, made from ``client`` (``Orchestrator``'s arguments), for every
    shard it runs."""

    def __init__(self, client: Mapping[str, Any]) -> None:
        self._kept = KeptOrchestrator(client)
        self._bulk: BulkRun | None = None
        self._problems: list[str] = []

    async def run_shard(
        self, source: str, out: str, shard: Shard, settings: dict[str, Any]
    ) -> dict[str, Any]:
        """Run ``shard`` of ``source`` into ``out``; return its final figures."""
        orch = await self._kept.get()
        problem = self._problems.append
        self._bulk = bulk = BulkRun(
            source, out, orchestrator=orch, shard=shard, on_problem=problem, **settings
        )
        summary = await bulk.run()
        return self._figures() | {
            "stopped": summary.stopped,
            "problems": summary.problems,
            "finished": True,
        }

    async def progress(self) -> dict[str, Any]:
        """The running shard's figures, and the problems reported since the last call."""
        return self._figures()

    def _figures(self) -> dict[str, Any]:
        problems, self._problems = self._problems, []
        counts = asdict(self._bulk.counts) if self._bulk is not None else {}
        return {name: counts.get(name) for name in _SUMS} | {"new_problems": problems}

    async def stop(self) -> None:
        """Stop sending the shard's rows; those in flight finish."""
        if self._bulk is not None:
            self._bulk.stop()

    async def close(self) -> None:
        """Close the orchestrator (its sockets, or its embedded server)."""
        await self._kept.close()


@dataclass(slots=True)
class _Slot:
    # A shard with the actor running it, and what the driver knows of it.
    shard: Shard
    actor: Any = None
    ref: Any = None
    figures: dict[str, Any] = field(default_factory=dict)
    deaths: int = 0
    result: dict[str, Any] | None = None


class RayRun:
    """A bulk run of ``source`` into ``out`` on a Ray cluster; see the module docstring.

    Args:
        actors: actors at once (each runs one shard at a time, with its own sockets).
        address: the cluster's (``ray.init``'s; None: the running one, else a local one).
            When Ray is initialised already, the run uses that.
        shards: shards to cut the input into at the first run (default: 4 per actor);
            later runs keep the first run's.
        concurrency: rows in flight per actor.
        budget: the most the run may spend: each shard gets its share by its rows.
        actor_options: Ray's options for each actor (``{"num_cpus": 1}`` by default).
        interval: seconds between the driver's looks at its actors.
        max_deaths: a shard's actors may die this often before the run fails.
        on_progress: called with :attr:`counts` after each look.

    The other arguments are :class:`~.runner.BulkRun`'s, for every shard.
    """

    def __init__(
        self,
        source: str | Path,
        out: str | Path,
        *,
        actors: int = 2,
        address: str | None = None,
        shards: int | None = None,
        endpoints: Sequence[str] | None = None,
        api_key: str | None = None,
        config: Config | None = None,
        embedded: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        upload: Sequence[str] = (),
        concurrency: int = 256,
        budget: float | None = None,
        retry_failed: bool = False,
        attempts: int = 3,
        fmt: Format | None = None,
        vocabulary: str | None = None,
        on_problem: Callable[[str], None] | None = None,
        on_progress: Callable[[Counts], None] | None = None,
        actor_options: Mapping[str, Any] | None = None,
        interval: float = 0.5,
        max_deaths: int = 3,
    ) -> None:
        self._ray = import_ray()
        if actors < 1:
            raise UsageError(f"actors = {actors}: must be at least 1")
        if budget is not None and not budget >= 0:
            raise UsageError(f"budget = {budget}: must be a number >= 0")
        self.source, self.out = Path(source).resolve(), Path(out).resolve()
        if not self.source.is_file():
            raise UsageError(f"input {self.source}: no such file")
        self.fmt: Format = fmt or detect_format(self.source)
        self.actors, self.address, self.budget = actors, address, budget
        self._shard_count = shards if shards is not None else 4 * actors
        if endpoints and not api_key:
            raise UsageError("api_key is required when endpoints are given")
        self._client: dict[str, Any] = {"endpoints": endpoints, "api_key": api_key}
        self._client |= {"config": config, "embedded": embedded}
        self._settings: dict[str, Any] = {
            "defaults": defaults,
            "upload": list(upload),
            "concurrency": concurrency,
            "retry_failed": retry_failed,
            "attempts": attempts,
            "fmt": self.fmt,
            "vocabulary": vocabulary,
        }
        self.on_problem = on_problem or (lambda line: None)
        self.on_progress = on_progress or (lambda counts: None)
        self._options = {"num_cpus": 1} | dict(actor_options or {})
        self.interval, self.max_deaths = interval, max_deaths
        self.counts = Counts()
        self._slots: list[_Slot] = []
        self._actors: list[Any] = []  # every actor started, dead ones too
        self._stopping = False

    @property
    def running(self) -> dict[int, Any]:
        """The actors running shards now, by shard index."""
        return {s.shard.index: s.actor for s in self._slots if s.ref is not None}

    def stop(self) -> None:
        """Stop handing out shards and tell the actors to stop sending; what is in flight
        finishes (Ctrl-C's first press)."""
        self._stopping = True
        for slot in self._slots:
            if slot.actor is not None:
                slot.actor.stop.remote()

    async def run(self) -> Summary:
        """Run every shard; return the run's summary (see the module docstring)."""
        self.out.mkdir(parents=True, exist_ok=True)
        async with exclusive(self.out):
            shards = await anyio.to_thread.run_sync(
                plan, self.source, self.fmt, self.out, self._shard_count
            )
            self._slots = [_Slot(shard) for shard in shards]
            self._sum()
            if not self._ray.is_initialized():
                # In a thread: Ray then leaves the process's signal handlers to the command
                # (its first Ctrl-C stops sending). Only Ray's errors are shown.
                start = partial(self._ray.init, address=self.address, logging_level=logging.ERROR)
                await anyio.to_thread.run_sync(start)
            ended = False
            try:
                await self._drive()
                ended = True
            finally:
                with anyio.CancelScope(shield=True):
                    await self._release(gracefully=ended)
            lines = await anyio.to_thread.run_sync(join_manifests, self.out, shards)
        return self._summary(lines)

    # -- the driver's loop --

    async def _drive(self) -> None:
        waiting = deque(self._slots)
        idle = [self._actor() for _ in range(min(self.actors, len(waiting)))]
        busy: dict[Any, _Slot] = {}
        while waiting or busy:
            while idle and waiting and not self._stopping:
                slot = waiting.popleft()
                slot.actor = idle.pop()
                settings = self._settings | {"budget": self._share(slot.shard)}
                slot.ref = slot.actor.run_shard.remote(
                    str(self.source), str(self.out), slot.shard, settings
                )
                busy[slot.ref] = slot
            if not busy:
                return  # stopped with shards left: a rerun goes on
            ready, _ = await anyio.to_thread.run_sync(
                lambda: self._ray.wait(list(busy), num_returns=1, timeout=self.interval)
            )
            for ref in ready:
                slot = busy.pop(ref)
                if self._ended(slot):
                    idle.append(slot.actor)
                else:  # its actor died: another takes the shard, first
                    idle.append(self._actor())
                    waiting.appendleft(slot)
                slot.ref = None
            await self._look(busy)

    def _ended(self, slot: _Slot) -> bool:
        # The shard's result: True when it ran to its end; False when its actor died.
        ray = self._ray
        try:
            result = ray.get(slot.ref)
        except ray.exceptions.RayActorError:
            slot.deaths += 1
            if slot.figures:  # what it had in flight goes out again from its successor
                slot.figures["in_flight"] = 0
            if slot.deaths >= self.max_deaths:
                raise ShardLost(
                    f"shard {slot.shard.index} (from line {slot.shard.span.first}): its "
                    f"actor died {slot.deaths} times; rerun to go on from its ledger"
                ) from None
            self.on_problem(f"shard {slot.shard.index}: its actor died; another takes it")
            return False
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            raise cause from None  # the shard's own error (InputChanged, a bad setting)
        slot.result = result
        self._take(slot, result)
        return True

    async def _look(self, busy: dict[Any, _Slot]) -> None:
        # Every running shard's figures, summed into ``counts`` (a dead actor's are skipped).
        ray = self._ray
        asks = {slot.actor.progress.remote(): slot for slot in busy.values()}
        if asks:
            ready, _ = await anyio.to_thread.run_sync(
                lambda: ray.wait(list(asks), num_returns=len(asks), timeout=self.interval)
            )
            for ref in ready:
                try:
                    figures = ray.get(ref)
                except ray.exceptions.RayError:
                    continue  # the shard's own call says what happened
                self._take(asks[ref], figures)
        self._sum()
        self.on_progress(self.counts)

    def _take(self, slot: _Slot, figures: dict[str, Any]) -> None:
        for line in figures.get("new_problems", ()):
            self.on_problem(line)
        if figures.get("total") is not None:  # the shard has counted its rows
            slot.figures = figures

    def _sum(self) -> None:
        counts = self.counts
        for name in _SUMS:
            setattr(counts, name, 0.0 if name == "cost" else 0)
        for slot in self._slots:
            figures = slot.figures or {"total": slot.shard.rows}
            for name in _SUMS:
                setattr(counts, name, getattr(counts, name) + (figures.get(name) or 0))

    def _share(self, shard: Shard) -> float | None:
        # A shard's part of the budget, by its rows (the shards cannot see each other's).
        if self.budget is None:
            return None
        rows = sum(slot.shard.rows for slot in self._slots) or 1
        return self.budget * max(shard.rows, 1) / rows

    def _actor(self) -> Any:
        ray = self._ray
        actor = ray.remote(ShardWorker).options(**self._options).remote(self._client)
        self._actors.append(actor)
        return actor

    async def _release(self, *, gracefully: bool) -> None:
        # Close every actor's orchestrator, then the actors. Abandoned (cancelled, or a
        # shard's error), they are killed: their rows in flight stay ``submitted``.
        ray = self._ray
        actors, self._actors = self._actors, []
        closing = [actor.close.remote() for actor in actors] if gracefully else []
        if closing:
            await anyio.to_thread.run_sync(
                lambda: ray.wait(closing, num_returns=len(closing), timeout=10)
            )
        for actor in actors:
            ray.kill(actor)

    def _summary(self, lines: int) -> Summary:
        results = [slot.result for slot in self._slots]
        stopped = None
        if self._stopping or any(r is None for r in results):
            stopped = "stopped"
        if any(r is not None and r["stopped"] == "budget" for r in results):
            stopped = "budget"
        problems = sorted(p for r in results if r is not None for p in r["problems"])
        seconds = time.monotonic() - self.counts.started
        first = [(line, status, error) for line, status, error in problems[:20]]
        return Summary(self.counts, self.out, lines, stopped, first, seconds)
