"""The transport seam: how the orchestrator opens a socket and moves frames.

This is the only client-side module that imports websockets. Anything with the
:class:`Transport` shape can stand in for it; ``orchestrator.testing`` ships an
in-memory one. Exceptions from below are translated here, once:
:class:`~orchestrator.errors.ConnectError` while opening,
:class:`~orchestrator.errors.ConnectionClosed` afterwards.
"""

from __future__ import annotations

from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidURI

from .errors import ConnectError, ConnectionClosed

__all__ = ["Stream", "Transport", "WebSocketTransport"]


class Stream(Protocol):
    """One open socket carrying whole frames."""

    async def send(self, frame: bytes) -> None:
        """Send one text frame. Raises ConnectionClosed."""
        ...

    async def receive(self) -> bytes | str:
        """Return the next frame. Raises ConnectionClosed."""
        ...

    async def aclose(self) -> None:
        """Close the socket; never raises."""
        ...


class Transport(Protocol):
    """Opens streams to endpoints."""

    async def connect(self, url: str, *, max_frame: int, compression: bool) -> Stream:
        """Open a stream to ``url``. Raises ConnectError."""
        ...


class _WebSocketStream:
    __slots__ = ("_ws",)

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame, text=True)
        except WsConnectionClosed as exc:
            raise ConnectionClosed(f"connection closed: {exc}") from exc

    async def receive(self) -> bytes | str:
        try:
            return await self._ws.recv(decode=False)
        except WsConnectionClosed as exc:
            raise ConnectionClosed(f"connection closed: {exc}") from exc

    async def aclose(self) -> None:
        await self._ws.close()


class WebSocketTransport:
    """WebSocket streams (websockets' asyncio client), without its own keepalive pings:
    the orchestrator's protocol-level heartbeat decides when a socket is dead."""

    def __init__(self, *, close_timeout: float = 1.0, max_queue: int = 64) -> None:
        self._close_timeout = close_timeout
        self._max_queue = max_queue

    async def connect(self, url: str, *, max_frame: int, compression: bool) -> Stream:
        """Open a WebSocket to ``url`` (``ws://`` or ``wss://``)."""
        try:
            ws = await connect(
                url,
                max_size=max_frame,
                max_queue=self._max_queue,
                compression="deflate" if compression else None,
                ping_interval=None,
                open_timeout=None,  # the orchestrator applies Timeouts.connect on its clock
                close_timeout=self._close_timeout,
                proxy=None,
            )
        except (OSError, InvalidHandshake, InvalidURI, WsConnectionClosed) as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        return _WebSocketStream(ws)
