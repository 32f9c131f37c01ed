"""The connection manager: capacity, routing, retries, failover, and the end of every task.

Theory of operation
===================

The pool owns N connections per endpoint and a :class:`TaskRecord` for every
live task (its frame, timers, retries and the connection it is on; the public
:class:`TaskHandle` it feeds sees none of that). It is the connections'
:class:`ConnectionListener`: they report, it decides. Each decision is a plain
synchronous function of its state; the connections do the I/O afterwards (their
outboxes), so no exception or cancellation can leave a decision half made.

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
   A moved or retried task is sent with the results its handle already holds, so
   the new connection's session neither delivers them again nor waits for them.
5. Completion is the session's decision, reported as ``on_completed`` after the
   task left its connection (retired); a failure, deadline or cancellation of a
   live task cancels it on its connection first. Every ending goes through
   :meth:`Pool._end`: the record leaves the table, its timers stop, its capacity
   returns, and parked tasks move forward.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

import anyio

from protocol.codec import PreparedTask
from protocol.dialects import DIALECTS
from protocol.session import (
    ImageReceived,
    Progress,
    TaskCompleted,
    TaskFailed,
    TextReceived,
)

from .config import Config
from .connection import Connection, ConnectionListener
from .errors import (
    AuthenticationError,
    ConnectError,
    InvalidState,
    OrchestratorError,
    RemoteTaskError,
    TaskCancelled,
    TaskRejected,
    TaskTimeout,
)
from .handle import TaskHandle
from .records import Stats, TaskRecord
from .timers import Clock, Timers
from .transport import Transport

__all__ = ["Pool", "Stats"]

log = logging.getLogger("orchestrator")


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


class Pool(ConnectionListener):
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
        self._records: dict[str, TaskRecord] = {}
        self._parked: deque[TaskRecord] = deque()
        self._delivering = 0  # finished tasks that hold their slot for their deliveries
        self._homes: OrderedDict[str, str] = OrderedDict()
        self._remember = len(set(endpoints)) > 1  # one endpoint holds every image
        self._closed = False
        self._on_deadline = self._expire  # bound once: one object less per live task
        wanted = config.extensions
        dialects = [DIALECTS[config.dialect_of(e)] for e in dict.fromkeys(endpoints)]
        # Tasks are encoded once, in the dialect every endpoint speaks; when they speak
        # several, in the seed's (each session translates), checked against each now.
        self._encoders = [d.encode for d in {d.name: d for d in dialects}.values()]
        self.connections = [
            Connection(
                self,
                endpoint,
                DIALECTS[config.dialect_of(endpoint)].session(api_key, extensions=sorted(wanted)),
                config=config,
                transport=transport,
                clock=clock,
                rng=rng,
                stats=self.stats,
            )
            for endpoint in endpoints
            for _ in range(config.limits.connections_per_endpoint)
        ]

    def encode(self, prepared: PreparedTask) -> PreparedTask:
        """``prepared`` for the endpoints' dialect. Raises LocalProtocolError (nothing sent)."""
        encoded = [encode(prepared) for encode in self._encoders]
        return encoded[0] if len(encoded) == 1 else prepared

    # -- introspection --

    @property
    def in_flight(self) -> int:
        """Live tasks: admitted and not finished (sent, parked or waiting to retry)."""
        return len(self._records)

    @property
    def parked(self) -> int:
        """Tasks waiting for a connection with room."""
        return sum(1 for r in self._parked if self._is_live(r))

    def check_consistent(self) -> None:
        """Assert the invariants between records, connections and sessions (for tests)."""
        carried = 0
        for conn in self.connections:
            conn.check_consistent()
            carried += conn.in_flight
        on = [r for r in self._records.values() if r.carrier is not None]
        assert len(on) == carried, (len(on), carried)
        assert all(not r.handle.done() for r in self._records.values())
        used, live = self._capacity.used, len(self._records) + self._delivering
        assert used == live, (used, live)

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

    def admit(
        self,
        handle: TaskHandle,
        prepared: PreparedTask,
        image_refs: tuple[str, ...],
        timeout: float,
    ) -> None:
        """Take an acquired slot for ``handle``: start its deadline and route it."""
        if handle.task_uuid in self._records:
            self._capacity.release()
            raise InvalidState(f"taskUUID {handle.task_uuid} is already in flight")
        record = TaskRecord(prepared, image_refs, handle)
        self._records[record.task_uuid] = record
        self.stats.submitted += 1
        record.timeout = timeout
        record.deadline = self._timers.call_later(timeout, self._on_deadline, record)
        self._dispatch(record)

    def _check_usable(self) -> None:
        if self.fatal_error is not None:
            raise self.fatal_error
        if self._closed:
            raise InvalidState("the orchestrator is closed")

    def _is_live(self, record: TaskRecord) -> bool:
        return self._records.get(record.task_uuid) is record

    # -- routing --

    def _dispatch(self, record: TaskRecord) -> None:
        conn = self._route(record)
        if conn is None:
            unreachable = self._unreachable()
            if unreachable is not None:  # fail now, with the cause, not at the deadline
                self._fail(record, unreachable(record))
            else:
                self._parked.append(record)
        elif conn.frame_limit is not None and not conn.fits(record):
            self._suspect(conn, record)  # refused before sending: the server told its limit
        else:
            # A task that moved or was retried brings what it already delivered.
            conn.send_task(record, record.handle.delivered())

    def _route(self, record: TaskRecord) -> Connection | None:
        home = self._home(record) if record.image_refs else None
        limit = self.config.limits.per_connection
        best: Connection | None = None
        for conn in self.connections:
            if not conn.is_open() or conn.in_flight >= limit:
                continue
            if home is not None and conn.endpoint != home:
                continue
            if best is None or conn.in_flight < best.in_flight:
                best = conn
        return best

    def _home(self, record: TaskRecord) -> str | None:
        for image_uuid in record.image_refs:
            home = self._homes.get(image_uuid)
            if home is not None:
                return home
        return None

    def _remember_image(self, image_uuid: str, endpoint: str) -> None:
        # Which endpoint holds an image (bounded, least recently made first out).
        if self._remember:
            self._homes[image_uuid] = endpoint
            if len(self._homes) > self.config.limits.remembered_images:
                self._homes.popitem(last=False)

    def _drain(self) -> None:
        parked = self._parked
        waiting: deque[TaskRecord] = deque()
        while parked:
            record = parked.popleft()
            if not self._is_live(record):
                continue
            conn = self._route(record)
            if conn is not None:
                conn.send_task(record, record.handle.delivered())
            elif record.image_refs:
                waiting.append(record)  # pinned to a busy or down endpoint; others may go
            else:
                parked.appendleft(record)
                break
        parked.extendleft(reversed(waiting))

    # -- what connections report (ConnectionListener) --

    def on_open(self, conn: Connection) -> None:
        """A connection is open: parked tasks may go."""
        if self._parked:
            self._drain()

    def on_down(self, conn: Connection, suspects: list[TaskRecord]) -> None:
        """A connection went down: its tasks wait for it, or move after the failover time.
        A task the server keeps closing the socket on fails alone; when no endpoint was
        ever reached, the live tasks fail with the cause instead of waiting out deadlines."""
        self._timers.call_later(self.config.timeouts.failover, self._failover, conn)
        for record in suspects:
            self._suspect(conn, record)
        unreachable = self._unreachable()
        if unreachable is not None:
            self._fail_all_with(unreachable)

    def _suspect(self, conn: Connection, record: TaskRecord) -> None:
        record.losses += 1
        size = len(record.prepared.frame)
        if not conn.fits(record):
            message = (
                f"task {record.task_uuid}: its frame is {size} bytes, and {conn.endpoint} "
                f"closed the connection as soon as a frame that big reached it (1009)"
            )
        elif record.losses >= self.config.limits.poison_after:
            message = (
                f"task {record.task_uuid}: {conn.endpoint} closed the connection just after "
                f"its frame reached it, {record.losses} times ({conn.last_error})"
            )
        else:
            return
        error = TaskRejected(message, record.task_uuid)
        error.__cause__ = conn.last_error
        self._fail(record, error)

    def _unreachable(self) -> Callable[[TaskRecord], OrchestratorError] | None:
        # Nothing ever opened, and every connection has used up its attempts.
        attempts = self.config.limits.connect_attempts
        conns = self.connections
        if any(c.connects or c.failures < attempts for c in conns) or self._closed:
            return None

        def error(record: TaskRecord) -> OrchestratorError:
            last = next((c.last_error for c in conns if c.last_error is not None), None)
            where = ", ".join(sorted({c.endpoint for c in conns}))
            failed = ConnectError(
                f"task {record.task_uuid}: no endpoint could be reached ({where}; "
                f"{attempts} attempts each): {last}"
            )
            failed.__cause__ = last
            return failed

        return error

    def _fail_all_with(self, error_for: Callable[[TaskRecord], OrchestratorError]) -> None:
        for record in list(self._records.values()):
            self._fail(record, error_for(record))

    def on_fatal(self, error: AuthenticationError) -> None:
        """The key was refused: fail every task with ``error`` and stop all connections."""
        if self.fatal_error is None:
            self.fatal_error = error
        for conn in self.connections:
            conn.close()
        self._fail_all(error)

    def on_result(self, record: TaskRecord, event: ImageReceived | TextReceived | Progress) -> None:
        """A new image or text (the session deduplicated it), or a progress step."""
        if type(event) is ImageReceived:
            image = event.image
            if self._remember and record.carrier is not None:
                self._remember_image(image.image_uuid, record.carrier.endpoint)
            record.handle.deliver_image(image)
        elif isinstance(event, TextReceived):
            record.handle.deliver_text(event.text)
        elif isinstance(event, Progress):
            record.handle.deliver_progress(event)

    def on_completed(self, record: TaskRecord, event: TaskCompleted, endpoint: str) -> None:
        """The session has all of a task's results: the task is done."""
        reply = event.reply
        if reply is not None:
            self._remember_image(reply.new_image_uuid, endpoint)
            record.handle.deliver_reply(reply)
        self.stats.completed += 1
        handle = record.handle
        # A task whose images are still being delivered keeps its slot until they are, so a
        # slow sink slows submissions instead of piling up images.
        deliveries = handle.deliveries
        delivering = deliveries is not None and deliveries.pending > 0
        self._end(record, release=not delivering)
        if delivering:
            self._delivering += 1
            handle.add_done_callback(self._delivered)
        handle.finish(endpoint)

    def on_failed(self, record: TaskRecord, event: TaskFailed) -> None:
        """The server failed a task: retry it after a backoff if retryable, else fail it."""
        if event.error_id in self.config.retry_error_ids:
            self.stats.retried += 1
            delay = self.config.backoff.delay(record.retries, self._rng)
            record.retries += 1
            record.retry = self._timers.call_later(delay, self._retry, record)
            return
        error = RemoteTaskError(
            event.task_uuid, event.error_id, event.error_message, event.error_code
        )
        self._fail(record, error)

    def _retry(self, record: TaskRecord) -> None:
        record.retry = None
        if self._is_live(record) and not self._closed:
            self._dispatch(record)

    def _failover(self, conn: Connection) -> None:
        if conn.is_open() or self._closed or not conn.in_flight:
            return
        if any(c.is_open() for c in self.connections if c.endpoint == conn.endpoint):
            return
        if not any(c.is_open() for c in self.connections):
            self.on_down(conn, [])  # nowhere to go: look again later
            return
        moved = conn.take(keep=lambda r: self._home(r) == conn.endpoint)
        log.warning("%s down: moving %d tasks to healthy endpoints", conn.endpoint, len(moved))
        self.stats.moved += len(moved)
        for record in moved:
            self._dispatch(record)

    # -- endings --

    def cancel(self, handle: TaskHandle, error: OrchestratorError) -> None:
        """Cancel a live task (sends ``cancelTask`` when the server accepted the extension)."""
        record = self._records.get(handle.task_uuid)
        if record is not None and record.handle is handle:
            self._fail(record, error)

    def _expire(self, record: TaskRecord) -> None:
        message = f"task {record.task_uuid} passed its {record.timeout:g} s deadline"
        error = TaskTimeout(f"{message}: {self._whereabouts(record)}", record.task_uuid)
        if record.carrier is None:  # it never got a connection: say why none took it
            error.__cause__ = next((c.last_error for c in self.connections if c.last_error), None)
        self._fail(record, error)

    def _whereabouts(self, record: TaskRecord) -> str:
        # What the task was waiting for, in words, for its TaskTimeout.
        if record.carrier is not None:
            return f"sent to {record.carrier.endpoint}, which had not answered"
        if record.retry is not None:
            return f"waiting to be sent again after {record.retries} refusal(s)"
        states = "; ".join(
            f"{c.endpoint} {c.state.value}" + (f" ({c.last_error})" if c.last_error else "")
            for c in self.connections
        )
        return f"waiting for a connection with room: {states}"

    def _fail(self, record: TaskRecord, error: OrchestratorError) -> None:
        if not self._is_live(record):
            return
        carrier = record.carrier
        if carrier is not None:
            carrier.cancel(record)  # live on a connection: cancel it there
        self.stats.failed += 1
        self._end(record)
        record.handle.fail(error)

    def _end(self, record: TaskRecord, *, release: bool = True) -> None:
        # Every ending: out of the table, timers stopped, capacity back, parked tasks on.
        del self._records[record.task_uuid]
        for timer in (record.deadline, record.retry):
            if timer is not None:
                timer.cancel()
        # A timer refers to the record: dropping the timers breaks the cycle, so a
        # finished task is freed by reference counting, not by the cyclic collector.
        record.deadline = record.retry = None
        if release:
            self._release()

    def _delivered(self, _: TaskHandle) -> None:
        self._delivering -= 1
        self._release()

    def _release(self) -> None:
        self._capacity.release()
        if self._parked:
            self._drain()

    def close(self) -> None:
        """Fail every live task with TaskCancelled and refuse new ones."""
        if self._closed:
            return
        self._closed = True
        cause = InvalidState("the orchestrator closed")
        for conn in self.connections:
            conn.close()
        for record in list(self._records.values()):
            error = TaskCancelled(
                f"task {record.task_uuid}: the orchestrator closed", record.task_uuid
            )
            error.__cause__ = cause
            self._fail(record, error)

    def _fail_all(self, error: OrchestratorError) -> None:
        for record in list(self._records.values()):
            self._fail(record, error)
        self._parked.clear()
