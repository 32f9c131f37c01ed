"""The connection manager: capacity, routing, retries, failover, and the end of every task.

Theory of operation
===================

The pool owns N connections per endpoint and every live :class:`TaskHandle`.
Each decision is a plain synchronous function of its state; the connections do
the I/O afterwards (their outboxes), so no exception or cancellation can leave
a decision half made.

1. Capacity: ``acquire`` waits while ``Limits.in_flight`` tasks are live; a task
   holds its slot from admission until it finishes, fails or is cancelled.
2. Routing: a task goes to the OPEN connection with the fewest tasks in flight
   and fewer than ``Limits.per_connection``; one that reads an image by UUID is
   restricted to the endpoint that produced it. With no such connection the task
   is parked, in order, and leaves the park when a connection opens or has room.
3. A task fails only on its deadline, an error frame (queue full and server
   shutting down are retried after a backoff instead), cancellation, a refused
   key (fatal: everything fails, new submissions raise), or the pool closing.
4. Failover: ``Timeouts.failover`` after an endpoint's connection went down, if
   the endpoint is still down and another endpoint is up, that connection's
   tasks (except those pinned to its images) move to the healthy endpoints.
5. Every ending goes through :meth:`Pool._end`: the handle leaves its
   connection and the table, its timers stop, its capacity returns, and parked
   tasks move forward.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from protocol.session import Session, TaskFailed

from .config import Config
from .connection import Connection, ConnectionState
from .errors import (
    InvalidState,
    OrchestratorError,
    RemoteTaskError,
    TaskCancelled,
    TaskTimeout,
)
from .tasks import TaskHandle
from .timers import Clock, Timers
from .transport import Transport

__all__ = ["Pool", "Stats"]

log = logging.getLogger("orchestrator")


@dataclass(slots=True)
class Stats:
    """Counters since the orchestrator started."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    resubmitted: int = 0
    moved: int = 0
    unknown_frames: int = 0
    rejected_frames: int = 0
    server_errors: int = 0


class _Capacity:
    """A counting limit whose fast path is synchronous (no checkpoint, no coroutine per
    task). Waiters queue in order, and a released slot passes straight to the first of
    them, so nobody arriving later takes it first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[anyio.Event] = deque()

    def try_acquire(self) -> bool:
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()  # set by release(), which hands this waiter its slot
        except BaseException:
            if event.is_set():
                self.release()  # handed a slot, then cancelled: pass it on
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self.used -= 1


class Pool:
    """Connections to the endpoints and the tasks in flight. See the module docstring."""

    def __init__(
        self,
        endpoints: Sequence[str],
        api_key: str,
        *,
        config: Config,
        transport: Transport,
        clock: Clock,
        timers: Timers,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.stats = Stats()
        self.fatal_error: OrchestratorError | None = None
        self._clock = clock
        self._timers = timers
        self._rng = rng
        self._capacity = _Capacity(config.limits.in_flight)
        self._handles: dict[str, TaskHandle] = {}
        self._parked: deque[TaskHandle] = deque()
        self._homes: OrderedDict[str, str] = OrderedDict()
        self._remember = len(set(endpoints)) > 1  # one endpoint holds every image
        self._closed = False
        self._on_deadline = self._expire  # bound once: one object less per live task
        wanted = config.extensions
        self.connections = [
            Connection(
                self,
                endpoint,
                Session(api_key, extensions=sorted(wanted)),
                config=config,
                transport=transport,
                clock=clock,
                rng=rng,
            )
            for endpoint in endpoints
            for _ in range(config.limits.connections_per_endpoint)
        ]

    # -- introspection --

    @property
    def in_flight(self) -> int:
        """Live tasks: admitted and not finished (sent, parked or waiting to retry)."""
        return len(self._handles)

    @property
    def parked(self) -> int:
        """Tasks waiting for a connection with room."""
        return sum(1 for h in self._parked if not h.done())

    def check_consistent(self) -> None:
        """Assert the invariants between handles, connections and sessions (for tests)."""
        on_connections: set[str] = set()
        for conn in self.connections:
            assert set(conn.handles) == set(conn.session.outstanding()), conn
            assert all(h.connection is conn and not h.done() for h in conn.handles.values())
            on_connections |= set(conn.handles)
        assert on_connections <= set(self._handles)
        assert all(not h.done() for h in self._handles.values())
        assert self._capacity.used == len(self._handles), (self._capacity.used, len(self._handles))

    # -- admission --

    def try_acquire(self) -> bool:
        """Take room under ``Limits.in_flight`` if there is some now, without waiting."""
        self._check_usable()
        return self._capacity.try_acquire()

    async def acquire(self) -> None:
        """Wait for room under ``Limits.in_flight``."""
        self._check_usable()
        await self._capacity.acquire()
        if self._closed or self.fatal_error is not None:
            self._capacity.release()
            self._check_usable()

    def admit(self, handle: TaskHandle, timeout: float) -> None:
        """Take an acquired slot for ``handle``: start its deadline and route it."""
        if handle.task_uuid in self._handles:
            self._capacity.release()
            raise InvalidState(f"taskUUID {handle.task_uuid} is already in flight")
        self._handles[handle.task_uuid] = handle
        self.stats.submitted += 1
        handle.timeout = timeout
        handle.deadline = self._timers.call_later(timeout, self._on_deadline, handle)
        self._dispatch(handle)

    def _check_usable(self) -> None:
        if self.fatal_error is not None:
            raise self.fatal_error
        if self._closed:
            raise InvalidState("the orchestrator is closed")

    # -- routing --

    def _dispatch(self, handle: TaskHandle) -> None:
        conn = self._route(handle)
        if conn is None:
            self._parked.append(handle)
        else:
            conn.send_task(handle)

    def _route(self, handle: TaskHandle) -> Connection | None:
        home = self._home(handle) if handle.image_refs else None
        limit = self.config.limits.per_connection
        best: Connection | None = None
        for conn in self.connections:
            if conn.state is not ConnectionState.OPEN or len(conn.handles) >= limit:
                continue
            if home is not None and conn.endpoint != home:
                continue
            if best is None or len(conn.handles) < len(best.handles):
                best = conn
        return best

    def _home(self, handle: TaskHandle) -> str | None:
        for image_uuid in handle.image_refs:
            home = self._homes.get(image_uuid)
            if home is not None:
                return home
        return None

    def remember_image(self, image_uuid: str, endpoint: str) -> None:
        """Record which endpoint holds an image (bounded, least recently made first out)."""
        if self._remember:
            self._homes[image_uuid] = endpoint
            if len(self._homes) > self.config.limits.remembered_images:
                self._homes.popitem(last=False)

    def _drain(self) -> None:
        parked = self._parked
        waiting: deque[TaskHandle] = deque()
        while parked:
            handle = parked.popleft()
            if handle.done():
                continue
            conn = self._route(handle)
            if conn is not None:
                conn.send_task(handle)
            elif handle.image_refs:
                waiting.append(handle)  # pinned to a busy or down endpoint; others may go
            else:
                parked.appendleft(handle)
                break
        parked.extendleft(reversed(waiting))

    # -- connection events --

    def on_open(self, conn: Connection) -> None:
        """A connection is open: parked tasks may go."""
        if self._parked:
            self._drain()

    def on_down(self, conn: Connection) -> None:
        """A connection went down: its tasks wait for it, or move after the failover time."""
        self._timers.call_later(self.config.timeouts.failover, self._failover, conn)

    def _failover(self, conn: Connection) -> None:
        if conn.state is ConnectionState.OPEN or self._closed or not conn.handles:
            return
        if any(
            c.state is ConnectionState.OPEN for c in self.connections if c.endpoint == conn.endpoint
        ):
            return
        if not any(c.state is ConnectionState.OPEN for c in self.connections):
            self.on_down(conn)  # nowhere to go: look again later
            return
        moved = conn.take(keep=lambda h: self._home(h) == conn.endpoint)
        log.warning("%s down: moving %d tasks to healthy endpoints", conn.endpoint, len(moved))
        self.stats.moved += len(moved)
        for handle in moved:
            self._dispatch(handle)

    # -- endings --

    def complete(self, handle: TaskHandle, conn: Connection) -> None:
        """A connection received all of a task's results."""
        self.stats.completed += 1
        self._end(handle)
        handle.finish(conn.endpoint)

    def task_failed(self, handle: TaskHandle, event: TaskFailed) -> None:
        """The server failed a task: retry it after a backoff if retryable, else fail it."""
        if event.retryable:
            self.stats.retried += 1
            delay = self.config.backoff.delay(handle.retries, self._rng)
            handle.retries += 1
            handle.retry = self._timers.call_later(delay, self._retry, handle)
            return
        error = RemoteTaskError(
            event.task_uuid, event.error_id, event.error_message, event.error_code
        )
        self._fail(handle, error)

    def _retry(self, handle: TaskHandle) -> None:
        handle.retry = None
        if not handle.done() and not self._closed:
            self._dispatch(handle)

    def cancel(self, handle: TaskHandle, error: OrchestratorError) -> None:
        """Cancel a task (sends ``cancelTask`` when the server accepted the extension)."""
        self._fail(handle, error)

    def _expire(self, handle: TaskHandle) -> None:
        message = f"task {handle.task_uuid} passed its {handle.timeout:g} s deadline"
        self._fail(handle, TaskTimeout(message, handle.task_uuid))

    def _fail(self, handle: TaskHandle, error: OrchestratorError) -> None:
        if handle.done():
            return
        self.stats.failed += 1
        self._end(handle)
        handle.fail(error)

    def _end(self, handle: TaskHandle) -> None:
        conn = handle.connection
        if conn is not None:
            conn.forget(handle)
        if self._handles.pop(handle.task_uuid, None) is not None:
            self._capacity.release()
        if self._parked:
            self._drain()

    def fatal(self, error: OrchestratorError) -> None:
        """The key was refused: fail every task with ``error`` and stop all connections."""
        if self.fatal_error is None:
            self.fatal_error = error
        for conn in self.connections:
            conn.close()
        self._fail_all(error)

    def close(self) -> None:
        """Fail every live task with TaskCancelled and refuse new ones."""
        if self._closed:
            return
        self._closed = True
        cause = InvalidState("the orchestrator closed")
        for conn in self.connections:
            conn.close()
        for handle in list(self._handles.values()):
            error = TaskCancelled(
                f"task {handle.task_uuid}: the orchestrator closed", handle.task_uuid
            )
            error.__cause__ = cause
            self._fail(handle, error)

    def _fail_all(self, error: OrchestratorError) -> None:
        for handle in list(self._handles.values()):
            self._fail(handle, error)
        self._parked.clear()
