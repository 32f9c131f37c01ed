"""Delivery: the orchestrator puts finished images where the user wants them.

Sinks (:mod:`.sinks`) are HTTP(S) URL templates, ``s3://`` buckets and local directories;
:class:`Deliverer` (:mod:`.deliverer`) runs the deliveries with bounded concurrency and
retries; :mod:`.templates` fills (and guards) the placeholders; :mod:`.transfer` moves
the bytes. Configure with ``Orchestrator(deliver_to=[...])`` and ``Config(delivery=...)``,
per task with a spec's ``deliver_to`` and ``metadata``.
"""

from .deliverer import Deliverer, TaskDeliveries
from .sinks import DirectorySink, HttpSink, S3Sink, Sink, sink
from .templates import BUILTIN, Template

__all__ = [
    "BUILTIN",
    "Deliverer",
    "DirectorySink",
    "HttpSink",
    "S3Sink",
    "Sink",
    "TaskDeliveries",
    "Template",
    "sink",
]
