"""The pool's bookkeeping: a record per task in flight, and the counters.

A :class:`TaskRecord` is what the pool and the connections carry for one admitted task:
its prepared frame, the images it reads, the public handle it feeds, the connection it is
on, its deadline and retry timers. The handle never sees any of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from protocol.codec import PreparedTask
from protocol.session import Event, FrameRejected, ServerError, UnknownTask

from .handle import TaskHandle
from .timers import Timer

__all__ = ["Carrier", "Stats", "TaskRecord"]

log = logging.getLogger("orchestrator")


class Carrier(Protocol):
    """Where a record is in flight (a connection), as the pool sees it."""

    @property
    def endpoint(self) -> str: ...

    def cancel(self, record: TaskRecord) -> None:
        """Stop carrying a live task (sends ``cancelTask`` when the server accepted it)."""


class TaskRecord:
    """One admitted task, from admission until it finishes, fails or is cancelled."""

    # One per task in flight: slots, and no more objects than the timers it needs.
    __slots__ = (
        "task_uuid",
        "prepared",
        "image_refs",
        "handle",
        "carrier",
        "timeout",
        "deadline",
        "retry",
        "retries",
        "sent_on",
        "sent_at",
        "losses",
    )

    def __init__(
        self, prepared: PreparedTask, image_refs: tuple[str, ...], handle: TaskHandle
    ) -> None:
        self.task_uuid: str = prepared.task_uuid
        self.prepared = prepared
        self.image_refs = image_refs
        self.handle = handle
        self.carrier: Carrier | None = None  # the connection it is in flight on
        self.timeout = 0.0
        self.deadline: Timer | None = None
        self.retry: Timer | None = None
        self.retries = 0
        self.sent_on = 0  # the socket its frame last went out on (Connection.connects)
        self.sent_at = 0.0  # and when
        self.losses = 0  # sockets that closed just after its frame went out

    def __repr__(self) -> str:
        return f"<TaskRecord {self.task_uuid} on={self.carrier!r}>"


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

    def report(self, endpoint: str, event: Event) -> None:
        """Count (and log) a frame that concerns no live task: a late copy, a rejected
        frame, or an error about the connection."""
        if isinstance(event, UnknownTask):
            self.unknown_frames += 1
            log.debug(  # routine after a resume or a failover: late copies of results
                "%s: %s for unknown task %s, dropped", endpoint, event.message, event.task_uuid
            )
        elif isinstance(event, FrameRejected):
            self.rejected_frames += 1
            log.warning("%s: frame rejected: %s", endpoint, event.error)
        elif isinstance(event, ServerError):
            self.server_errors += 1
            log.warning("%s: server error %s: %s", endpoint, event.error_id, event.error_message)
