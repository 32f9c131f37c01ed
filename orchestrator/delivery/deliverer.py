"""The orchestrator's deliveries: every finished image, to every sink of its task.

Theory of operation
===================

A task with sinks (the orchestrator's, or its own ``deliver_to``) gets a
:class:`TaskDeliveries` on its handle. Each new image starts one job in the
orchestrator's task group, at once, so an image is on its way while its task still makes
the others. A job:

1. waits for one of ``concurrency`` image slots: the images whose bytes are held, so the
   memory of deliveries is bounded whatever the number of images or the speed of sinks;
2. gets the bytes once (decoding ``imageBase64Data``, else a capped, streamed GET of the
   image's URL), and their sha256 and MD5;
3. stores them in every sink at once, each PUT holding one of ``concurrency`` upload slots
   per attempt (none while it waits to try again), and records a :class:`Delivery` per sink
   on the image, with an ``ImageDelivered`` event, whether it got there or not.

A failed delivery (its sink refused, or retries ran out) is recorded on that image only:
the task's other images and deliveries go on, and the task still completes. The task
completes once every job has ended, so ``result()`` shows where each image went, and its
slot of the in-flight limit is held until then, so a slow sink slows submissions rather
than piling up work. Cancelling the task, or closing the orchestrator, cancels its jobs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio
import httpx
from anyio.abc import TaskGroup

from protocol.requests import upload_url

from ..config import DeliverySettings
from ..errors import UploadError, UsageError
from ..results import Delivery, GeneratedImage
from ..timers import Clock
from .sinks import Payload, Sink, Transfers, sink
from .templates import Placeholders
from .transfer import PutPolicy, fetch, http_client
from .types import dimensions, sniff

__all__ = ["Deliverer", "TaskDeliveries"]

log = logging.getLogger("orchestrator.delivery")


class _Handle(Protocol):
    task_uuid: str

    def record_delivery(self, image: GeneratedImage, delivery: Delivery) -> None: ...

    def finish(self, endpoint: str | None) -> object: ...

    def cancel(self) -> None: ...


class Deliverer:
    """Sinks, limits and the HTTP client of one orchestrator's deliveries.

    Args:
        sinks: where every task's images go unless the task says otherwise.
        settings: concurrency, retries, timeouts (``Config.delivery``).
        clock, rng: the waits between attempts, and their jitter.
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        sinks: Iterable[str | os.PathLike[str] | Sink],
        settings: DeliverySettings,
        *,
        clock: Clock,
        rng: random.Random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._parsed: dict[str, Sink] = {}
        self.sinks = self.resolve(sinks)
        self._settings = settings
        self._clock = clock
        self._rng = rng
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tg: TaskGroup | None = None
        self._images = anyio.CapacityLimiter(settings.concurrency)
        self._uploads = anyio.CapacityLimiter(settings.concurrency)
        self._live: set[TaskDeliveries] = set()

    def resolve_defaults(self, targets: Iterable[str | os.PathLike[str] | Sink]) -> None:
        """Set the sinks every task's images go to unless the task says otherwise."""
        self.sinks = self.resolve(targets)

    def resolve(self, targets: Iterable[str | os.PathLike[str] | Sink]) -> tuple[Sink, ...]:
        """Sinks from their string forms, each built (and checked) once."""
        out = []
        for target in targets:
            if isinstance(target, Sink):
                out.append(target)
                continue
            key = str(target)
            if key not in self._parsed:
                self._parsed[key] = sink(target)
            out.append(self._parsed[key])
        return tuple(out)

    def start(self, tg: TaskGroup) -> None:
        """Run jobs in ``tg`` (the orchestrator's)."""
        self._tg = tg

    def close(self) -> None:
        """Cancel every task's jobs (a task waiting for them fails with TaskCancelled)."""
        for deliveries in list(self._live):
            deliveries.close()

    async def aclose(self) -> None:
        """:meth:`close`, and close the HTTP client."""
        self.close()
        if self._client is not None:
            await self._client.aclose()

    @property
    def uploads_in_flight(self) -> int:
        """PUTs under way now (at most ``concurrency``)."""
        return int(self._uploads.borrowed_tokens)

    def for_task(
        self,
        handle: _Handle,
        own: Sequence[str | os.PathLike[str] | Sink] | None,
        metadata: Mapping[str, Any] | None,
        upload_endpoint: str | None,
    ) -> TaskDeliveries | None:
        """The deliveries of a task being submitted, or None when it has none to make.

        Raises UsageError (naming the sink) when a template uses a name the task's
        metadata does not give: before anything is sent."""
        sinks = self.sinks if own is None else self.resolve(own)
        metadata = dict(metadata or {})
        for target in sinks:
            target.template.check_metadata(metadata)
        if not sinks and upload_endpoint is None:
            return None
        return TaskDeliveries(self, handle, sinks, metadata, upload_endpoint)

    # -- jobs --

    def _spawn(self, deliveries: TaskDeliveries, image: GeneratedImage, index: int) -> None:
        if self._tg is None:
            raise UsageError("deliveries need a running orchestrator")
        self._live.add(deliveries)
        self._tg.start_soon(self._job, deliveries, image, index)

    async def _job(self, deliveries: TaskDeliveries, image: GeneratedImage, index: int) -> None:
        scope = anyio.CancelScope()
        deliveries.scopes.add(scope)
        try:
            with scope:
                if not deliveries.cancelled:
                    await self._deliver(deliveries, image, index)
        except Exception:  # a bug must not take the orchestrator's task group down
            log.exception("delivery of image %s failed unexpectedly", image.image_uuid)
        finally:
            deliveries.scopes.discard(scope)
            deliveries.job_ended()
            if not deliveries.pending:
                self._live.discard(deliveries)

    async def _deliver(self, deliveries: TaskDeliveries, image: GeneratedImage, index: int) -> None:
        async with self._images:
            try:
                data = await self._bytes(image)
            except UploadError as exc:
                for target in deliveries.sinks:
                    error = UploadError(
                        f"{target.label}: {exc}", exc.status_code, sink=target.label
                    )
                    deliveries.report(image, Delivery(target.label, "", 0, "", 0, error))
                return
            ext, content_type = sniff(data, image.url)
            digest = hashlib.sha256(data).hexdigest()
            size = dimensions(data) or (None, None)
            payload = Payload(data, content_type, digest, hashlib.md5(data).digest(), *size)
            where = Placeholders(
                image.task_uuid, image.image_uuid, index, image.seed, ext, deliveries.metadata
            )
            async with anyio.create_task_group() as tg:
                for target in deliveries.sinks:
                    tg.start_soon(self._store, deliveries, image, target, payload, where)

    async def _store(
        self,
        deliveries: TaskDeliveries,
        image: GeneratedImage,
        target: Sink,
        payload: Payload,
        where: Placeholders,
    ) -> None:
        size, digest = len(payload.data), payload.sha256
        shape = payload.width, payload.height
        try:
            location, attempts = await target.store(payload, where, self._transfers())
        except UploadError as exc:
            if exc.sink is None:
                exc.sink = target.label
            record = Delivery(target.label, "", size, digest, exc.attempts, exc, *shape)
        except Exception as exc:  # a sink's bug or a local failure: this delivery only
            log.exception("sink %s failed on image %s", target.label, image.image_uuid)
            error = UploadError(f"{target.label}: {type(exc).__name__}: {exc}", sink=target.label)
            record = Delivery(target.label, "", size, digest, 1, error, *shape)
        else:
            record = Delivery(target.label, location, size, digest, attempts, None, *shape)
        deliveries.report(image, record)

    async def _bytes(self, image: GeneratedImage) -> bytes:
        inline = image.data()
        if inline is not None:
            return inline
        settings = self._settings
        return await fetch(self._http(), image.url, settings.max_image_bytes, settings.timeout)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = http_client(self._transport, self._settings.concurrency)
        return self._client

    def _transfers(self) -> Transfers:
        s = self._settings
        policy = PutPolicy(s.attempts, s.backoff, s.retry_after_cap, s.timeout)
        return Transfers(self._http(), policy, self._clock, self._rng, self._uploads)


class TaskDeliveries:
    """One task's deliveries: its sinks and metadata, and its jobs (see the module doc)."""

    __slots__ = (
        "_deliverer",
        "_handle",
        "sinks",
        "metadata",
        "upload_endpoint",
        "pending",
        "scopes",
        "cancelled",
        "_endpoint",
        "_held",
    )

    def __init__(
        self,
        deliverer: Deliverer,
        handle: _Handle,
        sinks: tuple[Sink, ...],
        metadata: dict[str, Any],
        upload_endpoint: str | None,
    ) -> None:
        self._deliverer = deliverer
        self._handle = handle
        self.sinks = sinks
        self.metadata = metadata
        self.upload_endpoint = upload_endpoint
        self.pending = 0  # jobs started and not ended
        self.scopes: set[anyio.CancelScope] = set()
        self.cancelled = False
        self._endpoint: str | None = None
        self._held = False  # the task completed on the wire and waits for its jobs

    def image(self, image: GeneratedImage, index: int) -> None:
        """A new image of the task: record the server's push, start its deliveries."""
        if self.upload_endpoint is not None:
            ext = sniff(b"", image.url)[0]
            image.uploaded_to = upload_url(
                self.upload_endpoint,
                task_uuid=image.task_uuid,
                image_uuid=image.image_uuid,
                index=index,
                ext="jpg" if ext == "bin" else ext,
            )
        if self.sinks and not self.cancelled:
            self.pending += 1
            self._deliverer._spawn(self, image, index)

    def hold(self, endpoint: str | None) -> bool:
        """The task completed on the wire: whether it must wait for its jobs (it is then
        finished again, with ``endpoint``, when the last one ends)."""
        if self.pending and not self.cancelled:
            self._held, self._endpoint = True, endpoint
            return True
        self._held = False
        return False

    @property
    def holding(self) -> bool:
        """Whether the task waits, complete on the wire, for its deliveries."""
        return self._held

    def report(self, image: GeneratedImage, delivery: Delivery) -> None:
        """A delivery of ``image`` ended."""
        if not self.cancelled:
            self._handle.record_delivery(image, delivery)

    def job_ended(self) -> None:
        """A job ended; the last one finishes a held task."""
        self.pending -= 1
        if not self.pending and self._held and not self.cancelled:
            self._held = False
            self._handle.finish(self._endpoint)

    def close(self) -> None:
        """The orchestrator is closing: cancel the task if it waits for its jobs (which
        cancels them), else just the jobs."""
        if self._held:
            self._handle.cancel()
        self.cancel()

    def cancel(self) -> None:
        """Stop every job of the task (it was cancelled or failed)."""
        self.cancelled, self._held = True, False
        for scope in list(self.scopes):
            scope.cancel()
