"""The reference server's sockets: websockets' server connection, read and written in batches.

websockets' asyncio connection hands each message to a ``recv()`` call through a queue, and
writes each frame with its own ``transport.write`` (a ``send`` system call each while the
socket keeps up). The reference server decides what a frame means synchronously, and queues
many result frames per turn of its loop, so :class:`WireConnection` changes both ends, and
nothing else (the handshake, pings, flow control, the closing handshake and every limit stay
websockets'):

- reading: each whole message goes to a callback the moment its frame is parsed, inside
  ``data_received``: no queue and no task wake-up per frame (the client's transport does the
  same). Messages that arrive before the callback is set wait, in order, for it.
- writing: :meth:`WireConnection.send_batch` serialises many frames and writes their bytes
  at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

__all__ = ["WireConnection"]

_DATA = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))


class WireConnection(ServerConnection):
    """A server connection whose messages go to a callback; see the module docstring."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._on_message: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []  # messages parsed before the callback was set
        self._fragments: list[bytes] = []

    def read_into(self, on_message: Callable[[bytes], None]) -> None:
        """From now on, hand every message (text or binary, as bytes) to ``on_message``,
        in order, starting with those that arrived already."""
        early, self._early = self._early, []
        for message in early:
            on_message(message)
        self._on_message = on_message

    def process_event(self, event: Event) -> None:
        # Data frames are ours; the handshake request and control frames stay websockets'.
        if isinstance(event, Frame) and event.opcode in _DATA:
            self._on_frame(event)
        else:
            super().process_event(event)

    def _on_frame(self, frame: Frame) -> None:
        # websockets' parser has already checked the fragments' order and total size.
        if not frame.fin:
            self._fragments.append(bytes(frame.data))
            return
        if self._fragments:
            self._fragments.append(bytes(frame.data))
            message, self._fragments = b"".join(self._fragments), []
        else:
            message = bytes(frame.data)
        if self._on_message is None:
            self._early.append(message)
        else:
            self._on_message(message)

    async def send_batch(self, frames: Sequence[bytes]) -> None:
        """Send text frames (UTF-8 already), in order, in one write."""
        async with self.send_context():
            protocol = self.protocol
            for frame in frames:
                protocol.send_text(frame)
            chunks = protocol.data_to_send()
            # Text frames never end the stream; an end (b"") would only follow a close,
            # which send_context does not let in here.
            assert all(chunks), "a data frame ended the stream"
            self.transport.writelines(chunks)
