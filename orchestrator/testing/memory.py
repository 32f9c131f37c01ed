"""In-memory sockets, and the transport that opens them to servers in memory."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import ConnectError, ConnectionClosed
from ..transport import Stream

__all__ = ["Acceptor", "Endpoint", "MemoryTransport", "socket_pair"]


class _Pipe:
    """One direction of an in-memory socket."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[bytes](math.inf)


class Endpoint:
    """One side of an in-memory socket."""

    def __init__(
        self,
        outgoing: MemoryObjectSendStream[bytes],
        incoming: MemoryObjectReceiveStream[bytes],
        close_code: list[int | None],
    ) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._close_code = close_code  # shared by both ends: the code a close was sent with

    async def send(self, frames: Sequence[bytes]) -> None:
        try:
            for frame in frames:
                self._outgoing.send_nowait(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionClosed("the memory socket is closed") from exc
        await anyio.lowlevel.checkpoint()

    def send_now(self, frame: bytes) -> bool:
        # Nothing to batch in memory: every frame may go at once.
        try:
            self._outgoing.send_nowait(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    async def receive(self) -> list[bytes]:
        try:
            frames = [await self._incoming.receive()]
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            code = self._close_code[0]
            raise ConnectionClosed("the memory socket is closed", code) from exc
        while True:  # and whatever else already arrived, like a socket's read
            try:
                frames.append(self._incoming.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return frames

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def close(self, code: int | None = None) -> None:
        if code is not None and self._close_code[0] is None:
            self._close_code[0] = code
        self._outgoing.close()
        self._incoming.close()


def socket_pair() -> tuple[Endpoint, Endpoint]:
    """Two connected ends of an in-memory socket: (client's, server's)."""
    up, down = _Pipe(), _Pipe()
    code: list[int | None] = [None]
    return Endpoint(up.send, down.receive, code), Endpoint(down.send, up.receive, code)


class Acceptor(Protocol):
    """A server in memory (:class:`~orchestrator.testing.FakeServer`)."""

    def accept(self) -> Stream:
        """Open a socket to it; raises ConnectError when it refuses."""
        ...


class MemoryTransport:
    """Connects to in-memory servers: one for every URL, or one per URL."""

    def __init__(self, servers: Acceptor | Mapping[str, Acceptor]) -> None:
        self._servers = servers

    async def connect(self, url: str, *, max_frame: int, compression: bool) -> Stream:
        """Open an in-memory socket to the server for ``url``."""
        servers = self._servers
        server = servers.get(url) if isinstance(servers, Mapping) else servers
        if server is None:
            raise ConnectError(f"no fake server at {url}")
        return server.accept()
