"""Which task makes a server close the socket: the suspects of a close, and the frame limit.

A server that cannot take a task's frame often closes the socket instead of answering
(over its frame limit: close code 1009; or a crash on that input). Resending everything
on the next socket would take every other task down with it, again and again. So:

1. A close with code 1009 sets the connection's frame limit below the largest frame sent
   on that socket; tasks over it fail at once (``TaskRejected``), and later ones are
   refused before they are sent.
2. Any other close by the server makes suspects of the tasks whose frame went out on that
   socket within a heartbeat interval before it. One suspect counts a loss against it;
   several are sent one at a time on the next socket, each followed by a ping: the server
   reads in order, so a close before that pong names the task.
3. A task with ``Limits.poison_after`` losses fails alone; the others go on.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConnectionClosed
from .records import TaskRecord

__all__ = ["suspects"]


def suspects(
    records: Iterable[TaskRecord],
    reason: ConnectionClosed,
    *,
    socket: int,
    now: float,
    window: float,
    probing: TaskRecord | None,
    frame_limit: int | None,
) -> list[TaskRecord]:
    """The tasks that may have made the server close socket number ``socket``."""
    if reason.code == 1009 and frame_limit is not None:
        return [r for r in records if len(r.prepared.frame) > frame_limit]
    if probing is not None:  # sent alone: it is the one
        return [probing]
    return [r for r in records if r.sent_on == socket and now - r.sent_at < window]
