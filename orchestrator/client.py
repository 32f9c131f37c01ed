"""The public facade: :class:`Orchestrator`.

It owns a task group (timers and one loop per connection), a :class:`Pool`, and,
when no endpoint is given, an embedded reference server on 127.0.0.1.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack, overload

import anyio
from anyio.abc import TaskGroup

from protocol.codec import PreparedTask, prepare
from protocol.identity import new_task_uuid
from protocol.messages import ControlNet, TaskRequest

from .config import Config
from .errors import InvalidState, OrchestratorError, UsageError
from .handle import Submission, TaskHandle
from .inputs import TASK_REQUESTS, check_deadline, check_ws_url, embedded_server, fetch_image
from .mapping import MapRun
from .pool import Pool, Stats
from .results import RunProgress, TaskResult
from .specs import (
    ControlNetImage,
    EnhancePrompt,
    GenerationOptions,
    ImageToImage,
    ImageToText,
    Inpaint,
    PreprocessControlNet,
    PreprocessOptions,
    RemoveBackground,
    TaskSpec,
    TextToImage,
    UploadImage,
    Upscale,
    spec_delivery,
    spec_image_refs,
)
from .timers import Clock, SystemClock, Timers
from .transport import Transport, WebSocketTransport

if TYPE_CHECKING:  # loaded when used: httpx only for users of sinks and webhooks
    from .delivery import Deliverer, Sink
    from .vocabularies import Credits

__all__ = ["Orchestrator"]

Task = TaskSpec | TaskRequest


class Orchestrator:
    """Many tasks over a few persistent sockets to one or more endpoints.

    Use it as an async context manager. With no ``endpoints`` it starts the
    embedded reference server in this process (and uses its generated key).

    Args:
        endpoints: ``ws://`` URLs; one string or several.
        api_key: the key sent in ``newConnection`` (required with endpoints).
        config: timeouts, limits, backoff, extensions (:class:`Config`).
        transport: how sockets are opened (default: WebSockets; tests pass
            ``orchestrator.testing.MemoryTransport``).
        clock: where time is read (default: the event loop's).
        rng: the randomness of backoff jitter.
        deliver_to: sinks every task's images go to (a task's ``deliver_to`` replaces
            them): ``s3://bucket/prefix/{...}``, ``http(s)://`` URL templates, ``file://``
            or plain paths, or :mod:`orchestrator.delivery` sinks. Checked here: a bad
            one raises UsageError naming it.
        embedded: settings of the embedded server, when no endpoint is given: fields of
            ``orchestrator.server.ServerConfig`` (``{"backend": "fixed"}``).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        api_key: str | None = None,
        config: Config | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        deliver_to: Sequence[str | Path | Sink] = (),
        embedded: Mapping[str, Any] | None = None,
    ) -> None:
        self._endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints or ())
        if self._endpoints and not api_key:
            raise UsageError("api_key is required when endpoints are given")
        if transport is None:  # the default transport speaks WebSocket URLs only
            for endpoint in self._endpoints:
                check_ws_url(endpoint)
        self._api_key, self._embedded = api_key, dict(embedded or {})
        self.config = config or Config()
        self._transport = transport or WebSocketTransport()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._timers = Timers(self._clock)
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._pool: Pool | None = None
        self._deliverer: Deliverer | None = None
        if isinstance(deliver_to, str) or not isinstance(deliver_to, Sequence):
            deliver_to = [deliver_to]
        if deliver_to:
            self.deliverer.resolve_defaults(deliver_to)  # checked now: a bad sink raises

    # -- lifecycle --

    async def __aenter__(self) -> Orchestrator:
        if self._stack is not None:
            raise InvalidState("an Orchestrator can be entered once")
        self._stack = stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _start(self, stack: AsyncExitStack) -> None:
        if not self._endpoints:
            server = await stack.enter_async_context(embedded_server(self._embedded))
            self._endpoints, self._api_key = [server.url], server.api_key
        assert self._api_key is not None
        pool = Pool(
            self._endpoints,
            self._api_key,
            config=self.config,
            transport=self._transport,
            clock=self._clock,
            timers=self._timers,
            rng=self._rng,
        )
        self._tg = tg = await stack.enter_async_context(anyio.create_task_group())
        self._pool = pool
        await tg.start(self._timers.run)
        if self._deliverer is not None:
            self._start_deliverer(self._deliverer)
        for conn in pool.connections:
            await tg.start(conn.run)
        if pool.fatal_error is not None:
            raise pool.fatal_error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every live task (TaskCancelled), close the sockets and the embedded server."""
        if self._pool is not None:
            self._pool.close()
        if self._deliverer is not None:
            self._deliverer.close()  # before the task group's cancel reaches its jobs
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        if self._stack is not None:
            await self._stack.aclose()

    @property
    def pool(self) -> Pool:
        """The connection pool (for inspection)."""
        if self._pool is None:
            raise InvalidState("the Orchestrator is not running: use `async with`")
        return self._pool

    @property
    def deliverer(self) -> Deliverer:
        """What delivers images to sinks (made on first use)."""
        if self._deliverer is None:
            from .delivery import Deliverer

            config = self.config.delivery
            self._deliverer = Deliverer((), config, clock=self._clock, rng=self._rng)
            if self._tg is not None:
                self._start_deliverer(self._deliverer)
        return self._deliverer

    def _start_deliverer(self, deliverer: Deliverer) -> None:
        assert self._tg is not None and self._stack is not None
        deliverer.start(self._tg)
        self._stack.push_async_callback(deliverer.aclose)  # closed before the task group

    @property
    def stats(self) -> Stats:
        """Counters: submitted, completed, failed, retried, resubmitted, moved, reports."""
        return self.pool.stats

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints in use (the embedded server's, when none was given)."""
        return tuple(self._endpoints)

    # -- submitting --

    def submit(self, task: Task, *, deadline: float | None = None) -> Submission:
        """Submit a task; waits for room under the in-flight limits.

        ``async with orch.submit(task) as handle:`` cancels the task if the block
        is left early; ``handle = await orch.submit(task)`` leaves that to you.

        Args:
            task: a spec (``TextToImage(...)``) or a protocol message.
            deadline: seconds this task may take (default ``Timeouts.task``).

        Raises:
            LocalProtocolError: the task breaks a rule (names the field); nothing sent.
            AuthenticationError: the server refused the key.
            InvalidState: the orchestrator is not running, or the taskUUID is in flight.
        """
        return Submission(lambda: self._submit(task, deadline))

    async def _submit(self, task: Task, deadline: float | None) -> TaskHandle:
        check_deadline(deadline)
        handle, prepared, refs = self._prepare(task)
        # The common case is synchronous: no coroutine per task when there is room.
        if not self.pool.try_acquire():
            await self.pool.acquire()
        timeout = self.config.timeouts.task if deadline is None else deadline
        self.pool.admit(handle, prepared, refs, timeout)
        return handle

    def _prepare(self, task: Task) -> tuple[TaskHandle, PreparedTask, tuple[str, ...]]:
        # Validates and encodes the task, in the servers' dialect (raising before anything
        # is sent).
        pool = self.pool
        if isinstance(task, TaskSpec):
            prepared = pool.encode(task.prepare(task.task_uuid or new_task_uuid()))
        elif isinstance(task, TASK_REQUESTS):
            prepared = pool.encode(prepare(task))
        else:
            raise UsageError(
                f"a task is a spec (TextToImage(...), ...) or a protocol request, "
                f"not {type(task).__name__}"
            )
        handle = TaskHandle(prepared.task_uuid, task, pool)
        own, metadata, upload = spec_delivery(task)
        if self._deliverer is not None or own is not None or upload is not None:
            handle.deliveries = self.deliverer.for_task(handle, own, metadata, upload)
        return handle, prepared, spec_image_refs(task)

    async def run(self, task: Task, *, deadline: float | None = None) -> TaskResult:
        """Submit a task and return its result (cancelling it if the caller is cancelled)."""
        handle = await self._submit(task, deadline)
        try:
            while not handle.done():  # handle.result(), less a coroutine per task
                await handle._wait()
            return handle.result_nowait()
        finally:
            handle.cancel()  # a no-op once it finished

    @overload
    def map(
        self,
        tasks: Iterable[Task] | AsyncIterable[Task],
        *,
        concurrency: int | None = ...,
        on_progress: Callable[[RunProgress], None] | None = ...,
    ) -> AsyncIterator[TaskResult]: ...

    @overload
    def map(
        self,
        tasks: Iterable[Task] | AsyncIterable[Task],
        *,
        concurrency: int | None = ...,
        return_exceptions: bool,
        on_progress: Callable[[RunProgress], None] | None = ...,
    ) -> AsyncIterator[TaskResult | OrchestratorError]: ...

    def map(
        self,
        tasks: Iterable[Task] | AsyncIterable[Task],
        *,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        on_progress: Callable[[RunProgress], None] | None = None,
    ) -> AsyncIterator[Any]:
        """Run many tasks, at most ``concurrency`` at a time; yield results as they finish.

        The source is pulled lazily: at most ``concurrency`` tasks are taken and not yet
        yielded, so an endless generator is fine. A failed task (or one whose input breaks
        a rule) raises its error, cancelling the others; with ``return_exceptions=True``
        the error is yielded in its place instead.
        Leaving the loop early cancels the tasks still running. ``on_progress`` is called
        with a :class:`RunProgress` (done, failed, in flight, and the total when the source
        has a length) as each task is submitted or finishes.
        """
        limit = concurrency or self.config.limits.in_flight
        run = MapRun(lambda task: self._submit(task, None), limit, on_progress)
        return run.results(tasks, return_exceptions=return_exceptions)

    # -- one method per task type: each returns the TaskResult --

    async def text_to_image(
        self, prompt: str, *, deadline: float | None = None, **options: Unpack[GenerationOptions]
    ) -> TaskResult:
        """Generate images from a prompt; options are :class:`TextToImage`'s fields."""
        return await self.run(TextToImage(prompt=prompt, **options), deadline=deadline)

    async def image_to_image(
        self,
        prompt: str,
        init_image_uuid: str,
        *,
        strength: float | None = None,
        deadline: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> TaskResult:
        """Generate from a prompt and an init image; see :class:`ImageToImage`."""
        spec = ImageToImage(
            prompt=prompt, init_image_uuid=init_image_uuid, strength=strength, **options
        )
        return await self.run(spec, deadline=deadline)

    async def inpaint(
        self,
        prompt: str,
        init_image_uuid: str,
        mask_image_uuid: str,
        *,
        deadline: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> TaskResult:
        """Repaint the masked part of an image; see :class:`Inpaint`."""
        spec = Inpaint(
            prompt=prompt,
            init_image_uuid=init_image_uuid,
            mask_image_uuid=mask_image_uuid,
            **options,
        )
        return await self.run(spec, deadline=deadline)

    async def controlnet(
        self,
        prompt: str,
        control_net: Iterable[ControlNet],
        *,
        init_image_uuid: str | None = None,
        strength: float | None = None,
        deadline: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> TaskResult:
        """Generate guided by ControlNet; see :class:`ControlNetImage`."""
        spec = ControlNetImage(
            prompt=prompt,
            control_net=tuple(control_net),
            init_image_uuid=init_image_uuid,
            strength=strength,
            **options,
        )
        return await self.run(spec, deadline=deadline)

    async def upscale(
        self, image_uuid: str, upscale_factor: int = 2, *, deadline: float | None = None
    ) -> TaskResult:
        """Upscale an image 2, 3 or 4 times (``result.image``)."""
        spec = Upscale(image_uuid=image_uuid, upscale_factor=upscale_factor)
        return await self.run(spec, deadline=deadline)

    async def remove_background(
        self, image_uuid: str, *, deadline: float | None = None
    ) -> TaskResult:
        """Cut the subject out into a transparent PNG (``result.image``)."""
        return await self.run(RemoveBackground(image_uuid=image_uuid), deadline=deadline)

    async def image_to_text(self, image_uuid: str, *, deadline: float | None = None) -> TaskResult:
        """Caption an image (``result.text``)."""
        return await self.run(ImageToText(image_uuid=image_uuid), deadline=deadline)

    async def enhance_prompt(
        self,
        prompt: str,
        prompt_versions: int = 1,
        *,
        prompt_max_length: int | None = None,
        language: int | str | None = None,
        deadline: float | None = None,
    ) -> TaskResult:
        """Write ``prompt_versions`` richer versions of a prompt (``result.texts``)."""
        spec = EnhancePrompt(
            prompt=prompt,
            prompt_versions=prompt_versions,
            prompt_max_length=prompt_max_length,
            language=language,
        )
        return await self.run(spec, deadline=deadline)

    async def upload_image(
        self, image: bytes | str | Path, *, deadline: float | None = None
    ) -> TaskResult:
        """Upload an image (a file's path, bytes, base64, a data URI, or an ``http(s)://``
        URL this process fetches); ``result.image.image_uuid`` names it for later tasks."""
        if isinstance(image, Path):  # read off the event loop
            path = image
            try:
                image = await anyio.Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f"upload_image: no file to read at {path}: {exc}") from exc
        elif isinstance(image, str) and image.startswith(("http://", "https://")):
            image = await fetch_image(image, self.config.limits.max_frame)
        return await self.run(UploadImage(image=image), deadline=deadline)

    async def submit_as(
        self,
        vocabulary: str,
        request: Mapping[str, Any],
        *,
        credits: Credits | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Carry out a request written for another seed API (``akiio``, ``modelslab``,
        ``imagetoimage``, ``stablecog``: ``VOCABULARIES``) and return that API's response;
        see :mod:`orchestrator.vocabularies`. ``credits``: a balance the request spends."""
        from .vocabularies import submit_as

        return await submit_as(
            self,
            vocabulary,
            request,
            credits=credits,
            deadline=deadline,
            clock=self._clock,
            rng=self._rng,
        )

    async def controlnet_preprocess(
        self,
        preprocessor: str,
        *,
        deadline: float | None = None,
        **options: Unpack[PreprocessOptions],
    ) -> TaskResult:
        """Make a ControlNet guide image (``result.image``); see :class:`PreprocessControlNet`."""
        spec = PreprocessControlNet(preprocessor=preprocessor, **options)
        return await self.run(spec, deadline=deadline)
