"""The web page's backend: a Starlette app around one running :class:`Orchestrator`.

``GET /`` is the page, ``/static/`` its script and style, and ``/events`` the page's
WebSocket: the page sends ``generate`` (and ``cancel``) messages; the app submits each as
a task and sends back the task's events as they happen (``event.to_json()``), plus the
orchestrator's figures twice a second. Everything a socket sends waits in its
:class:`~.outbox.Outbox`, so a slow browser costs a bounded buffer. When the page closes
(its socket ends), its tasks still running are cancelled.

Messages, page to app::

    {"type": "generate", "id": "g1", "prompt": ..., "numberResults": 3, "width": 512,
     "height": 512, "seed": 7, "steps": 20, "negativePrompt": ..., "model": ...}
    {"type": "cancel", "id": "g1"}

App to page: ``hello`` (the endpoints and limits), ``accepted`` (``id``, ``taskUUID``,
``numberResults``), ``rejected`` (``id``, ``error``: the rule the request broke; nothing
was sent), ``event`` (``id``, ``event``: one of the events of README's catalogue) and
``figures``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import orjson
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from protocol.session import Progress

from ..client import Orchestrator
from ..errors import OrchestratorError, UsageError
from ..results import error_json
from ..specs import TextToImage
from .outbox import Outbox

__all__ = ["FIGURES_INTERVAL", "MAX_GENERATIONS", "create_app", "figures", "text_to_image"]

STATIC: Final = Path(__file__).parent / "static"
#: Generations one page may have running at once (each has up to 20 cards).
MAX_GENERATIONS: Final = 16
#: Seconds between two figures messages.
FIGURES_INTERVAL: Final = 0.5

# The page's names for TextToImage's fields, and the JSON type each must have.
_FIELDS: Final[Mapping[str, tuple[str, type | tuple[type, ...]]]] = {
    "prompt": ("prompt", str),
    "numberResults": ("number_results", int),
    "width": ("width", int),
    "height": ("height", int),
    "seed": ("seed", int),
    "steps": ("steps", int),
    "guidance": ("guidance", (int, float)),
    "negativePrompt": ("negative_prompt", str),
    "model": ("model", str),
}


def text_to_image(message: Mapping[str, Any]) -> TextToImage:
    """The task a page's ``generate`` message asks for. Empty and null fields take the
    server's defaults. Raises UsageError naming a field that is unknown or of the wrong
    type (the spec then checks the values, when it is submitted)."""
    options: dict[str, Any] = {}
    for name, value in message.items():
        if name in ("type", "id"):
            continue
        if name not in _FIELDS:
            raise UsageError(f"{name}: unknown field (known: {', '.join(_FIELDS)})")
        field, kind = _FIELDS[name]
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise UsageError(f"{name} = {value!r}: must be a {_kind_name(kind)}")
        options[field] = value
    if "prompt" not in options:
        raise UsageError("prompt: required")
    return TextToImage(**options)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "number" if isinstance(kind, tuple) else {int: "whole number", str: "string"}[kind]


def figures(orch: Orchestrator, rate: float) -> dict[str, Any]:
    """The orchestrator's figures as the page's panel shows them."""
    pool, stats = orch.pool, orch.stats
    return {
        "type": "figures",
        "inFlight": pool.in_flight,
        "submitted": stats.submitted,
        "done": stats.completed,
        "failed": stats.failed,
        "tasksPerSecond": round(rate, 2),
        "connections": [
            {"endpoint": c.endpoint, "state": c.state.value, "inFlight": c.in_flight}
            for c in pool.connections
        ],
    }


class _Page:
    """One open page: its socket, its outbox, its generations."""

    def __init__(self, orch: Orchestrator, socket: WebSocket, outbox: Outbox) -> None:
        self.orch, self.socket, self.outbox = orch, socket, outbox
        self.running: dict[str, anyio.CancelScope] = {}

    async def serve(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write, tg)
            tg.start_soon(self._figures)
            await self.outbox.put(self._hello())
            try:
                while True:
                    await self._on_message(tg, await self.socket.receive_json())
            except (WebSocketDisconnect, ValueError):  # closed, or sent what is not JSON
                pass
            tg.cancel_scope.cancel()  # the page is gone: its tasks are cancelled

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "endpoints": list(self.orch.endpoints),
            "maxGenerations": MAX_GENERATIONS,
        }

    async def _write(self, tg: TaskGroup) -> None:
        try:
            while True:
                message = await self.outbox.get()
                await self.socket.send_text(orjson.dumps(message).decode())
        except (WebSocketDisconnect, OSError, RuntimeError):  # the socket closed under us
            tg.cancel_scope.cancel()

    async def _figures(self) -> None:
        stats = self.orch.stats
        last, then = stats.completed + stats.failed, time.monotonic()
        while True:
            now, ended = time.monotonic(), stats.completed + stats.failed
            rate = (ended - last) / max(now - then, 1e-9)
            last, then = ended, now
            await self.outbox.put(figures(self.orch, rate), key="figures")
            await anyio.sleep(FIGURES_INTERVAL)

    async def _on_message(self, tg: TaskGroup, message: Any) -> None:
        if not isinstance(message, dict):
            return
        ident = str(message.get("id", ""))
        if message.get("type") == "cancel":
            scope = self.running.get(ident)
            if scope is not None:
                scope.cancel()
        elif message.get("type") == "generate":
            try:
                if ident in self.running:
                    raise UsageError(f"id {ident!r}: a generation with this id is running")
                if len(self.running) >= MAX_GENERATIONS:
                    raise UsageError(f"{MAX_GENERATIONS} generations are running: wait for one")
                spec = text_to_image(message)
            except UsageError as exc:
                await self.outbox.put({"type": "rejected", "id": ident, "error": error_json(exc)})
                return
            scope = self.running[ident] = anyio.CancelScope()
            tg.start_soon(self._generate, ident, spec, scope)

    async def _generate(self, ident: str, spec: TextToImage, scope: anyio.CancelScope) -> None:
        outbox = self.outbox
        try:
            with scope:
                async with self.orch.submit(spec) as handle:
                    accepted = {"taskUUID": handle.task_uuid, "numberResults": spec.number_results}
                    await outbox.put({"type": "accepted", "id": ident, **accepted})
                    async for event in handle.events():
                        key = (ident, event.image_index) if isinstance(event, Progress) else None
                        await outbox.put(
                            {"type": "event", "id": ident, "event": event.to_json()}, key
                        )
        except OrchestratorError as exc:  # refused before anything was sent
            await outbox.put({"type": "rejected", "id": ident, "error": error_json(exc)})
        finally:
            self.running.pop(ident, None)
        if scope.cancelled_caught:
            await outbox.put({"type": "cancelled", "id": ident})


def create_app(orch: Orchestrator, *, outbox_limit: int = 256) -> Starlette:
    """The page's app, for an orchestrator that is running (entered) while it serves."""

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def events(socket: WebSocket) -> None:
        await socket.accept()
        await _Page(orch, socket, Outbox(outbox_limit)).serve()

    routes = [
        Route("/", index),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        WebSocketRoute("/events", events),
    ]
    return Starlette(routes=routes)
