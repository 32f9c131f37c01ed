"""Test your code against the orchestrator without sockets or real time.

- :class:`FakeClock`: time that moves only when you call :meth:`FakeClock.advance`.
- :class:`FakeServer`: speaks the protocol in memory and misbehaves on demand
  (split, duplicated and unknown frames, error frames, queue full, silence,
  dropped and half-open sockets, refused keys, an endpoint that is down).
- :class:`MemoryTransport`: connects an :class:`~orchestrator.Orchestrator` to
  fake servers by URL.

::

    async with FakeServer() as server:
        transport = MemoryTransport(server)
        async with Orchestrator("memory://a", api_key=server.api_key,
                                transport=transport, clock=FakeClock()) as orch:
            result = await orch.text_to_image("a red fox")

Results are deterministic: imageUUIDs derive from (taskUUID, index) by
:func:`protocol.identity.image_uuid_for`, exactly as on the reference server, so a
task sent twice yields the same images and tests can predict them.
"""

from protocol.identity import image_uuid_for

from .clock import FakeClock
from .memory import MemoryTransport
from .server import FakeConnection, FakeServer

__all__ = ["FakeClock", "FakeConnection", "FakeServer", "MemoryTransport", "image_uuid_for"]
