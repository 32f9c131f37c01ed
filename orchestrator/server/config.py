"""The reference server's settings: one frozen object, every limit with its design default."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["DiffusionSettings", "ServerConfig", "ServerLimits"]


def _default_max_connections() -> int:
    # Room under the process's file descriptor limit for images, logs and the listener.
    try:
        import resource  # Unix only

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError):
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - 128))


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one task, frame, connection or server may ask for."""

    #: ``numberResults`` of one task.
    max_number_results: int = 20
    #: Characters of ``promptText`` / ``prompt``.
    max_prompt_length: int = 2000
    #: Bytes of one incoming frame; a larger frame closes the socket with 1009.
    max_frame_bytes: int = 16 * 2**20
    #: Bytes of a frame that is not a ``newImageUpload``: more structure than this is refused
    #: unparsed, so no frame costs the event loop more than a few milliseconds of JSON.
    max_structured_frame_bytes: int = 2**20
    #: Bytes of one frame before the socket authenticated (room for a ``newConnection``).
    max_frame_bytes_before_auth: int = 4096
    #: Bytes waiting in one connection's outbox: past ``outbox_soft_bytes`` its session's
    #: tasks wait to start; past ``outbox_hard_bytes`` the socket is dropped (the session
    #: resumes later with nothing lost).
    outbox_soft_bytes: int = 8 * 2**20
    outbox_hard_bytes: int = 32 * 2**20
    #: Pixels of an image the server decodes (uploads, guides) or makes (upscales).
    max_image_pixels: int = 4096 * 4096
    #: Images fetched by URL for one task, and the bytes and seconds of each fetch.
    max_fetched_images: int = 4
    max_fetch_bytes: int = 16 * 2**20
    fetch_timeout: float = 20.0
    #: Result cache entries (distinct generation parameters), least recently used out first.
    max_cache_entries: int = 10_000
    #: Tasks accepted and not finished, per session (a connection and its resumes).
    max_queued_per_connection: int = 10_000
    #: Tasks accepted and not finished, over the whole server.
    max_queued_total: int = 100_000


@dataclass(frozen=True, slots=True)
class DiffusionSettings:
    """The ``diffusers`` backend's local weights, and where they run.

    ``model_dir`` is a diffusers pipeline directory (``save_pretrained``); it serves every
    ``modelId``. ``device`` ``None`` picks CUDA when present (float16), else the CPU
    (float32); ``dtype`` overrides the choice. ``controlnets`` maps a preprocessor name
    (``canny``, ``depth_midas``, ...) to a ControlNet model directory; ``lora_dir`` holds
    LoRA files named by their model id. ``max_batch`` images share one forward pass;
    with ``batch_tasks``, images of different text-to-image tasks may share it too (faster
    under load, but an image then depends on its batch by a rounding step here and there).
    """

    model_dir: str | None = None
    device: str | None = None
    dtype: str | None = None
    controlnets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    lora_dir: str | None = None
    max_batch: int = 4
    batch_tasks: bool = False

    @classmethod
    def of(cls, value: DiffusionSettings | Mapping[str, Any] | None) -> DiffusionSettings:
        """Settings from themselves, from a mapping of their fields, or the defaults."""
        if value is None:
            return cls()
        return value if isinstance(value, DiffusionSettings) else cls(**value)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the reference server runs.

    ``api_keys`` empty means a key is generated at start (see ``ReferenceServer.api_key``).
    Port 0 picks a free port. ``public_url`` is the base of image URLs (default
    ``http://HOST:PORT``). ``retention`` is how long a detached session and a finished
    task's results are kept for resumes and resubmissions. ``cost_per_megapixel_step`` prices
    an image: width x height / 10^6 x steps x rate.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_keys: Sequence[str] = ()
    public_url: str | None = None
    backend: str = "procedural"
    #: The ``diffusers`` backend's settings (a mapping of their fields is taken too).
    diffusion: DiffusionSettings = DiffusionSettings()
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    limits: ServerLimits = ServerLimits()
    retention: float = 120.0
    image_ttl: float = 3600.0
    max_store_bytes: int = 1024 * 2**20
    allow_private_uploads: bool = False
    upload_retries: int = 3
    cost_per_megapixel_step: float = 0.0001
    compression: bool = False
    shutdown_grace: float = 10.0
    sweep_interval: float = 5.0
    #: Seconds a socket may stay open without authenticating.
    handshake_timeout: float = 10.0
    #: The four other seed APIs over HTTP on this port (0: any free one; None: not served),
    #: a request's body at most this many bytes, its steps each this many seconds; a
    #: ModelsLab request still running after ``http_wait`` seconds is answered
    #: ``processing`` (fetched by id after). Each key's Stablecog credits before spending.
    http_port: int | None = None
    http_max_body: int = 32 * 2**20
    http_task_timeout: float = 300.0
    http_wait: float = 30.0
    credits_per_key: float = 1000.0
    #: Open client sockets; more are refused with HTTP 503 (default: under the fd limit).
    max_connections: int = field(default_factory=_default_max_connections)

    def __post_init__(self) -> None:
        # The embedded server's settings arrive as plain mappings (``embedded={...}``).
        object.__setattr__(self, "diffusion", DiffusionSettings.of(self.diffusion))
