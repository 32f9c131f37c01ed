"""One client socket of the reference server: its session and an outbox a writer drains.

The server decides synchronously and queues frames here; the writer coroutine does the I/O,
so a slow reader delays only itself. Frames that cannot be written (the socket died) are
reported by task, so the session knows which results to replay on a resume.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from protocol.codec import encode

from .state import ServerSession, error_message

__all__ = ["Connection"]


class Connection:
    """One socket: its session once authenticated, and an outbox its writer drains."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.session: ServerSession | None = None
        self._outbox: deque[tuple[str | None, bytes]] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self.dead = False
        self.on_lost: Callable[[str], None] = lambda task_uuid: None

    def send(self, frame: bytes, task_uuid: str | None = None) -> None:
        """Queue a frame; ``task_uuid`` names the task whose results it carries."""
        if self.dead:
            if task_uuid is not None:
                self.on_lost(task_uuid)
            return
        self._outbox.append((task_uuid, frame))
        self._wake.set()

    def send_error(self, error_id: int, text: str, task_uuid: str | None = None) -> None:
        """Queue an error frame, in the form the session's extensions ask for."""
        extensions = self.session.extensions if self.session is not None else frozenset()
        self.send(encode(error_message(error_id, text, task_uuid, extensions)))

    def refuse(self, error_id: int, text: str) -> None:
        """Send an error, then close the socket (a refused key or session)."""
        self.send_error(error_id, text)
        self.close(1008, text[:120])

    def close(self, code: int, reason: str) -> None:
        """Close once the frames queued so far are written."""
        if self._close is None:
            self._close = (code, reason)
        self._wake.set()

    async def write(self) -> None:
        """Drain the outbox until closed; frames that cannot be written are reported lost."""
        try:
            while True:
                if not self._outbox:
                    if self._close is not None:
                        await self.ws.close(*self._close)
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self.ws.send(self._outbox[0][1], text=True)
                self._outbox.popleft()
        except ConnectionClosed:
            pass
        finally:
            self.dead = True
            for task_uuid, _ in self._outbox:
                if task_uuid is not None:
                    self.on_lost(task_uuid)
            self._outbox.clear()
