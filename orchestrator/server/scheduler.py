"""The reference server's scheduler: accepting tasks, the workers, execution, cost and push.

Theory of operation
===================

:meth:`Scheduler.accept` decides synchronously what a task request means (after its one
await, resolving an ``uploadEndpoint``): a known taskUUID is adopted and its results re-sent
(never generated twice, see :mod:`.state`), a request over a limit is refused with an error
frame and leaves no record, and anything else becomes a QUEUED record in the fair queue,
served first from the result cache when it can be.

``workers`` coroutines take records from the queue and run the backend, in worker threads
when it is ``blocking`` (at most ``workers`` at once, fewer when the backend says it runs
fewer: one per device for ``diffusers``), so the loop keeps answering pongs and
other connections while images render. Each result is stored, pushed to the task's
``uploadEndpoint`` when it has one, priced, and delivered to the record's session the moment
it exists (:mod:`.delivery`); a session with no socket just notes the task, for its resume
to replay.

A record ends once (DONE or FAILED); a cancel or a shutdown fails it, and a job running in
a thread stops at its next call into the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Final

import anyio
import anyio.lowlevel
import anyio.to_thread

from protocol import (
    NewImageUpload,
    NewProgress,
    NewTask,
    PreProcessControlNetRequest,
    TaskRequest,
    encode,
)
from protocol.identity import image_uuid_for, seed_for_task
from protocol.requests import (
    image_references,
    requested_seed,
    returns_base64,
    upload_endpoint,
    upload_url,
)
from protocol.tables import ErrorId

from .admission import Admission, Refusal
from .backends import (
    Backend,
    ImageOutput,
    Job,
    JobCancelled,
    JobError,
    Output,
    SourceImage,
    image_format,
    worker_count,
)
from .config import ServerConfig
from .connection import Connection
from .contexts import InlineContext, ThreadContext
from .delivery import Delivery
from .push import Pusher, PushError
from .spawn import Spawner
from .state import (
    FairQueue,
    ImageResult,
    ReplyResult,
    Result,
    ServerSession,
    TaskRecord,
    TaskState,
    TextResult,
    cache_key,
    output_format,
)
from .store import ImageStore, ResultCache, StoredImage
from .tasks import TaskTable

__all__ = ["Scheduler"]

log = logging.getLogger("orchestrator.server")

#: A worker whose backend never awaits (``fixed``) gives the loop a turn after this many
#: tasks, so the writer sends the results made so far and the reader takes new frames;
#: without it a worker holds the loop until the queue is empty, and results leave in bursts.
TASKS_PER_TURN: Final = 16
_GENERATION_COST_STEPS: Final = 1  # upscale and background removal price as one step


class Scheduler:
    """Task records by (key, taskUUID), the fair queue, and the workers. See the module doc.

    Args:
        src: the URL an image is hosted at (the hosting side knows the address).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        backend: Backend,
        store: ImageStore,
        pusher: Pusher,
        clock: Callable[[], float],
        src: Callable[[StoredImage], str],
        find_session: Callable[[str], ServerSession | None],
    ) -> None:
        self._config = config
        self._backend = backend
        self._store = store
        self._cache = ResultCache(store, config.limits.max_cache_entries)
        self._delivery = Delivery(store)
        self._admission = Admission(config, store, pusher)
        self._pusher = pusher
        self._clock = clock
        self._src = src
        self._tasks = TaskTable(find_session)
        self._queue = FairQueue()
        self._active_total = 0
        self._running: set[TaskRecord] = set()
        self._idle = asyncio.Event()  # set whenever no task is running
        self._idle.set()
        self._workers = worker_count(backend, config.workers)
        self._limiter = anyio.CapacityLimiter(self._workers)
        self._fetching: set[TaskRecord] = set()  # waiting for guide images by URL
        self._spawner: Spawner | None = None
        self.closing = False
        self.spent: defaultdict[str, float] = defaultdict(float)  # cost by key id

    def start(self, tg: anyio.abc.TaskGroup, spawner: Spawner) -> None:
        """Start the workers in ``tg``; guide fetches start through ``spawner`` (a task is
        accepted in the parser's callback)."""
        self._spawner = spawner
        for _ in range(self._workers):
            tg.start_soon(self.worker)

    # -- accepting tasks --

    async def check_upload(self, task: TaskRequest) -> Refusal | None:
        """Why ``task``'s ``uploadEndpoint`` may not be reached, if it may not (the one await
        before a task is accepted: call it only when the task has an uploadEndpoint)."""
        return await self._admission.check_upload(task)

    def accept(
        self,
        conn: Connection,
        session: ServerSession,
        task: TaskRequest,
        upload_refusal: Refusal | None = None,
    ) -> None:
        """Adopt, refuse or queue a task request (see the module docstring), in one step:
        no other frame can come between the dedupe and the queueing."""
        known = self._tasks.claim(session.key_id, task.task_uuid, session)
        if known is not None:
            self._adopt(*known, session)
            return
        refs = image_references(task)
        refusal = (
            self._admission.refusal(session, task, refs, self._active_total, closing=self.closing)
            or upload_refusal
        )
        if refusal is not None:
            conn.send_error(*refusal, task.task_uuid)
            return
        sources = self._admission.sources(refs)
        if isinstance(sources, tuple):
            conn.send_error(*sources, task.task_uuid)
            return
        seed = requested_seed(task)
        if seed is None:  # derived, so a retried task gives the same pixels
            seed = seed_for_task(task.task_uuid)
        record = TaskRecord(task.task_uuid, session.key_id, task, session, seed, sources=sources)
        self._tasks.add(record)
        session.active.add(task.task_uuid)
        self._active_total += 1
        if isinstance(task, NewTask):
            self._serve_from_cache(record, task)
        if isinstance(task, NewTask) and record.first >= task.number_results:
            self._finish(record)
        elif any(ref.is_url for ref in refs):
            # Fetched before it queues: a guide that trickles in holds no worker.
            assert self._spawner is not None, "Scheduler.start() was not called"
            self._fetching.add(record)
            self._spawner.start_soon(self._fetch_then_queue, session.uuid, record, task)
        else:
            self._queue.put(session.uuid, record)

    def report(self, session: ServerSession, task_uuid: str) -> TaskRecord | None:
        """What a task of the session's key has so far goes to the session (it owns the
        task from now); ``None`` if the key never sent it or it was forgotten."""
        known = self._tasks.claim(session.key_id, task_uuid, session)
        if known is not None:
            self._adopt(*known, session)
        return None if known is None else known[0]

    def _adopt(
        self, record: TaskRecord, previous: ServerSession | None, session: ServerSession
    ) -> None:
        # A known taskUUID: never generated twice; its results so far go to the asker.
        if previous is not session:
            if previous is not None:
                previous.active.discard(record.uuid)
                previous.undelivered.discard(record.uuid)
            if not record.is_finished:
                session.active.add(record.uuid)
        self._delivery.everything(record)

    def _serve_from_cache(self, record: TaskRecord, task: NewTask) -> None:
        # Scoped by API key: one tenant's images and prompts never reach another.
        key = record.cache_key = ResultCache.digest((record.key_id, cache_key(task)))
        available = self._cache.count(key)
        hits = (
            []
            if task.use_cache is False
            else self._cache.page(key, task.offset, task.number_results)
        )
        for index, image in enumerate(hits):
            copy = replace(image, uuid=image_uuid_for(record.uuid, index, record.key_id))
            self._store.put(copy)
            alt = task.positive_prompt
            inline = task.return_base64_image
            record.results.append(
                ImageResult(copy.uuid, self._src(copy), 0.0, copy.seed, alt, inline)
            )
        record.first = len(hits)
        made = task.number_results - record.first if task.save_to_cache is not False else 0
        record.total_available = available + made  # images in the cache once this is done
        if hits:
            self._delivery.results(record, record.results)

    def cancel(self, session: ServerSession, task_uuid: str) -> None:
        """The session's ``cancelTask``: fail the task if it has not finished."""
        record = self._tasks.live(session.key_id, task_uuid)
        if record is not None:
            # A queued record is skipped when a worker reaches it; a running one stops at its
            # next step (the backend sees the record finished).
            self._fail(record, ErrorId.TASK_CANCELLED, "the task was cancelled")

    def congested(self, session: ServerSession, congested: bool) -> None:
        """The session's socket is not reading fast enough (or is again): its queued tasks
        wait, so a client that never reads costs a bounded outbox, not every result."""
        if congested:
            self._queue.pause(session.uuid)
        else:
            self._queue.resume(session.uuid)
            self._continue_replay(session)

    def forget_session(self, session: ServerSession) -> None:
        """A session gone for good: tasks still queued for it are dropped, unrun."""
        for record in self._queue.remove_lane(session.uuid):
            self._fail(record, ErrorId.TASK_CANCELLED, "the session expired before the task ran")

    def replay_session(self, session: ServerSession, task_uuids: list[str]) -> None:
        """A resumed session: re-send the results (and errors) of ``task_uuids``."""
        session.replay = deque((task_uuid, 0) for task_uuid in task_uuids)
        self._continue_replay(session)

    def _continue_replay(self, session: ServerSession) -> None:
        key_id = session.key_id
        owned = partial(self._tasks.owned, key_id, session=session)
        self._delivery.continue_replay(session, owned)

    # -- running tasks --

    async def worker(self) -> None:
        """Take records from the fair queue and run them, forever."""
        ran = 0
        while True:
            ran += 1
            if ran % TASKS_PER_TURN == 0:
                await anyio.lowlevel.checkpoint()
            record = await self._queue.get()
            if record.state is not TaskState.QUEUED:
                continue
            record.state = TaskState.RUNNING
            self._running.add(record)
            self._idle.clear()
            try:
                await self._execute(record)
            except JobCancelled:
                pass  # already failed by whoever cancelled it
            except JobError as exc:
                self._fail(record, exc.error_id, exc.message)
            except PushError as exc:
                self._fail(record, ErrorId.UPLOAD_FAILED, f"uploadEndpoint: {exc}")
            except Exception:
                log.exception("task %s failed", record.uuid)
                self._fail(record, ErrorId.INTERNAL_ERROR, "the server failed to run the task")
            else:
                self._finish(record)
            finally:
                self._running.discard(record)
                if not self._running:
                    self._idle.set()

    async def _fetch_then_queue(self, lane: str, record: TaskRecord, task: TaskRequest) -> None:
        # ``task`` is given, not read from the record: a cancel may finish the record (and
        # let go of its request) before this starts.
        try:
            fetched = await self._fetch_guides(task)
        except JobError as exc:
            self._fail(record, exc.error_id, exc.message)
            return
        finally:
            self._fetching.discard(record)
        if not record.is_finished:  # cancelled, or the server stopped, while fetching
            record.sources.update(fetched)
            self._queue.put(lane, record)

    async def _execute(self, record: TaskRecord) -> None:
        sources = record.sources
        job = Job(
            record.live_request,
            seed=record.seed,
            first=record.first,
            sources=sources,
            output_format=output_format(sources),
            max_pixels=self._config.limits.max_image_pixels,
        )
        record.sources = {}  # the job holds them now; the record outlives it
        if not self._backend.blocking:
            context = InlineContext()
            self._backend.run(job, context)
            for output in context.outputs:
                await self.publish(record, output)
            return
        await anyio.to_thread.run_sync(
            self._backend.run,
            job,
            ThreadContext(self, record),
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    async def _fetch_guides(self, task: TaskRequest) -> dict[str, SourceImage]:
        # Guides given by URL: the address policy applies, each body is capped, and all of
        # a task's fetches share one deadline.
        limits = self._config.limits
        fetched: dict[str, SourceImage] = {}
        refs = [ref for ref in image_references(task) if ref.is_url]
        try:
            with anyio.fail_after(limits.fetch_timeout):
                for ref in refs:
                    data = await self._pusher.get(ref.value, limits.max_fetch_bytes)
                    fetched[ref.role] = SourceImage(ref.value, data, image_format(data) or "png")
        except PushError as exc:
            raise JobError(ErrorId.IMAGE_NOT_FOUND, f"{ref.field}: {exc}") from exc
        except TimeoutError as exc:
            text = f"{ref.field}: not fetched within {limits.fetch_timeout:g} s"
            raise JobError(ErrorId.IMAGE_NOT_FOUND, text) from exc
        return fetched

    async def publish(self, record: TaskRecord, output: Output) -> None:
        """Store, push and deliver one output of a running job."""
        if record.is_finished:
            raise JobCancelled(record.uuid)
        if isinstance(output, ImageOutput):
            result = await self._store_image(record, output)
        else:
            result = TextResult(output.text)
        record.results.append(result)
        self._delivery.results(record, [result])

    async def _store_image(self, record: TaskRecord, output: ImageOutput) -> Result:
        task = record.live_request
        stored = StoredImage(
            image_uuid_for(record.uuid, output.index, record.key_id),
            output.data,
            output.format,
            output.width,
            output.height,
            output.prompt,
            output.seed,
        )
        self._store.put(stored)
        inline = returns_base64(task)
        upload = upload_endpoint(task)
        if upload is not None:
            url = upload_url(
                upload,
                task_uuid=record.uuid,
                image_uuid=stored.uuid,
                index=output.index,
                ext=stored.extension,
            )
            await self._pusher.put(url, stored.data, stored.content_type)
        if isinstance(task, NewTask) and task.save_to_cache is not False:
            assert record.cache_key is not None  # every newTask has one
            self._cache.add(record.cache_key, stored.uuid)
        if isinstance(task, NewImageUpload | PreProcessControlNetRequest):
            init = task.guide_image_uuid if isinstance(task, PreProcessControlNetRequest) else None
            return ReplyResult(stored.uuid, self._src(stored), init, inline)
        cost = self._cost(task, stored)
        self.spent[record.key_id] += cost  # each key's account (Stablecog's credits)
        return ImageResult(stored.uuid, self._src(stored), cost, output.seed, None, inline)

    def _cost(self, task: TaskRequest, image: StoredImage) -> float:
        steps = task.steps if isinstance(task, NewTask) else _GENERATION_COST_STEPS
        megapixels = image.width * image.height / 1e6
        return round(megapixels * steps * self._config.cost_per_megapixel_step, 8)

    def send_progress(
        self, record: TaskRecord, step: int, steps: int, index: int = 0, preview: str | None = None
    ) -> None:
        """A step of a running job's result ``index`` (with its preview, base64), to the
        record's connection if it has one."""
        conn = record.session.connection
        if conn is not None and not record.is_finished:
            message = NewProgress(
                task_uuid=record.uuid,
                step=step,
                steps=steps,
                image_index=index,
                preview_base64=preview,
            )
            conn.send(encode(message))

    # -- finishing and delivering --

    def _finish(self, record: TaskRecord) -> None:
        if record.is_finished:
            return
        record.state = TaskState.DONE
        self._close_record(record)

    def _fail(self, record: TaskRecord, error_id: int, text: str) -> None:
        if record.is_finished:
            return
        record.state = TaskState.FAILED
        record.error = (error_id, text)
        self._close_record(record)
        self._delivery.error(record)

    def _close_record(self, record: TaskRecord) -> None:
        record.finished_at = self._clock()
        record.session.active.discard(record.uuid)
        self._active_total -= 1
        self._tasks.finish(record)

    # -- stopping and housekeeping --

    async def shut_down(self, grace: float) -> None:
        """Refuse new work, fail queued tasks, give running ones ``grace`` seconds, then
        fail the rest (their error frames are queued on their connections)."""
        self.closing = True
        for record in [*self._queue.drain(), *self._fetching]:
            self._fail(record, ErrorId.SERVER_SHUTTING_DOWN, "the server is stopping")
        with anyio.move_on_after(grace):
            if self._running:
                await self._idle.wait()
        for record in list(self._running):
            self._fail(record, ErrorId.SERVER_SHUTTING_DOWN, "the server stopped before the task")

    def sweep(self, now: float, retention: float) -> None:
        """Forget tasks finished more than ``retention`` seconds ago, then expired images
        and the cache entries that named them."""
        self._tasks.sweep(now, retention)
        self._store.sweep()
        self._cache.sweep()
