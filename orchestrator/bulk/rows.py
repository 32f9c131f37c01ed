"""A bulk run's input: rows read from a file, one at a time, normalized into task specs.

Three formats, told apart by the file's suffix (or ``format=``):

- JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line, any field of the
  task's spec in snake_case (``number_results``), the wire's camelCase (``numberResults``)
  or the wire name's snake_case (``size_id``); ``task_type`` (a name, or the seed's taskType
  number) picks the kind, text-to-image by default; ``metadata`` (an object) feeds the sink
  templates' placeholders and the manifest;
- CSV with a header row: the same names as columns, values read as the field's type;
- anything else: plain text, one prompt per line.

Blank lines are skipped. Each row is **normalized** (names to the spec's, defaults merged
under it, values typed), and its **key** is a digest of its position and that normal
form, so the same request on the same line has the same key in every run, whatever the
spelling, and the row's taskUUID (derived from the key) is the same too. A row that cannot
be read becomes a :class:`BadRow` naming its line, the field and the rule; it never stops
the rows after it.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

import orjson
from pydantic import ValidationError

from protocol.identity import uuid_for
from protocol.messages import ControlNet, Lora
from protocol.tables import TaskType
from protocol.vocabularies import Plan

from ..specs import (
    GENERATION_FIELDS,
    ControlNetImage,
    EnhancePrompt,
    ImageToImage,
    ImageToText,
    Inpaint,
    PreprocessControlNet,
    RemoveBackground,
    TaskSpec,
    TextToImage,
    Upscale,
)

__all__ = [
    "KINDS",
    "KIND_OF_TASK_TYPE",
    "BadRow",
    "Format",
    "Normalizer",
    "WHOLE",
    "Row",
    "Span",
    "bad_row",
    "count_rows",
    "csv_records",
    "detect_format",
    "is_field",
    "normalize",
    "objects",
    "one_line",
    "read",
]

Format = Literal["jsonl", "csv", "text"]

#: The kinds of task a row may be, by the name ``task_type`` takes.
KINDS: Final[Mapping[str, type[TaskSpec]]] = {
    "text_to_image": TextToImage,
    "image_to_image": ImageToImage,
    "inpaint": Inpaint,
    "controlnet": ControlNetImage,
    "upscale": Upscale,
    "remove_background": RemoveBackground,
    "image_to_text": ImageToText,
    "enhance_prompt": EnhancePrompt,
    "preprocess_controlnet": PreprocessControlNet,
}
# The seed's taskType ids (7, an upload, carries bytes: not a row's job).
KIND_OF_TASK_TYPE: Final[Mapping[int, str]] = {
    TaskType.TEXT_TO_IMAGE: "text_to_image",
    TaskType.IMAGE_TO_IMAGE: "image_to_image",
    TaskType.INPAINTING: "inpaint",
    TaskType.IMAGE_TO_TEXT: "image_to_text",
    TaskType.PROMPT_ENHANCER: "enhance_prompt",
    TaskType.IMAGE_UPSCALE: "upscale",
    TaskType.REMOVE_BACKGROUND: "remove_background",
    TaskType.CONTROLNET_TEXT_TO_IMAGE: "controlnet",
    TaskType.CONTROLNET_IMAGE_TO_IMAGE: "controlnet",
    TaskType.CONTROLNET_PREPROCESS: "preprocess_controlnet",
}
# Spec fields a row may not set: the run derives the taskUUID and owns the sinks.
_RESERVED: Final = frozenset({"task_uuid", "deliver_to", "metadata"})
# Wire names of the spec fields whose names differ from the wire's, beyond the generation
# options' table.
_WIRE_NAMES: Final = {
    "prompt": "promptText",
    "init_image_uuid": "imageInitiatorUUID",
    "mask_image_uuid": "imageMaskInitiatorUUID",
    "preprocessor": "preProcessorType",
}
_CAMEL = re.compile(r"_([a-z])")
_SNAKE = re.compile(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z])(?=[a-z])")
_INTEGER = re.compile(r"[+-]?\d+")
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def _camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def _snake(name: str) -> str:
    return _SNAKE.sub(lambda m: "_" + (m.group(1) or m.group(2)), name).lower()


def _aliases(spec: type[TaskSpec]) -> dict[str, tuple[str, str]]:
    # Every spelling a row may use -> (the spec's field, its declared type).
    wire = dict(_WIRE_NAMES) | {attr: name for name, attr in GENERATION_FIELDS}
    table: dict[str, tuple[str, str]] = {}
    for f in fields(spec):
        if f.name in _RESERVED:
            continue
        kind = str(f.type)
        for alias in (f.name, _camel(f.name), wire.get(f.name, f.name)):
            table[alias] = table[_snake(alias)] = (f.name, kind)
    return table


_ALIASES: Final = {kind: _aliases(spec) for kind, spec in KINDS.items()}
_REQUIRED: Final = {
    kind: tuple(
        f.name
        for f in fields(spec)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in _RESERVED
    )
    for kind, spec in KINDS.items()
}


@dataclass(slots=True)
class Row:
    """One input row, normalized: its line, key, kind and the spec's fields."""

    line: int
    key: str
    kind: str
    fields: dict[str, Any]
    metadata: dict[str, Any]
    request: str  # the normal form (kind and fields) as JSON: what the ledger keeps
    steps: Plan | None = None  # another API's request, with steps before its task

    def task_uuid(self, generation: int = 0) -> str:
        """The row's taskUUID: derived from its key (and how often it was retried afresh)."""
        return uuid_for(f"bulk/{self.key}/{generation}")

    def spec(
        self, task_uuid: str, deliver_to: tuple[Any, ...], metadata: dict[str, Any], **more: Any
    ) -> Any:
        """The task spec that runs this row (validated when submitted); ``more`` fields are
        what its steps gave (uploaded images' UUIDs, an enhanced prompt)."""
        fields = self.fields | more
        return KINDS[self.kind](
            task_uuid=task_uuid, deliver_to=deliver_to, metadata=metadata, **fields
        )


@dataclass(slots=True)
class BadRow:
    """A row that cannot become a task: its line, its key, its text and why."""

    line: int
    key: str
    request: str
    error: str


@dataclass(frozen=True, slots=True)
class Span:
    """A part of the input: the rows from line ``first`` to before line ``stop`` (None: to
    the end, so rows added later fall in it), the first of which starts at byte ``offset``
    (JSON lines and text seek there; CSV, whose records may span lines, reads from the top)."""

    first: int = 1
    stop: int | None = None
    offset: int = 0

    def holds(self, line: int) -> bool:
        """Whether the row of ``line`` is in the span."""
        return line >= self.first and (self.stop is None or line < self.stop)


WHOLE: Final = Span()


def detect_format(path: Path) -> Format:
    """The input's format from its suffix: JSON lines, CSV, else plain text."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv" if suffix == ".csv" else "text"


class Normalizer(Protocol):
    """What reads one row: :func:`normalize`, or another API's (``foreign.normalizer``)."""

    def __call__(
        self, line: int, raw: Mapping[str, Any], defaults: Mapping[str, Any], *, typed: bool
    ) -> Row | BadRow: ...


def read(
    path: Path,
    fmt: Format,
    defaults: Mapping[str, Any],
    row: Normalizer | None = None,
    span: Span = WHOLE,
) -> Iterator[Row | BadRow]:
    """Stream the rows of ``path`` in ``span`` (a file is never loaded whole), each read by
    ``row`` (default :func:`normalize`)."""
    row = row or normalize
    with path.open("rb" if fmt != "csv" else "r", **_open_args(fmt)) as source:
        if fmt == "csv":
            yield from _csv_rows(source, defaults, row, span)
            return
        for number, raw in _lines(source, span):
            text = raw.strip()
            if not text:
                continue
            yield (
                _jsonl_row(number, text, defaults, row)
                if fmt == "jsonl"
                else _text_row(number, text, defaults, row)
            )


def _open_args(fmt: Format) -> dict[str, Any]:
    return {"newline": "", "encoding": "utf-8-sig"} if fmt == "csv" else {}


def _lines(source: IO[bytes], span: Span) -> Iterator[tuple[int, bytes]]:
    # The numbered lines of ``span``, from its offset.
    source.seek(span.offset)
    for number, raw in enumerate(source, start=span.first):
        if span.stop is not None and number >= span.stop:
            return
        yield number, raw


def count_rows(path: Path, fmt: Format, span: Span = WHOLE) -> int:
    """How many rows ``path`` holds in ``span`` (for progress): a streamed pass, no parsing
    but CSV's."""
    if fmt == "csv":
        return sum(1 for _ in csv_records(path, span))
    with path.open("rb") as source:
        return sum(1 for _, raw in _lines(source, span) if raw.strip())


def csv_records(path: Path, span: Span = WHOLE) -> Iterator[int]:
    """The line numbers of the CSV rows in ``span`` (as :func:`read` numbers them)."""
    with path.open("r", **_open_args("csv")) as source:
        reader = csv.reader(source)
        next(reader, None)  # the header
        for record in reader:
            if span.stop is not None and reader.line_num >= span.stop:
                return
            if any(v.strip() for v in record) and span.holds(reader.line_num):
                yield reader.line_num


def _jsonl_row(
    number: int, text: bytes, defaults: Mapping[str, Any], row: Normalizer
) -> Row | BadRow:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return bad_row(number, text.decode(errors="replace"), f"invalid JSON: {exc}")
    if not isinstance(value, dict):
        return bad_row(number, text.decode(), 'a row is a JSON object ({"prompt": ...})')
    return row(number, value, defaults, typed=True)


def _text_row(
    number: int, text: bytes, defaults: Mapping[str, Any], row: Normalizer
) -> Row | BadRow:
    try:
        prompt = text.decode()
    except UnicodeDecodeError as exc:
        return bad_row(number, text.decode(errors="replace"), f"not UTF-8 text: {exc}")
    return row(number, {"prompt": prompt}, defaults, typed=True)


def _csv_rows(
    source: IO[str], defaults: Mapping[str, Any], row: Normalizer, span: Span
) -> Iterator[Row | BadRow]:
    reader = csv.DictReader(source)
    for record in reader:
        number = reader.line_num
        if not span.holds(number):
            if span.stop is not None and number >= span.stop:
                return
            continue
        if None in record:  # more cells than the header has columns
            extra = orjson.dumps(record.pop(None)).decode()
            yield bad_row(number, extra, f"more cells than the header's {len(record)} columns")
            continue
        values = {name: value for name, value in record.items() if value not in ("", None)}
        if values:
            yield row(number, values, defaults, typed=False)


def normalize(
    line: int, raw: Mapping[str, Any], defaults: Mapping[str, Any], *, typed: bool
) -> Row | BadRow:
    """One row in its normal form, or a BadRow naming the field and the rule.

    ``defaults`` (typed values) apply under the row, where the row's kind has the field.
    ``typed``: the row's values are JSON's (else text, as CSV cells are, read as the
    field's type).
    """
    row = dict(raw)
    metadata = row.pop("metadata", None) or defaults.get("metadata") or {}
    if not isinstance(metadata, dict):
        return bad_row(line, _text(raw), "metadata: must be an object of placeholder values")
    try:
        chosen = row.pop("task_type", row.pop("taskType", None))
        kind = _kind(chosen if chosen is not None else defaults.get("task_type", "text_to_image"))
        values = _fields(kind, defaults, True, strict=False) | _fields(kind, row, typed)
        missing = [name for name in _REQUIRED[kind] if name not in values]
        if missing:
            raise ValueError(f"{missing[0]}: required for {kind}")
        request = orjson.dumps(
            {"task_type": kind, **values, **({"metadata": metadata} if metadata else {})},
            option=orjson.OPT_SORT_KEYS,
        ).decode()
        values = objects(values)
    except ValueError as exc:
        return bad_row(line, _text(raw), str(exc))
    except orjson.JSONEncodeError as exc:
        return bad_row(line, _text(raw), f"a value is not JSON: {exc}")
    key = hashlib.sha256(f"{line}\n{request}".encode()).hexdigest()[:32]
    return Row(line, key, kind, values, metadata, request)


def _text(raw: Mapping[str, Any]) -> str:
    # A bad row's own text, for the ledger (only bad rows pay for it).
    return orjson.dumps(raw, default=str).decode()


def _kind(value: Any) -> str:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value in KIND_OF_TASK_TYPE:
            return KIND_OF_TASK_TYPE[value]
    elif isinstance(value, str) and _snake(value).replace("-", "_") in KINDS:
        return _snake(value).replace("-", "_")
    known = ", ".join(KINDS)
    raise ValueError(f"task_type = {value!r}: must be one of {known} or a taskType number")


def _fields(
    kind: str, given: Mapping[str, Any], typed: bool, *, strict: bool = True
) -> dict[str, Any]:
    # The spec's names and types of ``given``; not ``strict``: names the kind lacks pass.
    aliases = _ALIASES[kind]
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in aliases:
            if not strict:
                continue
            if name in _RESERVED or _snake(name) in _RESERVED:
                raise ValueError(f"{name}: set by the run, not by a row")
            raise ValueError(f"{name}: not a field of {kind} (known: {', '.join(_known(kind))})")
        field_name, declared = aliases[name]
        if value is not None:
            values[field_name] = value if typed else _typed(field_name, declared, value)
    return values


def _known(kind: str) -> list[str]:
    return sorted({name for name, _ in _ALIASES[kind].values()})


def _typed(name: str, declared: str, text: str) -> Any:
    # A CSV cell (or a --set value) read as the field's declared type.
    value = text.strip()
    if "bool" in declared:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{name} = {text!r}: must be true or false")
    if "tuple" in declared:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError(f"{name} = {text!r}: must be a JSON list") from None
    if "float" in declared:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name} = {text!r}: must be a number") from None
    if "int" in declared and _INTEGER.fullmatch(value):
        return int(value)
    if "int" in declared and "str" not in declared:
        raise ValueError(f"{name} = {text!r}: must be a whole number")
    return text


def objects(values: dict[str, Any]) -> dict[str, Any]:
    # LoRAs and ControlNet guides come as JSON objects; the specs take the protocol's models.
    for name, model in (("lora", Lora), ("control_net", ControlNet)):
        if name in values:
            items = values[name]
            if not isinstance(items, list | tuple):
                raise ValueError(f"{name}: must be a list of objects")
            try:
                values[name] = tuple(model.model_validate(item) for item in items)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"{name}.{where}: {first['msg']}") from None
    return values


def bad_row(line: int, text: str, error: str) -> BadRow:
    """A bad row: its key from its line and text, its error prefixed with its line."""
    key = hashlib.sha256(f"{line}\n{text}".encode()).hexdigest()[:32]
    return BadRow(line, key, text, f"line {line}: {error}")


def is_field(name: str) -> bool:
    """Whether some kind of row has a field of this name (for defaults given by name)."""
    return name in ("task_type", "taskType") or any(name in a for a in _ALIASES.values())


def one_line(exc: BaseException) -> str:
    """An error on one line, for the ledger (a validation error lists its fields on lines
    of their own)."""
    first, *rest = str(exc).splitlines() or [type(exc).__name__]
    return "; ".join([first, *(part.strip() for part in rest)]) if rest else first
