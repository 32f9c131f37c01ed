"""Bulk dataset generation: an input file in, a dataset (images and a manifest) out.

``orchestrator run prompts.jsonl --out dataset/`` on the command line; from code::

    from orchestrator.bulk import BulkRun

    summary = await BulkRun("prompts.jsonl", "dataset/", concurrency=512).run()

A run keeps a ledger in its directory: run the same command again after a crash, even a
``kill -9``, and it sends only the rows that are not done, with the same taskUUIDs. See
:mod:`.runner` for how, :mod:`.rows` for the input formats, :mod:`.ledger` and
:mod:`.manifest` for what is kept.
"""

from .ledger import Ledger
from .manifest import MANIFEST
from .resume import InputChanged
from .rows import KINDS, BadRow, Row
from .runner import LEDGER, BulkRun, Counts, Summary

__all__ = [
    "KINDS",
    "LEDGER",
    "MANIFEST",
    "BadRow",
    "BulkRun",
    "Counts",
    "InputChanged",
    "Ledger",
    "Row",
    "Summary",
]
