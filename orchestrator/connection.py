"""One persistent connection slot: a protocol session that outlives its sockets.

Theory of operation
===================

A :class:`Connection` owns one :class:`protocol.Session` and, while connected, one
stream. Its :meth:`Connection.run` loop is the only place it does I/O.

States::

    CONNECTING --authenticated--> OPEN --socket lost / heartbeat--> DOWN
        ^                                                            |
        +------------------------ backoff ---------------------------+
    any --orchestrator closes, or the key is refused--> CLOSED (final)

1. CONNECTING: open the stream and send ``newConnection`` (resuming the session
   after the first time), all within ``Timeouts.connect`` on the injected clock.
   errorId 19 is fatal: the pool fails everything and the slot closes. Any other
   failure is DOWN and a retry after the next backoff delay.
2. OPEN: a reader feeds frames to the session and hands its events to task
   handles by one dict lookup (``handles``: the tasks in flight here, exactly the
   session's pending tasks); a writer drains the outbox; a heartbeat pings every
   ``heartbeat_interval`` and takes the socket as dead after ``heartbeat_misses``
   intervals without any frame. Just after authentication the tasks whose results
   did not all arrive are sent again: those the server does not list as known
   (``resume``), or all of them once the replay has been quiet for ``replay_quiet``.
3. DOWN: the session keeps its pending tasks; nothing fails. The pool may move
   them to another endpoint after ``Timeouts.failover`` (:meth:`Connection.take`).

Sending is synchronous (:meth:`Connection.send_task` registers the task and queues
its frame), so routing, cancelling and resubmitting never await: a frame the dying
socket could not carry is covered by the resubmission after the next resume.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from protocol.session import (
    Authenticated,
    ConnectionFailed,
    Event,
    FrameRejected,
    ImageReceived,
    PongReceived,
    Progress,
    ServerError,
    Session,
    TaskCompleted,
    TaskFailed,
    TextReceived,
    UnknownTask,
)

from .config import Config
from .errors import (
    AuthenticationError,
    ConnectError,
    ConnectTimeout,
    HeartbeatTimeout,
    TransportError,
)
from .tasks import TaskHandle
from .timers import Clock, race_timeout
from .transport import Stream, Transport

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["Connection", "ConnectionState"]

log = logging.getLogger("orchestrator")


class ConnectionState(enum.Enum):
    """States of a :class:`Connection`; see the module's theory of operation."""

    CONNECTING = "connecting"
    OPEN = "open"
    DOWN = "down"
    CLOSED = "closed"


class Connection:
    """One slot to one endpoint. See the module docstring."""

    def __init__(
        self,
        pool: Pool,
        endpoint: str,
        session: Session,
        *,
        config: Config,
        transport: Transport,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.session = session
        self.state = ConnectionState.CONNECTING
        self.handles: dict[str, TaskHandle] = {}
        self.down_since: float | None = None
        self.connects = 0
        self._config = config
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self._outbox: list[bytes] = []
        self._early: list[bytes] = []
        self._wake = anyio.Event()
        self._silent_intervals = 0
        self._last_frame_at = 0.0

    def __repr__(self) -> str:
        return f"<Connection {self.endpoint} {self.state.value} in_flight={len(self.handles)}>"

    @property
    def in_flight(self) -> int:
        """Tasks in flight on this connection."""
        return len(self.handles)

    # -- synchronous operations (the pool's decisions) --

    def send_task(self, handle: TaskHandle) -> None:
        """Register ``handle`` here and queue its frame. The connection must be OPEN."""
        frame = self.session.send_task(handle.prepared)
        self.handles[handle.task_uuid] = handle
        handle.connection = self
        self._write(frame)

    def forget(self, handle: TaskHandle) -> None:
        """Stop tracking a task here (cancelled, expired, or complete early)."""
        self.handles.pop(handle.task_uuid, None)
        handle.connection = None
        frame = self.session.cancel_task(handle.task_uuid)
        if frame is not None:
            self._write(frame)

    def take(self, keep: Callable[[TaskHandle], bool]) -> list[TaskHandle]:
        """Remove and return the tasks in flight here, except those ``keep`` selects."""
        taken = [h for h in self.handles.values() if not keep(h)]
        for handle in taken:
            self.forget(handle)
        return taken

    def is_closed(self) -> bool:
        """Whether the slot closed for good."""
        return self.state is ConnectionState.CLOSED

    def close(self) -> None:
        """Enter CLOSED: :meth:`run` stops at its next step."""
        self.state = ConnectionState.CLOSED
        self._wake.set()

    def _write(self, frame: bytes) -> None:
        if self.state is ConnectionState.OPEN:
            self._outbox.append(frame)
            self._wake.set()

    # -- the I/O loop --

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Connect, serve, reconnect with backoff, until closed. Reports ready after the
        first attempt, successful or not."""
        delays = self._config.backoff.delays(self._rng)
        started = False
        while self.state is not ConnectionState.CLOSED:
            try:
                stream, auth = await self._open()
            except AuthenticationError as exc:
                self.pool.fatal(exc)
                break
            except TransportError as exc:
                log.info("connection to %s failed: %s", self.endpoint, exc)
                self._went_down()
            else:
                if not started:
                    started = True
                    task_status.started()
                opened_at = self._clock.now()
                await self._serve(stream, auth)
                if self._clock.now() - opened_at >= self._config.timeouts.heartbeat_interval:
                    delays = self._config.backoff.delays(self._rng)  # it was healthy: at once
                    continue
            if not started:
                started = True
                task_status.started()
            if not self.is_closed():
                await self._clock.sleep(next(delays))
        if not started:
            task_status.started()

    def _enter(self, state: ConnectionState) -> None:
        if self.state is not ConnectionState.CLOSED:  # CLOSED is final
            self.state = state

    async def _open(self) -> tuple[Stream, Authenticated]:
        self._enter(ConnectionState.CONNECTING)
        opened = await race_timeout(self._clock, self._config.timeouts.connect, self._handshake)
        if opened is None:
            self.session.connection_lost()
            raise ConnectTimeout(f"no session with {self.endpoint} within the connect timeout")
        return opened

    async def _handshake(self) -> tuple[Stream, Authenticated]:
        limits = self._config.limits
        stream = await self._transport.connect(
            self.endpoint, max_frame=limits.max_frame, compression=self._config.compression
        )
        try:
            await stream.send([self.session.send_connect()])
            while True:
                frames = await stream.receive()
                for i, frame in enumerate(frames):
                    for event in self.session.receive(frame):
                        if isinstance(event, Authenticated):
                            self._early = frames[i + 1 :]  # replayed results, read when open
                            return stream, event
                        self._refused(event)
        except BaseException:
            self.session.connection_lost()
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise

    def _refused(self, event: Event) -> None:
        if isinstance(event, ConnectionFailed):
            if event.authentication:
                raise AuthenticationError(event.error_id, event.error_message)
            raise ConnectError(f"{self.endpoint} refused: {event.error_message}")
        self._report(event)

    async def _serve(self, stream: Stream, auth: Authenticated) -> None:
        self._enter(ConnectionState.OPEN)
        self.down_since = None
        self.connects += 1
        self._silent_intervals = 0
        self._last_frame_at = self._clock.now()
        log.debug("open %s session=%s resumed=%s", self.endpoint, auth.session_uuid, auth.resumed)
        reason: list[BaseException] = []
        try:
            async with anyio.create_task_group() as tg:
                guard = _guard(tg, reason)
                tg.start_soon(guard, self._read, stream)
                tg.start_soon(guard, self._write_loop, stream)
                tg.start_soon(guard, self._heartbeat)
                if auth.resubmit is None:
                    tg.start_soon(self._resend_when_quiet, self.session.outstanding())
                else:
                    self._resend(auth.resubmit)
                self.pool.on_open(self)
        finally:
            if self.state is not ConnectionState.CLOSED:
                self._went_down()
            self.session.connection_lost()
            self._outbox.clear()
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        if reason and isinstance(reason[0], AuthenticationError):
            self.pool.fatal(reason[0])
            self.state = ConnectionState.CLOSED

    def _went_down(self) -> None:
        self._enter(ConnectionState.DOWN)
        if self.down_since is None:
            self.down_since = self._clock.now()
        self.pool.on_down(self)

    def _resend(self, task_uuids: tuple[str, ...] | list[str]) -> None:
        for task_uuid in task_uuids:
            if task_uuid in self.handles and self.session.is_pending(task_uuid):
                self._write(self.session.resend_task(task_uuid))
        self.pool.stats.resubmitted += len(task_uuids)

    async def _read(self, stream: Stream) -> None:
        frames, self._early = self._early, []
        receive, dispatch, decode = stream.receive, self._dispatch, self.session.receive
        while True:
            for frame in frames:
                dispatch(decode(frame))
            frames = await receive()
            self._silent_intervals = 0
            self._last_frame_at = self._clock.now()

    async def _write_loop(self, stream: Stream) -> None:
        while self.state is ConnectionState.OPEN:
            if not self._outbox:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            # Everything queued since the last write goes out together.
            frames, self._outbox = self._outbox, []
            await stream.send(frames)

    async def _heartbeat(self) -> None:
        timeouts = self._config.timeouts
        while True:
            await self._clock.sleep(timeouts.heartbeat_interval)
            if self._silent_intervals >= timeouts.heartbeat_misses:
                raise HeartbeatTimeout(
                    f"{self.endpoint}: no frame for {self._silent_intervals} pings"
                )
            self._silent_intervals += 1
            self._write(self.session.send_ping())

    async def _resend_when_quiet(self, task_uuids: list[str]) -> None:
        quiet = self._config.timeouts.replay_quiet
        while (wait := self._last_frame_at + quiet - self._clock.now()) > 0:
            await self._clock.sleep(wait)
        self._resend(task_uuids)

    # -- events --

    def _dispatch(self, events: list[Event]) -> None:
        handles = self.handles
        for event in events:
            kind = type(event)
            if kind is ImageReceived:
                assert isinstance(event, ImageReceived)
                handle = handles.get(event.task_uuid)
                self.pool.remember_image(event.image.image_uuid, self.endpoint)
                if handle is not None and handle.add_image(event.image):
                    self._complete(handle)
            elif kind is TaskCompleted:
                assert isinstance(event, TaskCompleted)
                handle = handles.get(event.task_uuid)
                if handle is not None:
                    if event.reply is not None:
                        handle.add_reply(event.reply)
                        self.pool.remember_image(event.reply.new_image_uuid, self.endpoint)
                    self._complete(handle)
            else:
                self._on_other(event)

    def _complete(self, handle: TaskHandle) -> None:
        self.pool.complete(handle, self)

    def _on_other(self, event: Event) -> None:
        if isinstance(event, TextReceived):
            handle = self.handles.get(event.task_uuid)
            if handle is not None and handle.add_text(event.text):
                self._complete(handle)
        elif isinstance(event, Progress):
            handle = self.handles.get(event.task_uuid)
            if handle is not None:
                handle.add_progress(event)
        elif isinstance(event, TaskFailed):
            handle = self.handles.pop(event.task_uuid, None)
            if handle is not None:
                handle.connection = None
                self.pool.task_failed(handle, event)
        elif isinstance(event, ConnectionFailed):
            raise AuthenticationError(event.error_id, event.error_message)
        elif not isinstance(event, PongReceived):
            self._report(event)

    def _report(self, event: Event) -> None:
        stats = self.pool.stats
        if isinstance(event, UnknownTask):
            stats.unknown_frames += 1
            log.debug(  # routine after a resume or a failover: late copies of results
                "%s: %s for unknown task %s, dropped", self.endpoint, event.message, event.task_uuid
            )
        elif isinstance(event, FrameRejected):
            stats.rejected_frames += 1
            log.warning("%s: frame rejected: %s", self.endpoint, event.error)
        elif isinstance(event, ServerError):
            stats.server_errors += 1
            log.warning(
                "%s: server error %s: %s", self.endpoint, event.error_id, event.error_message
            )


def _guard(
    tg: anyio.abc.TaskGroup, reason: list[BaseException]
) -> Callable[..., Coroutine[Any, Any, None]]:
    # The socket's loops end together: the first to stop records why and stops the others.
    async def guarded(fn: Callable[..., Awaitable[None]], *args: object) -> None:
        try:
            await fn(*args)
        except (TransportError, AuthenticationError) as exc:
            reason.append(exc)
            log.info("connection lost: %s", exc)
        finally:
            tg.cancel_scope.cancel()

    return guarded
