"""Sinks: where the orchestrator itself puts finished images.

- :class:`HttpSink`: an ``http(s)://`` URL template, PUT with the binary body;
- :class:`S3Sink`: ``s3://bucket/prefix/{...}``, through presigned PUT URLs;
- :class:`DirectorySink`: a local directory (``file://`` or a plain path), written atomically.

:func:`sink` reads the string form. Each sink is checked when it is built (a malformed
template, an S3 URI with no bucket, a directory that cannot be written: a UsageError naming
the sink), and :meth:`Sink.store` does one delivery.

Why presigned URLs for S3 (botocore signs, httpx sends) rather than an async AWS client:
signing is local arithmetic, so the upload is one more PUT through the same client, limits,
retries and timeouts as every other sink, and the extra dependency is botocore alone (an
async AWS client pins botocore to narrow ranges and brings its own HTTP stack).
"""

from __future__ import annotations

import base64
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import httpx

from ..errors import UploadError, UsageError
from .templates import Placeholders, Template
from .transfer import PutPolicy, put, write_atomically

__all__ = ["DirectorySink", "HttpSink", "Payload", "S3Sink", "Sink", "Transfers", "sink"]


@dataclass(frozen=True, slots=True)
class Payload:
    """One image's bytes, with what every sink needs to know about them."""

    data: bytes
    content_type: str
    sha256: str
    md5: bytes
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Transfers:
    """What a sink sends with: the HTTP client, the PUT policy, the clock and random
    source of retries, and the limit on uploads in flight."""

    client: httpx.AsyncClient
    policy: PutPolicy
    clock: Any  # orchestrator.timers.Clock
    rng: Any  # random.Random
    limiter: anyio.CapacityLimiter


class Sink(ABC):
    """A place images go. ``label`` is how it is named in records and errors."""

    label: str
    template: Template

    @abstractmethod
    async def store(self, payload: Payload, where: Placeholders, io: Transfers) -> tuple[str, int]:
        """Deliver ``payload``; return where it went (URL, ``s3://`` URI or path) and the
        attempts it took. Raises UploadError."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class HttpSink(Sink):
    """PUT each image to an ``http(s)://`` URL template.

    Args:
        url: the template, e.g. ``https://store.example/{task_uuid}/{image_uuid}.{ext}``.
        headers: sent with every PUT (an ``Authorization``, say).
    """

    def __init__(self, url: str, *, headers: dict[str, str] | None = None) -> None:
        self.label = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"sink {url!r}: an HTTP sink is an http:// or https:// URL with a host"
            )
        if "{" in parts.netloc:
            raise UsageError(f"sink {url!r}: placeholders go in the path, not the host")
        self.template = Template(url, f"sink {url!r}")
        self.headers = dict(headers or {})

    async def store(self, payload: Payload, where: Placeholders, io: Transfers) -> tuple[str, int]:
        url = self.template.render(where, url=True)
        headers = {**self.headers, "Content-Type": payload.content_type}
        outcome = await put(
            io.client, url, payload.data, headers,
            policy=io.policy, clock=io.clock, rng=io.rng, sink=self.label, limiter=io.limiter,
        )  # fmt: skip
        return url, outcome.attempts


class S3Sink(Sink):
    """Put each image in an S3 (or S3-compatible) bucket, under a templated key.

    Credentials and region come from the standard AWS settings (environment, shared files,
    instance roles), as botocore reads them; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``)
    points at an S3-compatible store, addressed path-style. Each object is sent with its
    content type, ``Content-MD5`` (the store checks it) and its sha256 as metadata.

    Args:
        uri: ``s3://bucket/prefix/{task_uuid}/{image_uuid}.{ext}``.
        endpoint_url, region: override the AWS settings.
        expires: seconds a presigned URL is valid (each upload signs its own).
    """

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        expires: int = 900,
    ) -> None:
        self.label = uri
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket:
            raise UsageError(f"sink {uri!r}: an S3 sink is s3://BUCKET/KEY-TEMPLATE")
        if "{" in bucket:
            raise UsageError(f"sink {uri!r}: the bucket name takes no placeholder")
        self.bucket = bucket
        self.template = Template(key, f"sink {uri!r}")
        self._expires = expires
        self._client = _s3_client(uri, endpoint_url, region)

    async def store(self, payload: Payload, where: Placeholders, io: Transfers) -> tuple[str, int]:
        key = self.template.render(where)
        md5 = base64.b64encode(payload.md5).decode()
        params = {
            "Bucket": self.bucket,
            "Key": key,
            "ContentType": payload.content_type,
            "ContentMD5": md5,
            "Metadata": {"sha256": payload.sha256},
        }
        url = self._client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=self._expires
        )
        headers = {
            "Content-Type": payload.content_type,
            "Content-MD5": md5,
            "x-amz-meta-sha256": payload.sha256,
        }
        outcome = await put(
            io.client, url, payload.data, headers,
            policy=io.policy, clock=io.clock, rng=io.rng, sink=self.label, limiter=io.limiter,
        )  # fmt: skip
        return f"s3://{self.bucket}/{key}", outcome.attempts


def _s3_client(uri: str, endpoint_url: str | None, region: str | None) -> Any:
    try:
        import botocore.config
        import botocore.session
    except ImportError:
        raise UsageError(
            f"sink {uri!r}: s3:// sinks need botocore: pip install 'imagegen-orchestrator[s3]'"
        ) from None
    session = botocore.session.get_session()
    if session.get_credentials() is None:
        raise UsageError(
            f"sink {uri!r}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or a profile)"
        )
    endpoint_url = (
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    style = "path" if endpoint_url else "auto"
    config = botocore.config.Config(signature_version="s3v4", s3={"addressing_style": style})
    return session.create_client(
        "s3",
        region_name=region or session.get_config_variable("region") or "us-east-1",
        endpoint_url=endpoint_url,
        config=config,
    )


class DirectorySink(Sink):
    """Write each image under a local directory, atomically.

    Args:
        path: a directory (``out/``: files are ``{image_uuid}.{ext}``), or a template whose
            fixed part is the directory (``out/{task_uuid}/{index}.{ext}``); ``file://``
            URLs too. It is created, and checked writable, when the sink is built.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        self.label = text
        if text.startswith("file://"):
            text = unquote(urlsplit(text).path)
        if "\x00" in text:
            raise UsageError(f"sink {self.label!r}: a path has no NUL character")
        fixed, brace, _ = text.partition("{")
        root_text = fixed.rpartition("/")[0] if brace else text
        self.root = Path(root_text or ".").expanduser().resolve()
        relative = text[len(root_text) :].lstrip("/") if brace else ""
        self.template = Template(relative, f"sink {self.label!r}")
        _check_writable(self.root, self.label)

    async def store(self, payload: Payload, where: Placeholders, io: Transfers) -> tuple[str, int]:
        target = self.root / self.template.render(where)
        try:
            # The path is resolved (and kept inside the root) in the writing thread: resolving
            # stats every component, and the event loop makes no system calls of its own.
            written = await write_atomically(target, payload.data, inside=self.root)
        except OSError as exc:
            raise UploadError(f"sink {self.label!r}: {exc}", sink=self.label, attempts=1) from exc
        return str(written), 1


def _check_writable(root: Path, label: str) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"sink {label!r}: cannot create the directory: {exc}") from exc
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"sink {label!r}: {root} is not a writable directory")


def sink(target: str | os.PathLike[str] | Sink) -> Sink:
    """A sink from its string form: ``s3://...``, ``http(s)://...``, ``file://...`` or a
    plain path (a sink passes through)."""
    if isinstance(target, Sink):
        return target
    text = os.fspath(target)
    if text.startswith("s3:"):
        return S3Sink(text)
    if text.startswith(("http://", "https://")):
        return HttpSink(text)
    if "://" in text and not text.startswith("file://"):
        raise UsageError(f"sink {text!r}: a sink is s3://, http(s)://, file:// or a path")
    return DirectorySink(text)
