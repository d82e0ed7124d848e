"""Reminders to the holder of an unused, active code N days before it expires (``ReminderDays``).

The redemption sync finds the codes due one (``domain.send_schedule.due_reminder``: the nearest
N only) and hands them here. Each goes the first e-mail's claimed-send path: a claim on its own
delivery item (one per (code, N): ``E#<row>#R<N>``, so never twice) in one transaction with a
check that the person still holds the code (a resend ``--to`` or a reissue since: nothing sent),
one SESv2 call, the record; SES's events follow it as they follow the first e-mail.

None for a row whose first e-mail did not reach SES or was refused (bounced, complained,
suppressed, failed, not-sent, a send still scheduled): only ``sent``, ``delayed`` or
``delivered`` rows are reminded. Throttling or a pause: the claim is given back and the rest
wait for the next sync.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from voucher_distributor.adapters.ledger.deliveries import NoLongerHeld
from voucher_distributor.adapters.ledger.table import holding_pk, holding_sk
from voucher_distributor.adapters.ses import (
    SesNotSent,
)
from voucher_distributor.domain.batches import work_key
from voucher_distributor.domain.email_message import (
    AddressNotSendable,
    EmailRenderError,
    render_email,
    ses_address,
)
from voucher_distributor.domain.outcomes import outcomes_file
from voucher_distributor.models.email import EmailState
from voucher_distributor.models.ledger import AssignmentRecord, ChunkRecord
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.email import (
    Pacer,
    send_claimed,
    sender_of,
    voucher_email,
    worker_send_rate,
)
from voucher_distributor.pipeline.templates import template_for

#: The first e-mail's states after which its holder may be reminded.
REMINDABLE = frozenset({EmailState.SENT, EmailState.DELAYED, EmailState.DELIVERED})


@dataclass(frozen=True)
class DueReminder:
    assignment: AssignmentRecord
    days: int
    expires_utc: str


def send_reminders(services: Services, due: list[DueReminder]) -> Counter[str]:
    """Send each due reminder once; the counts by outcome (``sent``, ``already``, ...)."""
    counts: Counter[str] = Counter()
    if not due or not services.settings.email_enabled or services.ses is None:
        return counts
    firsts = services.ledger.deliveries.get_many(
        (d.assignment.batch_id, d.assignment.row_number) for d in due
    )
    rows: dict[tuple[str, int], dict[int, AssignmentRecord]] = {}
    chunks: dict[tuple[str, int], ChunkRecord | None] = {}
    pacer = Pacer(worker_send_rate(services), services.clock, services.sleep)
    for reminder in due:
        a = reminder.assignment
        first = firsts.get((a.batch_id, a.row_number))
        if first is None or first.state not in REMINDABLE:
            counts["not-mailed"] += 1  # bounced, complained, not-sent...: never reminded
            continue
        if services.ledger.deliveries.get(a.batch_id, a.row_number, reminder.days) is not None:
            counts["already"] += 1
            continue
        ckey = (a.batch_id, a.chunk_no)
        if ckey not in chunks:
            chunks[ckey] = services.ledger.chunks.get_chunk(*ckey)
        chunk = chunks[ckey]
        if chunk is None:
            counts["no-chunk"] += 1
            continue
        if ckey not in rows:
            outcomes = work_key(a.batch_id, outcomes_file(chunk.chunk_no, chunk.state))
            rows[ckey] = {
                r.row_number: r for r in services.storage.read_records(outcomes, AssignmentRecord)
            }
        named = rows[ckey].get(a.row_number, a)
        # The ledger's address (a resend --to moves it there) and the sync's expiry.
        record = named.model_copy(update={"email": a.email, "expires_utc": reminder.expires_utc})
        try:
            outcome = _send_reminder(services, chunk, record, reminder.days, pacer)
        except SesNotSent as exc:
            log.warning("reminders: %s; the rest wait for the next sync", exc)
            counts["later"] += len(due) - sum(counts.values())
            break
        counts[outcome] += 1
    if counts["sent"]:
        services.metrics.count("RemindersSent", counts["sent"])
    log.info("reminders: %s", dict(counts))
    return counts


def _send_reminder(
    services: Services, chunk: ChunkRecord, record: AssignmentRecord, days: int, pacer: Pacer
) -> str:
    deliveries = services.ledger.deliveries
    sender = sender_of(services)
    try:
        to = ses_address(record.email)
        rendered = render_email(
            replace(voucher_email(chunk, record, services), reminder=days),
            # The program's own template in the row's language, as its first e-mail had.
            template_for(services, chunk.partner_name, chunk.program_name, record.language),
        )
    except (AddressNotSendable, EmailRenderError) as exc:
        log.warning("reminder of row %s/%d not made: %s", record.batch_id, record.row_number, exc)
        return "failed"
    now = services.now()
    try:
        claimed = deliveries.claim(
            record.batch_id,
            record.row_number,
            to_address=to,
            voucher_code=record.voucher_code,
            now=now,
            reminder_days=days,
            holding=(
                holding_pk(record.email),
                holding_sk(record.partner_name, record.program_name),
            ),
        )
    except NoLongerHeld:
        return "not-held"
    if claimed is None:
        return "already"
    return send_claimed(
        services, claimed, rendered, sender=sender, to=to, now=now, pacer=pacer, counted=False
    )
