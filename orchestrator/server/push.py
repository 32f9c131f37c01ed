"""The server's outbound HTTP: PUT to ``uploadEndpoint``, GET of ``guideImageUrl``.

The only server module that imports the HTTP client. Targets that resolve to private,
loopback, link-local or otherwise non-public addresses are refused unless the server allows
them (tests do), so a client cannot make the server reach into its own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import httpx

from protocol.retry import Backoff

__all__ = ["PushError", "Pusher", "expand_url"]


class PushError(Exception):
    """A push or fetch that failed, or a target that is refused; the message says which."""


def expand_url(template: str, **values: object) -> str:
    """Fill ``{imageUUID}``, ``{taskUUID}``, ``{index}`` and ``{ext}`` placeholders, if any,
    so several images of one task can go to distinct URLs."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


_PUSH_BACKOFF = Backoff(initial=0.2, maximum=5.0)


class Pusher:
    """PUTs and GETs with retries and the address policy.

    Args:
        allow_private: accept loopback and private targets.
        retries: attempts per push.
        backoff: the delays between attempts (the project's one retry policy).
        sleep, rng: injected for tests.
        transport: an httpx transport, injected for tests.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        retries: int = 3,
        backoff: Backoff = _PUSH_BACKOFF,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._retries = max(1, retries)
        self._backoff = backoff
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def check(self, url: str) -> None:
        """Raise :class:`PushError` if ``url`` may not be reached."""
        if self._allow_private:
            return
        host = urlsplit(url).hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise PushError(f"cannot resolve {host!r}: {exc}") from exc
        if not infos or not all(_is_public(str(info[4][0])) for info in infos):
            raise PushError(
                f"{host!r} is a private, loopback or link-local address, which this server refuses"
            )

    async def put(self, url: str, data: bytes, content_type: str) -> None:
        """PUT ``data``, retrying transport errors and 5xx/429 answers with backoff."""
        await self.check(url)
        last = "no attempt"
        for attempt in range(self._retries):
            if attempt:
                await self._sleep(self._backoff.delay(attempt - 1, self._rng))
            try:
                response = await self._client.put(
                    url, content=data, headers={"Content-Type": content_type}
                )
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return
            last = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the endpoint said no; asking again will not change that
        raise PushError(f"PUT {url} failed: {last}")

    async def get(self, url: str, max_bytes: int) -> bytes:
        """GET a URL's body (at most ``max_bytes``)."""
        await self.check(url)
        try:
            async with self._client.stream("GET", url) as response:
                if not response.is_success:
                    raise PushError(f"GET {url}: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise PushError(f"GET {url}: larger than {max_bytes} bytes")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise PushError(f"GET {url} failed: {exc}") from exc
