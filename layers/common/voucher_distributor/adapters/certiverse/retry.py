"""Retry timing for Certiverse calls: capped exponential backoff with full jitter, honouring
``Retry-After``, bounded in attempts and in total time so a Lambda never waits past its budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    #: Total time (seconds) the calls of one operation may take, waits included.
    total_budget_s: float = 45.0
    #: Longest ``Retry-After`` we honour; a longer one ends the retries (the budget can't wait).
    max_retry_after_s: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return self.rng.uniform(0, cap)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """The wait before the next attempt: the server's ``Retry-After`` when it gave one."""
        hinted = parse_retry_after(retry_after, now=datetime.now(UTC))
        if hinted is not None:
            return hinted
        return self.backoff(attempt)


#: A policy that never retries (for tests and callers that reconcile themselves).
NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
