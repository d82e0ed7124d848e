"""A batch's scheduled send (``sendAt``) and the holder's reminders before expiry (pure).

``sendAt`` is ISO 8601 with an offset or ``Z``, in the future, at most 365 days ahead. A batch
with one buys and assigns its codes at once; its e-mails wait (rows ``scheduled``) until one
EventBridge Scheduler one-time schedule fires, ``send-now`` sends them, or ``cancel-send``
leaves them ``not-sent``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from voucher_distributor.models.ledger import BatchRecord

#: The furthest ahead a send may be scheduled.
MAX_AHEAD_DAYS = 365
#: A sendAt this far in the past when its input is ingested is still taken (it passed while
#: the input waited in its queue): it sends at once. Older ones are refused.
PAST_GRACE_SECONDS = 30

#: ``BatchRecord.send_state``: waiting for its time; fired (the schedule, or ``send-now``);
#: cancelled (``cancel-send``: the rows ``not-sent``).
SCHEDULED = "scheduled"
FIRED = "fired"
CANCELLED = "cancelled"
#: Who fired a send that nobody asked for by hand.
BY_SCHEDULE = "schedule"
SEND_NOW = "send-now"
CANCEL_SEND = "cancel-send"

_HAS_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)


class SendAtError(ValueError):
    """``sendAt`` cannot be used as given (the message says what to write)."""


def parse_send_at(text: str) -> int:
    """Epoch seconds of an ISO 8601 moment with an offset or ``Z`` (``…T09:00:00+01:00``)."""
    value = text.strip()
    if not value or "T" not in value.upper() or not _HAS_OFFSET.search(value):
        raise SendAtError(
            f"sendAt {text!r} is not an ISO 8601 time with an offset: write it like "
            "2027-03-01T09:00:00Z or 2027-03-01T09:00:00+01:00"
        )
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "zZ" else value)
    except ValueError:
        raise SendAtError(
            f"sendAt {text!r} is not an ISO 8601 time with an offset: write it like "
            "2027-03-01T09:00:00Z or 2027-03-01T09:00:00+01:00"
        ) from None
    if moment.tzinfo is None:  # pragma: no cover - the offset check above
        raise SendAtError(f"sendAt {text!r} has no offset: add Z or +01:00")
    return int(moment.timestamp())


def send_at_problem(at: int, now: int, *, grace: int = 0) -> str | None:
    """Why ``at`` cannot be a send time at ``now`` (None when it can)."""
    if at <= now - grace:
        return (
            f"sendAt {iso(at)} is in the past (now {iso(now)}): give a future time, or leave "
            "sendAt out to send at once"
        )
    if at > now + MAX_AHEAD_DAYS * 86_400:
        return f"sendAt {iso(at)} is more than {MAX_AHEAD_DAYS} days ahead: give a nearer time"
    return None


def checked_send_at(text: str | None, now: int, *, grace: int = 0) -> int | None:
    """``text`` as epoch seconds, or None when absent; raises :class:`SendAtError`."""
    if text is None or not text.strip():
        return None
    at = parse_send_at(text)
    problem = send_at_problem(at, now, grace=grace)
    if problem:
        raise SendAtError(problem)
    return at


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_name(prefix: str, batch_id: str) -> str:
    """The batch's one-time schedule: at most 64 of ``[0-9A-Za-z-_.]`` (a batch id may be longer
    or hold other characters, so its digest)."""
    digest = hashlib.sha256(batch_id.encode()).hexdigest()[:24]
    return f"{prefix[:34]}-send-{digest}"


def at_expression(epoch: int) -> str:
    """EventBridge Scheduler's one-time expression, in UTC: ``at(2027-03-01T08:00:00)``."""
    return f"at({datetime.fromtimestamp(epoch, UTC):%Y-%m-%dT%H:%M:%S})"


def parse_at_expression(expression: str) -> int | None:
    match = re.fullmatch(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)", expression.strip())
    if match is None:
        return None
    return int(datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC).timestamp())


def send_summary(batch: BatchRecord) -> dict[str, Any] | None:
    """A batch's scheduled send as ``status`` and the API show it (None: it has none)."""
    if batch.send_at is None:
        return None
    return {
        "sendAt": iso(batch.send_at),
        "state": batch.send_state or "not-sent",
        "firedAt": iso(batch.send_fired_at) if batch.send_fired_at else None,
        "firedBy": batch.send_fired_by,
        "changed": (
            {
                "action": batch.send_changed,
                "by": batch.send_changed_by,
                "at": iso(batch.send_changed_at) if batch.send_changed_at else None,
            }
            if batch.send_changed
            else None
        ),
    }


# ---------------------------------------------------------------------- reminders


def due_reminder(expires_utc: str, now: int, days: tuple[int, ...]) -> int | None:
    """The reminder an unused, active code expiring at ``expires_utc`` is due at ``now``: the
    smallest N of ``days`` with the expiry within N days (None: none due, or expired).

    Only the nearest one is sent: a code first seen 3 days from its expiry gets the 3-day
    reminder, not the 14-day one as well.
    """
    if not expires_utc or not days:
        return None
    try:
        expires = datetime.fromisoformat(expires_utc.replace("Z", "+00:00"))
    except ValueError:
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    left = expires - datetime.fromtimestamp(now, UTC)
    if left <= timedelta(0):
        return None
    within = [n for n in days if left <= timedelta(days=n)]
    return min(within) if within else None
