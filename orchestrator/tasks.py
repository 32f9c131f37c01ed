"""What users submit (task specs), what they get back (results and events), and handles.

A spec is a friendly description of one task (``TextToImage(prompt=...)``), plain
data: it is validated and encoded when submitted, so changing it afterwards changes
nothing in flight. (Specs are not frozen: a frozen dataclass costs microseconds more
to build, and a bulk job builds one per task.)
:meth:`TaskSpec.to_request` turns it into the protocol's message for a taskUUID; this
is where bad input is refused, with a
:class:`~orchestrator.errors.LocalProtocolError` naming the wire field, its Python
name and the rule, before anything is sent. Friendly names map to wire names here
and only here (``prompt`` -> ``promptText``, ``guidance`` -> ``gScale``).

A :class:`TaskHandle` follows one submitted task: ``await handle.result()``, or
``async for event in handle.events()``, or both. Each image reaches it once
(deduplicated by imageUUID, across frames, replays, resubmissions and failovers).
"""

from __future__ import annotations

import asyncio
import base64
import operator
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from protocol.codec import PreparedTask, prepare
from protocol.fastpath import prepare_text_to_image
from protocol.messages import (
    ControlNet,
    Image,
    Lora,
    NewImageUpload,
    NewTask,
    NewUploadedImageUUID,
    PreProcessControlNetRequest,
    PreProcessControlNetResult,
    PromptEnhance,
    RemoveBackgroundRequest,
    ReverseImageClip,
    TaskRequest,
    UpscaleGanRequest,
    join_negative_prompt,
)
from protocol.session import Progress
from protocol.tables import TaskType

from .errors import OrchestratorError, TaskCancelled

if TYPE_CHECKING:
    from .timers import Timer

__all__ = [
    "ControlNetImage",
    "EnhancePrompt",
    "Event",
    "GeneratedImage",
    "ImageReady",
    "ImageToImage",
    "ImageToText",
    "Inpaint",
    "PreprocessControlNet",
    "Progress",
    "RemoveBackground",
    "TaskDone",
    "TaskFailed",
    "TaskHandle",
    "TaskResult",
    "TaskSpec",
    "TextReady",
    "TextToImage",
    "UploadImage",
    "Upscale",
]


# -- specs ---------------------------------------------------------------------------------


def _set(**fields: Any) -> dict[str, Any]:
    # Only what the user set goes on the wire: the server's defaults apply to the rest.
    return {name: value for name, value in fields.items() if value is not None}


@dataclass(slots=True, kw_only=True)
class TaskSpec:
    """Base of every task spec. ``task_uuid``: choose the taskUUID (default: a new UUIDv4)."""

    task_uuid: str | None = None

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the protocol message. Raises LocalProtocolError naming the broken field."""
        raise NotImplementedError

    def prepare(self, task_uuid: str) -> PreparedTask:
        """Validate and encode the task for ``task_uuid``, once (what the orchestrator sends)."""
        return prepare(self.to_request(task_uuid))

    def image_refs(self) -> tuple[str, ...]:
        """imageUUIDs this task reads: it must run where those images are."""
        return ()


@dataclass(slots=True, kw_only=True)
class _Generation(TaskSpec):
    prompt: str
    negative_prompt: str | None = None
    number_results: int = 1
    model: str | int | None = None
    size_id: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    scheduler_id: int | None = None
    style_id: int | None = None
    clip_skip: int | None = None
    language_id: int | None = None
    use_cache: bool | None = None
    save_to_cache: bool | None = None
    offset: int | None = None
    check_nsfw: bool | None = None
    prompt_weighting: bool | None = None
    upload_endpoint: str | None = None
    loras: tuple[Lora, ...] | None = None
    return_base64: bool | None = None

    _task_type = TaskType.TEXT_TO_IMAGE

    def _fields(self) -> dict[str, Any]:
        # Wire names, and only what the user set: the server's defaults apply to the rest.
        fields = {
            "promptText": join_negative_prompt(self.prompt, self.negative_prompt),
            "numberResults": self.number_results,
        }
        fields.update(self._options())
        return fields

    def _options(self) -> dict[str, Any]:
        values = zip(_GENERATION_WIRE_NAMES, _generation_values(self), strict=True)
        return {name: value for name, value in values if value is not None}

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newTask`` message."""
        return NewTask(task_uuid=task_uuid, task_type=self._task_type, **self._fields())


_GENERATION_FIELDS = (
    ("modelId", "model"),
    ("sizeId", "size_id"),
    ("steps", "steps"),
    ("gScale", "guidance"),
    ("seed", "seed"),
    ("schedulerId", "scheduler_id"),
    ("styleId", "style_id"),
    ("clipSkip", "clip_skip"),
    ("promptLanguageId", "language_id"),
    ("useCache", "use_cache"),
    ("saveToCache", "save_to_cache"),
    ("offset", "offset"),
    ("checkNsfw", "check_nsfw"),
    ("usePromptWeighting", "prompt_weighting"),
    ("uploadEndpoint", "upload_endpoint"),
    ("lora", "loras"),
    ("returnBase64Image", "return_base64"),
)
_GENERATION_WIRE_NAMES = tuple(wire_name for wire_name, _ in _GENERATION_FIELDS)
_generation_values = operator.attrgetter(*(attribute for _, attribute in _GENERATION_FIELDS))


@dataclass(slots=True, kw_only=True)
class TextToImage(_Generation):
    """Generate ``number_results`` images from a prompt (taskType 1)."""

    def prepare(self, task_uuid: str) -> PreparedTask:
        """Validate and encode the task; the common case skips building the model."""
        prompt_text = join_negative_prompt(self.prompt, self.negative_prompt)
        prepared = prepare_text_to_image(
            task_uuid, prompt_text, self.number_results, self._options()
        )
        return prepare(self.to_request(task_uuid)) if prepared is None else prepared


@dataclass(slots=True, kw_only=True)
class ImageToImage(_Generation):
    """Generate from a prompt and an init image (taskType 2); ``strength`` 0-1."""

    init_image_uuid: str
    strength: float | None = None

    _task_type = TaskType.IMAGE_TO_IMAGE

    def _fields(self) -> dict[str, Any]:
        return _Generation._fields(self) | _set(
            imageInitiatorUUID=self.init_image_uuid, strength=self.strength
        )

    def image_refs(self) -> tuple[str, ...]:
        """The init image."""
        return (self.init_image_uuid,)


@dataclass(slots=True, kw_only=True)
class Inpaint(_Generation):
    """Repaint the masked part of an init image (taskType 3)."""

    init_image_uuid: str
    mask_image_uuid: str

    _task_type = TaskType.INPAINTING

    def _fields(self) -> dict[str, Any]:
        return _Generation._fields(self) | _set(
            imageInitiatorUUID=self.init_image_uuid,
            imageMaskInitiatorUUID=self.mask_image_uuid,
        )

    def image_refs(self) -> tuple[str, ...]:
        """The init image and the mask."""
        return (self.init_image_uuid, self.mask_image_uuid)


@dataclass(slots=True, kw_only=True)
class ControlNetImage(_Generation):
    """Generate guided by ControlNet (taskType 9, or 10 with an init image)."""

    control_net: tuple[ControlNet, ...]
    init_image_uuid: str | None = None
    strength: float | None = None

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newTask`` message (type 10 when an init image is given)."""
        task_type = TaskType.CONTROLNET_TEXT_TO_IMAGE
        if self.init_image_uuid is not None:
            task_type = TaskType.CONTROLNET_IMAGE_TO_IMAGE
        extra = _set(
            controlNet=self.control_net,
            imageInitiatorUUID=self.init_image_uuid,
            strength=self.strength,
        )
        return NewTask(task_uuid=task_uuid, task_type=task_type, **(self._fields() | extra))

    def image_refs(self) -> tuple[str, ...]:
        """The init image and the guides given by imageUUID."""
        guides = tuple(g.guide_image_uuid for g in self.control_net if g.guide_image_uuid)
        return (self.init_image_uuid, *guides) if self.init_image_uuid else guides


@dataclass(slots=True, kw_only=True)
class Upscale(TaskSpec):
    """Upscale an image by ``factor`` 2, 3 or 4 (taskType 6)."""

    image_uuid: str
    factor: int = 2

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newUpscaleGan`` message."""
        return UpscaleGanRequest(
            task_uuid=task_uuid, image_uuid=self.image_uuid, upscale_factor=self.factor
        )

    def image_refs(self) -> tuple[str, ...]:
        """The image to upscale."""
        return (self.image_uuid,)


@dataclass(slots=True, kw_only=True)
class RemoveBackground(TaskSpec):
    """Cut the subject out of an image into a transparent PNG (taskType 8)."""

    image_uuid: str

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newRemoveBackground`` message."""
        return RemoveBackgroundRequest(task_uuid=task_uuid, image_uuid=self.image_uuid)

    def image_refs(self) -> tuple[str, ...]:
        """The source image."""
        return (self.image_uuid,)


@dataclass(slots=True, kw_only=True)
class ImageToText(TaskSpec):
    """Caption an image (taskType 4)."""

    image_uuid: str

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newReverseImageClip`` message."""
        return ReverseImageClip(task_uuid=task_uuid, image_uuid=self.image_uuid)

    def image_refs(self) -> tuple[str, ...]:
        """The image to caption."""
        return (self.image_uuid,)


@dataclass(slots=True, kw_only=True)
class EnhancePrompt(TaskSpec):
    """Write ``versions`` (1-5) richer versions of a prompt (taskType 5)."""

    prompt: str
    versions: int = 1
    max_length: int | None = None
    language_id: int | None = None

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newPromptEnhance`` message."""
        fields = _set(prompt_max_length=self.max_length, prompt_language_id=self.language_id)
        return PromptEnhance(
            task_uuid=task_uuid, prompt=self.prompt, prompt_versions=self.versions, **fields
        )


@dataclass(slots=True, kw_only=True)
class UploadImage(TaskSpec):
    """Upload an image (raw bytes, base64 text or a data URI) to use by imageUUID (type 7)."""

    image: bytes | str = field(repr=False)

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newImageUpload`` message."""
        data = self.image
        text = base64.b64encode(data).decode() if isinstance(data, bytes) else data
        return NewImageUpload(task_uuid=task_uuid, image_base64=text)


@dataclass(slots=True, kw_only=True)
class PreprocessControlNet(TaskSpec):
    """Turn a guide image into a ControlNet guide (taskType 11), by imageUUID or URL."""

    preprocessor: str
    guide_image_uuid: str | None = None
    guide_image_url: str | None = None
    width: int | None = None
    height: int | None = None
    low_threshold: int | None = None
    high_threshold: int | None = None
    hands_and_face: bool | None = None
    return_base64: bool | None = None

    def to_request(self, task_uuid: str) -> TaskRequest:
        """Build the ``newPreProcessControlNet`` message."""
        fields = _set(
            guide_image_uuid=self.guide_image_uuid,
            guide_image_url=self.guide_image_url,
            width=self.width,
            height=self.height,
            low_threshold_canny=self.low_threshold,
            high_threshold_canny=self.high_threshold,
            include_hands_and_face_open_pose=self.hands_and_face,
            return_base64_image=self.return_base64,
        )
        return PreProcessControlNetRequest(
            task_uuid=task_uuid, pre_processor_type=self.preprocessor, **fields
        )

    def image_refs(self) -> tuple[str, ...]:
        """The guide image, when given by imageUUID."""
        return (self.guide_image_uuid,) if self.guide_image_uuid else ()


def new_task_uuid() -> str:
    """A random UUIDv4 string, as ``str(uuid.uuid4())`` gives, at half the cost."""
    # The same 16 bytes from the operating system's generator, formatted directly rather
    # than through a UUID object; the version nibble is 4 and the variant bits are 10.
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def request_image_refs(request: TaskRequest) -> tuple[str, ...]:
    """imageUUIDs a protocol message reads (for tasks submitted as raw messages)."""
    if isinstance(request, NewTask):
        refs = [request.image_initiator_uuid, request.image_mask_initiator_uuid]
        refs += [g.guide_image_uuid for g in request.control_net or ()]
        return tuple(r for r in refs if r)
    if isinstance(request, UpscaleGanRequest | RemoveBackgroundRequest | ReverseImageClip):
        return (request.image_uuid,)
    if isinstance(request, PreProcessControlNetRequest) and request.guide_image_uuid:
        return (request.guide_image_uuid,)
    return ()


# -- results and events --------------------------------------------------------------------

# Plain slotted dataclasses (see the specs): one of each per task, on the hot path.


@dataclass(slots=True)
class GeneratedImage:
    """One image a task produced (or an uploaded or preprocessed image).

    ``url`` is where the server hosts it; ``seed`` is set when the server reports it
    (the ``seed`` extension); ``base64_data`` when ``return_base64`` was asked.
    """

    image_uuid: str
    url: str
    task_uuid: str
    seed: int | None = None
    nsfw: bool = False
    alt_text: str | None = None
    cost: float | None = None
    base64_data: str | None = field(default=None, repr=False)

    def data(self) -> bytes | None:
        """The image's bytes, when the server sent them inline."""
        return None if self.base64_data is None else base64.b64decode(self.base64_data)

    @classmethod
    def from_wire(cls, image: Image) -> GeneratedImage:
        """Map a protocol image to the friendly names."""
        return cls(
            image.image_uuid,
            image.image_src,
            image.task_uuid,
            image.seed,
            image.b_nsfw_content,
            image.image_alt_text,
            image.cost,
            image.image_base64_data,
        )

    @classmethod
    def from_reply(cls, reply: NewUploadedImageUUID | PreProcessControlNetResult) -> GeneratedImage:
        """The image an upload or a preprocessing reply names."""
        if isinstance(reply, PreProcessControlNetResult):
            return cls(
                reply.new_image_uuid,
                reply.new_image_src,
                reply.task_uuid,
                nsfw=reply.b_nsfw_content,
                base64_data=reply.image_base64_data,
            )
        return cls(reply.new_image_uuid, reply.new_image_src, reply.task_uuid)


@dataclass(slots=True)
class TaskResult:
    """A finished task: its images (or texts), their summed cost, and where it ran."""

    task_uuid: str
    task: TaskSpec | TaskRequest
    images: tuple[GeneratedImage, ...] = ()
    texts: tuple[str, ...] = ()
    endpoint: str | None = None

    @property
    def cost(self) -> float:
        """The sum of the images' reported costs."""
        return sum(image.cost or 0.0 for image in self.images)


@dataclass(slots=True)
class ImageReady:
    """An image of the task exists; delivered once."""

    task_uuid: str
    image: GeneratedImage


@dataclass(slots=True)
class TextReady:
    """A text (caption or enhanced prompt) of the task; delivered once."""

    task_uuid: str
    text: str


@dataclass(slots=True)
class TaskDone:
    """The task finished; the last event."""

    result: TaskResult


@dataclass(slots=True)
class TaskFailed:
    """The task failed (``error``: the exception ``result()`` raises); the last event."""

    task_uuid: str
    error: OrchestratorError


Event = Progress | ImageReady | TextReady | TaskDone | TaskFailed


# -- the handle ----------------------------------------------------------------------------


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
        "prepared",
        "image_refs",
        "expected",
        "connection",
        "timeout",
        "deadline",
        "retry",
        "retries",
        "_images",
        "_seen",
        "_texts",
        "_log",
        "_result",
        "_error",
        "_waiters",
        "_on_done",
        "_owner",
    )

    def __init__(
        self,
        task: TaskSpec | TaskRequest,
        prepared: PreparedTask,
        image_refs: tuple[str, ...],
        owner: _Owner,
    ) -> None:
        self.task_uuid: str = prepared.task_uuid
        self.task = task
        self.prepared = prepared
        self.image_refs = image_refs
        self.expected: int = prepared.expected
        self.connection: Any = None  # the pool's Connection while in flight there
        self.timeout = 0.0
        self.deadline: Timer | None = None
        self.retry: Timer | None = None
        self.retries = 0
        self._images: list[GeneratedImage] | None = None
        self._seen: set[str] | None = None  # only for tasks expecting several results
        self._texts: list[str] | None = None
        self._log: list[Event] | None = None  # kept once someone streams events
        self._result: TaskResult | None = None
        self._error: OrchestratorError | None = None
        self._waiters: asyncio.Future[None] | list[asyncio.Future[None]] | None = None
        self._on_done: list[Callable[[TaskHandle], None]] | None = None
        self._owner = owner

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
        from .errors import InvalidState

        raise InvalidState(f"task {self.task_uuid} has not finished")

    async def events(self) -> AsyncIterator[Event]:
        """Yield every event of the task from its start, ending with TaskDone or TaskFailed."""
        log = self._event_log()
        index = 0
        while True:
            while index < len(log):
                event = log[index]
                index += 1
                yield event
                if isinstance(event, TaskDone | TaskFailed):
                    return
            await self._wait()

    @property
    def images(self) -> tuple[GeneratedImage, ...]:
        """The images received so far."""
        return tuple(self._images or ())

    def cancel(self) -> None:
        """Cancel the task (a no-op once it finished); ``result()`` raises TaskCancelled."""
        if self._result is None and self._error is None:
            error = TaskCancelled(f"task {self.task_uuid} cancelled", self.task_uuid)
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

    # -- for the pool --

    def add_image(self, image: Image) -> bool:
        """Record an image unless already seen; return True when the task has all it needs."""
        if self._result is not None or self._error is not None:
            return False
        images = self._images
        if images is None:
            images = self._images = []
            if self.expected > 1:  # a task expecting one image is complete at the first
                self._seen = set()
        if self._seen is not None:
            if image.image_uuid in self._seen:
                return False
            self._seen.add(image.image_uuid)
        ready = GeneratedImage.from_wire(image)
        images.append(ready)
        if self._log is not None:
            self._emit(ImageReady(self.task_uuid, ready))
        return len(images) >= self.expected

    def add_text(self, text: str) -> bool:
        """Record a text unless already seen; return True when the task has all it needs."""
        if self._result is not None or self._error is not None:
            return False
        if self._texts is None:
            self._texts = []
        if text not in self._texts:
            self._texts.append(text)
            if self._log is not None:
                self._emit(TextReady(self.task_uuid, text))
        return len(self._texts) >= self.expected

    def add_reply(self, reply: NewUploadedImageUUID | PreProcessControlNetResult) -> None:
        """Record the image an upload or preprocessing reply names."""
        if not self._images:
            self._images = [GeneratedImage.from_reply(reply)]

    def add_progress(self, progress: Progress) -> None:
        """Record a progress step (the protocol's event is the public one)."""
        self._event_log()
        self._emit(progress)

    def finish(self, endpoint: str | None) -> TaskResult:
        """Complete the task with what it received."""
        result = TaskResult(
            self.task_uuid, self.task, self.images, tuple(self._texts or ()), endpoint
        )
        self._result = result
        if self._log is not None:
            self._log.append(TaskDone(result))
        self._settle()
        return result

    def fail(self, error: OrchestratorError) -> None:
        """Fail the task with ``error``."""
        self._error = error
        if self._log is not None:
            self._log.append(TaskFailed(self.task_uuid, error))
        self._settle()

    def _settle(self) -> None:
        for timer in (self.deadline, self.retry):
            if timer is not None:
                timer.cancel()
        # A timer refers to this handle: dropping the timers breaks the cycle, so a
        # finished handle is freed by reference counting, not by the cyclic collector.
        self.deadline = self.retry = None
        self._wake()
        callbacks, self._on_done = self._on_done, None
        for callback in callbacks or ():
            callback(self)

    def _event_log(self) -> list[Event]:
        # Events are kept only once someone streams them (or a progress event, which
        # nothing else records, arrives); until then the log is rebuilt from the results.
        if self._log is None:
            log: list[Event] = [ImageReady(self.task_uuid, i) for i in self._images or ()]
            log += [TextReady(self.task_uuid, t) for t in self._texts or ()]
            if self._result is not None:
                log.append(TaskDone(self._result))
            elif self._error is not None:
                log.append(TaskFailed(self.task_uuid, self._error))
            self._log = log
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
        waiter = self._waiter()
        try:
            await waiter
        finally:
            self._unwait(waiter)

    def _waiter(self) -> asyncio.Future[None]:
        """A future the next change resolves. Pass it to :meth:`_unwait` once awaited."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = waiter
        elif isinstance(waiters, list):
            waiters.append(waiter)
        else:
            self._waiters = [waiters, waiter]
        return waiter

    def _unwait(self, waiter: asyncio.Future[None]) -> None:
        if self._waiters is not None:  # cancelled before a wake: leave nothing behind
            self._forget_waiter(waiter)

    def _forget_waiter(self, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters
        if waiters is waiter:
            self._waiters = None
        elif isinstance(waiters, list) and waiter in waiters:
            waiters.remove(waiter)


class _Owner(Protocol):
    def cancel(self, handle: TaskHandle, error: OrchestratorError) -> None: ...
