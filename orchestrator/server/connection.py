"""One client socket of the reference server: its session and an outbox a writer drains.

The server decides synchronously and queues frames here; the writer coroutine does the I/O,
so a slow reader delays only itself. Frames that cannot be written (the socket died) are
reported by task, so the session knows which results to replay on a resume.

Bounds. Until the socket authenticates, frames larger than ``max_frame_before_auth`` close
it (1009) before their payload is read. The outbox is bounded in bytes: past
``outbox_soft`` the session is *congested* (``on_congested(True)``: the scheduler stops
starting its tasks) until the writer drains it below half of that; past ``outbox_hard``
the socket is dropped and what it held is reported lost, so a client that never reads
costs the server a bounded amount, and its session resumes later with nothing lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from websockets.exceptions import ConnectionClosed

from protocol.codec import encode

from .spawn import Spawner
from .state import ServerSession, error_message
from .wire import WireConnection

__all__ = ["Connection"]

log = logging.getLogger("orchestrator.server")


#: Bytes of frames the writer hands the socket in one write, at most (one frame may be more).
BATCH_BYTES: Final = 1 << 20
#: Frames held behind one whose handling awaits I/O, past which the socket stops reading.
BACKLOG_FRAMES: Final = 64

#: What handles a frame: ``None`` when done at once, else what must be awaited to finish it.
FrameHandler = Callable[[bytes], Awaitable[None] | None]


def _ignore(task_uuid: str) -> None:
    pass


class Connection:
    """One socket: its session once authenticated, and an outbox its writer drains."""

    def __init__(
        self,
        ws: WireConnection,
        *,
        max_frame: int,
        max_frame_before_auth: int,
        outbox_soft: int,
        outbox_hard: int,
    ) -> None:
        self.ws = ws
        self.session: ServerSession | None = None
        self.authenticated = False  # once true, stays true (a resume elsewhere detaches)
        self.dead = False
        self.overflowed = False
        self.on_lost: Callable[[str], None] = _ignore
        self.on_congested: Callable[[bool], None] = lambda congested: None
        # The socket's dialect (legacy, runware): None until its first frame; for runware,
        # what turns each frame the server sends into that dialect (None: it has none).
        self.dialect: str | None = None
        self.translate: Callable[[bytes], bytes | None] | None = None
        self._outbox: deque[tuple[str | None, bytes]] = deque()
        self._queued = 0  # bytes in the outbox
        self._congested = False
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._max_frame = max_frame
        self._outbox_soft = outbox_soft
        self._outbox_hard = outbox_hard
        ws.protocol.max_message_size = max_frame_before_auth  # checked per frame header
        self._on_frame: FrameHandler | None = None
        self._backlog: deque[bytes] | None = None  # while a frame's handling awaits
        self._spawner: Spawner | None = None

    @property
    def congested(self) -> bool:
        """Whether the outbox is past its soft bound (and not yet drained below half)."""
        return self._congested

    def attach(self, session: ServerSession) -> None:
        """The socket authenticated as ``session``: full-size frames are allowed from now."""
        self.session = session
        self.authenticated = True
        self.ws.protocol.max_message_size = self._max_frame

    # -- reading --

    def read(self, on_frame: FrameHandler, spawner: Spawner) -> None:
        """Hand each frame to ``on_frame``, in order, as it is parsed. A frame whose
        handling awaits I/O (``on_frame`` returns an awaitable, run through ``spawner``:
        frames are parsed in the socket's callback, where no task can start) holds back
        the frames after it, and past BACKLOG_FRAMES the socket stops reading."""
        self._on_frame, self._spawner = on_frame, spawner
        self.ws.read_into(self._receive)

    def _receive(self, frame: bytes) -> None:
        if self._backlog is not None:
            self._backlog.append(frame)
            if len(self._backlog) == BACKLOG_FRAMES:
                self.ws.transport.pause_reading()
            return
        later = self._handle(frame)
        if later is not None:
            assert self._spawner is not None
            self._backlog = deque()
            self._spawner.start_soon(self._catch_up, later)

    def _handle(self, frame: bytes) -> Awaitable[None] | None:
        assert self._on_frame is not None
        try:
            return self._on_frame(frame)
        except Exception:  # a bug must cost this socket, never the server's loop
            log.exception("a frame broke the server: closing its socket")
            self.close(1011, "internal error")
            return None

    async def _catch_up(self, later: Awaitable[None]) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            await later
            while backlog:
                later_too = self._handle(backlog.popleft())
                if later_too is not None:
                    await later_too
        finally:
            self._backlog = None
            self.ws.transport.resume_reading()  # a no-op unless paused

    # -- writing --

    def send(self, frame: bytes, task_uuid: str | None = None) -> None:
        """Queue a frame; ``task_uuid`` names the task whose results it carries."""
        if self.translate is not None:
            translated = self.translate(frame)
            if translated is None:
                return
            frame = translated
        if self.dead:
            if task_uuid is not None:
                self.on_lost(task_uuid)
            return
        self._outbox.append((task_uuid, frame))
        self._queued += len(frame)
        if self._queued > self._outbox_hard and len(self._outbox) > 1:  # one big frame may go
            self._overflow()
            return
        if not self._congested and self._queued > self._outbox_soft:
            self._congested = True
            self.on_congested(True)
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

    def _overflow(self) -> None:
        # The peer does not read: drop the socket now (a close handshake would need it to
        # read), and report what the outbox held, for the session's resume to replay.
        log.warning("a client read too slowly (%d bytes waiting): dropping it", self._queued)
        self.overflowed = True
        self._lose_outbox()
        self._close = (1008, "")
        self.ws.transport.abort()
        self._wake.set()

    def _lose_outbox(self) -> None:
        self.dead = True
        for task_uuid, _ in self._outbox:
            if task_uuid is not None:
                self.on_lost(task_uuid)
        self._outbox.clear()
        self._queued = 0

    def _batch(self) -> list[bytes]:
        # The frames at the front of the outbox, up to BATCH_BYTES (at least one).
        frames: list[bytes] = []
        size = 0
        for _, frame in self._outbox:
            if frames and size + len(frame) > BATCH_BYTES:
                break
            frames.append(frame)
            size += len(frame)
        return frames

    async def write(self) -> None:
        """Drain the outbox until closed; frames that cannot be written are reported lost."""
        try:
            while not self.dead:
                if not self._outbox:
                    if self._close is not None:
                        await self.ws.close(*self._close)
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                frames = self._batch()
                await self.ws.send_batch(frames)
                for frame in frames:  # written: they are no longer the outbox's to report
                    self._outbox.popleft()
                    self._queued -= len(frame)
                if self._congested and self._queued <= self._outbox_soft // 2:
                    self._congested = False
                    self.on_congested(False)
        except ConnectionClosed:
            pass
        finally:
            self._lose_outbox()
