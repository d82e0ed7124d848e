"""HR hears about undeliverable rows: the callback ``Voucher Emails Undeliverable``.

When an e-mail event moves a row into ``bounced``, ``complained``, ``suppressed`` or ``failed``,
:func:`note_undeliverable` asks for a check of the batch (one conditional write on the batch
item: at most one check waits per batch; the check is a delayed report-queue message).
:func:`announce_undeliverable` (the report function) sends one callback through the outbox
with every row in those states not in an earlier notice, at most once an hour per batch:
before the hour is up the check waits (in hops of at most 15 minutes, SQS's longest delay).

What was announced is read back from the batch's earlier notices (their bodies in the outbox:
one Query by the batch's key), so nothing else is stored; each notice's slug is its number, so
a check that runs twice sends it once. A row resent and undeliverable again (a new attempt) is
announced again.
"""

from __future__ import annotations

import json
from typing import Any

from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.email import EmailDelivery, EmailState
from voucher_distributor.models.ledger import BatchRecord
from voucher_distributor.pipeline.callbacks import send_event_callback
from voucher_distributor.pipeline.context import Services, log

EVENT = "Voucher Emails Undeliverable"
#: The report queue's message kind that runs :func:`announce_undeliverable`.
UNDELIVERABLE_CHECK = "undeliverable"
UNDELIVERABLE = frozenset(
    {EmailState.BOUNCED, EmailState.COMPLAINED, EmailState.SUPPRESSED, EmailState.FAILED}
)
#: At most one notice per batch this often.
NOTICE_EVERY_SECONDS = 3600
#: A check waits this long after the first undeliverable row, so a burst makes one notice
#: (or the results refresh period, when shorter: a second locally).
GATHER_SECONDS = 60
#: Rows per notice (the body stays well under the ledger's item size); the rest go next time.
MAX_ROWS_PER_NOTICE = 1000
_SQS_MAX_DELAY = 900

#: Batch -> until when this process knows a check is scheduled (saves a write per bounce).
_scheduled: dict[str, int] = {}


def note_undeliverable(services: Services, batch_id: str) -> bool:
    """Schedule the batch's undeliverable check unless one is scheduled already."""
    now = services.now()
    gather = min(GATHER_SECONDS, services.settings.email_refresh_seconds)
    if _scheduled.get(batch_id, -1) > now:
        return False
    if len(_scheduled) > 1_000:
        _scheduled.clear()
    # Known scheduled until the check can have run; a row after that asks again.
    _scheduled[batch_id] = now + gather
    if not services.ledger.resends.schedule_notice(batch_id, now=now):
        return False
    services.queues.send(
        services.settings.report_queue_url,
        {"batchId": batch_id, "check": UNDELIVERABLE_CHECK},
        delay_seconds=gather,
    )
    return True


def _announced(notices: list[Any]) -> set[tuple[int, str, str]]:
    seen: set[tuple[int, str, str]] = set()
    for notice in notices:
        try:
            rows = json.loads(notice.body).get("rows", [])
        except (ValueError, AttributeError):
            continue
        seen.update((int(r["row"]), str(r["deliveryId"]), str(r["state"])) for r in rows)
    return seen


def _row(delivery: EmailDelivery) -> dict[str, Any]:
    return {
        "row": delivery.row_number,
        "email": delivery.to_address,
        "state": delivery.state.value,
        "reason": delivery.reason[:300],
        "at": iso_utc(delivery.last_event_at),
        "deliveryId": delivery.delivery_id,
        "attempts": delivery.attempts,
    }


def announce_undeliverable(services: Services, batch_id: str) -> str:
    """The check: send the notice if the hour since the last one is up; what happened."""
    ledger, now = services.ledger, services.now()
    batch = ledger.batches.get_batch(batch_id)
    if batch is None or not batch.callback_url:
        ledger.resends.clear_notice(batch_id)
        return "no-callback"
    notices = [d for d in ledger.outbox.callback_deliveries(batch_id) if d.event == EVENT]
    last = max((d.created_at for d in notices), default=None)
    if last is not None and now < last + NOTICE_EVERY_SECONDS:
        services.queues.send(
            services.settings.report_queue_url,
            {"batchId": batch_id, "check": UNDELIVERABLE_CHECK},
            delay_seconds=min(_SQS_MAX_DELAY, last + NOTICE_EVERY_SECONDS - now),
        )
        return "waiting"
    # Cleared before the rows are read: a row that turns undeliverable from here on schedules
    # the next check, and one before is in this read.
    ledger.resends.clear_notice(batch_id)
    announced = _announced(notices)
    rows = [
        d
        for d in ledger.deliveries.for_batch(batch_id)
        if d.state in UNDELIVERABLE
        and (d.row_number, d.delivery_id, d.state.value) not in announced
    ]
    if not rows:
        return "nothing-new"
    return _send(services, batch, rows, number=len(notices) + 1)


def _send(services: Services, batch: BatchRecord, rows: list[EmailDelivery], *, number: int) -> str:
    shown, rest = rows[:MAX_ROWS_PER_NOTICE], rows[MAX_ROWS_PER_NOTICE:]
    counts: dict[str, int] = {}
    for d in shown:
        counts[d.state.value] = counts.get(d.state.value, 0) + 1
    detail = {
        "batchId": batch.batch_id,
        "notice": number,
        "counts": counts,
        "rows": [_row(d) for d in shown],
        # Rows past this notice's limit: in the next one, an hour on.
        "more": len(rest),
        "fix": "resend BATCH --row N --to NEW_ADDRESS corrects a mistyped address",
    }
    send_event_callback(services, batch, EVENT, detail, key=str(number))
    if rest:
        _scheduled.pop(batch.batch_id, None)
        note_undeliverable(services, batch.batch_id)
    log.info("batch %s: undeliverable notice %d, %d row(s)", batch.batch_id, number, len(shown))
    return "sent"
