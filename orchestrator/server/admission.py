"""What the reference server checks before it accepts a task: limits, targets, images.

Every check is decided from what the server holds now, and a refusal is an
``(errorId, message)`` pair that names the field and the rule; a refused task leaves no
record, so the client may send it again later.
"""

from __future__ import annotations

from protocol import NewTask, TaskRequest
from protocol.requests import ImageReference, prompt_of, upload_endpoint
from protocol.tables import ErrorId

from .backends import SourceImage
from .config import ServerConfig
from .push import Pusher, PushError
from .state import ServerSession
from .store import ImageStore

__all__ = ["Admission", "Refusal"]

Refusal = tuple[int, str]  # (errorId, errorMessage)


class Admission:
    """The checks of :meth:`Scheduler.accept <.scheduler.Scheduler.accept>`."""

    def __init__(self, config: ServerConfig, store: ImageStore, pusher: Pusher) -> None:
        self._config = config
        self._store = store
        self._pusher = pusher

    def refusal(
        self,
        session: ServerSession,
        task: TaskRequest,
        refs: tuple[ImageReference, ...],
        active_total: int,
        *,
        closing: bool,
    ) -> Refusal | None:
        """Why the server will not queue ``task`` (which reads ``refs``) now, if it will not."""
        limits = self._config.limits
        if closing:
            return ErrorId.SERVER_SHUTTING_DOWN, "the server is stopping"
        prompt = prompt_of(task)
        if prompt is not None and len(prompt[1]) > limits.max_prompt_length:
            rule = f"must be at most {limits.max_prompt_length} characters on this server"
            return ErrorId.LIMIT_EXCEEDED, f"{prompt[0]}: {rule} (got {len(prompt[1])})"
        urls = sum(1 for ref in refs if ref.is_url)
        if urls > limits.max_fetched_images:
            rule = f"at most {limits.max_fetched_images} images by URL per task on this server"
            return ErrorId.LIMIT_EXCEEDED, f"guideImageUrl: {rule} (got {urls})"
        if isinstance(task, NewTask) and task.number_results > limits.max_number_results:
            rule = f"must be at most {limits.max_number_results} on this server"
            return ErrorId.LIMIT_EXCEEDED, f"numberResults: {rule} (got {task.number_results})"
        if len(session.active) >= limits.max_queued_per_connection:
            bound = limits.max_queued_per_connection
            return ErrorId.QUEUE_FULL, f"this session already has {bound} tasks queued"
        if active_total >= limits.max_queued_total:
            return (
                ErrorId.QUEUE_FULL,
                f"the server already has {limits.max_queued_total} tasks queued",
            )
        return None

    async def check_upload(self, task: TaskRequest) -> Refusal | None:
        """Why ``task``'s ``uploadEndpoint`` may not be reached, if it may not."""
        url = upload_endpoint(task)
        if url is None:
            return None
        try:
            await self._pusher.check(url)
        except PushError as exc:
            return ErrorId.VALIDATION_ERROR, f"uploadEndpoint: {exc}"
        return None

    def sources(self, refs: tuple[ImageReference, ...]) -> dict[str, SourceImage] | Refusal:
        """The stored images of ``refs`` (a task's) by role; or why not (one is not here).
        Images given by URL are fetched later, before the task queues."""
        sources: dict[str, SourceImage] = {}
        for ref in refs:
            if ref.is_url:
                continue
            stored = self._store.get(ref.value)
            if stored is None:
                return ErrorId.IMAGE_NOT_FOUND, f"{ref.field}: no image {ref.value} on this server"
            sources[ref.role] = SourceImage(stored.uuid, stored.data, stored.format, stored.prompt)
        return sources
