"""The reference server: the protocol's server side, with real image work.

``orchestrator serve`` runs it; :func:`serve_embedded` runs it inside the caller's process
(127.0.0.1, a free port, a generated key) so everything works with no account anywhere.
"""

from .app import ReferenceServer, serve_embedded
from .backends import (
    BACKENDS,
    Backend,
    BackendError,
    FixedBackend,
    ImageOutput,
    Job,
    JobCancelled,
    JobContext,
    JobError,
    ProceduralBackend,
    SourceImage,
    TextOutput,
    describe,
)
from .config import DiffusionSettings, ServerConfig, ServerLimits
from .registry import BACKEND_NAMES, make_backend

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "Backend",
    "BackendError",
    "DiffusionSettings",
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
    "describe",
    "make_backend",
    "serve_embedded",
]
