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
2. OPEN: a reader feeds frames to the session and reports its events to the
   listener (the pool) by one dict lookup (``records``: the tasks in flight here,
   exactly the session's pending tasks); a writer drains the outbox; a heartbeat pings every
   ``heartbeat_interval`` and takes the socket as dead after ``heartbeat_misses``
   intervals without any frame. Just after authentication the tasks whose results
   did not all arrive are sent again: those the server does not list as known
   (``resume``), or all of them once the replay has been quiet for ``replay_quiet``.
3. DOWN: the session keeps its pending tasks; nothing fails. The pool may move
   them to another endpoint after ``Timeouts.failover`` (:meth:`Connection.take`).
   When the server closed the socket, the tasks whose frame it had just received
   are reported as suspects (:mod:`orchestrator.suspects`); a failed attempt to
   open is counted (``failures``, ``last_error``), for the pool to fail fast when no
   endpoint was ever reached. Results a server sends before its reply to
   ``newConnection`` are kept and delivered once the connection is open.

The session decides, once, which results are new and when a task is complete; the
connection only carries its events to the listener: results as they arrive, then
``on_completed`` (the task has left the session and this connection) or
``on_failed``. A task ends here in one of two ways: it is *retired* when the
session completes or fails it, or the pool *cancels* it while live (:meth:`cancel`).

Sending is synchronous (:meth:`Connection.send_task` registers the task and queues
its frame), so routing, cancelling and resubmitting never await: a frame the dying
socket could not carry is covered by the resubmission after the next resume.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, Protocol

import anyio

from protocol.session import (
    Authenticated,
    ConnectionFailed,
    Event,
    ImageReceived,
    PongReceived,
    Progress,
    Session,
    TaskCompleted,
    TaskFailed,
    TextReceived,
)

from .config import Config
from .errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    HeartbeatTimeout,
    TransportError,
)
from .records import Stats, TaskRecord
from .suspects import suspects as suspects_of
from .timers import Clock, race_timeout
from .transport import Stream, Transport

__all__ = ["Connection", "ConnectionListener", "ConnectionState"]

log = logging.getLogger("orchestrator")


class ConnectionState(enum.Enum):
    """States of a :class:`Connection`; see the module's theory of operation."""

    CONNECTING = "connecting"
    OPEN = "open"
    DOWN = "down"
    CLOSED = "closed"


class ConnectionListener(Protocol):
    """What a :class:`Connection` reports to (the pool). Every call is synchronous."""

    def on_open(self, conn: Connection) -> None:
        """The connection is authenticated and can take tasks."""

    def on_down(self, conn: Connection, suspects: list[TaskRecord]) -> None:
        """The socket was lost (or could not be opened: ``conn.last_error`` says why); the
        connection's tasks wait for it to come back. ``suspects``: tasks whose frame went
        out just before the server closed it (one of them may be what it refuses)."""

    def on_fatal(self, error: AuthenticationError) -> None:
        """The server refused the key: the connection has closed for good."""

    def on_result(self, record: TaskRecord, event: ImageReceived | TextReceived | Progress) -> None:
        """A new result (the session deduplicated it) or a progress step of a live task."""

    def on_completed(self, record: TaskRecord, event: TaskCompleted, endpoint: str) -> None:
        """The session completed the task; it has left this connection."""

    def on_failed(self, record: TaskRecord, event: TaskFailed) -> None:
        """The server failed the task; it has left this connection."""


class Connection:
    """One slot to one endpoint. See the module docstring."""

    def __init__(
        self,
        listener: ConnectionListener,
        endpoint: str,
        session: Session,
        *,
        config: Config,
        transport: Transport,
        clock: Clock,
        rng: random.Random,
        stats: Stats,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        self.state = ConnectionState.CONNECTING
        self.connects = 0
        self.failures = 0  # attempts failed since the last successful open
        self.last_error: TransportError | None = None
        self.frame_limit: int | None = None  # learned from the server's close code 1009
        self._listener = listener
        self._records: dict[str, TaskRecord] = {}
        self._stats = stats
        self._config = config
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self._outbox: list[bytes] = []
        self._early: list[bytes] = []
        self._early_events: list[Event] = []
        self._probe: list[str] = []  # suspects to send alone on the next socket
        self._alone: list[str] = []  # of those, the ones the server did not keep
        self._probing: str | None = None  # the one sent alone, awaiting its pong
        self._resent, self._pong = anyio.Event(), anyio.Event()
        self._pings = self._pongs = 0  # on this socket
        self._wake = anyio.Event()
        self._stream: Stream | None = None  # while OPEN: the socket _write may use at once
        self._silent_intervals = 0
        self._last_frame_at = 0.0

    def __repr__(self) -> str:
        return f"<Connection {self.endpoint} {self.state.value} in_flight={self.in_flight}>"

    @property
    def in_flight(self) -> int:
        """Tasks in flight on this connection."""
        return len(self._records)

    def is_open(self) -> bool:
        """Whether the connection can take tasks now."""
        return self.state is ConnectionState.OPEN

    def is_closed(self) -> bool:
        """Whether the slot closed for good."""
        return self.state is ConnectionState.CLOSED

    def check_consistent(self) -> None:
        """Assert that the tasks here are exactly the session's pending ones (for tests)."""
        assert set(self._records) == set(self.session.outstanding()), self
        assert all(r.carrier is self for r in self._records.values()), self

    # -- synchronous operations (the pool's decisions) --

    def send_task(self, record: TaskRecord, delivered: Collection[str] = ()) -> None:
        """Carry ``record`` here and queue its frame. The connection must be OPEN.

        ``delivered``: the results it already delivered elsewhere (the session will not
        deliver them again, and counts them towards completion)."""
        frame = self.session.send_task(record.prepared, delivered=delivered)
        self._records[record.task_uuid] = record
        record.carrier = self
        record.sent_on, record.sent_at = self.connects, self._clock.now()
        self._write(frame)

    def fits(self, record: TaskRecord) -> bool:
        """Whether the server will take the task's frame, as far as this connection knows."""
        return self.frame_limit is None or len(record.prepared.frame) <= self.frame_limit

    def cancel(self, record: TaskRecord) -> None:
        """Stop carrying a live task (cancelled or expired); ``cancelTask`` goes out when
        the server accepted the extension."""
        self._release(record)
        frame = self.session.cancel_task(record.task_uuid)
        if frame is not None:
            self._write(frame)

    def take(self, keep: Callable[[TaskRecord], bool]) -> list[TaskRecord]:
        """Remove and return the tasks in flight here, except those ``keep`` selects."""
        taken = [r for r in self._records.values() if not keep(r)]
        for record in taken:
            self.cancel(record)
        return taken

    def close(self) -> None:
        """Enter CLOSED: :meth:`run` stops at its next step."""
        self.state = ConnectionState.CLOSED
        self._wake.set()

    def _release(self, record: TaskRecord) -> None:
        if self._records.pop(record.task_uuid, None) is not None:
            record.carrier = None

    def _write(self, frame: bytes) -> None:
        if self.state is ConnectionState.OPEN:
            # At once when the stream can (see Stream.send_now), behind nothing queued;
            # else the writer sends it with whatever else this turn queues.
            stream = self._stream
            if not self._outbox and stream is not None and stream.send_now(frame):
                return
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
                self.close()  # final, before the listener hears of it
                self._listener.on_fatal(exc)
                break
            except TransportError as exc:
                log.info("connection to %s failed: %s", self.endpoint, exc)
                self.failures += 1
                self.last_error = exc
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
        self._early_events.append(event)  # dispatched once open (results for pending tasks)

    async def _serve(self, stream: Stream, auth: Authenticated) -> None:
        self._enter(ConnectionState.OPEN)
        self.connects += 1
        self.failures = 0
        self._pings = self._pongs = 0
        # Results the server sent before its newConnection reply: theirs, now they are open.
        early, self._early_events = self._early_events, []
        self._dispatch(early)
        self._silent_intervals = 0
        self._last_frame_at = self._clock.now()
        log.debug("open %s session=%s resumed=%s", self.endpoint, auth.session_uuid, auth.resumed)
        reason: list[BaseException] = []
        self._stream = stream
        try:
            async with anyio.create_task_group() as tg:
                guard = _guard(tg, reason)
                tg.start_soon(guard, self._read, stream)
                tg.start_soon(guard, self._write_loop, stream)
                tg.start_soon(guard, self._heartbeat)
                probe, self._probe = self._probe, []
                self._resent = anyio.Event()
                if probe:
                    tg.start_soon(guard, self._send_one_by_one)
                if auth.resubmit is None:
                    tg.start_soon(self._resend_when_quiet, self.session.outstanding(), probe)
                else:
                    self._resend(auth.resubmit, probe)
                self._listener.on_open(self)
        finally:
            if self.state is not ConnectionState.CLOSED:
                self._went_down(reason[0] if reason else None)
            self._stream = None
            self.session.connection_lost()
            self._outbox.clear()
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        if reason and isinstance(reason[0], AuthenticationError):
            self.close()
            self._listener.on_fatal(reason[0])

    def _went_down(self, reason: BaseException | None = None) -> None:
        self._enter(ConnectionState.DOWN)
        suspects: list[TaskRecord] = []
        if isinstance(reason, ConnectionClosed) and not isinstance(reason, HeartbeatTimeout):
            suspects = self._suspects(reason)  # the server closed it (not a silence)
        self._probing = None
        self._listener.on_down(self, suspects)

    def _suspects(self, reason: ConnectionClosed) -> list[TaskRecord]:
        # The server closed the socket: whose frame was it? (orchestrator.suspects)
        self.last_error = reason
        socket = self.connects
        sent = [len(r.prepared.frame) for r in self._records.values() if r.sent_on == socket]
        too_big = reason.code == 1009 and bool(sent)
        if too_big:  # below the largest task frame this socket carried (the culprit is pending)
            self.frame_limit = max(sent) - 1
        probing = self._records.get(self._probing or "")
        found = suspects_of(
            self._records.values(),
            reason,
            socket=socket,
            now=self._clock.now(),
            window=self._config.timeouts.heartbeat_interval,
            probing=probing,
            frame_limit=self.frame_limit,
        )
        if len(found) > 1 and not too_big:  # which one? sent alone on the next socket
            self._probe = [r.task_uuid for r in found]
            return []
        return found

    def _resend(self, task_uuids: tuple[str, ...] | list[str], later: Collection[str] = ()) -> None:
        self._alone = []
        for task_uuid in task_uuids:
            if task_uuid in self._records and self.session.is_pending(task_uuid):
                if task_uuid in later:
                    self._alone.append(task_uuid)  # a suspect: _send_one_by_one sends it
                else:
                    record = self._records[task_uuid]
                    record.sent_on, record.sent_at = self.connects, self._clock.now()
                    self._write(self.session.resend_task(task_uuid))
        self._stats.resubmitted += len(task_uuids)
        self._resent.set()

    def _ping(self) -> None:
        self._pings += 1
        self._write(self.session.send_ping())

    async def _send_one_by_one(self) -> None:
        await self._resent.wait()
        for task_uuid in self._alone:
            record = self._records.get(task_uuid)
            if record is None or not self.session.is_pending(task_uuid):
                continue
            self._probing = task_uuid
            record.sent_on, record.sent_at = self.connects, self._clock.now()
            self._write(self.session.resend_task(task_uuid))
            self._ping()
            answered = self._pings  # pongs come in order: this many means ours came back
            while self._pongs < answered:
                self._pong = anyio.Event()
                await self._pong.wait()
        self._probing = None

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
            await stream.send(self.session.pack(frames))

    async def _heartbeat(self) -> None:
        timeouts = self._config.timeouts
        while True:
            await self._clock.sleep(timeouts.heartbeat_interval)
            if self._silent_intervals >= timeouts.heartbeat_misses:
                raise HeartbeatTimeout(
                    f"{self.endpoint}: no frame for {self._silent_intervals} pings"
                )
            self._silent_intervals += 1
            self._ping()

    async def _resend_when_quiet(self, task_uuids: list[str], later: list[str]) -> None:
        quiet = self._config.timeouts.replay_quiet
        while (wait := self._last_frame_at + quiet - self._clock.now()) > 0:
            await self._clock.sleep(wait)
        self._resend(task_uuids, later)

    # -- events: the session decided; the listener is told --

    def _dispatch(self, events: list[Event]) -> None:
        records, listener = self._records, self._listener
        for event in events:
            kind = type(event)
            if kind is ImageReceived or kind is TextReceived or kind is Progress:
                assert isinstance(event, ImageReceived | TextReceived | Progress)
                record = records.get(event.task_uuid)
                if record is not None:
                    listener.on_result(record, event)
            elif kind is TaskCompleted:
                assert isinstance(event, TaskCompleted)
                record = records.pop(event.task_uuid, None)
                if record is not None:  # retired: the session no longer has it
                    record.carrier = None
                    listener.on_completed(record, event, self.endpoint)
            else:
                self._on_other(event)

    def _on_other(self, event: Event) -> None:
        if isinstance(event, TaskFailed):
            record = self._records.pop(event.task_uuid, None)
            if record is not None:
                record.carrier = None
                self._listener.on_failed(record, event)
        elif isinstance(event, ConnectionFailed):
            raise AuthenticationError(event.error_id, event.error_message)
        elif isinstance(event, PongReceived):
            self._pongs += 1
            self._pong.set()
        else:
            self._stats.report(self.endpoint, event)


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
