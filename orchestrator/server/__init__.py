"""The reference server: the protocol's server side, with real image work.

``orchestrator serve`` runs it; :func:`serve_embedded` runs it inside the caller's process
(127.0.0.1, a free port, a generated key) so everything works with no account anywhere.
"""

from .app import ReferenceServer, serve_embedded
from .backends import (
    BACKENDS,
    Backend,
    FixedBackend,
    ImageOutput,
    Job,
    JobCancelled,
    JobContext,
    JobError,
    ProceduralBackend,
    SourceImage,
    TextOutput,
)
from .config import ServerConfig, ServerLimits

__all__ = [
    "BACKENDS",
    "Backend",
    "FixedBackend",
    "ImageOutput",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "ProceduralBackend",
    "ReferenceServer",
    "ServerConfig",
    "ServerLimits",
    "SourceImage",
    "TextOutput",
    "serve_embedded",
]
