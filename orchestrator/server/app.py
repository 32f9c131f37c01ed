"""The reference server: WebSocket sessions, the scheduler, workers, hosting and push.

One asyncio loop reads every connection, decides synchronously what each frame means (see
:mod:`.state`), and queues work; ``workers`` coroutines take tasks from the fair queue and
run the backend, in worker threads when it is ``blocking``, so pongs and other connections
are answered while images render. Each connection has a writer coroutine draining its
outbox, so a slow reader delays only itself. Images are served over HTTP on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import time
import uuid as uuid_module
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Final

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from protocol import (
    CancelTask,
    NewConnection,
    NewConnectionSessionUUID,
    NewImageUpload,
    NewProgress,
    NewTask,
    Ping,
    Pong,
    PreProcessControlNetRequest,
    RemoteProtocolError,
    ServerMessage,
    TaskRequest,
    decode_from_client,
    encode,
)
from protocol.codec import CLIENT_MESSAGE_NAMES
from protocol.tables import KNOWN_EXTENSIONS, ErrorId

from .backends import (
    BACKENDS,
    Backend,
    ImageOutput,
    Job,
    JobCancelled,
    JobError,
    Output,
    SourceImage,
    image_format,
)
from .config import ServerConfig
from .connection import Connection
from .push import Pusher, PushError, expand_url
from .state import (
    FairQueue,
    ImageResult,
    KeyRing,
    ReplyResult,
    Result,
    ServerSession,
    TaskRecord,
    TaskState,
    TextResult,
    cache_key,
    error_message,
    image_references,
    output_format,
    result_message,
    seed_for,
)
from .store import ImageStore, ResultCache, StoredImage, image_uuid_for

__all__ = ["ReferenceServer", "serve_embedded"]

log = logging.getLogger("orchestrator.server")

_IMAGE_PATH: Final = re.compile(r"/images/([0-9a-fA-F-]{36})\.(jpg|png)")
_GENERATION_COST_STEPS: Final = 1  # upscale and background removal price as one step


class _InlineContext:
    """Job context for backends that run on the loop: outputs are collected, then published."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []

    def emit(self, output: Output) -> None:
        self.outputs.append(output)

    def progress(self, step: int, steps: int) -> None:
        pass


class _ThreadContext:
    """Job context for worker threads: each call runs on the loop and waits for it.

    A job whose task was cancelled or failed (a shutdown fails them all) stops at its next
    call, and never calls into a loop that may be gone.
    """

    def __init__(self, server: ReferenceServer, record: TaskRecord) -> None:
        self._server = server
        self._record = record
        self._progress = "progress" in record.session.extensions

    def _check(self) -> None:
        if self._record.is_finished:
            raise JobCancelled(self._record.uuid)

    def emit(self, output: Output) -> None:
        self._check()
        anyio.from_thread.run(self._server._publish, self._record, output)

    def progress(self, step: int, steps: int) -> None:
        self._check()
        if self._progress:
            anyio.from_thread.run_sync(self._server._send_progress, self._record, step, steps)


class ReferenceServer:
    """The protocol's server side. Use as an async context manager (or :func:`serve_embedded`).

    Args:
        config: settings; an empty ``api_keys`` gets one generated key (:attr:`api_key`).
        backend: overrides ``config.backend`` (tests plug their own).
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
        self._keys = KeyRing(keys)
        self._backend: Backend = backend or BACKENDS[config.backend]()
        self._clock = clock
        self._store = ImageStore(config.image_ttl, config.max_store_bytes, clock)
        self._cache = ResultCache(self._store)
        self._sessions: dict[str, ServerSession] = {}
        self._tasks: dict[str, dict[str, TaskRecord]] = {}
        self._queue = FairQueue()
        self._active_total = 0
        self._running: set[TaskRecord] = set()
        self._idle = asyncio.Event()  # set whenever no task is running
        self._idle.set()
        self._connections: set[Connection] = set()
        self._connections_changed = asyncio.Event()
        self._limiter = anyio.CapacityLimiter(max(1, config.workers))
        self._pusher = Pusher(
            allow_private=config.allow_private_uploads, retries=config.upload_retries
        )
        self._closing = False
        self._closed = asyncio.Event()
        self._ws_server: Server | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.host, self.port = config.host, config.port

    # -- lifecycle --

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` of the running server."""
        return f"ws://{self.host}:{self.port}"

    @property
    def public_url(self) -> str:
        """Base of image URLs."""
        return (self.config.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    async def __aenter__(self) -> ReferenceServer:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            self._ws_server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=self._http,
                max_size=self.config.limits.max_frame_bytes,
                compression="deflate" if self.config.compression else None,
                max_queue=64,
            )
            self.port = self._ws_server.sockets[0].getsockname()[1]
            for _ in range(max(1, self.config.workers)):
                self._tg.start_soon(self._worker)
            self._tg.start_soon(self._sweeper)
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._pusher.aclose()

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
        for record in self._queue.drain():
            self._fail(record, ErrorId.SERVER_SHUTTING_DOWN, "the server is stopping")
        with anyio.move_on_after(self.config.shutdown_grace if grace is None else grace):
            if self._running:
                await self._idle.wait()
        for record in list(self._running):
            self._fail(record, ErrorId.SERVER_SHUTTING_DOWN, "the server stopped before the task")
        for conn in list(self._connections):
            conn.close(1001, "server shutting down")
        with anyio.move_on_after(5):
            await self._ws_server.wait_closed()
        self._ws_server.close()
        self._closed.set()

    # -- connections --

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws)
        self._connections.add(conn)
        writer = asyncio.ensure_future(conn.write())
        try:
            async for frame in ws:
                await self._on_frame(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            self._detach(conn)
            conn.close(1000, "")
            await writer
            self._connections.discard(conn)
            self._connections_changed.set()

    async def wait_connections(self, at_most: int = 0) -> None:
        """Wait until at most ``at_most`` client connections remain (their sessions detached)."""
        while len(self._connections) > at_most:
            self._connections_changed.clear()
            await self._connections_changed.wait()

    def _detach(self, conn: Connection) -> None:
        session, conn.session = conn.session, None
        if session is not None and session.connection is conn:
            session.connection = None
            session.detached_at = self._clock()

    async def _on_frame(self, conn: Connection, frame: str | bytes) -> None:
        try:
            message = decode_from_client(frame)
        except RemoteProtocolError as exc:
            self._reject_frame(conn, frame, exc)
            return
        session = conn.session
        if isinstance(message, Ping):
            conn.send(encode(Pong()))
        elif isinstance(message, NewConnection):
            self._authenticate(conn, message)
        elif session is None:
            task_uuid = getattr(message, "task_uuid", None)
            text = "send newConnection with an API key first"
            self._send_error(conn, ErrorId.NOT_AUTHENTICATED, text, task_uuid)
        elif isinstance(message, CancelTask):
            self._cancel(session, message.task_uuid)
        else:
            await self._accept(conn, session, message)

    def _send_error(
        self, conn: Connection, error_id: int, text: str, task_uuid: str | None = None
    ) -> None:
        extensions = conn.session.extensions if conn.session is not None else frozenset()
        conn.send(encode(error_message(error_id, text, task_uuid, extensions)))

    def _reject_frame(self, conn: Connection, frame: str | bytes, exc: RemoteProtocolError) -> None:
        # Work out, on this slow path only, what the frame was meant to be.
        try:
            obj = json.loads(frame)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict) or len(obj) != 1:
            self._send_error(conn, ErrorId.MALFORMED_FRAME, str(exc))
            return
        name, body = next(iter(obj.items()))
        raw_uuid = body.get("taskUUID") if isinstance(body, dict) else None
        task_uuid = raw_uuid if isinstance(raw_uuid, str) and len(raw_uuid) <= 64 else None
        fields = {e.field for e in exc.errors}
        if name not in CLIENT_MESSAGE_NAMES:
            self._send_error(conn, ErrorId.UNKNOWN_MESSAGE, str(exc), task_uuid)
        elif name == NewConnection.wire_name and "apiKey" in fields:
            self._refuse(conn, ErrorId.INVALID_API_KEY, f"invalid newConnection: {exc}")
        elif "taskType" in fields:
            self._send_error(conn, ErrorId.UNKNOWN_TASK_TYPE, str(exc), task_uuid)
        else:
            self._send_error(conn, ErrorId.VALIDATION_ERROR, str(exc), task_uuid)

    def _refuse(self, conn: Connection, error_id: int, text: str) -> None:
        self._send_error(conn, error_id, text)
        conn.close(1008, text[:120])

    # -- sessions --

    def _authenticate(self, conn: Connection, message: NewConnection) -> None:
        key_id = self._keys.identify(message.api_key)
        if key_id is None:
            self._refuse(conn, ErrorId.INVALID_API_KEY, "invalid API key")
            return
        if conn.session is not None:
            text = "newConnection: this connection is already authenticated"
            self._send_error(conn, ErrorId.VALIDATION_ERROR, text)
            return
        wanted = message.extensions
        extensions = frozenset(wanted or ()) & KNOWN_EXTENSIONS
        resume = message.connection_session_uuid
        session = self._sessions.get(resume.lower()) if resume else None
        if session is not None and session.key_id != key_id:
            self._refuse(conn, ErrorId.SESSION_REFUSED, "the session belongs to another API key")
            return
        if session is None:
            session = ServerSession(str(uuid_module.uuid4()), key_id)
            self._sessions[session.uuid] = session
            known = None
        else:
            previous = session.connection
            if previous is not None:  # resumed elsewhere: the old socket loses the session
                self._detach(previous)
                previous.close(1000, "session resumed on another connection")
            known = sorted(session.held())
        session.extensions = extensions
        session.connection, session.detached_at, conn.session = conn, None, session
        conn.on_lost = session.undelivered.add
        fields: dict[str, Any] = {"connection_session_uuid": session.uuid}
        if wanted is not None:
            fields["extensions"] = tuple(sorted(extensions))
        if known is not None and "resume" in extensions:
            fields["known_task_uuids"] = tuple(known)
        conn.send(encode(NewConnectionSessionUUID(**fields)))
        if known is not None:
            self._replay_session(session, known)

    def _replay_session(self, session: ServerSession, task_uuids: list[str]) -> None:
        session.undelivered.clear()
        tasks = self._tasks.get(session.key_id, {})
        for task_uuid in task_uuids:
            record = tasks.get(task_uuid)
            if record is not None and record.session is session:
                self._replay(record)

    def _replay(self, record: TaskRecord) -> None:
        if record.results:
            self._deliver(record, record.results)
        if record.error is not None:
            self._deliver_error(record)

    # -- accepting tasks --

    async def _accept(self, conn: Connection, session: ServerSession, task: TaskRequest) -> None:
        # The only await (resolving an uploadEndpoint's host) comes first, so everything after
        # it, the dedupe included, is decided in one step: no other frame can come between.
        upload_refusal = await self._check_upload(task)
        tasks = self._tasks.setdefault(session.key_id, {})
        record = tasks.get(task.task_uuid)
        if record is not None:
            self._adopt(record, session)
            return
        refusal = self._refusal(session, task) or upload_refusal
        if refusal is not None:
            self._send_error(conn, *refusal, task.task_uuid)
            return
        sources = self._sources(task)
        if isinstance(sources, tuple):
            self._send_error(conn, *sources, task.task_uuid)
            return
        record = TaskRecord(
            task.task_uuid, session.key_id, task, session, seed=seed_for(task), sources=sources
        )
        tasks[task.task_uuid] = record
        session.active.add(task.task_uuid)
        self._active_total += 1
        if isinstance(task, NewTask):
            self._serve_from_cache(record, task)
        if isinstance(task, NewTask) and record.first >= task.number_results:
            self._finish(record)
        else:
            self._queue.put(session.uuid, record)

    def _adopt(self, record: TaskRecord, session: ServerSession) -> None:
        # A known taskUUID: never generated twice; its results so far go to the asker.
        previous = record.session
        if previous is not session:
            previous.active.discard(record.uuid)
            previous.undelivered.discard(record.uuid)
            record.session = session
            if not record.is_finished:
                session.active.add(record.uuid)
        self._replay(record)

    def _refusal(self, session: ServerSession, task: TaskRequest) -> tuple[int, str] | None:
        limits = self.config.limits
        if self._closing:
            return ErrorId.SERVER_SHUTTING_DOWN, "the server is stopping"
        prompt = task.prompt_text if isinstance(task, NewTask) else getattr(task, "prompt", None)
        if prompt is not None and len(prompt) > limits.max_prompt_length:
            name = "promptText" if isinstance(task, NewTask) else "prompt"
            rule = f"must be at most {limits.max_prompt_length} characters on this server"
            return ErrorId.LIMIT_EXCEEDED, f"{name}: {rule} (got {len(prompt)})"
        if isinstance(task, NewTask) and task.number_results > limits.max_number_results:
            rule = f"must be at most {limits.max_number_results} on this server"
            return ErrorId.LIMIT_EXCEEDED, f"numberResults: {rule} (got {task.number_results})"
        if len(session.active) >= limits.max_queued_per_connection:
            bound = limits.max_queued_per_connection
            return ErrorId.QUEUE_FULL, f"this session already has {bound} tasks queued"
        if self._active_total >= limits.max_queued_total:
            return (
                ErrorId.QUEUE_FULL,
                f"the server already has {limits.max_queued_total} tasks queued",
            )
        return None

    async def _check_upload(self, task: TaskRequest) -> tuple[int, str] | None:
        url = getattr(task, "upload_endpoint", None)
        if url is None:
            return None
        try:
            await self._pusher.check(url)
        except PushError as exc:
            return ErrorId.VALIDATION_ERROR, f"uploadEndpoint: {exc}"
        return None

    def _sources(self, task: TaskRequest) -> dict[str, SourceImage] | tuple[int, str]:
        # Images given by UUID must be here now; those given by URL are fetched when it runs.
        sources: dict[str, SourceImage] = {}
        for role, name, image_uuid, is_url in image_references(task):
            if is_url:
                continue
            stored = self._store.get(image_uuid)
            if stored is None:
                return ErrorId.IMAGE_NOT_FOUND, f"{name}: no image {image_uuid} on this server"
            sources[role] = SourceImage(stored.uuid, stored.data, stored.format, stored.prompt)
        return sources

    def _serve_from_cache(self, record: TaskRecord, task: NewTask) -> None:
        key = record.cache_key = cache_key(task)
        available = self._cache.count(key)
        hits = (
            []
            if task.use_cache is False
            else self._cache.page(key, task.offset, task.number_results)
        )
        for index, image in enumerate(hits):
            copy = replace(image, uuid=image_uuid_for(record.uuid, index))
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
            self._deliver(record, record.results)

    def _cancel(self, session: ServerSession, task_uuid: str) -> None:
        record = self._tasks.get(session.key_id, {}).get(task_uuid)
        if record is not None and not record.is_finished:
            # A queued record is skipped when a worker reaches it; a running one stops at its
            # next step (the backend sees the record finished).
            self._fail(record, ErrorId.TASK_CANCELLED, "the task was cancelled")

    # -- running tasks --

    async def _worker(self) -> None:
        while True:
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

    async def _execute(self, record: TaskRecord) -> None:
        sources = {**record.sources, **await self._fetch_guides(record.request)}
        job = Job(
            record.request,
            seed=record.seed,
            first=record.first,
            sources=sources,
            output_format=output_format(sources),
        )
        record.sources = {}  # the job holds them now; the record outlives it
        if not self._backend.blocking:
            context = _InlineContext()
            self._backend.run(job, context)
            for output in context.outputs:
                await self._publish(record, output)
            return
        await anyio.to_thread.run_sync(
            self._backend.run,
            job,
            _ThreadContext(self, record),
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    async def _fetch_guides(self, task: TaskRequest) -> dict[str, SourceImage]:
        # Guides given by URL are fetched when the task runs (the address policy applies).
        fetched: dict[str, SourceImage] = {}
        for role, name, url, is_url in image_references(task):
            if not is_url:
                continue
            try:
                data = await self._pusher.get(url, self.config.limits.max_frame_bytes)
            except PushError as exc:
                raise JobError(ErrorId.IMAGE_NOT_FOUND, f"{name}: {exc}") from exc
            fetched[role] = SourceImage(url, data, image_format(data) or "png")
        return fetched

    async def _publish(self, record: TaskRecord, output: Output) -> None:
        if record.is_finished:
            raise JobCancelled(record.uuid)
        if isinstance(output, ImageOutput):
            result = await self._store_image(record, output)
        else:
            result = TextResult(output.text)
        record.results.append(result)
        self._deliver(record, [result])

    async def _store_image(self, record: TaskRecord, output: ImageOutput) -> Result:
        task = record.request
        stored = StoredImage(
            image_uuid_for(record.uuid, output.index),
            output.data,
            output.format,
            output.width,
            output.height,
            output.prompt,
            output.seed,
        )
        self._store.put(stored)
        inline = bool(getattr(task, "return_base64_image", False))
        upload = getattr(task, "upload_endpoint", None)
        if upload is not None:
            url = expand_url(
                upload,
                imageUUID=stored.uuid,
                taskUUID=record.uuid,
                index=output.index,
                ext=stored.extension,
            )
            await self._pusher.put(url, stored.data, stored.content_type)
        if isinstance(task, NewTask) and task.save_to_cache is not False:
            self._cache.add(record.cache_key, stored.uuid)
        if isinstance(task, NewImageUpload | PreProcessControlNetRequest):
            init = task.guide_image_uuid if isinstance(task, PreProcessControlNetRequest) else None
            return ReplyResult(stored.uuid, self._src(stored), init, inline)
        return ImageResult(
            stored.uuid, self._src(stored), self._cost(task, stored), output.seed, None, inline
        )

    def _cost(self, task: TaskRequest, image: StoredImage) -> float:
        steps = task.steps if isinstance(task, NewTask) else _GENERATION_COST_STEPS
        megapixels = image.width * image.height / 1e6
        return round(megapixels * steps * self.config.cost_per_megapixel_step, 8)

    def _src(self, image: StoredImage) -> str:
        return f"{self.public_url}/images/{image.uuid}.{image.extension}"

    def _send_progress(self, record: TaskRecord, step: int, steps: int) -> None:
        conn = record.session.connection
        if conn is not None and not record.is_finished:
            message = NewProgress(task_uuid=record.uuid, step=step, steps=steps)
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
        self._deliver_error(record)

    def _close_record(self, record: TaskRecord) -> None:
        record.finished_at = self._clock()
        record.session.active.discard(record.uuid)
        self._active_total -= 1

    def _deliver(self, record: TaskRecord, results: list[Result]) -> None:
        self._send_to_session(record, lambda extensions: self._results(record, results, extensions))

    def _deliver_error(self, record: TaskRecord) -> None:
        assert record.error is not None
        error_id, text = record.error
        self._send_to_session(
            record, lambda extensions: error_message(error_id, text, record.uuid, extensions)
        )

    def _send_to_session(
        self, record: TaskRecord, render: Callable[[frozenset[str]], ServerMessage]
    ) -> None:
        # Rendered only when a connection will carry it: a detached session just notes the
        # task, and a resume renders its frames afresh for the extensions then negotiated.
        session = record.session
        conn = session.connection
        if conn is None:
            session.undelivered.add(record.uuid)
            return
        conn.send(encode(render(session.extensions)), record.uuid)

    def _results(
        self, record: TaskRecord, results: list[Result], extensions: frozenset[str]
    ) -> ServerMessage:
        inline = {
            r.image_uuid: self._base64(r.image_uuid)
            for r in results
            if isinstance(r, ImageResult | ReplyResult) and r.inline
        }
        return result_message(record, results, extensions, inline)

    def _base64(self, image_uuid: str) -> str:
        stored = self._store.get(image_uuid)
        return base64.b64encode(stored.data).decode() if stored is not None else ""

    # -- housekeeping --

    async def _sweeper(self) -> None:
        while True:
            await anyio.sleep(self.config.sweep_interval)
            self.sweep()

    def sweep(self) -> None:
        """Forget what outlived its window: detached sessions and finished tasks after
        ``retention``, images after ``image_ttl``. Runs every ``sweep_interval`` seconds."""
        now, retention = self._clock(), self.config.retention
        for session_uuid, session in list(self._sessions.items()):
            if session.detached_at is not None and now - session.detached_at > retention:
                del self._sessions[session_uuid]
        for tasks in self._tasks.values():
            for task_uuid, record in list(tasks.items()):
                if record.finished_at is not None and now - record.finished_at > retention:
                    del tasks[task_uuid]
                    record.session.undelivered.discard(task_uuid)
        self._store.sweep()
        self._cache.sweep()

    # -- HTTP --

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        path = request.path.split("?", 1)[0]
        if path in ("/", "/healthz"):
            return connection.respond(200, "ok\n")
        match = _IMAGE_PATH.fullmatch(path)
        image = self._store.get(match.group(1)) if match else None
        if image is None or match is None or image.extension != match.group(2):
            return connection.respond(404, "no such image\n")
        headers = Headers(
            [
                ("Content-Type", image.content_type),
                ("Content-Length", str(len(image.data))),
                ("Cache-Control", f"max-age={int(self.config.image_ttl)}"),
                ("Connection", "close"),
            ]
        )
        return Response(200, "OK", headers, image.data)


@asynccontextmanager
async def serve_embedded(
    config: ServerConfig | None = None, *, backend: Backend | None = None
) -> AsyncIterator[ReferenceServer]:
    """Run a reference server in this process (127.0.0.1, a free port, a generated key).

    ``server.url`` and ``server.api_key`` say where and how to connect.
    """
    async with ReferenceServer(config, backend=backend) as server:
        yield server
