"""How users wait: :class:`TaskHandle`, one per submitted task.

``await handle.result()``, or ``async for event in handle.events()``, or both. The
handle only records what the pool hands it: which results are new, and when the task
is complete, is decided once, by the protocol session (``protocol.session``), and
reaches the handle through the connection and the pool.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Generator
from typing import Any, Protocol

from protocol.messages import Image, NewUploadedImageUUID, PreProcessControlNetResult, TaskRequest
from protocol.session import Progress

from .errors import InvalidState, OrchestratorError, TaskCancelled
from .results import (
    Delivery,
    Event,
    GeneratedImage,
    ImageDelivered,
    ImageReady,
    TaskDone,
    TaskFailed,
    TaskResult,
    TextReady,
)
from .specs import TaskSpec

__all__ = ["Submission", "TaskHandle"]


class _EventLog:
    """The events of a streamed task in order, each numbered, for readers to resume after.

    A progress step replaces the last one kept for the same image: a reader wants the
    latest step, and a slow reader must not make the log grow by one entry per step. So
    the log holds the task's results and at most one step per image, however slowly it is
    read (and however many readers there are, each at its own place)."""

    __slots__ = ("events", "numbers", "next")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.numbers = list(range(len(events)))
        self.next = len(events)

    def append(self, event: Event) -> None:
        if isinstance(event, Progress):
            self._drop_step(event.image_index)
        self.events.append(event)
        self.numbers.append(self.next)
        self.next += 1

    def _drop_step(self, image_index: int) -> None:
        events = self.events
        for i in range(len(events) - 1, -1, -1):
            old = events[i]
            if isinstance(old, Progress) and old.image_index == image_index:
                del events[i], self.numbers[i]
                return

    def after(self, number: int) -> int:
        """The position of the first event numbered after ``number``."""
        return bisect_right(self.numbers, number)


class _Owner(Protocol):
    def cancel(self, handle: TaskHandle, error: OrchestratorError) -> None: ...


class _Deliveries(Protocol):
    # orchestrator.delivery.TaskDeliveries, as the handle sees it.
    pending: int

    @property
    def holding(self) -> bool: ...

    def image(self, image: GeneratedImage, index: int) -> None: ...

    def hold(self, endpoint: str | None) -> bool: ...

    def cancel(self) -> None: ...


class TaskHandle:
    """One submitted task: await its result, iterate its events, or cancel it.

    A handle is also an async context manager: leaving the block before the task
    finished (an exception, a cancellation, a ``break``) cancels the task.
    """

    # Thousands of handles are live at once, so a handle makes few objects: its containers
    # and its event log exist only once something goes in them, and a waiter is one future.
    # (The cyclic garbage collector's work grows with the live objects.) The client runs on
    # asyncio (its transport is an asyncio protocol), so a waiter is an asyncio future.
    __slots__ = (
        "task_uuid",
        "task",
        "_images",
        "_texts",
        "_log",
        "_progress",
        "_result",
        "_error",
        "_waiters",
        "_on_done",
        "_owner",
        "deliveries",
    )

    def __init__(self, task_uuid: str, task: TaskSpec | TaskRequest, owner: _Owner) -> None:
        self.task_uuid = task_uuid
        self.task = task
        self._images: list[GeneratedImage] | None = None
        self._texts: list[str] | None = None
        self._log: _EventLog | None = None  # kept once someone streams events
        self._progress: Progress | None = None  # until then, only the latest step
        self._result: TaskResult | None = None
        self._error: OrchestratorError | None = None
        self._waiters: asyncio.Future[None] | list[asyncio.Future[None]] | None = None
        self._on_done: list[Callable[[TaskHandle], None]] | None = None
        self._owner = owner
        # Set by the orchestrator for a task with sinks (or an uploadEndpoint) to record.
        self.deliveries: _Deliveries | None = None

    def __repr__(self) -> str:
        state = "done" if self._result else "failed" if self._error else "running"
        return f"<TaskHandle {self.task_uuid} {state}>"

    # -- for users --

    def done(self) -> bool:
        """Whether the task finished, failed or was cancelled."""
        return self._result is not None or self._error is not None

    async def result(self) -> TaskResult:
        """Wait for the task and return its result.

        Raises:
            RemoteTaskError: the server failed the task.
            TaskTimeout: the deadline passed.
            TaskCancelled: the task was cancelled, or the orchestrator closed.
            AuthenticationError: the server refused the API key.
        """
        while self._result is None and self._error is None:
            await self._wait()
        return self.result_nowait()

    def result_nowait(self) -> TaskResult:
        """The result of a finished task. Raises its error, or InvalidState if running."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        raise InvalidState(f"task {self.task_uuid} has not finished")

    async def events(self) -> AsyncIterator[Event]:
        """Yield the task's events from its start, ending with TaskDone or TaskFailed.

        Every result is yielded once; of the progress steps, those that a newer step of the
        same image replaced before this reader reached them are skipped (so a slow reader
        costs the task a bounded log: its results and one step per image)."""
        log = self._event_log()
        number = -1
        while True:
            position = log.after(number)
            while position < len(log.events):
                event, number = log.events[position], log.numbers[position]
                yield event
                if isinstance(event, TaskDone | TaskFailed):
                    return
                position = log.after(number)  # steps may have been replaced meanwhile
            await self._wait()

    @property
    def buffered_events(self) -> int:
        """How many events the handle holds for its readers (0 until someone streams)."""
        return 0 if self._log is None else len(self._log.events)

    @property
    def images(self) -> tuple[GeneratedImage, ...]:
        """The images received so far."""
        return tuple(self._images or ())

    @property
    def texts(self) -> tuple[str, ...]:
        """The texts received so far."""
        return tuple(self._texts or ())

    def cancel(self) -> None:
        """Cancel the task (a no-op once it finished); ``result()`` raises TaskCancelled.
        A task that waits for its deliveries stops them."""
        if self._result is None and self._error is None:
            error = TaskCancelled(f"task {self.task_uuid} cancelled", self.task_uuid)
            if self.deliveries is not None and self.deliveries.holding:
                self.fail(error)  # done on the wire: only its deliveries are left
            else:
                self._owner.cancel(self, error)

    def add_done_callback(self, callback: Callable[[TaskHandle], None]) -> None:
        """Call ``callback(handle)`` when the task finishes (at once if it has)."""
        if self.done():
            callback(self)
        elif self._on_done is None:
            self._on_done = [callback]
        else:
            self._on_done.append(callback)

    async def __aenter__(self) -> TaskHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    # -- fed by the pool: each result is new (the session decided), in order --

    def deliver_image(self, image: Image) -> None:
        """Record a new image (and start its deliveries, if the task has any)."""
        ready = GeneratedImage.from_wire(image)
        if self._images is None:
            self._images = [ready]
        else:
            self._images.append(ready)
        index = len(self._images) - 1
        if self._log is not None:
            self._emit(ImageReady(self.task_uuid, ready, index))
        if self.deliveries is not None:
            self.deliveries.image(ready, index)

    def record_delivery(self, image: GeneratedImage, delivery: Delivery) -> None:
        """A delivery of one of the task's images ended (well or not)."""
        image.deliveries += (delivery,)
        if self._log is not None:
            index = next((i for i, x in enumerate(self._images or ()) if x is image), 0)
            self._emit(ImageDelivered(self.task_uuid, image, delivery, index))

    def deliver_text(self, text: str) -> None:
        """Record a new text."""
        if self._texts is None:
            self._texts = [text]
        else:
            self._texts.append(text)
        if self._log is not None:
            self._emit(TextReady(self.task_uuid, text, len(self._texts) - 1))

    def deliver_reply(self, reply: NewUploadedImageUUID | PreProcessControlNetResult) -> None:
        """Record the image an upload or preprocessing reply names."""
        ready = GeneratedImage.from_reply(reply)
        self._images = [ready]
        if self._log is not None:
            self._emit(ImageReady(self.task_uuid, ready))

    def deliver_progress(self, progress: Progress) -> None:
        """Record a progress step (the protocol's event is the public one). While nobody
        streams the events, only the latest step is kept, and without its preview."""
        if self._log is None:
            task, step, steps = progress.task_uuid, progress.step, progress.steps
            self._progress = Progress(task, step, steps, None, progress.image_index)
        else:
            self._emit(progress)

    def delivered(self) -> Collection[str]:
        """What was delivered so far, as a session counts it: imageUUIDs, or texts. A task
        that moves to another connection brings these, so they are not delivered twice."""
        if self._images:
            return [image.image_uuid for image in self._images]
        return self._texts or ()

    def finish(self, endpoint: str | None) -> TaskResult | None:
        """Complete the task with what it received; if its deliveries are still under way,
        it completes when they end (and None is returned now)."""
        deliveries = self.deliveries
        if deliveries is not None:
            if self._result is not None or self._error is not None:
                return self._result  # finished already (a cancel raced the last delivery)
            if deliveries.hold(endpoint):
                return None
        result = TaskResult(
            self.task_uuid, self.task, self.images, tuple(self._texts or ()), endpoint
        )
        self._result = result
        self.deliveries = None  # they refer to the handle: no cycle for the collector
        if self._log is not None:
            self._log.append(TaskDone(result))
        self._settle()
        return result

    def fail(self, error: OrchestratorError) -> None:
        """Fail the task with ``error`` (its deliveries stop)."""
        if self._result is not None or self._error is not None:
            return
        if self.deliveries is not None:
            self.deliveries.cancel()
            self.deliveries = None  # as in finish()
        self._error = error
        if self._log is not None:
            self._log.append(TaskFailed(self.task_uuid, error))
        self._settle()

    # -- waiting --

    def _settle(self) -> None:
        self._wake()
        callbacks, self._on_done = self._on_done, None
        for callback in callbacks or ():
            callback(self)

    def _event_log(self) -> _EventLog:
        # Events are kept only once someone streams them; until then the log is rebuilt
        # from the results (and the latest progress step, the only one kept).
        if self._log is None:
            uuid = self.task_uuid
            log: list[Event] = [] if self._progress is None else [self._progress]
            self._progress = None
            log += [ImageReady(uuid, image, i) for i, image in enumerate(self._images or ())]
            log += [TextReady(uuid, text, i) for i, text in enumerate(self._texts or ())]
            if self._result is not None:
                log.append(TaskDone(self._result))
            elif self._error is not None:
                log.append(TaskFailed(uuid, self._error))
            self._log = _EventLog(log)
        return self._log

    def _emit(self, event: Event) -> None:
        assert self._log is not None
        self._log.append(event)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters is None:
            return
        for waiter in waiters if isinstance(waiters, list) else (waiters,):
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        # One future per wait, resolved by the next change; a waiter cancelled before the
        # change leaves nothing behind.
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = waiter
        elif isinstance(waiters, list):
            waiters.append(waiter)
        else:
            self._waiters = [waiters, waiter]
        try:
            await waiter
        finally:
            if self._waiters is not None:
                self._forget_waiter(waiter)

    def _forget_waiter(self, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters
        if waiters is waiter:
            self._waiters = None
        elif isinstance(waiters, list) and waiter in waiters:
            waiters.remove(waiter)


class Submission:
    """``orch.submit(task)``: awaitable (the handle) and an async context manager that
    cancels the task when its block is left."""

    __slots__ = ("_submit", "_handle")

    def __init__(self, submit: Callable[[], Awaitable[TaskHandle]]) -> None:
        self._submit = submit
        self._handle: TaskHandle | None = None

    def __await__(self) -> Generator[Any, None, TaskHandle]:
        return self._submit().__await__()

    async def __aenter__(self) -> TaskHandle:
        self._handle = await self._submit()
        return self._handle

    async def __aexit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
