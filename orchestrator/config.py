"""Frozen settings for the orchestrator: timeouts, limits, backoff, extensions.

Every value has a default from DESIGN section 3; a bad value is refused when the
object is built, with a :class:`~orchestrator.errors.UsageError` naming the field
and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from protocol.dialects import DEFAULT_DIALECT, DIALECTS
from protocol.retry import Backoff
from protocol.tables import DEFAULT_EXTENSIONS, ERRORS, KNOWN_EXTENSIONS

from .errors import UsageError

#: errorIds the error table calls retryable.
RETRYABLE_ERROR_IDS: frozenset[int] = frozenset(i for i, info in ERRORS.items() if info.retryable)

__all__ = ["Backoff", "Config", "DeliverySettings", "Limits", "Timeouts"]


def _check_positive(
    obj: object, *, allow_zero: tuple[str, ...] = (), skip: tuple[str, ...] = ()
) -> None:
    # Every field is a number of its declared kind (an int field takes no float, no field
    # takes a bool or a string), finite, and above its floor.
    for f in fields(obj):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        where = f"{type(obj).__name__}.{f.name} = {value!r}"
        integral = f.type in ("int", int)
        kinds = int if integral else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise UsageError(f"{where}: must be {'an integer' if integral else 'a number'}")
        if not math.isfinite(value):
            raise UsageError(f"{where}: must be finite")
        floor_ok = value >= 0 if f.name in allow_zero else value > 0
        if not floor_ok:
            rule = "must be >= 0" if f.name in allow_zero else "must be > 0"
            raise UsageError(f"{where}: {rule}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """How long things may take, in seconds.

    Attributes:
        connect: open the socket and authenticate.
        task: a task's deadline from submission (``submit(..., deadline=)`` overrides it).
        heartbeat_interval: time between pings on an idle-or-busy connection.
        heartbeat_misses: unanswered pings after which the socket is taken as dead.
        replay_quiet: after resuming without the ``resume`` extension, how long the
            replay must be silent before unfinished tasks are sent again.
        failover: how long an endpoint may stay unreachable before its tasks move to a
            healthy endpoint.
    """

    connect: float = 10.0
    task: float = 300.0
    heartbeat_interval: float = 10.0
    heartbeat_misses: int = 2
    replay_quiet: float = 1.0
    failover: float = 5.0

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on work and memory.

    Attributes:
        in_flight: tasks submitted and not finished, over the whole orchestrator;
            ``submit`` waits for room beyond it.
        per_connection: tasks in flight on one connection; more wait for room.
        connections_per_endpoint: persistent sockets opened to each endpoint.
        max_frame: the largest frame accepted from a server, in bytes.
        remembered_images: how many imageUUIDs are remembered with the endpoint that
            holds them, to route later tasks that refer to them.
        connect_attempts: while no endpoint has ever been reached, how many failed
            attempts each may make before live tasks fail with ConnectError.
        poison_after: how many times a socket may close just after a task's frame went
            out on it before that task fails (the server refuses it), sparing the rest.
    """

    in_flight: int = 10_000
    per_connection: int = 4_096
    connections_per_endpoint: int = 1
    max_frame: int = 64 * 1024 * 1024
    remembered_images: int = 100_000
    connect_attempts: int = 3
    poison_after: int = 3

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """How the orchestrator delivers images to its sinks (``Orchestrator(deliver_to=...)``).

    Attributes:
        concurrency: uploads in flight at once, over every sink; also how many images'
            bytes are held at once, so memory does not grow with the images delivered.
            Separate from the task limits.
        attempts: tries per upload, the first included; connection errors, timeouts, 408,
            429 and 5xx are tried again, any other refusal is final.
        backoff: the waits between attempts (with jitter).
        retry_after_cap: the longest ``Retry-After`` honoured, in seconds.
        timeout: seconds one attempt (or the fetch of an image's URL) may take in all.
        max_image_bytes: the largest image fetched from its URL.
    """

    concurrency: int = 16
    attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    retry_after_cap: float = 60.0
    timeout: float = 60.0
    max_image_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        _check_positive(self, skip=("backoff",))
        if not isinstance(self.backoff, Backoff):
            raise UsageError(f"DeliverySettings.backoff = {self.backoff!r}: must be a Backoff")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """All of the orchestrator's settings.

    Attributes:
        timeouts, limits, backoff: see their classes.
        extensions: protocol extensions to ask for (all but ``preview`` by default);
            servers may accept fewer.
        compression: permessage-deflate; off by default (it costs CPU on fast links).
        retry_error_ids: a task failed with one of these errorIds is sent again after a
            backoff, until its deadline: by default those the error table calls retryable
            (queue full, server stopping). Add others to opt in (say 1005, an internal
            error), or pass ``frozenset()`` to fail at the first error.
        delivery: how images are delivered to sinks (:class:`DeliverySettings`).
        dialect: what the servers speak: ``"legacy"`` (the seed's ``newTask`` frames, the
            default) or ``"runware"`` (the current Runware dialect, that service today).
        endpoint_dialects: a dialect per endpoint URL, where it differs from ``dialect``.
    """

    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    backoff: Backoff = field(default_factory=Backoff)
    extensions: frozenset[str] = DEFAULT_EXTENSIONS
    compression: bool = False
    retry_error_ids: frozenset[int] = RETRYABLE_ERROR_IDS
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    dialect: str = DEFAULT_DIALECT
    endpoint_dialects: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        named = [(f"endpoint_dialects[{e!r}]", d) for e, d in self.endpoint_dialects.items()]
        for where, name in (("dialect", self.dialect), *named):
            if name not in DIALECTS:
                known = ", ".join(DIALECTS)
                raise UsageError(f"Config.{where} = {name!r}: must be a dialect ({known})")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.retry_error_ids):
            raise UsageError(f"Config.retry_error_ids = {self.retry_error_ids!r}: errorIds (ints)")
        unknown = set(self.extensions) - KNOWN_EXTENSIONS
        if unknown:
            known = ", ".join(sorted(KNOWN_EXTENSIONS))
            raise UsageError(f"Config.extensions: unknown {sorted(unknown)} (known: {known})")

    def dialect_of(self, endpoint: str) -> str:
        """The dialect ``endpoint`` speaks."""
        return self.endpoint_dialects.get(endpoint, self.dialect)
