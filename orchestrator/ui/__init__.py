"""The streaming web page: ``orchestrator ui``, or :func:`create_app` in your own ASGI stack.

Needs Starlette and uvicorn (the ``[ui]`` extra; the ``[server]`` extra has them too),
imported on first use of these names, so that ``orchestrator ui``'s options load without
them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app, figures, text_to_image
    from .outbox import Outbox

__all__ = ["Outbox", "create_app", "figures", "text_to_image"]

_WHERE = {"Outbox": ".outbox", "create_app": ".app", "figures": ".app", "text_to_image": ".app"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
