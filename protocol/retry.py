"""The one retry policy: exponential backoff with jitter.

Pure arithmetic over an injected random source, shared by everything that tries again:
the client's reconnects and its retries of tasks refused as "queue full", the server's
pushes to upload endpoints, and the client's deliveries; and which HTTP answers are worth
asking again, and how long an answer's ``Retry-After`` asks to wait.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from .errors import UsageError

__all__ = ["Backoff", "retry_after", "retryable_status"]


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


def retryable_status(status: int) -> bool:
    """Whether an HTTP answer with ``status`` may succeed if asked again: a timeout (408),
    a rate limit (429) or a server error (5xx). Any other 4xx will not change."""
    return status in (408, 429) or 500 <= status <= 599


def retry_after(value: str | None, now: float, cap: float) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date,
    against ``now`` in epoch seconds), at most ``cap``; ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - now), cap)
