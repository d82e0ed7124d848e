"""Durable callbacks, the pure part: message ids, the retry schedule and what to do next.

A callback is retried on Svix's model: the first attempt at once, then after each wait of the
schedule (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over ~27.6 hours).
SQS delays stop at 15 minutes, so a longer wait is made of hops: the message is sent again with
``min(900, remaining)`` until the attempt is due.

A 2xx answer delivers. Network errors, 5xx, 408 (timeout), 425 (too early) and 429 (slow down)
are retried; any other answer (a 3xx we never follow, 4xx such as 400/401/403/404/410) stops at
once: the receiver has said it will not take this message, and retrying for a day would only
hide that. ``redeliver`` sends it again once the receiver is fixed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

#: Svix's schedule after the first attempt, in seconds.
DEFAULT_RETRY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"
#: SQS refuses per-message delays above 15 minutes.
MAX_HOP_SECONDS = 900
#: Answers worth trying again later (besides every 5xx and network error).
RETRYABLE_STATUSES = frozenset({408, 425, 429})
_SLUG_PREFIX = "voucher batch "


class ScheduleError(ValueError):
    """CallbackRetrySchedule is not a comma-separated list of positive seconds."""


def parse_schedule(text: str) -> tuple[int, ...]:
    """``"5,300,1800"`` -> (5, 300, 1800); each a whole number of seconds, at least 1."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ScheduleError("CallbackRetrySchedule is empty: give seconds, e.g. 5,300,1800")
    waits = []
    for part in parts:
        if not part.isdigit() or int(part) < 1:
            raise ScheduleError(
                f"CallbackRetrySchedule entry {part!r} is not a positive whole number of seconds"
            )
        waits.append(int(part))
    return tuple(waits)


def attempt_budget(schedule: Sequence[int]) -> int:
    """Attempts per round: the first one, and one after each wait."""
    return 1 + len(schedule)


def wait_after(schedule: Sequence[int], attempt: int) -> int | None:
    """Seconds from attempt ``attempt`` (1-based) to the next; None when it was the last."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    return schedule[attempt - 1] if attempt <= len(schedule) else None


def hop_delay(due_at: int, now: int) -> int:
    """The SQS delay of the next hop toward an attempt due at ``due_at`` (0: due now)."""
    return max(0, min(MAX_HOP_SECONDS, due_at - now))


def retryable(status: int | str) -> bool:
    """Whether a failed attempt is worth another (an error name is: the network may heal)."""
    if isinstance(status, str):
        return status != "refused"
    return status >= 500 or status in RETRYABLE_STATUSES


def delivered(status: int | str) -> bool:
    return isinstance(status, int) and 200 <= status < 300


def event_slug(detail_type: str, key: str | None = None) -> str:
    """``"Voucher Batch Awaiting Approval"`` -> ``"awaiting-approval"`` (+ ``-<key>``)."""
    name = detail_type.strip().lower().removeprefix(_SLUG_PREFIX)
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "event"
    if key:
        slug += "-" + re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-")
    return slug


def webhook_id(batch_id: str, slug: str) -> str:
    """The Standard Webhooks message id: one per (batch, event), the same on every attempt and
    every re-run of the step that sent it, so a receiver dedupes on it."""
    safe_batch = re.sub(r"[^A-Za-z0-9_.-]+", "-", batch_id)
    return f"msg_{safe_batch}_{slug}"


def safe_url(url: str) -> str:
    """A callback URL fit for logs and views: no credentials, no query string or fragment
    (where receivers put tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class Outcome:
    """What an attempt decides: the delivery's next state and, while pending, when to retry."""

    state: str  # "delivered", "failed" or "pending"
    next_attempt_at: int | None = None
    reason: str | None = None


def after_attempt(status: int | str, *, attempt: int, schedule: Sequence[int], now: int) -> Outcome:
    """Decide from attempt number ``attempt`` of a round and its answer."""
    if delivered(status):
        return Outcome("delivered")
    shown = f"HTTP {status}" if isinstance(status, int) else status
    if status == "refused":
        return Outcome("failed", reason="refused: the callback URL is not allowed")
    if not retryable(status):
        return Outcome("failed", reason=f"{shown}: not retried (the receiver refused it)")
    wait = wait_after(schedule, attempt)
    if wait is None:
        return Outcome(
            "failed", reason=f"{shown} on the last of {attempt_budget(schedule)} attempts"
        )
    return Outcome("pending", next_attempt_at=now + wait, reason=shown)
