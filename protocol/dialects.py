"""The dialects a client can speak, by name: how to open a session, how to encode a task.

Specs encode tasks in the seed's dialect (``newTask`` frames), which every layer above
the protocol carries. A dialect says which session speaks to a server and how a
prepared task becomes one of its frames (which raises, before anything is sent, when the
dialect cannot say what the task asks). Nothing outside ``protocol`` names a dialect's
classes: it looks them up here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from .codec import PreparedTask
from .errors import FieldError, LocalProtocolError
from .runware.session import RunwareSession, current_task
from .session import Session

__all__ = ["DEFAULT_DIALECT", "DIALECTS", "Dialect"]


def _legacy(prepared: PreparedTask) -> PreparedTask:
    if prepared.frame[:1] == b"[":  # written in the current dialect (a raw current task)
        rule = "is a task of the current Runware dialect: only for endpoints that speak it"
        error = FieldError("taskType", "", None, rule)
        raise LocalProtocolError("cannot send this task to a legacy endpoint", (error,))
    return prepared


@dataclass(frozen=True, slots=True)
class Dialect:
    """One dialect: its name, its client session, and its encoding of prepared tasks."""

    name: str
    session: Callable[..., Session]
    encode: Callable[[PreparedTask], PreparedTask]


#: Every dialect, by the name ``Config(dialect=...)`` takes.
DIALECTS: Final[Mapping[str, Dialect]] = MappingProxyType(
    {
        "legacy": Dialect("legacy", Session, _legacy),
        "runware": Dialect("runware", RunwareSession, current_task),
    }
)
#: The seed's dialect.
DEFAULT_DIALECT: Final = "legacy"
