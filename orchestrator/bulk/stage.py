"""A Ray Data stage: a dataset of prompts (or of task rows) in, a dataset of results out.

::

    import ray
    from orchestrator.bulk.stage import OrchestratorStage

    results = ray.data.read_json("prompts.jsonl").map_batches(
        OrchestratorStage,
        fn_constructor_kwargs={"endpoints": ["ws://..."], "api_key": "...", "key_column": "id"},
        concurrency=4,
        batch_size=256,
        batch_format="pyarrow",  # a missing value stays None (numpy makes ints of floats)
    )

Each actor Ray Data starts holds one :class:`~orchestrator.Orchestrator` (its sockets
persist from batch to batch); a batch's rows are sent at once and the batch returns when
all are finished. A row is a bulk input row (:mod:`.rows`: ``prompt``, any task field in
any of its spellings, ``task_type``); each row comes back with its columns and these:

- ``task_uuid``, ``error`` (None, or why the row failed: a bad field is named, and the
  other rows go on);
- ``image_uuids``, ``seeds``, ``cost``, ``texts``;
- ``images``: the images' bytes (``return_images=False`` leaves them out, for rows whose
  images go to ``upload`` sinks);
- ``locations``: where the sinks put each image.

Ray Data runs a failed batch again from its start. With ``key_column`` (a column that
names each row for good), a row's taskUUID is derived from its key and request, so the
second try of a row the server still holds is a replay, not a second image paid for;
without it each try is a fresh task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from protocol.identity import new_task_uuid, uuid_for

from ..config import Config
from ..delivery import sink
from ..errors import OrchestratorError
from .cluster import KeptOrchestrator
from .rows import BadRow, Row, normalize, one_line

__all__ = ["OrchestratorStage"]


class OrchestratorStage:
    """A callable class for ``Dataset.map_batches`` (see the module docstring).

    Args:
        endpoints, api_key, config, embedded: the :class:`~orchestrator.Orchestrator`'s
            (no endpoint: each actor runs the embedded default).
        defaults: fields every row gets unless it sets them.
        upload: sinks for every image (templates may use the row's ``metadata``).
        key_column: the column that names each row (see the module docstring).
        return_images: put the images' bytes in the ``images`` column.
    """

    def __init__(
        self,
        *,
        endpoints: Sequence[str] | None = None,
        api_key: str | None = None,
        config: Config | None = None,
        embedded: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        upload: Sequence[str] = (),
        key_column: str | None = None,
        return_images: bool = True,
    ) -> None:
        client = {"endpoints": endpoints, "api_key": api_key, "config": config}
        self._kept = KeptOrchestrator(client | {"embedded": embedded})
        self._defaults = dict(defaults or {})
        self._sinks = tuple(sink(s) for s in upload)  # checked now: a bad one raises here
        self._key_column, self._return_images = key_column, return_images

    async def __call__(self, batch: Any) -> dict[str, list[Any]]:
        """Run the batch's rows; return its columns and the results' (see the module)."""
        rows = _rows(batch)
        columns = {name: [row.get(name) for row in rows] for name in (rows[0] if rows else ())}
        outcomes: list[dict[str, Any]] = [{} for _ in rows]
        orch = await self._kept.get()
        async with anyio.create_task_group() as tg:
            for index, raw in enumerate(rows):
                tg.start_soon(self._one, orch, raw, outcomes, index)
        names = ["task_uuid", "error", "image_uuids", "seeds", "cost", "texts", "locations"]
        names += ["images"] if self._return_images else []
        return columns | {name: [outcome.get(name) for outcome in outcomes] for name in names}

    async def _one(self, orch: Any, raw: dict[str, Any], out: list[dict[str, Any]], i: int) -> None:
        fields = dict(raw)
        key = fields.pop(self._key_column, None) if self._key_column else None
        row = normalize(0, fields, self._defaults, typed=True)
        out[i] = {"error": None, "image_uuids": [], "seeds": [], "cost": 0.0, "texts": []}
        out[i] |= {"locations": [], "images": [], "task_uuid": None}
        if isinstance(row, BadRow):
            out[i]["error"] = row.error.removeprefix("line 0: ")
            return
        task_uuid = new_task_uuid() if key is None else uuid_for(f"stage/{key}/{row.request}")
        out[i]["task_uuid"] = task_uuid
        try:
            result = await orch.run(self._spec(row, task_uuid))
        except OrchestratorError as exc:
            out[i]["error"] = one_line(exc)
            return
        images = result.images
        out[i] |= {
            "image_uuids": [image.image_uuid for image in images],
            "seeds": [image.seed for image in images],
            "cost": result.cost,
            "texts": list(result.texts),
            "locations": [d.location for image in images for d in image.deliveries],
            "images": [image.data() for image in images] if self._return_images else [],
        }

    def _spec(self, row: Row, task_uuid: str) -> Any:
        spec = row.spec(task_uuid, self._sinks, row.metadata)
        if getattr(spec, "return_base64_image", False) is None and self._return_images:
            spec.return_base64_image = True  # the bytes come with the result: no second GET
        return spec


def _rows(batch: Any) -> list[dict[str, Any]]:
    # A batch in any of Ray Data's formats as plain rows. With ``batch_format="pyarrow"``
    # a missing value is None; numpy's batches make it NaN in a column of numbers.
    if hasattr(batch, "to_pylist"):  # pyarrow
        rows: list[dict[str, Any]] = batch.to_pylist()
        return rows
    if hasattr(batch, "to_dict"):  # pandas
        return [{str(k): _plain(v) for k, v in row.items()} for row in batch.to_dict("records")]
    columns = {name: [_plain(v) for v in values] for name, values in batch.items()}
    size = len(next(iter(columns.values()), []))
    return [{name: values[i] for name, values in columns.items()} for i in range(size)]


def _plain(value: Any) -> Any:
    # numpy's values as plain Python (its scalars and arrays have ``tolist``); NaN, which
    # numpy makes of a missing number and no field takes, as missing.
    value = value.tolist() if hasattr(value, "tolist") else value
    return None if isinstance(value, float) and math.isnan(value) else value
