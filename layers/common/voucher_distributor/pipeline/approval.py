"""Issuance limits and approval: nothing is bought above a stage's limits without a person's yes.

When ingest has planned a batch, :func:`record_plan_or_wait` decides whether it may be bought
now. Within ``ApprovalThreshold`` and the day's ``DailyVoucherLimit`` its plan is recorded and
its vouchers counted in one transaction (so concurrent batches can never together cross the
limit); otherwise it waits in ``AWAITING_APPROVAL``, announced by an EventBridge event and the
approvals SNS topic. ``approve`` / ``reject`` record a decision (who, when) on the batch and ask
:func:`check_approval` to carry it out; the same check, on a delayed message, rejects a batch
nobody decided within ``ApprovalTimeoutHours``. A rejected batch buys nothing, gives back its
claims and is reported with its rows ``rejected``.
"""

from __future__ import annotations

import json
from typing import Any

from voucher_distributor.adapters.ledger.holdings import Claim
from voucher_distributor.adapters.queues import MAX_DELAY_SECONDS
from voucher_distributor.domain.approval import TIMEOUT_DECIDER
from voucher_distributor.domain.timestamps import iso_utc, utc_day
from voucher_distributor.models.ledger import BatchRecord, BatchStatus
from voucher_distributor.pipeline.callbacks import send_event_callback
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.report import report_batch

#: The report queue message that asks for a waiting batch to be looked at.
APPROVAL_CHECK = "approval"


def record_plan_or_wait(services: Services, batch: BatchRecord, values: dict[str, Any]) -> bool:
    """Record the plan; True when the batch may be handed out now, False when it waits."""
    settings, ledger = services.settings, services.ledger
    count = int(values.get("vouchers_planned", 0))
    if batch.dry_run:
        # What the real run would meet, said in the summary; nothing is counted or held.
        would = _dry_run_gate(services, count)
        ledger.batches.update_batch(
            batch.batch_id, **values, **({"would_wait": would} if would else {})
        )
        return True
    if count == 0:
        ledger.batches.update_batch(batch.batch_id, **values)
        return True
    day = utc_day(services.now())
    limit = settings.daily_voucher_limit
    reason = _too_big(services, count)
    if reason is None:
        if ledger.batches.record_plan(
            batch.batch_id, {**values, "counted_day": day}, day=day, count=count, limit=limit
        ):
            services.metrics.count("VouchersCounted", count)
            return True
        reason = _crossing(limit, ledger.counts.vouchers_counted(day), count, day)
    deadline = services.now() + int(settings.approval_timeout_hours * 3600)
    waiting = ledger.batches.update_batch(
        batch.batch_id,
        **values,
        status=BatchStatus.AWAITING_APPROVAL.value,
        approval_reason=reason,
        approval_deadline=deadline,
    )
    announce_waiting(services, waiting)
    _check_later(services, waiting)
    services.metrics.count("ApprovalsRequested")
    log.warning("batch %s awaits approval: %s", batch.batch_id, reason)
    return False


def _dry_run_gate(services: Services, count: int) -> str | None:
    """Why the real run of a dry run's input would wait for approval, as things stand now."""
    if count == 0:
        return None
    reason = _too_big(services, count)
    limit = services.settings.daily_voucher_limit
    if reason is None and limit:
        day = utc_day(services.now())
        used = services.ledger.counts.vouchers_counted(day)
        if used + count > limit:
            reason = _crossing(limit, used, count, day)
    return reason


def _too_big(services: Services, count: int) -> str | None:
    """Over ApprovalThreshold, or more than a whole day's limit, whatever the day's count."""
    limit, threshold = services.settings.daily_voucher_limit, services.settings.approval_threshold
    if threshold and count > threshold:
        return f"it would buy {count:,} vouchers, over ApprovalThreshold ({threshold:,})"
    if limit and count > limit:
        return f"it would buy {count:,} vouchers, more than DailyVoucherLimit ({limit:,})"
    return None


def _crossing(limit: int, used: int, count: int, day: str) -> str:
    return (
        f"it would cross DailyVoucherLimit ({limit:,}): {used:,} vouchers counted today "
        f"({day} UTC), {count:,} more asked"
    )


def waiting_preview(services: Services, batch: BatchRecord) -> dict[str, Any]:
    """What a waiting batch would buy, and what to do about it (event, e-mail, status)."""
    purchases = [
        {"chunk": c.chunk_no, "partner": c.partner_name, "program": c.program_name,
         "quantity": c.quantity}
        for c in services.ledger.chunks.iter_chunks(batch.batch_id)
    ]  # fmt: skip
    return {
        "batchId": batch.batch_id,
        "status": "awaiting-approval",
        "reason": batch.approval_reason,
        "source": batch.source,
        "input": batch.input_name,
        "sender": batch.sender or None,
        "vouchers": batch.vouchers_planned,
        "counts": {
            "rows": batch.rows_total,
            "wouldAssign": batch.vouchers_planned,
            "existing": batch.rows_existing,
            "rejected": batch.rows_rejected,
            "failed": batch.rows_failed_early,
        },
        "purchases": purchases,
        "deadline": iso_utc(batch.approval_deadline or 0),
        "approve": f"voucher-distributor approve {batch.batch_id} --stack STACK",
        "reject": f'voucher-distributor reject {batch.batch_id} --reason "…" --stack STACK',
    }


def announce_waiting(services: Services, batch: BatchRecord) -> None:
    detail = waiting_preview(services, batch)
    services.events.publish("Voucher Batch Awaiting Approval", detail)
    # HR hears its batch waits (the commands in the detail are for the stage's operators).
    send_event_callback(services, batch, "Voucher Batch Awaiting Approval", detail)
    if services.notifications is not None:
        targets = ", ".join(f"{p['quantity']:,} of {p['program']}" for p in detail["purchases"])
        services.notifications.publish(
            f"Voucher batch awaiting approval: {batch.vouchers_planned:,} vouchers",
            "\n".join(
                [
                    f"Batch {batch.batch_id} ({batch.input_name or batch.source}) waits for "
                    f"approval: {batch.approval_reason}.",
                    f"It would buy: {targets}.",
                    f"Sent by: {batch.sender or 'unknown'}. Nothing is bought until it is "
                    f"approved; it is rejected by itself at {detail['deadline']}.",
                    f"Approve: {detail['approve']}",
                    f"Reject:  {detail['reject']}",
                    "",
                    json.dumps(detail, indent=2, ensure_ascii=False),
                ]
            ),
        )


def check_approval(services: Services, batch_id: str) -> str:
    """Carry out a waiting batch's decision, reject it at its deadline, or look again later."""
    ledger = services.ledger
    batch = ledger.batches.get_batch(batch_id)
    if batch is None:
        return "missing"
    unfinished_rejection = batch.approval_decision == "rejected" and batch.status not in {
        BatchStatus.DONE,
        BatchStatus.FAILED,
    }
    if batch.status != BatchStatus.AWAITING_APPROVAL and not unfinished_rejection:
        return "not-waiting"
    # (A rejection whose report was interrupted is finished: giving back is idempotent.)
    if batch.approval_decision is None:
        now = services.now()
        if now < (batch.approval_deadline or 0):
            _check_later(services, batch)
            return "waiting"
        hours = services.settings.approval_timeout_hours
        decided = ledger.batches.decide_approval(
            batch_id,
            decision="rejected",
            by=TIMEOUT_DECIDER,
            at=now,
            note=f"nobody approved it within ApprovalTimeoutHours ({hours:g} h)",
        )
        if decided is None:  # decided meanwhile by a person: carry that out instead
            return check_approval(services, batch_id)
        services.metrics.count("ApprovalsTimedOut")
        batch = decided
    if batch.approval_decision == "approved":
        return _hand_out_approved(services, batch)
    return _carry_out_rejection(services, batch)


def _hand_out_approved(services: Services, batch: BatchRecord) -> str:
    # Chunk messages first: if this dies before the status moves, the check comes again and
    # sends them again (buying a chunk is once-only whatever number of messages).
    services.queues.send_many(
        services.settings.purchase_queue_url,
        ({"batchId": batch.batch_id, "chunkNo": n} for n in range(batch.chunk_count or 0)),
    )
    day = utc_day(services.now())
    if services.ledger.batches.release_approved(
        batch.batch_id, day=day, count=batch.vouchers_planned
    ):
        services.metrics.count("ApprovalsApproved")
        services.metrics.count("VouchersCounted", batch.vouchers_planned)
        log.info("batch %s approved by %s: handed out", batch.batch_id, batch.approval_by)
    return "approved"


def _carry_out_rejection(services: Services, batch: BatchRecord) -> str:
    claims = [
        Claim(r.email, c.partner_name, c.program_name, batch.batch_id, r.row_number, r.reissue)
        for c in services.ledger.chunks.iter_chunks(batch.batch_id)
        for r in services.storage.read_recipients(c.rows_key)
    ]
    released = services.ledger.holdings.release_holdings(claims)
    log.info(
        "batch %s rejected by %s: %d claim(s) given back, nothing bought",
        batch.batch_id, batch.approval_by, released,
    )  # fmt: skip
    if batch.approval_by != TIMEOUT_DECIDER:
        services.metrics.count("ApprovalsRejected")
    report_batch(services, batch.batch_id)
    return "rejected"


def _check_later(services: Services, batch: BatchRecord) -> None:
    every = min(MAX_DELAY_SECONDS, services.settings.approval_check_seconds)
    wait = max(1, min(every, (batch.approval_deadline or 0) - services.now()))
    services.queues.send(
        services.settings.report_queue_url,
        {"batchId": batch.batch_id, "check": APPROVAL_CHECK},
        delay_seconds=wait,
    )
