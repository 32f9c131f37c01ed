"""The current Runware dialect, beside the seed's: messages, codec, session, translation.

The same service speaks it today: JSON arrays of tasks (``{"taskType":
"imageInference", ...}``) and ``{"data": [...]}`` / ``{"errors": [...]}`` replies, which
may batch several tasks in one frame. Nothing above ``protocol`` depends on which
dialect a connection speaks: specs encode legacy frames, and :class:`RunwareSession`
translates them (:mod:`.translate`) on the way out, and the results on the way in.
"""

from __future__ import annotations

from .codec import (
    Refused,
    decode,
    decode_from_client,
    decode_from_server,
    encode_errors,
    encode_items,
    encode_tasks,
)
from .messages import (
    Authentication,
    AuthenticationResult,
    Caption,
    ControlNetPreprocess,
    ErrorItem,
    GetResponse,
    ImageInference,
    ImageItem,
    ImageUpload,
    Ping,
    PongItem,
    PreprocessItem,
    PromptEnhance,
    RemoveBackground,
    ResultItem,
    StatusItem,
    Task,
    TextItem,
    UploadItem,
    Upscale,
)
from .results import current_frame
from .session import RunwareSession, current_task
from .translate import legacy_task

__all__ = [
    "Authentication",
    "AuthenticationResult",
    "Caption",
    "ControlNetPreprocess",
    "ErrorItem",
    "GetResponse",
    "ImageInference",
    "ImageItem",
    "ImageUpload",
    "Ping",
    "PongItem",
    "PreprocessItem",
    "PromptEnhance",
    "Refused",
    "RemoveBackground",
    "ResultItem",
    "RunwareSession",
    "StatusItem",
    "Task",
    "TextItem",
    "UploadItem",
    "Upscale",
    "current_frame",
    "current_task",
    "decode",
    "decode_from_client",
    "decode_from_server",
    "encode_errors",
    "encode_items",
    "encode_tasks",
    "legacy_task",
]
