"""Asynchronous WebSocket task orchestrator for image-generation services.

Everything that does I/O lives here; the wire protocol is the sans-I/O
``protocol`` package. Start with :class:`Orchestrator`.
"""

from .client import Orchestrator
from .config import Backoff, Config, Limits, Timeouts
from .errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    FieldError,
    HeartbeatTimeout,
    InvalidState,
    LocalProtocolError,
    OrchestratorError,
    OrchestratorTimeout,
    ProtocolError,
    RemoteProtocolError,
    RemoteTaskError,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    TransportError,
    UploadError,
    UsageError,
)
from .handle import TaskHandle
from .records import Stats
from .results import (
    Event,
    GeneratedImage,
    ImageReady,
    Progress,
    TaskDone,
    TaskFailed,
    TaskResult,
    TextReady,
)
from .specs import (
    ControlNetImage,
    EnhancePrompt,
    GenerationOptions,
    ImageToImage,
    ImageToText,
    Inpaint,
    PreprocessControlNet,
    PreprocessOptions,
    RemoveBackground,
    TaskSpec,
    TextToImage,
    UploadImage,
    Upscale,
)

__all__ = [
    "Orchestrator",
    "Backoff",
    "Config",
    "Limits",
    "Timeouts",
    "Stats",
    "AuthenticationError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "FieldError",
    "HeartbeatTimeout",
    "InvalidState",
    "LocalProtocolError",
    "OrchestratorError",
    "OrchestratorTimeout",
    "ProtocolError",
    "RemoteProtocolError",
    "RemoteTaskError",
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "TransportError",
    "UploadError",
    "UsageError",
    "ControlNetImage",
    "EnhancePrompt",
    "Event",
    "GenerationOptions",
    "GeneratedImage",
    "ImageReady",
    "ImageToImage",
    "ImageToText",
    "Inpaint",
    "PreprocessControlNet",
    "PreprocessOptions",
    "Progress",
    "RemoveBackground",
    "TaskDone",
    "TaskFailed",
    "TaskHandle",
    "TaskResult",
    "TaskSpec",
    "TextReady",
    "TextToImage",
    "UploadImage",
    "Upscale",
    "__version__",
]

__version__ = "0.1.0"
