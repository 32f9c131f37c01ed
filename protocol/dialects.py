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
from .runware.session import RunwareSession, current_task
from .session import Session

__all__ = ["DEFAULT_DIALECT", "DIALECTS", "Dialect"]


def _as_is(prepared: PreparedTask) -> PreparedTask:
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
        "legacy": Dialect("legacy", Session, _as_is),
        "runware": Dialect("runware", RunwareSession, current_task),
    }
)
#: The seed's dialect.
DEFAULT_DIALECT: Final = "legacy"
