"""The current dialect's names for what the legacy tables number.

Models are AIR ids (``civitai:101055@128078``) and schedulers are names in the current
dialect; errors are stable code strings. Only what differs from the legacy tables is
here; every limit and every table of choices stays in :mod:`protocol.tables`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ..tables import DEFAULT_MODEL_ID, ERRORS, SCHEDULERS, ErrorId, error_code_for

__all__ = [
    "DEFAULT_MODELS",
    "CURRENT_CODES",
    "MODEL_AIRS",
    "UNKNOWN_ERROR_ID",
    "air_for",
    "canonical_scheduler",
    "current_code",
    "error_id_for",
    "legacy_model_id",
    "scheduler_for",
]

#: Legacy model ids with an AIR id the current dialect knows them by. (The other legacy
#: ids have no published AIR: a task naming one is sent with the id as it is.)
MODEL_AIRS: Final[Mapping[str, str]] = MappingProxyType({"4": "civitai:101055@128078"})
_LEGACY_IDS: Final = {air: model_id for model_id, air in MODEL_AIRS.items()}

#: The model a task type of the current dialect is sent with when the legacy task names
#: none (the current dialect requires one; these are the vendor's own).
DEFAULT_MODELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "upscale": "runware:504@1",
        "removeBackground": "runware:109@1",
        "caption": "runware:151@1",
        "promptEnhance": "runware:llama-3-1-8b@prompt-enhancer",
    }
)

#: Short scheduler names of the current dialect, for the legacy table's names.
_SCHEDULER_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Euler": "EulerDiscreteScheduler",
        "Euler a": "EulerAncestralDiscreteScheduler",
        "DDIM": "DDIMScheduler",
        "DDPM": "DDPMScheduler",
        "Heun": "HeunDiscreteScheduler",
        "LMS": "LMSDiscreteScheduler",
        "PNDM": "PNDMScheduler",
        "UniPC": "UniPCMultistepScheduler",
        "DEIS": "DEISMultistepScheduler",
    }
)

#: The current dialect's error code for each errorId (in the vendor's style: its SDKs
#: sort codes by their shape, ``invalid*`` and ``missing*`` being the client's mistakes).
CURRENT_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        ErrorId.INVALID_API_KEY: "invalidApiKey",
        ErrorId.VALIDATION_ERROR: "invalidParameter",
        ErrorId.UNKNOWN_TASK_TYPE: "invalidTaskType",
        ErrorId.QUEUE_FULL: "rateLimitExceeded",
        ErrorId.TASK_TIMEOUT: "taskTimeout",
        ErrorId.INTERNAL_ERROR: "internalServerError",
        ErrorId.UPLOAD_FAILED: "uploadFailed",
        ErrorId.IMAGE_NOT_FOUND: "imageNotFound",
        ErrorId.MALFORMED_FRAME: "invalidFrame",
        ErrorId.UNKNOWN_MESSAGE: "invalidMessage",
        ErrorId.TASK_CANCELLED: "taskCancelled",
        ErrorId.LIMIT_EXCEEDED: "limitExceeded",
        ErrorId.SERVER_SHUTTING_DOWN: "serviceUnavailable",
        ErrorId.SESSION_REFUSED: "invalidSession",
        ErrorId.NOT_AUTHENTICATED: "missingAuthentication",
    }
)
#: The errorId of an error code this project does not know (the code is kept beside it).
UNKNOWN_ERROR_ID: Final = 0
_ERROR_IDS: Final = {info.code: error_id for error_id, info in ERRORS.items()}
_ERROR_IDS.update({code: error_id for error_id, code in CURRENT_CODES.items()})
_ERROR_IDS.update({"authFailed": ErrorId.INVALID_API_KEY, "unauthorized": ErrorId.INVALID_API_KEY})
_FIELD = re.compile(r"[A-Za-z0-9]+")


def current_code(error_id: int, parameter: str | None = None, *, missing: bool = False) -> str:
    """The current dialect's code for an errorId; a validation error names its field
    (``invalidSteps``, ``missingPositivePrompt``)."""
    if error_id == ErrorId.VALIDATION_ERROR and parameter:
        head = _FIELD.match(parameter)
        if head is not None:
            name = head.group()
            return ("missing" if missing else "invalid") + name[0].upper() + name[1:]
    return CURRENT_CODES.get(error_id) or error_code_for(error_id) or str(error_id)


def error_id_for(code: str) -> int:
    """The errorId of an error code (:data:`UNKNOWN_ERROR_ID` when unknown)."""
    known = _ERROR_IDS.get(code)
    if known is not None:
        return known
    if "ApiKey" in code:
        return ErrorId.INVALID_API_KEY
    if code.startswith(("invalid", "missing")):
        return ErrorId.VALIDATION_ERROR
    return UNKNOWN_ERROR_ID


def air_for(model_id: str | int) -> str | int:
    """The model id to send in the current dialect for a legacy ``modelId``."""
    return MODEL_AIRS.get(str(model_id), model_id)


def legacy_model_id(model: str | int) -> str | int:
    """The legacy ``modelId`` for a model of the current dialect (an AIR id, usually)."""
    return _LEGACY_IDS.get(str(model), model) if model != "" else DEFAULT_MODEL_ID


def scheduler_for(scheduler_id: int) -> str:
    """The current dialect's name of a legacy ``schedulerId`` (the table's own name)."""
    return SCHEDULERS[scheduler_id]


def canonical_scheduler(name: str) -> str:
    """The legacy table's name for a scheduler name of the current dialect."""
    return _SCHEDULER_ALIASES.get(name, name)
