"""The pool's bookkeeping: a record per task in flight, and the counters.

A :class:`TaskRecord` is what the pool and the connections carry for one admitted task:
its prepared frame, the images it reads, the public handle it feeds, the connection it is
on, its deadline and retry timers. The handle never sees any of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.codec import PreparedTask

from .handle import TaskHandle
from .timers import Timer

__all__ = ["Carrier", "Stats", "TaskRecord"]


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
