"""The current dialect's frames to messages and back, with orjson.

A client's frame is an array of tasks; a server's is ``{"data": [items]}`` or
``{"errors": [errors]}``. One bad task does not spoil the others in its frame:
:func:`decode_from_client` returns, per task, the message or the error that names
what is wrong with it (and the taskUUID it claims, for the answer). A server's frame is
read whole (:func:`decode_from_server`). Both raise or return
:class:`~protocol.errors.RemoteProtocolError` only, as the legacy codec does, and read
seeds past 64 bits exactly the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from ..codec import dumps, exact_loads, has_float_for_int, parse
from ..errors import RemoteProtocolError
from ..validation import field_errors
from . import messages as m

__all__ = [
    "Refused",
    "decode",
    "decode_from_client",
    "decode_from_server",
    "encode_errors",
    "encode_items",
    "encode_tasks",
    "item_class",
    "task_class",
    "to_object",
]

M = TypeVar("M", bound=BaseModel)

_TASKS: Final[Mapping[str, type[m.Task]]] = {
    cls.wire_name: cls
    for cls in (
        m.Authentication,
        m.Ping,
        m.GetResponse,
        m.ImageInference,
        m.ImageUpload,
        m.Upscale,
        m.RemoveBackground,
        m.Caption,
        m.ControlNetPreprocess,
        m.PromptEnhance,
    )
}
_ITEMS_BY_TYPE: Final[Mapping[str, type[m.ResultItem]]] = {
    m.AuthenticationResult.wire_name: m.AuthenticationResult,
    m.PongItem.wire_name: m.PongItem,
    m.UploadItem.wire_name: m.UploadItem,
    m.PreprocessItem.wire_name: m.PreprocessItem,
}
# Which field says an item carries its result (an item without it is a status).
_RESULT_KEYS: Final = {m.ImageItem: "imageUUID", m.TextItem: "text"}
_MAX_ITEMS: Final = 10_000  # a hostile frame's array is refused by its length first


@dataclass(frozen=True, slots=True)
class Refused:
    """A task of a client's frame that does not decode: why, the taskUUID it claims, and
    its task type (``None`` when that is what is wrong: unknown or missing)."""

    error: RemoteProtocolError
    task_uuid: str | None
    task_type: str | None


# -- encoding ------------------------------------------------------------------------------


def to_object(message: m.Task | m.ResultItem | m.ErrorItem) -> dict[str, Any]:
    """The JSON object of a task or an item (only the fields that were set)."""
    body = message.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(message, m.ErrorItem):
        return body
    if isinstance(message, m._Task):
        return {"taskType": message.task_type or message.wire_name, **body}
    return body


def encode_tasks(tasks: Iterable[m.Task]) -> bytes:
    """A client's frame: the tasks, in one array."""
    return dumps([to_object(task) for task in tasks])


def encode_items(items: Iterable[m.ResultItem]) -> bytes:
    """A server's ``{"data": [...]}`` frame."""
    return dumps({"data": [to_object(item) for item in items]})


def encode_errors(errors: Iterable[m.ErrorItem]) -> bytes:
    """A server's ``{"errors": [...]}`` frame."""
    return dumps({"errors": [to_object(error) for error in errors]})


# -- classes -------------------------------------------------------------------------------


def task_class(task_type: Any) -> type[m.Task] | None:
    """The model of a taskType a client sends (older names too), or ``None``."""
    if not isinstance(task_type, str):
        return None
    return _TASKS.get(m.TASK_TYPE_ALIASES.get(task_type, task_type))


def item_class(item: Mapping[str, Any]) -> type[m.ResultItem]:
    """The model of an item a server sends, by its taskType and what it carries."""
    task_type = item.get("taskType")
    name = m.TASK_TYPE_ALIASES.get(task_type, task_type) if isinstance(task_type, str) else None
    cls = _ITEMS_BY_TYPE.get(name) if name is not None else None
    if cls is not None:
        return cls
    kind: type[m.ImageItem | m.TextItem] = (
        m.TextItem if name in ("caption", "promptEnhance") else m.ImageItem
    )
    return kind if _RESULT_KEYS[kind] in item else m.StatusItem


# -- decoding ------------------------------------------------------------------------------


def decode_from_client(data: bytes | str) -> list[m.Task | Refused]:
    """Decode a client's frame: each task, or why it was refused. Raises
    ``RemoteProtocolError`` only when the frame as a whole is not an array of objects."""
    tasks = parse(data)
    if not isinstance(tasks, list) or not tasks:
        raise RemoteProtocolError("a frame must be a non-empty JSON array of tasks")
    if len(tasks) > _MAX_ITEMS:
        raise RemoteProtocolError(f"a frame may carry at most {_MAX_ITEMS} tasks")
    return [_task(task, i, data) for i, task in enumerate(tasks)]


def _task(obj: Any, index: int, data: bytes | str) -> m.Task | Refused:
    if not isinstance(obj, dict):
        return Refused(RemoteProtocolError(f"task {index} must be a JSON object"), None, None)
    claimed = obj.get("taskUUID")
    task_uuid = claimed if isinstance(claimed, str) and len(claimed) <= 64 else None
    task_type = obj.get("taskType")
    cls = task_class(task_type)
    if cls is None:
        known = ", ".join(_TASKS)
        error = RemoteProtocolError(f"taskType {task_type!r} is not one of {known}")
        return Refused(error, task_uuid, None)
    try:
        return _validated(cls, obj, index, data, lambda exact: exact[index])
    except RemoteProtocolError as exc:
        return Refused(exc, task_uuid, cls.wire_name)


def decode_from_server(data: bytes | str) -> list[m.ResultItem] | list[m.ErrorItem]:
    """Decode a server's frame: its items, or its errors. Raises ``RemoteProtocolError``."""
    obj = parse(data)
    if not isinstance(obj, dict) or len(obj) != 1:
        raise RemoteProtocolError('a frame must be {"data": [...]} or {"errors": [...]}')
    key, values = next(iter(obj.items()))
    if key not in ("data", "errors") or not isinstance(values, list):
        raise RemoteProtocolError(
            f'a frame must be {{"data": [...]}} or {{"errors": [...]}}, not {key!r}'
        )
    if len(values) > _MAX_ITEMS:
        raise RemoteProtocolError(f"a frame may carry at most {_MAX_ITEMS} items")
    out: list[Any] = []
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            raise RemoteProtocolError(f"{key}[{i}] must be a JSON object")
        cls: type[BaseModel] = m.ErrorItem if key == "errors" else item_class(value)
        out.append(_validated(cls, value, i, data, lambda exact, k=key, j=i: exact[k][j]))
    return out


def decode(data: bytes | str) -> list[m.Task] | list[m.ResultItem] | list[m.ErrorItem]:
    """Decode a frame of either direction (arrays are clients'); raises on any bad task."""
    if parse(data).__class__ is list:
        decoded = decode_from_client(data)
        for task in decoded:
            if isinstance(task, Refused):
                raise task.error
        return decoded  # type: ignore[return-value]
    return decode_from_server(data)


def _validated(cls: type[M], obj: dict[str, Any], index: int, data: bytes | str, pick: Any) -> M:
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        error = exc
    if has_float_for_int(error):  # a seed past 64 bits, as orjson reads it: read it exactly
        try:
            return cls.model_validate(pick(exact_loads(data)))
        except ValidationError as exc:
            error = exc
    name = getattr(cls, "wire_name", cls.__name__)
    raise RemoteProtocolError(f"invalid {name} (item {index})", field_errors(error)) from error
