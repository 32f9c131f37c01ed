"""Asynchronous WebSocket task orchestrator for image-generation services.

Everything that does I/O lives here; the wire protocol is the sans-I/O
``protocol`` package.
"""

from protocol.errors import OrchestratorError

__all__ = ["OrchestratorError", "__version__"]

__version__ = "0.1.0"
