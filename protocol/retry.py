"""The one retry policy: exponential backoff with jitter.

Pure arithmetic over an injected random source, shared by everything that tries again:
the client's reconnects and its retries of tasks refused as "queue full", and the
server's pushes to upload endpoints.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter.

    The n-th delay is ``min(maximum, initial * factor**n)``, less a random fraction of
    up to ``jitter`` of it (so many clients do not retry in step). A bad value is
    refused when the object is built, with a :class:`UsageError` naming the field.
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "maximum", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"Backoff.{name} = {value!r}: must be a number")
            if not math.isfinite(value):
                raise UsageError(f"Backoff.{name} = {value!r}: must be finite")
        for name, value, rule, ok in (
            ("initial", self.initial, "must be > 0", self.initial > 0),
            ("maximum", self.maximum, "must be > 0", self.maximum > 0),
            ("factor", self.factor, "must be >= 1", self.factor >= 1),
            ("jitter", self.jitter, "must be between 0 and 1", 0 <= self.jitter <= 1),
        ):
            if not ok:
                raise UsageError(f"Backoff.{name} = {value!r}: {rule}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry number ``attempt`` (0 for the first)."""
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1 - self.jitter * rng.random())

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the delays before each retry, forever."""
        rng = rng or random.Random()
        attempt = 0
        while True:
            yield self.delay(attempt, rng)
            attempt += 1
