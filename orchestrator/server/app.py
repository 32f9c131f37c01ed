"""The reference server: the thin app that wires its rooms inside one task group.

- :mod:`.sessions`: authentication and resume (sessions outlive their sockets);
- :mod:`.scheduler`: accepting tasks, the workers, execution, cost and push (and
  :mod:`.delivery`, how results reach a session);
- :mod:`.hosting`: the images over HTTP, on the same port;
- :mod:`.connection`: one socket's outbox and the writer that drains it.

One asyncio loop reads every connection and decides synchronously what each frame means;
the app only routes frames to the room whose job they are. Everything the server starts
(the workers, the sweeper, each connection's writer) runs in a task group it owns, so
stopping it leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import anyio
import anyio.to_thread
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from protocol import (
    CancelTask,
    NewConnection,
    Ping,
    Pong,
    RemoteProtocolError,
    TaskRequest,
    decode_from_client,
    encode,
)
from protocol.codec import CLIENT_MESSAGE_NAMES, loads
from protocol.requests import task_uuid_of, upload_endpoint
from protocol.tables import ErrorId

from ..asgi import serve_http
from .apis import HttpApis
from .backends import Backend
from .config import ServerConfig
from .connection import Connection
from .current import CurrentDialect, is_current, to_current
from .hosting import Hosting
from .local import LocalTasks
from .push import Pusher
from .registry import make_backend
from .scheduler import Scheduler
from .sessions import Sessions
from .spawn import Spawner
from .state import KeyRing, ServerSession
from .store import ImageStore
from .wire import WireConnection

__all__ = ["ReferenceServer", "serve_embedded"]

log = logging.getLogger("orchestrator.server")

_ACCEPT_ERROR = "socket.accept() out of system resource"  # what asyncio logs, per attempt


def _claimed_task_uuid(body: object) -> str | None:
    # The taskUUID a frame we refuse says it is about, if it is a short string: the error
    # names it back, unvalidated, so the client can match the answer to its task.
    raw = body.get("taskUUID") if isinstance(body, dict) else None
    return raw if isinstance(raw, str) and len(raw) <= 64 else None


def _is_upload(frame: str | bytes) -> bool:
    # The only message that is big by nature is one base64 string; it names itself first.
    head = frame[:40] if isinstance(frame, str) else frame[:40].decode("ascii", "replace")
    return head.lstrip().removeprefix("{").lstrip().startswith('"newImageUpload"')


def _has_upload(frame: bytes) -> bool:
    # A current-dialect frame names its task type anywhere in each task (the SDK writes the
    # image first): the search is paid only by frames over the size limit.
    return b'"imageUpload"' in frame


class _OncePerInterval(logging.Filter):
    """Lets asyncio's accept errors (out of file descriptors) through once per interval:
    the loop retries accept() at once, and would log each attempt."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if _ACCEPT_ERROR not in record.getMessage():
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self.suppressed += 1
            return False
        self._last = now
        return True


class ReferenceServer:
    """The protocol's server side. Use as an async context manager (or :func:`serve_embedded`).

    Args:
        config: settings; an empty ``api_keys`` gets one generated key (:attr:`api_key`).
        backend: overrides ``config.backend`` (tests plug their own). A backend that cannot
            be made raises :class:`~.backends.BackendError` here; its weights load on enter.
        clock: monotonic seconds, injectable for retention tests.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config = config or ServerConfig()
        keys = list(config.api_keys) or [secrets.token_urlsafe(24)]
        self.api_key = keys[0]
        self._clock = clock
        self._store = ImageStore(config.image_ttl, config.max_store_bytes, clock)
        self._hosting = Hosting(self._store, config.image_ttl)
        self._pusher = Pusher(
            allow_private=config.allow_private_uploads, retries=config.upload_retries
        )
        self._keys = KeyRing(keys)
        self._sessions = Sessions(
            self._keys,
            clock=clock,
            on_resume=lambda session, tasks: self._scheduler.replay_session(session, tasks),
            on_forget=lambda session: self._scheduler.forget_session(session),
        )
        self.backend = backend = backend or make_backend(config)
        self._scheduler = Scheduler(
            config,
            backend=backend,
            store=self._store,
            pusher=self._pusher,
            clock=clock,
            src=self._hosting.src,
            find_session=self._sessions.get,
        )
        self._local = LocalTasks(self._scheduler, self._store, self._pusher)
        self._current = CurrentDialect(
            authenticate=self._authenticate, accept=self._accept, report=self._scheduler.report
        )
        self.http_port: int | None = None  # the HTTP APIs' port, once serving
        self._connections: set[Connection] = set()
        self._connections_changed = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._ws_server: Server | None = None
        self._stack: AsyncExitStack | None = None
        self.host, self.port = config.host, config.port

    # -- lifecycle --

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` of the running server."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT`` of the four other seed APIs (``config.http_port``)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def public_url(self) -> str:
        """Base of image URLs."""
        return (self.config.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    async def __aenter__(self) -> ReferenceServer:
        opener: Callable[[], None] | None = getattr(self.backend, "open", None)
        if opener is not None:  # loading weights takes seconds: not on the loop
            await anyio.to_thread.run_sync(opener)
        async with AsyncExitStack() as stack:
            # Unwound in reverse: a graceful stop, then the task group (cancelled), then the
            # listener and HTTP. The socket is bound first, so a busy port is a plain OSError.
            stack.push_async_callback(self._pusher.aclose)
            accept_errors = _OncePerInterval(10.0, self._clock)
            logging.getLogger("asyncio").addFilter(accept_errors)
            stack.callback(logging.getLogger("asyncio").removeFilter, accept_errors)
            self._ws_server = ws_server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=self._http,
                max_size=self.config.limits.max_frame_bytes,
                compression="deflate" if self.config.compression else None,
                max_queue=64,
                create_connection=WireConnection,
            )
            stack.callback(ws_server.close)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            stack.push_async_callback(self.aclose)
            self.port = ws_server.sockets[0].getsockname()[1]
            self._hosting.base_url = self.public_url
            spawner = Spawner()
            await tg.start(spawner.run, tg)
            self._scheduler.start(tg, spawner)
            tg.start_soon(self._sweeper)
            if self.config.http_port is not None:
                apis = HttpApis(
                    self.config,
                    self._keys,
                    self._scheduler,
                    self._local,
                    self._pusher,
                    tg.start_soon,
                    lambda: self.http_url,
                )
                serving = partial(serve_http, apis.app, self.config.host, self.config.http_port)
                self.http_port = await tg.start(serving)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    async def aclose(self, grace: float | None = None) -> None:
        """Stop: refuse new work, fail queued tasks, give running ones ``grace`` seconds
        (``config.shutdown_grace`` by default), fail the rest, then close every socket once
        its error frames are written. No client is left waiting. Safe to call from any task
        and more than once; the context manager's exit calls it too."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        assert self._ws_server is not None
        self._ws_server.close(close_connections=False)
        await self._scheduler.shut_down(self.config.shutdown_grace if grace is None else grace)
        for conn in list(self._connections):
            conn.close(1001, "server shutting down")
        with anyio.move_on_after(5):
            await self._ws_server.wait_closed()
        self._ws_server.close()
        self._closed.set()

    # -- connections --

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, WireConnection)  # serve() makes them
        limits = self.config.limits
        conn = Connection(
            ws,
            max_frame=limits.max_frame_bytes,
            max_frame_before_auth=limits.max_frame_bytes_before_auth,
            outbox_soft=limits.outbox_soft_bytes,
            outbox_hard=limits.outbox_hard_bytes,
        )
        self._connections.add(conn)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(conn.write)  # ends once closed and its frames are written
                spawner = Spawner()
                await tg.start(spawner.run, tg)
                conn.read(partial(self._on_frame, conn), spawner)
                async with anyio.create_task_group() as reading:
                    reading.start_soon(self._authenticate_in_time, conn)
                    try:
                        await ws.wait_closed()
                    finally:
                        self._sessions.detach(conn)
                        conn.close(1000, "")
                        reading.cancel_scope.cancel()
                        spawner.close()
        finally:
            self._connections.discard(conn)
            self._connections_changed.set()

    async def _authenticate_in_time(self, conn: Connection) -> None:
        # A socket that never authenticates holds a descriptor and memory: not for long.
        await anyio.sleep(self.config.handshake_timeout)
        if not conn.authenticated:
            text = f"no newConnection within {self.config.handshake_timeout:g} s"
            conn.refuse(ErrorId.NOT_AUTHENTICATED, text)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        # Past the connection limit a new socket is refused before its handshake.
        if len(self._connections) >= self.config.max_connections:
            return connection.respond(503, "too many connections\n")
        return self._hosting.respond(connection, request)

    async def wait_connections(self, at_most: int = 0) -> None:
        """Wait until at most ``at_most`` client connections remain (their sessions detached)."""
        while len(self._connections) > at_most:
            self._connections_changed.clear()
            await self._connections_changed.wait()

    def _on_frame(self, conn: Connection, frame: bytes) -> Awaitable[None] | None:
        # Decided synchronously as the frame is parsed; only a task with an uploadEndpoint
        # returns something to await (resolving its host), and the frames after it wait.
        if conn.dialect is None:  # the first frame says which dialect the socket speaks
            conn.dialect = "runware" if is_current(frame) else "legacy"
            if conn.dialect == "runware":
                conn.translate = to_current
        if conn.translate is not None:
            if conn.authenticated and self._too_big(conn, frame, _has_upload):
                return None
            return self._current.on_frame(conn, frame)
        if not conn.authenticated:
            self._before_authentication(conn, frame)
            return None
        if self._too_big(conn, frame, _is_upload):
            return None
        try:
            message = decode_from_client(frame)
        except RemoteProtocolError as exc:
            self._reject_frame(conn, frame, exc)
            return None
        session = conn.session
        if isinstance(message, Ping):
            conn.send(encode(Pong()))
        elif isinstance(message, NewConnection):
            self._authenticate(conn, message)
        elif session is None:  # resumed on another socket since
            text = "this connection's session was resumed elsewhere: send newConnection"
            conn.send_error(ErrorId.NOT_AUTHENTICATED, text, task_uuid_of(message))
        elif isinstance(message, CancelTask):
            self._scheduler.cancel(session, message.task_uuid)
        else:
            return self._accept(conn, session, message)
        return None

    def _too_big(self, conn: Connection, frame: bytes, is_upload: Callable[[bytes], bool]) -> bool:
        # Only a big frame is looked into (every frame is checked: this is the hot path).
        limit = self.config.limits.max_structured_frame_bytes
        if len(frame) > limit and not is_upload(frame):
            upload = "newImageUpload" if conn.translate is None else "imageUpload"
            text = f"frames over {limit} bytes are for {upload} only (got {len(frame)})"
            conn.send_error(ErrorId.LIMIT_EXCEEDED, text)
            return True
        return False

    def _accept(
        self, conn: Connection, session: ServerSession, task: TaskRequest
    ) -> Awaitable[None] | None:
        if upload_endpoint(task) is not None:
            return self._accept_after_check(conn, session, task)
        self._scheduler.accept(conn, session, task)
        return None

    async def _accept_after_check(
        self, conn: Connection, session: ServerSession, task: TaskRequest
    ) -> None:
        refusal = await self._scheduler.check_upload(task)
        self._scheduler.accept(conn, session, task, refusal)

    def _before_authentication(self, conn: Connection, frame: str | bytes) -> None:
        # Cheap by construction: the frame is small (max_frame_bytes_before_auth), and only
        # a newConnection or a ping is validated; anything else is refused unread.
        try:
            obj = loads(frame)
        except RemoteProtocolError as exc:
            conn.send_error(ErrorId.MALFORMED_FRAME, str(exc))
            return
        name = next(iter(obj)) if isinstance(obj, dict) and len(obj) == 1 else None
        if name in (NewConnection.wire_name, Ping.wire_name):
            try:
                message = decode_from_client(frame)
            except RemoteProtocolError as exc:
                self._reject_frame(conn, frame, exc)
                return
            if isinstance(message, NewConnection):
                self._authenticate(conn, message)
            else:
                conn.send(encode(Pong()))
            return
        task_uuid = _claimed_task_uuid(obj.get(name) if name is not None else None)
        text = "send newConnection with an API key first"
        conn.send_error(ErrorId.NOT_AUTHENTICATED, text, task_uuid)

    def _authenticate(self, conn: Connection, message: NewConnection) -> None:
        self._sessions.authenticate(conn, message)
        session = conn.session
        if session is not None:
            # This socket's outbox paces the session's lane; a new socket starts it again.
            conn.on_congested = partial(self._scheduler.congested, session)
            self._scheduler.congested(session, False)

    def _reject_frame(self, conn: Connection, frame: str | bytes, exc: RemoteProtocolError) -> None:
        # Work out, on this slow path only, what the frame was meant to be. A frame JSON
        # does not allow (NaN, a lone surrogate) is malformed, whatever its shape.
        try:
            obj = loads(frame)
        except RemoteProtocolError:
            obj = None
        if not isinstance(obj, dict) or len(obj) != 1:
            conn.send_error(ErrorId.MALFORMED_FRAME, str(exc))
            return
        name, body = next(iter(obj.items()))
        task_uuid = _claimed_task_uuid(body)
        fields = {e.field for e in exc.errors}
        if name not in CLIENT_MESSAGE_NAMES:
            conn.send_error(ErrorId.UNKNOWN_MESSAGE, str(exc), task_uuid)
        elif name == NewConnection.wire_name:  # whatever is wrong with it, the socket goes
            error_id = ErrorId.INVALID_API_KEY if "apiKey" in fields else ErrorId.VALIDATION_ERROR
            conn.refuse(error_id, f"invalid newConnection: {exc}")
        elif "taskType" in fields:
            conn.send_error(ErrorId.UNKNOWN_TASK_TYPE, str(exc), task_uuid)
        else:
            conn.send_error(ErrorId.VALIDATION_ERROR, str(exc), task_uuid)

    # -- housekeeping --

    async def _sweeper(self) -> None:
        while True:
            await anyio.sleep(self.config.sweep_interval)
            self.sweep()

    def sweep(self) -> None:
        """Forget what outlived its window: detached sessions and finished tasks after
        ``retention``, images after ``image_ttl``. Runs every ``sweep_interval`` seconds."""
        now, retention = self._clock(), self.config.retention
        self._sessions.sweep(now, retention)
        self._scheduler.sweep(now, retention)


@asynccontextmanager
async def serve_embedded(
    config: ServerConfig | None = None, *, backend: Backend | None = None
) -> AsyncIterator[ReferenceServer]:
    """Run a reference server in this process (127.0.0.1, a free port, a generated key).

    ``server.url`` and ``server.api_key`` say where and how to connect.
    """
    async with ReferenceServer(config, backend=backend) as server:
        yield server
