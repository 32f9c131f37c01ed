"""What callers hand the orchestrator, checked before anything starts or is sent.

Endpoints, deadlines and tasks are refused with a :class:`UsageError` naming what is wrong;
an image given by URL is fetched (capped); the embedded server, an extra, says how to get it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Final, get_args
from urllib.parse import urlsplit

from protocol.messages import TaskRequest

from .errors import TransportError, UploadError, UsageError

__all__ = ["TASK_REQUESTS", "check_deadline", "check_ws_url", "embedded_server", "fetch_image"]

#: The protocol's request messages, as ``isinstance`` takes them.
TASK_REQUESTS: Final = get_args(TaskRequest)


async def fetch_image(url: str, max_bytes: int) -> bytes:
    """The bytes at an ``http(s)`` URL (at most ``max_bytes``): the dialect uploads bytes,
    so an image given by URL is fetched here, its URL checked first."""
    if not urlsplit(url).hostname:
        raise UsageError(f"upload_image: {url!r} is not an http(s) URL with a host")
    # Imported only here: httpx and what it loads are thousands of long-lived objects, and
    # the cyclic collector's every pass over a busy client grows with them.
    from .delivery.transfer import TooLarge, fetch, http_client

    try:
        async with http_client() as http:
            return await fetch(http, url, max_bytes, 30.0)
    except TooLarge as exc:
        raise UsageError(f"upload_image: {exc}") from None
    except UploadError as exc:
        raise TransportError(f"upload_image: {exc}") from exc


def check_ws_url(endpoint: object) -> None:
    """Refuse an endpoint that is not a ``ws://`` or ``wss://`` URL with a host."""
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"endpoint {endpoint!r}: must be a ws:// or wss:// URL with a host")


def check_deadline(deadline: object) -> None:
    """Refuse a deadline that is not a finite, positive number of seconds (or None)."""
    if deadline is None:
        return
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise UsageError(f"deadline = {deadline!r}: must be a number of seconds")
    if not (math.isfinite(deadline) and deadline > 0):
        raise UsageError(f"deadline = {deadline!r}: must be a finite number of seconds > 0")


def embedded_server(settings: Mapping[str, Any] | None = None) -> AbstractAsyncContextManager[Any]:
    """The embedded reference server (``settings``: fields of its ServerConfig), or a
    UsageError saying how to install it."""
    # The reference server does image work (numpy, Pillow, scipy): the [server] extra. A
    # client-only install talks to endpoints it is given, and says how to get the rest.
    try:
        from .server import BackendError, ServerConfig, serve_embedded
    except ImportError as exc:
        raise UsageError(
            "no endpoints were given, and the embedded reference server needs the "
            f"[server] extra ({exc.name} is missing): "
            "pip install 'imagegen-orchestrator[server]'"
        ) from exc
    try:
        config = ServerConfig(**(settings or {}))
    except TypeError as exc:
        raise UsageError(f"embedded server settings: {exc}") from None

    @asynccontextmanager
    async def started() -> AsyncIterator[Any]:
        # A backend that cannot start (its extra or its weights missing) is the caller's
        # setting, named; it raises only while entering, before anything runs.
        async with AsyncExitStack() as stack:
            try:
                server = await stack.enter_async_context(serve_embedded(config))
            except BackendError as exc:
                raise UsageError(f"embedded server: {exc}") from exc
            yield server

    return started()
