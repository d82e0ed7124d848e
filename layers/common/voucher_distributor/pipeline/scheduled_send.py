"""A batch's scheduled send: its e-mails wait until ``sendAt`` (``domain.send_schedule``).

Why EventBridge Scheduler and not a delayed-queue check: a send may be up to 365 days ahead,
and an SQS delay is at most 15 minutes, so a queue check would be re-sent some 35,000 times per
batch; one one-time schedule per batch (``at(...)``, ``ActionAfterCompletion: DELETE``) is one
resource that fires once, lives outside the functions and the stack (a deploy keeps it), and is
easy to show, move or delete. It targets the e-mail queue with its own role (``sqs:SendMessage``
on that queue only), so the sending function is what acts on it.

- :func:`hold_for_schedule`: the sending function, on a chunk's e-mail message, before any row:
  a batch still ``scheduled`` sends nothing (the first such message makes the schedule; a batch
  already due fires at once); a ``cancelled`` one writes its rows ``not-sent`` with why.
- :func:`fire`: the schedule's message (or a due batch): one conditional write moves the batch
  ``scheduled`` → ``fired``; only the write that did it queues the assigned chunks' e-mails. A
  second fire finds it ``fired`` and queues nothing; each row's claim guards the rest.
- :func:`change_send`: ``send-now`` / ``cancel-send`` (who, when), the schedule deleted.

A chunk assigned after the fire queues its own e-mails and finds the batch ``fired``: it sends.
The fire writes the batch before it lists the chunks, and a chunk is written ``assigned`` before
its message is read, so a chunk is never missed by both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.scheduler import Scheduler
from voucher_distributor.domain.batches import work_key
from voucher_distributor.domain.outcomes import outcomes_file
from voucher_distributor.domain.send_schedule import (
    BY_SCHEDULE,
    CANCEL_SEND,
    CANCELLED,
    FIRED,
    SCHEDULED,
    SEND_NOW,
    iso,
    schedule_name,
)
from voucher_distributor.models.email import EmailState
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    ChunkRecord,
    ChunkState,
)
from voucher_distributor.pipeline.context import Services, log


class SendChangeRefused(ValueError):
    """``send-now`` / ``cancel-send`` cannot be done (nothing pending; the message says why)."""


class NoSuchBatch(SendChangeRefused):
    """No such batch."""


def cancelled_reason(batch: BatchRecord) -> str:
    return (
        f"the scheduled send ({iso(batch.send_at or 0)}) was cancelled by "
        f"{batch.send_changed_by or 'an operator'} at {iso(batch.send_changed_at or 0)}"
    )


def hold_for_schedule(services: Services, batch: BatchRecord, chunk: ChunkRecord) -> str | None:
    """None when the chunk's e-mails may go now; otherwise what was done instead."""
    if batch.send_state in (None, FIRED):
        return None
    if batch.send_state == CANCELLED:
        return _not_sent(services, batch, chunk)
    assert batch.send_at is not None
    if batch.send_at <= services.now():
        outcome = fire(services, batch.batch_id, batch.send_at)
        if outcome == "fired":
            return "fired"  # this chunk's e-mails were queued again with the others
        again = services.ledger.batches.get_batch(batch.batch_id)
        if again is None or again.send_state == SCHEDULED:
            return "scheduled"
        return hold_for_schedule(services, again, chunk)
    ensure_schedule(services, batch)
    return "scheduled"


def ensure_schedule(services: Services, batch: BatchRecord) -> str:
    """The batch's one-time schedule, made once (a repeat finds it made)."""
    settings = services.settings
    name = schedule_name(settings.send_schedule_prefix, batch.batch_id)
    if batch.send_schedule:
        return batch.send_schedule
    if services.scheduler is None or not settings.send_schedule_role_arn:
        raise RuntimeError(
            "this stack cannot schedule sends (no SEND_SCHEDULE_ROLE_ARN): deploy this version"
        )
    assert batch.send_at is not None
    made = services.scheduler.create_one_time(
        name,
        at=batch.send_at,
        target_arn=settings.email_queue_arn,
        role_arn=settings.send_schedule_role_arn,
        body={"batchId": batch.batch_id, "fireAt": batch.send_at},
    )
    services.ledger.sends.note_schedule(batch.batch_id, name)
    log.info("batch %s: e-mails scheduled for %s (%s)", batch.batch_id, iso(batch.send_at),
             "schedule made" if made else "schedule there already")  # fmt: skip
    return name


def fire(services: Services, batch_id: str, fire_at: int, *, by: str = BY_SCHEDULE) -> str:
    """The send for ``fire_at`` is due: queue the assigned chunks' e-mails, once."""
    fired = services.ledger.sends.fire(batch_id, fire_at=fire_at, by=by, now=services.now())
    if fired is None:
        log.info("batch %s: the send for %s fired already, or was changed", batch_id,
                 iso(fire_at))  # fmt: skip
        return "already"
    queued = queue_assigned_chunks(
        services.ledger,
        lambda body: services.queues.send(services.settings.email_queue_url, body),
        batch_id,
    )
    if fired.send_schedule and services.scheduler is not None:
        services.scheduler.delete(fired.send_schedule)  # gone already when it was what fired
    services.metrics.count("ScheduledSendsFired")
    log.info("batch %s: scheduled send fired (%d chunk(s) queued)", batch_id, queued)
    return "fired"


def queue_assigned_chunks(
    ledger: Ledger, send: Callable[[dict[str, Any]], None], batch_id: str
) -> int:
    queued = 0
    for chunk in ledger.chunks.iter_chunks(batch_id):
        if chunk.state == ChunkState.ASSIGNED:
            send({"batchId": batch_id, "chunkNo": chunk.chunk_no, "fromRow": 0})
            queued += 1
    return queued


def _not_sent(services: Services, batch: BatchRecord, chunk: ChunkRecord) -> str:
    reason = cancelled_reason(batch)
    now = services.now()
    key = work_key(batch.batch_id, outcomes_file(chunk.chunk_no, chunk.state))
    for record in services.storage.read_records(key, AssignmentRecord):
        if record.status == "assigned" and record.voucher_code:
            services.ledger.deliveries.put_outcome(
                batch.batch_id, record.row_number, state=EmailState.NOT_SENT, reason=reason,
                now=now, voucher_code=record.voucher_code,
            )  # fmt: skip
    return "cancelled"


# ---------------------------------------------------------------------- send-now, cancel-send


@dataclass(frozen=True)
class SendChanged:
    batch: BatchRecord
    chunks_queued: int
    schedule_deleted: bool

    def as_dict(self) -> dict[str, Any]:
        b = self.batch
        return {
            "batchId": b.batch_id,
            "action": b.send_changed,
            "sendAt": iso(b.send_at) if b.send_at else None,
            "sendState": b.send_state,
            "by": b.send_changed_by,
            "at": iso(b.send_changed_at) if b.send_changed_at else None,
            "chunksQueued": self.chunks_queued,
            "scheduleDeleted": self.schedule_deleted,
        }


def nothing_pending(batch: BatchRecord) -> str | None:
    """Why a batch has no scheduled send to change (None: it has one)."""
    if batch.send_at is None:
        return (
            f"batch {batch.batch_id} has no scheduled send (no sendAt): its e-mails go out as "
            "its codes are assigned; nothing pending"
        )
    if batch.send_state == FIRED:
        return (
            f"batch {batch.batch_id}'s scheduled send already went at "
            f"{iso(batch.send_fired_at or 0)} (by {batch.send_fired_by}): nothing pending"
        )
    if batch.send_state == CANCELLED:
        return f"batch {batch.batch_id}: {cancelled_reason(batch)}; nothing pending"
    if batch.send_state != SCHEDULED:
        return (
            f"batch {batch.batch_id} has no e-mail to send (a dry run, opted out, or no code "
            "assigned): nothing pending"
        )
    return None


def change_send(
    ledger: Ledger,
    scheduler: Scheduler | None,
    send: Callable[[dict[str, Any]], None],
    batch_id: str,
    *,
    action: str,
    by: str,
    now: int,
) -> SendChanged:
    """``send-now`` (send the waiting e-mails now) or ``cancel-send`` (never: rows ``not-sent``)."""
    if action not in (SEND_NOW, CANCEL_SEND):
        raise ValueError(action)
    batch = ledger.batches.get_batch(batch_id)
    if batch is None:
        raise NoSuchBatch(f"no batch {batch_id}")
    why = nothing_pending(batch)
    if why:
        raise SendChangeRefused(why)
    changed = ledger.sends.change(batch_id, action=action, by=by, now=now)
    if changed is None:  # fired or changed since it was read
        again = ledger.batches.get_batch(batch_id)
        raise SendChangeRefused(
            (nothing_pending(again) if again else None) or f"batch {batch_id}: nothing pending"
        )
    deleted = bool(changed.send_schedule and scheduler and scheduler.delete(changed.send_schedule))
    # The sending function sends them (send-now) or writes them not-sent (cancel-send).
    queued = queue_assigned_chunks(ledger, send, batch_id)
    return SendChanged(changed, queued, deleted)
