"""The root of the exception tree, and the protocol and usage branches.

Every exception the project raises derives from :class:`OrchestratorError`, so
``except OrchestratorError`` catches all of them and nothing else. The
``orchestrator`` package adds its own branches (transport, timeouts, tasks,
uploads) under the same root; this module holds the part that the sans-I/O
core needs::

    OrchestratorError
    ├── ProtocolError              a frame broke the protocol
    │   ├── LocalProtocolError     ...one we were about to send (bad user input)
    │   └── RemoteProtocolError    ...one the peer sent us
    └── UsageError                 the API was used the wrong way
        └── InvalidState           ...an operation the session's state forbids

A :class:`ProtocolError` that comes from validation carries ``errors``: one
:class:`FieldError` per broken rule, each naming the field as it is on the wire
(``gScale``), its Python name (``g_scale``), the value and the rule.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldError",
    "InvalidState",
    "LocalProtocolError",
    "OrchestratorError",
    "ProtocolError",
    "RemoteProtocolError",
    "UsageError",
]


class OrchestratorError(Exception):
    """Root of every exception raised by ``protocol`` and ``orchestrator``."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: which field, what value, which rule.

    ``field`` is the wire path (``controlNet[0].endStep``), ``python_name`` the
    same path in Python names (``control_net[0].end_step``). ``field`` is empty
    when the rule concerns the message as a whole.
    """

    field: str
    python_name: str
    value: Any
    rule: str

    def __str__(self) -> str:
        if not self.field:
            return self.rule
        names = self.field
        if self.python_name and self.python_name != self.field:
            names = f"{self.field} ({self.python_name})"
        return f"{names} = {_short_repr(self.value)}: {self.rule}"


class ProtocolError(OrchestratorError):
    """A frame broke the protocol.

    Attributes:
        message: what went wrong, in one sentence.
        errors: the individual broken rules, when the cause was validation.
    """

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        return self.message + "".join(f"\n  {e}" for e in self.errors)


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (bad JSON, wrong shape, bad value)."""


class UsageError(OrchestratorError):
    """The API was used in a way it does not allow."""


class InvalidState(UsageError):
    """The operation is not allowed in the session's current state."""


# Bounded at every level: a value from a hostile frame may be an array of a million items,
# whose full repr would cost seconds before being cut to 80 characters.
_REPR = reprlib.Repr()  # (keyword arguments arrived in 3.12)
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 4, 4
_REPR.maxstring = _REPR.maxother = 60


def _short_repr(value: Any, limit: int = 80) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
