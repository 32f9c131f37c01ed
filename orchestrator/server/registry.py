"""The backends by name, as ``orchestrator serve --backend`` takes them, and making one.

Apart from :mod:`.backends` because the ``diffusers`` backend builds on that module: the
registry imports it lazily (it needs the [diffusion] extra), and nothing imports back.
"""

from __future__ import annotations

from typing import Final

from .backends import BACKENDS, Backend, BackendError
from .config import ServerConfig

__all__ = ["BACKEND_NAMES", "make_backend"]

#: What ``orchestrator serve --backend`` takes: ``BACKENDS``, and the [diffusion] extra's.
BACKEND_NAMES: Final = ("procedural", "fixed", "diffusers")


def make_backend(config: ServerConfig) -> Backend:
    """The backend ``config.backend`` names, made from its settings (not yet opened)."""
    if config.backend in BACKENDS:
        return BACKENDS[config.backend]()
    if config.backend != "diffusers":
        raise BackendError(f"backend = {config.backend!r}: must be one of {BACKEND_NAMES}")
    try:  # the [diffusion] extra: torch and diffusers, which a plain server install lacks
        from .diffusion.backend import DiffusersBackend
    except ImportError as exc:
        raise BackendError(
            f"the diffusers backend needs the [diffusion] extra ({exc.name} is missing): "
            "pip install 'imagegen-orchestrator[diffusion]'"
        ) from exc
    return DiffusersBackend(config.diffusion)
