"""Frames to messages and back, with orjson.

This is the one place where JSON and validation errors become
:class:`~protocol.errors.RemoteProtocolError`: whatever arrives (bad JSON, a
list, an unknown top-level key, a known key with a wrong shape, a value out of
range), ``decode*`` raises that and nothing else.

Three message names (``newUpscaleGan``, ``newRemoveBackground``,
``newPreProcessControlNet``) go both ways with different shapes. :func:`decode`
tells them apart by their fields; the client and the server call the stricter
direction-specific :func:`decode_from_server` and :func:`decode_from_client`.

Seeds go up to 922,337,203,470,729,216,000, past 64 bits. ``orjson.loads``
reads integers beyond 64 bits as floats, silently, and ``orjson.dumps`` refuses
them. Every integer field is strict, so a float where an integer belongs fails
validation; only then (never on the hot path) is the frame parsed again with
the standard library, which keeps integers exact. Encoding falls back to the
standard library when orjson refuses an integer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from .errors import RemoteProtocolError
from .messages import (
    CancelTask,
    ClientMessage,
    ErrorMessage,
    Message,
    NewConnection,
    NewConnectionSessionUUID,
    NewImages,
    NewImageUpload,
    NewProgress,
    NewTask,
    NewUploadedImageUUID,
    Ping,
    Pong,
    PreProcessControlNetRequest,
    PreProcessControlNetResult,
    PromptEnhance,
    PromptEnhancer,
    RemoveBackgroundRequest,
    RemoveBackgroundResult,
    ReverseClip,
    ReverseImageClip,
    ServerMessage,
    TaskRequest,
    UpscaleGanRequest,
    UpscaleGanResult,
)
from .validation import field_errors

__all__ = [
    "CLIENT_MESSAGE_NAMES",
    "IMAGES",
    "PREPROCESS",
    "TEXTS",
    "UPLOAD",
    "PreparedTask",
    "exact_loads",
    "has_float_for_int",
    "kept",
    "parse",
    "prepare",
    "decode",
    "decode_from_client",
    "decode_from_server",
    "encode",
    "loads",
    "server_message",
]

M = TypeVar("M", bound=BaseModel)

_FROM_CLIENT: Final[Mapping[str, type[ClientMessage]]] = {
    cls.wire_name: cls
    for cls in (
        NewConnection,
        Ping,
        CancelTask,
        NewTask,
        NewImageUpload,
        PreProcessControlNetRequest,
        UpscaleGanRequest,
        RemoveBackgroundRequest,
        ReverseImageClip,
        PromptEnhance,
    )
}
_FROM_SERVER: Final[Mapping[str, type[ServerMessage]]] = {
    cls.wire_name: cls
    for cls in (
        NewConnectionSessionUUID,
        Pong,
        NewImages,
        NewProgress,
        NewUploadedImageUUID,
        PreProcessControlNetResult,
        UpscaleGanResult,
        RemoveBackgroundResult,
        ReverseClip,
        PromptEnhancer,
    )
}
#: Top-level keys of frames clients send (what a server accepts).
CLIENT_MESSAGE_NAMES: Final = frozenset(_FROM_CLIENT)
# Bodies of the two flag messages are ``true``, not objects.
_FLAGS: Final = frozenset({Ping.wire_name, Pong.wire_name})


# -- encoding ------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """Encode a message as one frame (UTF-8 JSON bytes).

    Only fields that were set are written, so a frame carries what its sender
    chose and nothing a legacy reader would trip over.
    """
    return dumps(to_frame(message))


def to_frame(message: Message) -> dict[str, Any]:
    """Return the JSON object of a frame, before serialisation."""
    if message.wire_name in _FLAGS:
        return {message.wire_name: True}
    body = message.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(message, ErrorMessage):
        body.pop("error", None)
        return {"error": True, **body}
    return {message.wire_name: body}


def dumps(obj: Any) -> bytes:
    """Serialise a frame; integers beyond 64 bits (large seeds) are written exactly."""
    try:
        return orjson.dumps(obj)
    except TypeError as exc:
        if "Integer exceeds" not in str(exc):
            raise
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- prepared tasks ------------------------------------------------------------------------

#: What completes a task (:attr:`PreparedTask.expects`).
IMAGES: Final = "images"  # numberResults distinct images
TEXTS: Final = "texts"  # captions or enhanced prompts
UPLOAD: Final = "upload"  # the newUploadedImageUUID reply
PREPROCESS: Final = "preprocess"  # the newPreProcessControlNet reply


class PreparedTask(NamedTuple):
    """A task encoded once: its frame and what completes it (see :func:`prepare`).

    Flat and immutable: the frame is what is sent, and sent again after a
    disconnect, without building or serialising a message a second time.
    """

    task_uuid: str
    frame: bytes
    expects: str  # IMAGES, TEXTS, UPLOAD or PREPROCESS
    expected: int  # how many distinct results (images or texts) complete it


def prepare(task: TaskRequest) -> PreparedTask:
    """Encode a task request once, for :meth:`protocol.session.Session.send_task`."""
    frame = kept(encode(task))
    return PreparedTask(task.task_uuid, frame, _expects(task), task.expected_results)


def kept(frame: bytes) -> bytes:
    """``frame`` at its exact size, for a frame kept while its task is pending.

    orjson returns its bytes in an allocation of at least 4 KiB; thousands of pending tasks
    would keep that slack. The copy costs a fraction of a microsecond."""
    return bytes(memoryview(frame))


def _expects(task: TaskRequest) -> str:
    if isinstance(task, NewImageUpload):
        return UPLOAD
    if isinstance(task, PreProcessControlNetRequest):
        return PREPROCESS
    if isinstance(task, ReverseImageClip | PromptEnhance):
        return TEXTS
    return IMAGES


# -- decoding ------------------------------------------------------------------------------


def decode_from_server(data: bytes | str) -> ServerMessage:
    """Decode a frame a server sent (what a client reads). Raises ``RemoteProtocolError``."""
    return server_message(loads(data), data)


def server_message(obj: dict[str, Any], data: bytes | str) -> ServerMessage:
    """The message of a frame a server sent, already parsed by :func:`loads` from ``data``.
    Raises ``RemoteProtocolError``."""
    if "error" in obj:
        return _validate(ErrorMessage, obj, data, "error")
    name, body = _single_key(obj)
    cls = _FROM_SERVER.get(name)
    if cls is None:
        raise _unknown(name, _FROM_CLIENT, "clients")
    return _body(cls, name, body, data)


def decode_from_client(data: bytes | str) -> ClientMessage:
    """Decode a frame a client sent (what a server reads). Raises ``RemoteProtocolError``."""
    obj = loads(data)
    name, body = _single_key(obj)
    cls = _FROM_CLIENT.get(name)
    if cls is None:
        raise _unknown(name, _FROM_SERVER, "servers")
    return _body(cls, name, body, data)


def decode(data: bytes | str) -> Message:
    """Decode a frame of either direction, telling shared names apart by their fields."""
    obj = loads(data)
    if "error" in obj:
        return _validate(ErrorMessage, obj, data, "error")
    name, body = _single_key(obj)
    to_client, to_server = _FROM_SERVER.get(name), _FROM_CLIENT.get(name)
    if to_client is not None and to_server is not None:
        is_result = isinstance(body, dict) and ("images" in body or "newImageUUID" in body)
        cls: type[Message] = to_client if is_result else to_server
    elif to_client is not None or to_server is not None:
        cls = to_client or to_server  # type: ignore[assignment]
    else:
        raise RemoteProtocolError(f"unknown message type {name!r}")
    return _body(cls, name, body, data)


def loads(data: bytes | str) -> dict[str, Any]:
    """Parse a frame into its JSON object. Raises ``RemoteProtocolError``."""
    obj = parse(data)
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"frame must be a JSON object, not {_json_type(obj)}")
    return obj


def parse(data: bytes | str) -> Any:
    """Parse a frame into its JSON value, whatever it is. Raises ``RemoteProtocolError``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson gives up on integers too long for a double; the stdlib reads them exactly
        # (and validation then names the field and its range).
        if not str(exc).startswith("number"):
            raise RemoteProtocolError(f"frame is not valid JSON: {exc}") from exc
        return exact_loads(data)


def exact_loads(data: bytes | str) -> Any:
    """Parse a frame with the standard library, which keeps integers past 64 bits exact."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"frame is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _single_key(obj: dict[str, Any]) -> tuple[str, Any]:
    if len(obj) != 1:
        keys = ", ".join(map(repr, list(obj)[:5])) or "none"
        raise RemoteProtocolError(f"frame must have exactly one top-level key, got {keys}")
    return next(iter(obj.items()))


def _unknown(name: str, other: Mapping[str, Any], sender: str) -> RemoteProtocolError:
    if name in other:
        return RemoteProtocolError(f"message {name!r} is sent by {sender} only")
    return RemoteProtocolError(f"unknown message type {name!r}")


def _body(cls: type[M], name: str, body: Any, data: bytes | str) -> M:
    if name in _FLAGS:
        if body is not True:
            raise RemoteProtocolError(f"{name} must be true, got {_json_type(body)}")
        return cls()
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"{name} must be a JSON object, not {_json_type(body)}")
    return _validate(cls, body, data, name)


def _validate(cls: type[M], body: dict[str, Any], data: bytes | str, name: str) -> M:
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        error = exc
    # A strict integer field saw a float: perhaps orjson read a >64-bit integer. Parse the
    # frame again exactly; if that validates, it was a large seed, not a bad frame.
    if has_float_for_int(error):
        exact = exact_loads(data)
        exact_body = exact if name == "error" else next(iter(exact.values()))
        try:
            return cls.model_validate(exact_body)
        except ValidationError as exc:
            error = exc
    raise RemoteProtocolError(f"invalid {name}", field_errors(error)) from error


def has_float_for_int(error: ValidationError) -> bool:
    """Whether validation failed on a float where an integer belongs (which a seed past 64
    bits becomes when orjson reads it): parse the frame again with :func:`exact_loads`."""
    return any(
        d["type"] in ("int_type", "int_from_float") and isinstance(d.get("input"), float)
        for d in error.errors(include_url=False)
    )


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
