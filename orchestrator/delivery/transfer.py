"""The bytes of deliveries: a capped, streamed GET of an image, a PUT tried again as the
retry policy says, and a file written atomically.

Every function takes what it needs (an httpx client, a clock, a random source), so tests
drive them with a fake clock and a real server on 127.0.0.1.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from protocol.retry import Backoff, retry_after, retryable_status

from ..errors import UploadError
from ..timers import Clock

__all__ = [
    "PutOutcome",
    "PutPolicy",
    "TooLarge",
    "fetch",
    "http_client",
    "put",
    "write_atomically",
]


class TooLarge(UploadError):
    """A fetched image is over its byte cap."""


def http_client(
    transport: httpx.AsyncBaseTransport | None = None, connections: int = 16
) -> httpx.AsyncClient:
    """The HTTP client of deliveries and reads: redirects followed (an image host may
    redirect), timeouts set per request by the callers, and as many pooled connections as
    uploads in flight (the pool looks at each of its connections on every request)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        timeout=None, follow_redirects=True, transport=transport, limits=limits
    )


@dataclass(frozen=True, slots=True)
class PutPolicy:
    """How a PUT is tried: attempts in all, the backoff between them, the longest
    ``Retry-After`` honoured, and the seconds one attempt may take, body and answer included."""

    attempts: int
    backoff: Backoff
    retry_after_cap: float
    timeout: float


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """A PUT that succeeded: its status and how many attempts it took."""

    status: int
    attempts: int


async def fetch(client: httpx.AsyncClient, url: str, max_bytes: int, seconds: float) -> bytes:
    """GET ``url``'s body, streamed, at most ``max_bytes``, within ``seconds`` in all.

    Raises UploadError (naming the URL) on any failure: there is nothing to deliver."""
    try:
        with anyio.fail_after(seconds):
            async with client.stream("GET", url) as response:
                if not response.is_success:
                    raise UploadError(
                        f"GET {url}: HTTP {response.status_code}", response.status_code
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(f"GET {url}: {declared} bytes, over the {max_bytes} cap")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise TooLarge(f"GET {url}: over the {max_bytes} byte cap")
                return bytes(body)
    except TimeoutError:
        raise UploadError(f"GET {url}: no whole answer within {seconds:g} s") from None
    except httpx.HTTPError as exc:
        raise UploadError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc


async def put(
    client: httpx.AsyncClient,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    policy: PutPolicy,
    clock: Clock,
    rng: random.Random,
    sink: str,
    limiter: anyio.CapacityLimiter,
    method: str = "PUT",
) -> PutOutcome:
    """PUT (or ``method``) ``data`` to ``url``: connection errors, timeouts, 408, 429 and
    5xx are tried again after a backoff with jitter (or the answer's ``Retry-After``,
    capped); any other answer that is not a success is final. Each attempt holds one slot
    of ``limiter`` (the uploads in flight), and none is held while waiting to try again.

    Raises UploadError with the sink, the last status and the attempts."""
    last, status = "no attempt", None
    for attempt in range(1, policy.attempts + 1):
        wait: float | None = None
        try:
            async with limiter:
                with anyio.fail_after(policy.timeout):
                    response = await client.request(
                        method, url, content=data, headers=dict(headers)
                    )
        except TimeoutError:
            last, status = f"no answer within {policy.timeout:g} s", None
        except httpx.HTTPError as exc:
            last, status = f"{type(exc).__name__}: {exc}", None
        else:
            if response.is_success:
                return PutOutcome(response.status_code, attempt)
            status = response.status_code
            last = f"HTTP {status}{_reason(response)}"
            if not retryable_status(status):
                raise UploadError(
                    _failed(sink, method, url, last, attempt), status, sink=sink, attempts=attempt
                )
            wait = retry_after(
                response.headers.get("Retry-After"), time.time(), policy.retry_after_cap
            )
        if attempt < policy.attempts:
            await clock.sleep(policy.backoff.delay(attempt - 1, rng) if wait is None else wait)
    failed = _failed(sink, method, url, last, policy.attempts)
    raise UploadError(failed, status, sink=sink, attempts=policy.attempts)


def _reason(response: httpx.Response) -> str:
    # S3 and most stores say why in the body (an XML <Code>, a short text): keep a little.
    text = response.text[:200].strip() if response.content else ""
    return f": {text}" if text else ""


def _failed(sink: str, method: str, url: str, last: str, attempts: int) -> str:
    plural = "s" if attempts != 1 else ""
    where = _without_query(url)
    return f"{sink}: {method} {where} failed after {attempts} attempt{plural}: {last}"


def _without_query(url: str) -> str:
    # A presigned URL's query is a credential: it stays out of messages and logs.
    return url.split("?", 1)[0]


async def write_atomically(path: Path, data: bytes, *, inside: Path | None = None) -> Path:
    """Write ``data`` at ``path``: a temporary file in the same directory, flushed and
    fsynced, then renamed over ``path`` and the directory fsynced, so a reader (or a crash)
    sees all or nothing, and once this returns the file survives a power cut.

    Returns the path written, resolved. With ``inside`` (a resolved directory), a path that
    resolves outside it, or to it, is refused with an OSError before anything is written."""
    # One trip to a worker thread for the whole write: each trip costs a context switch
    # or two, and a write is eight system calls.
    return await anyio.to_thread.run_sync(_write_atomically, path, data, inside)


def _write_atomically(path: Path, data: bytes, inside: Path | None) -> Path:
    path = path.resolve()
    if inside is not None and (not path.is_relative_to(inside) or path == inside):
        raise OSError(f"{path} is outside {inside}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory's entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
