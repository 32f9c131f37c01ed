"""Where an image goes: the placeholders of a sink's template, checked and filled.

A template is ``str.format`` text: ``{task_uuid}/{image_uuid}.{ext}``, ``{index:03d}``. The
names are the built-in ones (:data:`BUILTIN`) and the keys of a task's ``metadata``. A name
that is neither is refused when the sink is built (for a name no task could fill) or when
the task is submitted (for a metadata key the task does not give), before anything is sent.

A value never changes the shape of the place it fills: for a path or an object key, every
character that could start a new segment (``/``, ``\\``, NUL, other control characters) is
replaced, and a value that is ``.`` or ``..`` becomes ``_``; in a URL, a value is also
percent-encoded. So ``../x`` or ``/etc/x`` in metadata names a file inside the directory.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import UsageError

__all__ = ["BUILTIN", "Placeholders", "Template", "safe_segment"]

#: The placeholders every image has.
BUILTIN: frozenset[str] = frozenset({"task_uuid", "image_uuid", "index", "seed", "ext"})

_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_DEFAULT_NAME = "{image_uuid}.{ext}"


def safe_segment(value: object) -> str:
    """``value`` as text that stays one path segment (see the module docstring)."""
    text = _UNSAFE.sub("_", str(value))
    return "_" if text in ("", ".", "..") else text


@dataclass(frozen=True, slots=True)
class Placeholders:
    """The values of one image's placeholders."""

    task_uuid: str
    image_uuid: str
    index: int
    seed: int | None
    ext: str
    metadata: Mapping[str, Any]

    def values(self) -> dict[str, Any]:
        """Every name a template may use, with its value."""
        seed = "unknown" if self.seed is None else self.seed
        builtin = {
            "task_uuid": self.task_uuid,
            "image_uuid": self.image_uuid,
            "index": self.index,
            "seed": seed,
            "ext": self.ext,
        }
        return {**self.metadata, **builtin}


class Template:
    """One sink's template: its fixed prefix and the names it uses.

    Args:
        text: the template; one with no placeholder is a prefix (a directory, a key
            prefix, a base URL) to which ``{image_uuid}.{ext}`` is added.
        sink: how the sink is named in errors.
    """

    def __init__(self, text: str, sink: str) -> None:
        if "{" not in text and "}" not in text:
            text = text + ("" if text.endswith("/") or not text else "/") + _DEFAULT_NAME
        self.text = text
        self.sink = sink
        self.names = self._parse(text)

    def _parse(self, text: str) -> frozenset[str]:
        names: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise UsageError(f"{self.sink}: template {text!r}: {exc}") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier():
                raise UsageError(
                    f"{self.sink}: template {text!r}: placeholder {{{name}}} must be a plain "
                    f"name (one of {', '.join(sorted(BUILTIN))}, or a key of the task's metadata)"
                )
            if conversion is not None or (spec and "{" in spec):
                raise UsageError(
                    f"{self.sink}: template {text!r}: {{{name}}} takes a format spec only"
                )
            names.add(name)
        return frozenset(names)

    def check_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Raise UsageError if the template names something ``metadata`` does not give."""
        missing = sorted(self.names - BUILTIN - set(metadata))
        if missing:
            raise UsageError(
                f"{self.sink}: template {self.text!r} uses {', '.join(missing)}: neither a "
                f"built-in placeholder ({', '.join(sorted(BUILTIN))}) nor a key of the "
                "task's metadata"
            )

    def render(self, placeholders: Placeholders, *, url: bool = False) -> str:
        """The template filled with ``placeholders``, each value made safe (and
        percent-encoded when ``url``)."""
        values = placeholders.values()
        safe: dict[str, Any] = {}
        for name in self.names:
            value = values[name]
            if isinstance(value, int | float) and not isinstance(value, bool):
                safe[name] = value  # numbers keep format specs such as {index:03d}
            else:
                text = safe_segment(value)
                safe[name] = quote(text, safe="") if url else text
        try:
            return self.text.format_map(safe)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{self.sink}: template {self.text!r}: {exc}") from None
