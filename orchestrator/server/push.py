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
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx

from protocol.retry import Backoff, retryable_status

__all__ = ["PushError", "Pusher", "is_public"]


class PushError(Exception):
    """A push or fetch that failed, or a target that is refused; the message says which."""


# IPv6 ranges that carry an IPv4 address inside: the address they reach is the IPv4 one.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP) is a public unicast address, looking inside IPv6 forms
    that embed an IPv4 one (mapped, compatible, 6to4, Teredo, NAT64)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return inner.is_global and not inner.is_multicast
    return True


class _Target(NamedTuple):
    """A URL pinned to the address that was checked: connect there, name the host."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


_PUSH_BACKOFF = Backoff(initial=0.2, maximum=5.0)


class Pusher:
    """PUTs and GETs with retries, deadlines and the address policy.

    Each request resolves its host once, checks every address, and connects to the
    checked address itself (the host goes in ``Host`` and in TLS's SNI), so a name that
    resolves differently a moment later cannot slip past the policy.

    Args:
        allow_private: accept loopback and private targets.
        retries: attempts per push.
        backoff: the delays between attempts (the project's one retry policy).
        timeout: seconds for one whole request, body included (not per read).
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
        self._timeout = timeout
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
        await self._pin(url)

    async def _pin(self, url: str) -> _Target:
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise PushError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise PushError(f"cannot resolve {host!r}")
        if not self._allow_private and not all(is_public(a) for a in addresses):
            raise PushError(
                f"{host!r} is a private, loopback or link-local address, which this server refuses"
            )
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        if parts.port is not None:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        headers = {"Host": parts.netloc.rpartition("@")[2]}
        return _Target(pinned, headers, {"sni_hostname": host})

    async def put(self, url: str, data: bytes, content_type: str, *, method: str = "PUT") -> None:
        """PUT (or POST: ``method``) ``data``, retrying transport errors and 408, 429 and
        5xx answers with backoff."""
        last = "no attempt"
        for attempt in range(self._retries):
            if attempt:
                await self._sleep(self._backoff.delay(attempt - 1, self._rng))
            target = await self._pin(url)  # again each time: the name may move
            headers = {**target.headers, "Content-Type": content_type}
            try:
                with anyio.fail_after(self._timeout):
                    response = await self._client.request(
                        method,
                        target.url,
                        content=data,
                        headers=headers,
                        extensions=target.extensions,
                    )
            except (httpx.HTTPError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return
            last = f"HTTP {response.status_code}"
            if not retryable_status(response.status_code):
                break  # the endpoint said no; asking again will not change that
        raise PushError(f"{method} {url} failed after {attempt + 1} attempt(s): {last}")

    async def get(self, url: str, max_bytes: int) -> bytes:
        """GET a URL's body: at most ``max_bytes`` in all, within the timeout in all."""
        target = await self._pin(url)
        try:
            with anyio.fail_after(self._timeout):
                return await self._read(target, url, max_bytes)
        except TimeoutError as exc:
            raise PushError(f"GET {url}: no whole answer within {self._timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise PushError(f"GET {url} failed: {exc}") from exc

    async def _read(self, target: _Target, url: str, max_bytes: int) -> bytes:
        request = self._client.build_request(
            "GET", target.url, headers=target.headers, extensions=target.extensions
        )
        response = await self._client.send(request, stream=True)
        try:
            if not response.is_success:
                raise PushError(f"GET {url}: HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise PushError(f"GET {url}: larger than {max_bytes} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise PushError(f"GET {url}: larger than {max_bytes} bytes")
            return bytes(body)
        finally:
            await response.aclose()
