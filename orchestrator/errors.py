"""The exception tree. Everything the orchestrator raises is importable from ``orchestrator``.

::

    OrchestratorError
    ├── ProtocolError                 a frame broke the protocol (protocol.errors)
    │   ├── LocalProtocolError        ...one we were about to send: bad input, nothing sent
    │   └── RemoteProtocolError       ...one the server sent
    ├── UsageError                    the API was used the wrong way
    │   └── InvalidState              ...e.g. submitting to a closed orchestrator
    ├── AuthenticationError           the server refused the key (errorId 19): fatal, never
    │                                 retried; every task fails with it
    ├── TransportError                the network or the socket failed (retried after backoff)
    │   ├── ConnectError              ...opening a connection failed
    │   └── ConnectionClosed          ...an open connection went away
    ├── OrchestratorTimeout           also a built-in TimeoutError
    │   ├── ConnectTimeout            ...also a ConnectError
    │   ├── HeartbeatTimeout          ...pongs stopped coming: a half-open socket
    │   └── TaskTimeout               ...a task passed its deadline; also a TaskError
    ├── TaskError                     a task did not complete
    │   ├── RemoteTaskError           ...the server sent an error frame naming it
    │   ├── TaskRejected              ...the server closed the socket on its frame, again
    │   ├── TaskCancelled             ...it was cancelled, or the orchestrator closed
    │   └── TaskTimeout
    └── UploadError                   pushing a finished binary failed (status_code)

Third-party exceptions (websockets, OS errors) are translated in
``orchestrator.transport`` only, with ``raise ... from exc``.
"""

from __future__ import annotations

from protocol.errors import (
    FieldError,
    InvalidState,
    LocalProtocolError,
    OrchestratorError,
    ProtocolError,
    RemoteProtocolError,
    UsageError,
)
from protocol.tables import ERRORS, is_retryable

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "FieldError",
    "HeartbeatTimeout",
    "InvalidState",
    "LocalProtocolError",
    "OrchestratorError",
    "OrchestratorTimeout",
    "ProtocolError",
    "RemoteProtocolError",
    "RemoteTaskError",
    "TaskCancelled",
    "TaskError",
    "TaskRejected",
    "TaskTimeout",
    "TransportError",
    "UploadError",
    "UsageError",
]


class TransportError(OrchestratorError):
    """The network or the socket failed."""


class ConnectError(TransportError):
    """Opening a connection (TCP, WebSocket handshake or ``newConnection``) failed."""


class AuthenticationError(OrchestratorError):
    """The server refused the API key (errorId 19). Fatal: never retried.

    Attributes:
        error_id: the server's errorId (19).
        error_message: the server's message.
    """

    def __init__(self, error_id: int, error_message: str) -> None:
        super().__init__(f"authentication failed (errorId {error_id}): {error_message}")
        self.error_id = error_id
        self.error_message = error_message


class ConnectionClosed(TransportError):
    """An open connection went away.

    Attributes:
        code: the close code the server sent (1009: a frame was too big), if it sent one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class OrchestratorTimeout(OrchestratorError, TimeoutError):
    """Something took longer than its configured timeout."""


class ConnectTimeout(OrchestratorTimeout, ConnectError):
    """The connection was not open and authenticated within ``Timeouts.connect``."""


class HeartbeatTimeout(OrchestratorTimeout, ConnectionClosed):
    """The server stopped answering pings: the socket is taken as dead (half-open)."""


class TaskError(OrchestratorError):
    """A task did not complete.

    Attributes:
        task_uuid: the task's taskUUID.
    """

    def __init__(self, message: str, task_uuid: str) -> None:
        super().__init__(message)
        self.task_uuid = task_uuid


class RemoteTaskError(TaskError):
    """The server sent an error frame for the task.

    Attributes:
        error_id: the server's errorId, kept as it is even when unknown.
        error_message: the server's errorMessage.
        error_code: the stable name (``taskErrors`` extension or our table), if known.
    """

    def __init__(
        self, task_uuid: str, error_id: int, error_message: str, error_code: str | None = None
    ) -> None:
        info = ERRORS.get(error_id)
        code = error_code or (info.code if info is not None else None)
        label = f"errorId {error_id}" + (f" ({code})" if code else "")
        super().__init__(f"task {task_uuid} failed: {label}: {error_message}", task_uuid)
        self.error_id = error_id
        self.error_message = error_message
        self.error_code = code

    @property
    def retryable(self) -> bool:
        """Whether the error table says to send the task again after a backoff (queue
        full, server stopping); the orchestrator already does, until the deadline."""
        return is_retryable(self.error_id)


class TaskRejected(TaskError):
    """The server closed the connection each time the task's frame reached it
    (``Limits.poison_after`` times), or said its frame was too big (close code 1009):
    the task fails alone, and the others on the connection go on."""


class TaskCancelled(TaskError):
    """The task was cancelled: by its caller, or because the orchestrator closed."""


class TaskTimeout(OrchestratorTimeout, TaskError):
    """The task passed its deadline (``Timeouts.task``, or the one given to ``submit``)."""


class UploadError(OrchestratorError):
    """Delivering a finished image failed (or fetching it, or pushing it to an endpoint).

    Attributes:
        status_code: the HTTP status of the last attempt, or None when none was received.
        sink: the sink it was going to (as configured), when there was one.
        attempts: how many attempts were made.
    """

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        sink: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.sink = sink
        self.attempts = attempts
