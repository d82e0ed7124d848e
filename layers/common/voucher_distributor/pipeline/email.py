"""Mail each assigned code to its person, and follow each e-mail to the inbox.

- :func:`queue_chunk_emails`: when a chunk's codes are assigned (its assignment items written),
  one message on the e-mail queue asks for its e-mails. Rows that are ``existing``, rejected or
  failed are in no chunk's assigned outcomes, so they get none; a dry run, a batch that opted
  out and a stack without ``SenderEmail`` send nothing. A batch awaiting approval has no
  assigned chunk until it is approved.
- :func:`send_chunk_emails`: the sending function's use case. Per row: render (a failure ends
  the row ``failed`` with why), claim (a conditional write; a row claimed or mailed already is
  skipped), one SESv2 ``SendEmail``, record; a slice of rows at a time (about a second's
  sending: claimed in one transaction, recorded in one; :mod:`.email_slices`). Paced to
  ``MaxSendRate`` over the event source's ``MaximumConcurrency``, within a budget per
  invocation; the rest of the chunk goes on in a message of its own. Throttling or the daily
  quota: the rest waits (a delayed message), the claims not yet sent are given back, nothing
  lost. Sending paused: the same, with an alarm metric.
- :func:`record_email_event`: the events function's use case: SES's event (via EventBridge)
  finds its row by the ``delivery-id`` tag and moves its state forward; the batch's results are
  rewritten at most once a minute (:func:`voucher_distributor.pipeline.report.refresh_results`).

A crash between the SES call and its record leaves the row ``unknown`` (a process killed inside
a slice leaves its claimed rows not yet sent ``unknown`` too): the next delivery of the message
finds the claim and sends nothing; SES's Send event resolves those SES took.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voucher_distributor.adapters.ledger.deliveries import parse_delivery_id, parse_reminder_id
from voucher_distributor.adapters.ses import (
    SesNotSent,
    SesOutcomeUnknown,
    SesRejected,
    SesSendingStopped,
    SesThrottled,
)
from voucher_distributor.domain.batches import work_key
from voucher_distributor.domain.email_message import (
    AddressNotSendable,
    EmailRenderError,
    Exam,
    RenderedEmail,
    Sender,
    VoucherEmail,
    build_mime,
    expires_on,
    render_email,
    ses_address,
)
from voucher_distributor.domain.email_states import NotAnEmailEvent, parse_ses_event
from voucher_distributor.domain.outcomes import outcomes_file
from voucher_distributor.models.email import EmailDelivery, EmailEventRecord, EmailState
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
)
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.email_slices import (
    SliceStopped,
    record_unmade,
    send_slice,
    slice_size,
)
from voucher_distributor.pipeline.scheduled_send import hold_for_schedule
from voucher_distributor.pipeline.templates import template_for
from voucher_distributor.pipeline.undeliverable import UNDELIVERABLE, note_undeliverable

#: SES unreachable before the request went out: try again soon.
UNAVAILABLE_RETRY_SECONDS = 10
#: The report queue's message kind that rewrites a reported batch's results (ReportMessage.check).
EMAIL_REFRESH = "emails"


def emails_wanted(services: Services, batch: BatchRecord | None) -> bool:
    """Does this batch mail its codes? (the stack has a sender; not a dry run; not opted out)"""
    return (
        services.settings.email_enabled
        and batch is not None
        and not batch.dry_run
        and batch.send_email
    )


def queue_chunk_emails(services: Services, batch_id: str, chunk_no: int) -> bool:
    """Ask for an assigned chunk's e-mails (idempotent: a repeat finds its rows mailed)."""
    if not services.settings.email_enabled:
        return False
    if not emails_wanted(services, services.ledger.batches.get_batch(batch_id)):
        return False
    services.queues.send(
        services.settings.email_queue_url,
        {"batchId": batch_id, "chunkNo": chunk_no, "fromRow": 0},
    )
    return True


# ---------------------------------------------------------------------- sending


class Pacer:
    """A token bucket of one: at most ``rate`` calls per second, waiting on ``sleep``."""

    def __init__(
        self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    def wait(self) -> None:
        now = self._clock()
        if self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = max(self._next, now) + self.interval


def worker_send_rate(services: Services) -> float:
    """E-mails per second for one sending invocation: the stack's rate over its concurrency."""
    settings = services.settings
    rate = settings.max_send_rate
    if rate <= 0:
        assert services.ses is not None
        rate = services.ses.max_send_rate()
    return rate / settings.email_send_concurrency


def sender_of(services: Services) -> Sender:
    settings = services.settings
    return Sender(
        email=settings.sender_email, name=settings.sender_name, reply_to=settings.reply_to_email
    )


def voucher_email(chunk: ChunkRecord, record: AssignmentRecord, services: Services) -> VoucherEmail:
    """The template's variables for one assigned row."""
    return VoucherEmail(
        first_name=record.first_name,
        last_name=record.last_name,
        voucher_code=record.voucher_code,
        program=record.program_name,
        partner=record.partner_name,
        exams=tuple(Exam(e.name, e.code) for e in chunk.exams),
        expires_on=expires_on(record.expires_utc),
        booking_url=services.settings.booking_url,
        support_email=services.settings.support_email,
        replaces_code=record.replaces_code,
    )


@dataclass
class SendRun:
    """What one invocation did (for logs and tests)."""

    outcome: str
    counts: Counter[str]


def send_chunk_emails(  # noqa: PLR0911 - one exit per way an invocation ends
    services: Services, batch_id: str, chunk_no: int, *, from_row: int = 0
) -> SendRun:
    """Handle one e-mail queue message: send the chunk's e-mails from ``from_row`` on."""
    counts: Counter[str] = Counter()
    settings = services.settings
    if not settings.email_enabled or services.ses is None:
        return SendRun("email-off", counts)
    batch = services.ledger.batches.get_batch(batch_id)
    if not emails_wanted(services, batch):
        return SendRun("not-wanted", counts)
    chunk = services.ledger.chunks.get_chunk(batch_id, chunk_no)
    if chunk is None or chunk.state != ChunkState.ASSIGNED:
        return SendRun("not-assigned", counts)
    assert batch is not None
    held = hold_for_schedule(services, batch, chunk)  # a sendAt not come yet, or cancelled
    if held is not None:
        return SendRun(held, counts)
    records = [
        r
        for r in services.storage.read_records(
            work_key(batch_id, outcomes_file(chunk_no, chunk.state)), AssignmentRecord
        )
        if r.status == "assigned" and r.voucher_code and r.row_number >= from_row
    ]
    # Rows with a delivery item are claimed or mailed already (a repeated message, the rest
    # of a chunk after a crash): skipped on reads, before any write.
    seen = services.ledger.deliveries.get_many((batch_id, r.row_number) for r in records)
    counts["already"] = len(seen)
    records = sorted(
        (r for r in records if (batch_id, r.row_number) not in seen), key=lambda r: r.row_number
    )
    if not records:
        return SendRun("done", counts)
    rate = worker_send_rate(services)
    pacer = Pacer(rate, services.clock, services.sleep)
    deadline = services.clock() + settings.email_send_budget_seconds
    sender = sender_of(services)
    size = slice_size(rate)

    def render_one(record: AssignmentRecord) -> RenderedEmail:
        return render_email(
            voucher_email(chunk, record, services),
            # The most specific accepted template of the row's program and language (issue 22).
            template_for(services, chunk.partner_name, chunk.program_name, record.language),
        )

    # A slice at a time: claimed in one transaction, sent, recorded in one (email_slices).
    for start in range(0, len(records), size):
        part = records[start : start + size]
        if services.clock() >= deadline:
            _continue(services, chunk, part[0].row_number, delay=0)
            return SendRun("continued", counts)
        try:
            counts.update(send_slice(services, part, sender, pacer.wait, render_one))
        except SliceStopped as stopped:
            exc, from_row = stopped.cause, stopped.from_row
            if isinstance(exc, SesThrottled):
                services.metrics.count("EmailsThrottled")
                log.warning("chunk %s/%05d: %s; the rest waits", batch_id, chunk_no, exc)
                _continue(services, chunk, from_row, delay=exc.retry_after)
                return SendRun("throttled", counts)
            if isinstance(exc, SesSendingStopped):
                services.metrics.count("EmailSendingPaused")
                log.error("chunk %s/%05d: %s", batch_id, chunk_no, exc)
                # Looked at again on a message of its own (settings: 15 min deployed): the
                # e-mails wait on the queue, never in the DLQ.
                _continue(services, chunk, from_row, delay=settings.email_paused_retry_seconds)
                return SendRun("paused", counts)
            log.warning("chunk %s/%05d: %s", batch_id, chunk_no, exc)
            _continue(services, chunk, from_row, delay=UNAVAILABLE_RETRY_SECONDS)
            return SendRun("unavailable", counts)
    log.info("chunk %s/%05d e-mails: %s", batch_id, chunk_no, dict(counts))
    return SendRun("done", counts)


def _continue(services: Services, chunk: ChunkRecord, from_row: int, *, delay: int) -> None:
    services.queues.send(
        services.settings.email_queue_url,
        {"batchId": chunk.batch_id, "chunkNo": chunk.chunk_no, "fromRow": from_row},
        delay_seconds=delay,
    )


def _send_one(
    services: Services,
    chunk: ChunkRecord,
    record: AssignmentRecord,
    sender: Sender,
    pacer: Pacer,
    *,
    replacing: EmailDelivery | None = None,
) -> str:
    """Render, claim, send, record one row's e-mail; ``replacing``: a resend's new claim."""
    deliveries = services.ledger.deliveries
    now = services.now()
    try:
        to = ses_address(record.email)
        rendered = render_email(
            voucher_email(chunk, record, services),
            # The most specific accepted template of the row's program and language (issue 22).
            template_for(services, chunk.partner_name, chunk.program_name, record.language),
        )
    except (AddressNotSendable, EmailRenderError) as exc:
        record_unmade(services, record, exc, now=now)
        return "failed"
    claimed = deliveries.claim(
        record.batch_id,
        record.row_number,
        to_address=to,
        voucher_code=record.voucher_code,
        now=now,
        replacing=replacing,
    )
    if claimed is None:
        return "already"
    return send_claimed(services, claimed, rendered, sender=sender, to=to, now=now, pacer=pacer)


def send_claimed(
    services: Services,
    claimed: EmailDelivery,
    rendered: RenderedEmail,
    *,
    sender: Sender,
    to: str,
    now: int,
    pacer: Pacer,
    counted: bool = True,
) -> str:
    """One claimed row's SES call and its record (a first e-mail, a resend, a reminder):
    ``sent``, ``failed`` or ``unknown``; throttled, paused or unreachable: the claim is given
    back and the error raised (the rest waits). ``counted``: in the e-mail metrics."""
    deliveries = services.ledger.deliveries
    raw = build_mime(rendered, sender=sender, to=to, sent_at=now)
    pacer.wait()
    assert services.ses is not None
    try:
        sent = services.ses.send(
            raw,
            from_address=ses_address(sender.email),
            to_address=to,
            delivery_id=claimed.delivery_id,
        )
    except SesNotSent:
        deliveries.release(claimed)
        raise
    except SesRejected as exc:
        deliveries.record_failed(claimed, reason=str(exc), now=services.now())
        if counted:
            services.metrics.count("EmailsFailed")
        return "failed"
    except SesOutcomeUnknown as exc:
        deliveries.record_unknown(claimed, reason=str(exc), now=services.now())
        if counted:
            services.metrics.count("EmailsUnknown")
        log.warning("row %s/%d: %s", claimed.batch_id, claimed.row_number, exc)
        return "unknown"
    deliveries.record_sent(claimed, message_id=sent.message_id, now=services.now())
    if counted:
        services.metrics.count("EmailsSent")
    return "sent"


# ---------------------------------------------------------------------- SES's events


def _count_state(services: Services, state: EmailState) -> None:
    """The metric of the state an event moved a row into (each name literal: the template's
    alarms and dashboard are checked against the names the code counts)."""
    match state:
        case EmailState.SENT:  # only an ``unknown`` row resolved by the Send event
            services.metrics.count("EmailsSent")
        case EmailState.DELIVERED:
            services.metrics.count("EmailsDelivered")
        case EmailState.BOUNCED:
            services.metrics.count("EmailsBounced")
        case EmailState.COMPLAINED:
            services.metrics.count("EmailsComplained")
        case EmailState.SUPPRESSED:
            services.metrics.count("EmailsSuppressed")
        case EmailState.FAILED:
            services.metrics.count("EmailsFailed")
        case _:
            return


def record_email_event(  # noqa: PLR0911 - one exit per way an event ends
    services: Services, detail: dict[str, Any], *, event_id: str = ""
) -> str:
    """Handle one SES event (an EventBridge event's ``detail``)."""
    try:
        event = parse_ses_event(detail, received_at=services.now())
    except NotAnEmailEvent as exc:
        log.warning("not an SES sending event: %s", exc)
        return "not-an-email-event"
    if event is None:
        return "ignored"
    ids = parse_delivery_id(event.delivery_id)
    reminder = parse_reminder_id(event.delivery_id) if ids is None else None
    if ids is None and reminder is None:
        log.warning("SES %s event for message %s has no delivery id", event.event_type,
                    event.message_id)  # fmt: skip
        return "not-ours"
    batch_id, row_number = ids[:2] if ids else (reminder[0], reminder[1]) if reminder else ("", 0)
    reminder_days = reminder[2] if reminder else None
    step = EmailEventRecord(
        at=event.at,
        state=event.state,
        source=event.event_type,
        detail=event.detail,
        delivery_id=event.delivery_id,
        event_id=event_id,
    )
    got = services.ledger.deliveries.record_event(batch_id, row_number, step, reminder_days)
    if got is None:
        log.warning("SES %s event for %s/%d: no such delivery", event.event_type, batch_id,
                    row_number)  # fmt: skip
        return "no-delivery"
    delivery, changed = got
    if not changed:
        return "history"
    _count_state(services, delivery.state)
    if reminder_days is not None:
        return f"reminder-now-{delivery.state.value}"
    schedule_refresh(services, batch_id)
    if delivery.state in UNDELIVERABLE:
        note_undeliverable(services, batch_id)  # HR hears of it (at most hourly)
    return f"now-{delivery.state.value}"


#: Batch → when this process last saw its refresh taken (by itself or another): until then
#: asking again is known to fail, so it is not asked (one conditional write per event saved).
_refresh_known: dict[str, int] = {}


def schedule_refresh(services: Services, batch_id: str) -> bool:
    """Rewrite the batch's results within a minute, at most once a minute."""
    now, every = services.now(), services.settings.email_refresh_seconds
    if _refresh_known.get(batch_id, -1) > now:
        return False
    if len(_refresh_known) > 1_000:
        _refresh_known.clear()
    window = services.ledger.deliveries.take_refresh(batch_id, now=now, every=every)
    if window is None:
        _refresh_known[batch_id] = now + 1  # taken by another: look again a second later
        return False
    _refresh_known[batch_id] = now + window
    services.queues.send(
        services.settings.report_queue_url,
        {"batchId": batch_id, "check": EMAIL_REFRESH},
        delay_seconds=window,
    )
    return True


#: A results rewrite may take at most this share of the time: one that took 30 s waits 2 min
#: for the next (deployed, a rewrite under 15 s keeps the minute).
REFRESH_SHARE = 0.25
#: SQS's longest delay: the refresh message waits at most this long.
MAX_REFRESH_WINDOW_SECONDS = 900


def refresh_window(every: int, took_seconds: float) -> int:
    """Seconds between two rewrites of a batch's results, after one that took ``took_seconds``."""
    return min(MAX_REFRESH_WINDOW_SECONDS, max(every, math.ceil(took_seconds / REFRESH_SHARE)))


def email_counts(deliveries: list[EmailDelivery]) -> dict[str, int]:
    return dict(Counter(d.state.value for d in deliveries))


def batch_reported(batch: BatchRecord | None) -> bool:
    return batch is not None and batch.status in {BatchStatus.DONE, BatchStatus.FAILED}
