"""The transport seam: how the orchestrator opens a socket and moves frames.

This is the only client-side module that imports websockets. Anything with the
:class:`Transport` shape can stand in for it; ``orchestrator.testing`` ships an
in-memory one. Exceptions from below are translated here, once:
:class:`~orchestrator.errors.ConnectError` while opening,
:class:`~orchestrator.errors.ConnectionClosed` afterwards.

Streams move frames in batches: ``send`` takes every frame a connection queued
since its last write, ``receive`` returns every frame that arrived since the
last read. With thousands of tasks in flight a batch holds hundreds of frames,
and the costs that are per call (a system call, a task wake-up) are paid once
per batch instead of once per frame.

:class:`WebSocketTransport` drives websockets' sans-I/O ``ClientProtocol`` from
an asyncio protocol: bytes from the socket are parsed into frames as they
arrive (no task wakes up per frame), and a batch of frames goes out in one
write. websockets checks the handshake, masks, fragments, answers WebSocket
pings and runs the closing handshake; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Sequence
from typing import Protocol

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, InvalidURI
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from .errors import ConnectError, ConnectionClosed

__all__ = ["Stream", "Transport", "WebSocketTransport"]


class Stream(Protocol):
    """One open socket carrying whole frames, in batches."""

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send text frames, in order. Raises ConnectionClosed."""
        ...

    def send_now(self, frame: bytes) -> bool:
        """Write one text frame at once, if that is cheap: the socket is open and keeping
        up, and (where batching pays) nothing was written by this call yet in the current
        turn of the event loop. ``False``: nothing was sent; give it to :meth:`send`.

        Every frame written at once skips a wait for the writer's turn (a lone task's
        latency); the frames after it in the same turn still go out together."""
        ...

    async def receive(self) -> list[bytes]:
        """Wait for at least one frame; return every frame received so far, in order.
        Raises ConnectionClosed once the socket is gone and every frame was returned."""
        ...

    async def aclose(self) -> None:
        """Close the socket; never raises."""
        ...


class Transport(Protocol):
    """Opens streams to endpoints."""

    async def connect(self, url: str, *, max_frame: int, compression: bool) -> Stream:
        """Open a stream to ``url``. Raises ConnectError."""
        ...


class WebSocketTransport:
    """WebSocket streams (``ws://`` and ``wss://``), without WebSocket keepalive pings:
    the orchestrator's protocol-level heartbeat decides when a socket is dead.

    Args:
        close_timeout: seconds to wait for the server to finish the closing handshake.
        read_high_water: bytes of received frames not yet taken that pause reading.
        ssl: the TLS context for ``wss://`` (default: the system's trusted roots).
    """

    def __init__(
        self,
        *,
        close_timeout: float = 1.0,
        read_high_water: int = 16 * 2**20,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self._close_timeout = close_timeout
        self._read_high_water = read_high_water
        self._ssl = ssl

    async def connect(self, url: str, *, max_frame: int, compression: bool) -> Stream:
        """Open a WebSocket to ``url`` and finish its opening handshake."""
        try:
            uri = parse_uri(url)
        except InvalidURI as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        protocol = ClientProtocol(
            uri,
            extensions=enable_client_permessage_deflate(None) if compression else None,
            max_size=max_frame,
        )
        loop = asyncio.get_running_loop()
        link = _Link(protocol, loop, self._close_timeout, self._read_high_water)
        tls = (self._ssl or ssl_module.create_default_context()) if uri.secure else None
        try:
            await loop.create_connection(lambda: link, uri.host, uri.port, ssl=tls)
            await link.opened
        except OSError as exc:
            link.abort()
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        except BaseException:  # a connect timeout cancels us: leave no socket behind
            link.abort()
            raise
        return link


class _Link(asyncio.Protocol):
    """One WebSocket: an asyncio protocol around websockets' sans-I/O client."""

    def __init__(
        self,
        ws: ClientProtocol,
        loop: asyncio.AbstractEventLoop,
        close_timeout: float,
        read_high_water: int,
    ) -> None:
        self._ws = ws
        self._loop = loop
        self._close_timeout = close_timeout
        self._high_water = read_high_water
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._frames: list[bytes] = []
        self._fragments: list[bytes] = []
        self._buffered = 0
        self._reading_paused = False
        self._receiver: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed: str | None = None  # why the socket is gone
        self._close_code: int | None = None  # the server's close code, if it sent one
        self._abort_later: asyncio.TimerHandle | None = None
        self._corked = False  # send_now wrote this turn: later frames wait to go together

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        events = ws.events_received()
        self._flush()  # pongs to WebSocket pings, the close echo
        for event in events:
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Response):
                self._on_response()
        if ws.close_expected():
            self._close_soon()
        if self._frames:
            self._wake_receiver()
            if self._buffered > self._high_water and not self._reading_paused:
                self._reading_paused = True
                self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        self._flush()
        return False  # asyncio closes the socket; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        rcvd = self._ws.close_rcvd
        self._close_code = rcvd.code if rcvd is not None else None
        if rcvd is not None:
            reason = f" by the server ({rcvd.code} {rcvd.reason or ''})".rstrip() + reason
        self._closed = f"connection closed{reason}"
        if not self.opened.done():
            self.opened.set_exception(ConnectError(f"connection lost while opening{reason}"))
            self.opened.exception()  # retrieved: nobody may be waiting any more
        if not self._lost.done():
            self._lost.set_result(None)
        if self._abort_later is not None:
            self._abort_later.cancel()
        self._wake_receiver()
        self._wake_sender()

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_sender()

    # -- the Stream --

    def send_now(self, frame: bytes) -> bool:
        if self._corked or self._closed is not None or self._drained is not None:
            return False
        try:
            self._ws.send_text(frame)
        except InvalidState:  # a close frame already went out
            return False
        self._flush()
        self._corked = True
        self._loop.call_soon(self._uncork)
        return True

    def _uncork(self) -> None:
        self._corked = False

    async def send(self, frames: Sequence[bytes]) -> None:
        if self._closed is not None:
            raise ConnectionClosed(self._closed, self._close_code)
        ws = self._ws
        try:
            for frame in frames:
                ws.send_text(frame)
        except InvalidState as exc:  # a close frame already went out
            raise ConnectionClosed(f"connection closing: {exc}") from exc
        self._flush()
        if self._drained is not None:  # the socket's buffer is full: wait until it drains
            await self._drained
            if self._closed is not None:
                raise ConnectionClosed(self._closed, self._close_code)

    async def receive(self) -> list[bytes]:
        while not self._frames:
            if self._closed is not None:
                raise ConnectionClosed(self._closed, self._close_code)
            self._receiver = self._loop.create_future()
            try:
                await self._receiver
            finally:
                self._receiver = None
        frames, self._frames = self._frames, []
        self._buffered = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return frames

    async def aclose(self) -> None:
        if self._transport is None or self._lost.done():
            return
        try:
            self._ws.send_close(1000)
        except InvalidState:
            pass  # closing already, or never opened
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), self._close_timeout)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the socket at once."""
        if self._transport is not None:
            self._transport.abort()

    # -- inside --

    def _on_response(self) -> None:
        if self.opened.done():
            return
        error = self._ws.handshake_exc
        if error is None:
            self.opened.set_result(None)
        else:
            self.opened.set_exception(ConnectError(f"WebSocket handshake refused: {error}"))

    def _on_frame(self, frame: Frame) -> None:
        opcode, data = frame.opcode, bytes(frame.data)  # bytes already: no copy
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._frames.append(data)
            else:
                self._fragments = [data]
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                self._frames.append(b"".join(self._fragments))
                self._fragments = []
        else:
            return  # ping, pong and close are websockets' business
        self._buffered += len(data)

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._ws.data_to_send()  # nowhere to go
            return
        chunks = self._ws.data_to_send()
        if not chunks:
            return
        if chunks[-1] == b"":  # end of stream: the closing handshake is over
            chunks.pop()
            if chunks:
                transport.write(b"".join(chunks))
            if transport.can_write_eof():
                transport.write_eof()
            return
        transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _close_soon(self) -> None:
        # The server closes the TCP connection after a closing handshake; if it does not,
        # drop it ourselves.
        if self._abort_later is None:
            self._abort_later = self._loop.call_later(self._close_timeout, self.abort)

    def _wake_receiver(self) -> None:
        if self._receiver is not None and not self._receiver.done():
            self._receiver.set_result(None)

    def _wake_sender(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
