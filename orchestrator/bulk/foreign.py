"""Rows in another seed API's shape: ``orchestrator run --vocabulary NAME``.

Each row is a request of that API (a JSON object, a CSV record with its parameters as
columns, or a plain-text line as its ``prompt``), read by its vocabulary
(``protocol.vocabularies``) into a plan, and the plan into one of our ordinary rows: the
same spec kinds, keys, ledger and manifest as any row. A row whose plan has steps before
its task (an image to upload, the prompt enhancer) keeps the plan, and the runner carries
those steps out before it sends the task (``orchestrator.vocabularies.prelude``).

Two things a bulk run does not do, and refuses with the row's line: a webhook (the ledger
and the manifest are the record), and AKI.IO's ``quality="preview"`` (it upscales each
image after it is made).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson

from protocol.errors import LocalProtocolError
from protocol.tables import TaskType
from protocol.vocabularies import Plan, vocabulary

from ..specs import GENERATION_FIELDS
from .rows import KIND_OF_TASK_TYPE, BadRow, Normalizer, Row, bad_row, objects, one_line

__all__ = ["normalizer", "spec_fields"]

# A stand-in taskUUID, to check a row's task (each row's own is derived when it is sent).
_CHECK_UUID: Final = "00000000-0000-4000-8000-000000000000"
# Wire name -> spec field, for what a plan sets.
_SPEC_NAMES: Final = dict(GENERATION_FIELDS) | {
    "numberResults": "number_results",
    "strength": "strength",
}


def normalizer(name: str) -> Normalizer:
    """The row reader of the vocabulary ``name`` (raises UsageError when there is none)."""
    vocab = vocabulary(name)

    def normalize(
        line: int, raw: Mapping[str, Any], defaults: Mapping[str, Any], *, typed: bool
    ) -> Row | BadRow:
        given = dict(raw)
        metadata = given.pop("metadata", None) or {}
        text = orjson.dumps(given, default=str, option=orjson.OPT_SORT_KEYS).decode()
        if not isinstance(metadata, dict):
            return bad_row(line, text, "metadata: must be an object of placeholder values")
        try:
            _, plan = vocab.prepare(given, _CHECK_UUID)
        except LocalProtocolError as exc:
            return bad_row(line, text, one_line(exc))
        refusal = _not_in_bulk(plan)
        if refusal is not None:
            return bad_row(line, text, refusal)
        request = orjson.dumps(
            {"vocabulary": vocab.name, "request": given, "metadata": metadata or None},
            default=str,
            option=orjson.OPT_SORT_KEYS,
        ).decode()
        key = hashlib.sha256(f"{line}\n{request}".encode()).hexdigest()[:32]
        steps = plan if plan.images or plan.enhance_prompt else None
        kind = KIND_OF_TASK_TYPE[plan.task_type]
        return Row(line, key, kind, spec_fields(plan), metadata, request, steps)

    return normalize


def spec_fields(plan: Plan) -> dict[str, Any]:
    """The fields of our spec that a plan's task has (its images' UUIDs aside)."""
    fields: dict[str, Any] = {"prompt": plan.prompt}
    if plan.negative_prompt:
        fields["negative_prompt"] = plan.negative_prompt
    for wire_name, value in plan.fields.items():
        fields[_SPEC_NAMES[wire_name]] = value
    return objects(fields)


def _not_in_bulk(plan: Plan) -> str | None:
    if plan.webhook is not None:
        return "webhook: not sent by bulk runs (the ledger and the manifest are the record)"
    if plan.upscale:
        return "quality = 'preview' upscales each image after it is made: use 'fast' here"
    if plan.task_type not in KIND_OF_TASK_TYPE:  # pragma: no cover - every plan generates
        return f"taskType {TaskType(plan.task_type)} is not a row's job"
    return None
