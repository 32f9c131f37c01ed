"""Serving an ASGI app with uvicorn inside the running event loop (the seed APIs' HTTP port,
the web page), one way for both."""

from __future__ import annotations

import socket
from typing import Any

import anyio
from anyio.abc import TaskStatus

__all__ = ["serve_http"]


async def serve_http(app: Any, host: str, port: int, *, task_status: TaskStatus[int]) -> None:
    """Serve ``app`` on ``host:port`` with uvicorn in this event loop until cancelled;
    ``task_status`` gets the port (bound first, so a busy port fails the start)."""
    import uvicorn

    sock = socket.create_server((host, port), reuse_port=False)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    # Not server.serve(): it takes over the process's signal handlers, which are the CLI's.
    await server.startup(sockets=[sock])
    task_status.started(sock.getsockname()[1])
    try:
        await server.main_loop()
    finally:
        server.should_exit = True
        with anyio.CancelScope(shield=True):
            await server.shutdown(sockets=[sock])
        sock.close()
