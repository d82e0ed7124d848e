"""Wait for a bought chunk's codes, then give one code to each recipient (or fail the chunk).

After :mod:`~voucher_distributor.pipeline.purchase` records a purchase, a short check runs in the
same invocation, then a chain of delayed poll messages takes over: one live chain per chunk (its
token in the ledger), so a duplicated message never doubles it, and a deadline past which the
chunk fails.

Ending a chunk (codes assigned, or failed) writes its outcome file, moves the chunk to its final
state with its counts (one conditional write), then — only the worker that won that write — its
assignment items, then adds the chunk to the batch's set of ended chunks (idempotent); whoever
sees the set complete asks for the report.
"""

from __future__ import annotations

import random
import uuid

from voucher_distributor.adapters.certiverse import CertiverseError, CertiverseUnauthorized
from voucher_distributor.adapters.ledger.holdings import Claim
from voucher_distributor.domain.assignment import assign_codes
from voucher_distributor.domain.batches import work_key
from voucher_distributor.domain.outcomes import outcomes_file
from voucher_distributor.domain.polling import next_poll_delay, readiness
from voucher_distributor.domain.timestamps import iso_z
from voucher_distributor.models.certiverse import PartnerVoucherModel
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
    RecipientRecord,
    TrackedPurchase,
)
from voucher_distributor.models.messages import PollMessage
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.email import queue_chunk_emails

_rng = random.Random()  # noqa: S311 - poll jitter, not a secret


# ---------------------------------------------------------------------- polling


def check_then_schedule(services: Services, chunk: ChunkRecord) -> str:
    """A short check inside this invocation, then hand over to delayed poll messages."""
    budget = services.settings.initial_check_seconds
    deadline = services.clock() + budget
    wait = 0.5
    while True:
        outcome = check_codes(services, chunk)
        if outcome is not None:
            return outcome
        if services.clock() + wait > deadline:
            break
        services.sleep(wait)
        wait = min(wait * 2, 4.0)
    if chunk.poll_token is not None:
        # A redelivered purchase message: a poll chain already waits for these codes.
        return "polling"
    _schedule_poll(services, chunk, attempt=1, after=None)
    return "polling"


def poll_chunk(
    services: Services, batch_id: str, chunk_no: int, attempt: int, token: str | None = None
) -> str:
    """Handle one poll-queue message.

    A message that is not the chunk's live poll chain (another copy of an earlier step handed
    over first) is dropped, so a duplicated message never doubles the chain. The deadline is
    looked at first: past it, one last look, and the chunk fails if that finds no codes, even
    when Certiverse keeps erroring (the chunk never stays PURCHASED with nobody polling).
    """
    chunk = services.ledger.chunks.get_chunk(batch_id, chunk_no)
    if chunk is None or chunk.state != ChunkState.PURCHASED:
        if chunk is not None and chunk.state in {ChunkState.ASSIGNED, ChunkState.FAILED}:
            settle_ended(services, chunk)
        return "not-waiting"
    if token != chunk.poll_token:
        log.info(
            "chunk %s/%05d poll %d is not the live poll chain (at poll %s); dropping it",
            batch_id, chunk_no, attempt, chunk.poll_attempt,
        )  # fmt: skip
        return "duplicate"
    services.metrics.count("PollAttempts")
    if chunk.deadline_at is not None and services.now() >= chunk.deadline_at:
        hours = services.settings.poll_deadline_seconds / 3600
        reason = (
            f"Certiverse had not generated the codes of purchase {chunk.purchase_code} "
            f"within the {hours:g} h deadline"
        )
        try:
            outcome = check_codes(services, chunk)
        except CertiverseError as exc:
            outcome, reason = None, f"{reason} (the last look failed: {exc})"
        return outcome if outcome is not None else fail_chunk(services, chunk, reason)
    outcome = check_codes(services, chunk)
    if outcome is not None:
        return outcome
    _schedule_poll(services, chunk, attempt=attempt + 1, after=chunk.poll_token)
    return "polling"


def defer_poll(services: Services, message: PollMessage) -> None:
    """A poll message this invocation has no time left for: the same step, sent again (its
    token unchanged, so it stays the live chain's)."""
    services.queues.send(
        services.settings.poll_queue_url,
        message.model_dump(mode="json", by_alias=True, exclude_none=True),
        delay_seconds=1,
    )
    log.info(
        "chunk %s/%05d poll %d: no time left in this invocation; sent again",
        message.batch_id, message.chunk_no, message.attempt,
    )  # fmt: skip


def _schedule_poll(
    services: Services, chunk: ChunkRecord, *, attempt: int, after: str | None
) -> None:
    """Send the chain's next poll message, then make it the chunk's live chain.

    In that order: a worker dying between the two leaves the chain as it was, and the message
    it was handling comes back and sends again; the message sent first is then not the live
    chain's and is dropped. Two copies of one message both send; one hands over, the other's
    message is dropped.
    """
    settings = services.settings
    delay = next_poll_delay(
        attempt,
        base_s=settings.poll_base_delay_seconds,
        cap_s=settings.poll_max_delay_seconds,
        rng=_rng,
    )
    if chunk.deadline_at is not None:
        delay = min(delay, chunk.deadline_at - services.now())
    token = uuid.uuid4().hex[:16]
    services.queues.send(
        settings.poll_queue_url,
        {"batchId": chunk.batch_id, "chunkNo": chunk.chunk_no, "attempt": attempt, "token": token},
        # At least a second: the hand-over below lands before the message can be received.
        delay_seconds=max(1, delay),
    )
    if not services.ledger.chunks.hand_over_poll(
        chunk.batch_id, chunk.chunk_no, after=after, token=token, attempt=attempt
    ):
        log.info(
            "chunk %s/%05d: another copy of this poll step handed over first",
            chunk.batch_id, chunk.chunk_no,
        )  # fmt: skip


def check_codes(services: Services, chunk: ChunkRecord) -> str | None:
    """Assign or fail the chunk when its purchase is decided; None while it is not."""
    code = chunk.purchase_code
    assert code is not None
    client = services.certiverse
    try:
        listed = [
            p
            for p in client.list_purchases(purchase_code=code).data
            if p.voucher_purchase_code == code
        ]
        if not listed:
            log.warning("purchase %s is not listed yet", code)
            return None
        purchase = listed[0]
        vouchers = (
            []
            if purchase.has_failed
            else [
                v
                for v in client.iter_vouchers(purchase_code=code)
                if v.voucher_purchase_code == code
            ]
        )
    except CertiverseUnauthorized as exc:
        # A revoked token never heals by retrying the message: fail the chunk visibly now
        # (retries would end in the DLQ with the chunk left PURCHASED and the batch unreported).
        services.metrics.count("CertiverseUnauthorized")
        return fail_chunk(
            services,
            chunk,
            f"{exc}; purchase {code} was made but its codes could not be read — "
            "fix the token and reconcile",
        )
    decision = readiness(purchase, len(vouchers), chunk.quantity)
    if decision == "failed":
        return fail_chunk(services, chunk, f"Certiverse purchase {code} ended {purchase.status}")
    if decision == "ready":
        return _assign(services, chunk, vouchers)
    return None


# ---------------------------------------------------------------------- endings


def _outcome(
    chunk: ChunkRecord,
    recipient: RecipientRecord,
    *,
    voucher: PartnerVoucherModel | None = None,
    reason: str = "",
) -> AssignmentRecord:
    return AssignmentRecord(
        batch_id=chunk.batch_id,
        row_number=recipient.row_number,
        email=recipient.email,
        first_name=recipient.first_name,
        last_name=recipient.last_name,
        external_id=recipient.external_id,
        partner_name=chunk.partner_name,
        program_name=chunk.program_name,
        chunk_no=chunk.chunk_no,
        status="assigned" if voucher else "failed",
        voucher_code=voucher.voucher_code if voucher else "",
        purchase_code=voucher.voucher_purchase_code if voucher else chunk.purchase_code or "",
        expires_utc=(iso_z(voucher.expiration_date_utc) if voucher else ""),
        reason=reason if not voucher else recipient.note,
        replaces_code=recipient.replaces_code if voucher else "",
        extra=recipient.extra,
        line=recipient.line,
        language=recipient.language,
    )


def _assign(services: Services, chunk: ChunkRecord, vouchers: list[PartnerVoucherModel]) -> str:
    recipients = sorted(
        services.storage.read_recipients(chunk.rows_key), key=lambda r: r.row_number
    )
    records = [_outcome(chunk, r, voucher=v) for r, v in assign_codes(recipients, vouchers)]
    if _end_chunk(services, chunk, ChunkState.ASSIGNED, records):
        services.metrics.count("VouchersAssigned", len(records))
    # The codes are in the ledger and the chunk reads ASSIGNED: mail them (per chunk).
    queue_chunk_emails(services, chunk.batch_id, chunk.chunk_no)
    _track_for_sync(services, chunk, recipients)
    return "assigned"


def _track_for_sync(
    services: Services, chunk: ChunkRecord, recipients: list[RecipientRecord] | None = None
) -> None:
    """Hand the bought purchase to the redemption sync (idempotent: a conditional put)."""
    if not chunk.purchase_code:
        return
    if recipients is None:
        recipients = services.storage.read_recipients(chunk.rows_key)
    services.ledger.tracking.track_purchase(
        TrackedPurchase(
            purchase_code=chunk.purchase_code,
            batch_id=chunk.batch_id,
            chunk_no=chunk.chunk_no,
            partner_name=chunk.partner_name,
            program_name=chunk.program_name,
            rows=sorted(r.row_number for r in recipients),
            tracked_at=services.now(),
        )
    )


def fail_chunk(services: Services, chunk: ChunkRecord, reason: str) -> str:
    recipients = services.storage.read_recipients(chunk.rows_key)
    records = [_outcome(chunk, r, reason=reason) for r in recipients]
    if _end_chunk(services, chunk, ChunkState.FAILED, records, reason=reason):
        services.metrics.count("ChunksFailed")
        log.error("chunk %s/%05d failed: %s", chunk.batch_id, chunk.chunk_no, reason)
        _release_claims(services, chunk, recipients)
        return "failed"
    # Another worker ended it first, maybe with its codes assigned: release only if it failed.
    ended = services.ledger.chunks.get_chunk(chunk.batch_id, chunk.chunk_no)
    if ended is not None and ended.state == ChunkState.FAILED:
        _release_claims(services, ended, recipients)
    return "failed"


def settle_ended(services: Services, chunk: ChunkRecord) -> None:
    """A delivery for an ended chunk: the worker that ended it may have died before releasing
    its claims, counting it in the batch or asking for the report; do what it left."""
    if chunk.state == ChunkState.FAILED:
        _release_claims(services, chunk)
    _restore_assignments(services, chunk)
    _report_if_last(services, chunk.batch_id, chunk.chunk_no)
    if chunk.state == ChunkState.ASSIGNED:
        # The worker that assigned it may have died before asking for its e-mails.
        queue_chunk_emails(services, chunk.batch_id, chunk.chunk_no)
        _track_for_sync(services, chunk)


def _release_claims(
    services: Services, chunk: ChunkRecord, recipients: list[RecipientRecord] | None = None
) -> None:
    """A failed chunk bought nothing for its rows: give their people's claims back, and its
    vouchers to the daily count.

    Idempotent, and repeated on every later delivery for the failed chunk, so a worker that died
    after ending the chunk but before releasing is made good.
    """
    if recipients is None:
        recipients = services.storage.read_recipients(chunk.rows_key)
    released = services.ledger.holdings.release_holdings(
        [
            Claim(
                r.email,
                chunk.partner_name,
                chunk.program_name,
                chunk.batch_id,
                r.row_number,
                reissue=r.reissue,
            )
            for r in recipients
        ]
    )
    if released:
        log.info("chunk %s/%05d: released %d claim(s)", chunk.batch_id, chunk.chunk_no, released)
    _give_back_count(services, chunk)


def _give_back_count(services: Services, chunk: ChunkRecord) -> None:
    """Take the failed chunk's vouchers off the daily count of the day they were counted on
    (the batch's ``counted_day``), once; a dry run or an uncounted batch has none to give."""
    batch = services.ledger.batches.get_batch(chunk.batch_id)
    if batch is None or batch.counted_day is None or batch.dry_run:
        return
    if services.ledger.counts.give_back_failed_chunk(
        chunk.batch_id, chunk.chunk_no, day=batch.counted_day, count=chunk.quantity
    ):
        services.metrics.count("VouchersGivenBack", chunk.quantity)
        log.info(
            "chunk %s/%05d: %d voucher(s) given back to the count of %s",
            chunk.batch_id, chunk.chunk_no, chunk.quantity, batch.counted_day,
        )  # fmt: skip


def _end_chunk(
    services: Services,
    chunk: ChunkRecord,
    state: ChunkState,
    records: list[AssignmentRecord],
    *,
    reason: str | None = None,
) -> bool:
    """Write the chunk's outcome file, end it, write its assignment items, and count it in the
    batch; True if this call ended it.

    Order matters: the outcome file (one per final state, so two workers ending the chunk
    differently never write the same file) exists before the chunk reads as ended. Only the
    worker that won the end writes the assignment items, so a loser (say ``failed`` against
    an ``assigned`` winner) never overwrites the winner's. The chunk is counted in the batch
    only once its items are written, so whoever sees the last chunk counted can report.
    """
    records.sort(key=lambda r: r.row_number)
    services.storage.put_records(
        work_key(chunk.batch_id, outcomes_file(chunk.chunk_no, state)), records
    )
    assigned = sum(1 for r in records if r.status == "assigned")
    ended = services.ledger.chunks.finish_chunk(
        chunk, state=state, assigned=assigned, failed=len(records) - assigned, reason=reason
    )
    if ended:
        services.ledger.assignments.put_assignments(records)
    else:
        winner = services.ledger.chunks.get_chunk(chunk.batch_id, chunk.chunk_no)
        if winner is not None:
            _restore_assignments(services, winner)
    _report_if_last(services, chunk.batch_id, chunk.chunk_no)
    return ended


def _restore_assignments(services: Services, chunk: ChunkRecord) -> None:
    """An ended chunk the batch has not counted yet: its winner may have died between ending
    it and writing its assignment items; write them from the outcome file that won.

    Once the batch counts the chunk its items were written, and later writes (the redemption
    sync's) are not to be overwritten: nothing to do then.
    """
    batch = services.ledger.batches.get_batch(chunk.batch_id)
    if batch is None or chunk.chunk_no in batch.finished_chunks:
        return
    key = work_key(chunk.batch_id, outcomes_file(chunk.chunk_no, chunk.state))
    services.ledger.assignments.put_assignments(
        services.storage.read_records(key, AssignmentRecord)
    )


def _report_if_last(services: Services, batch_id: str, chunk_no: int) -> None:
    """Count the ended chunk in the batch (idempotent) and ask for the report if it was the last.

    Called again on every later delivery for an ended chunk, so a worker that died between
    ending the chunk and counting it (or before sending the report request) is made good.
    """
    batch = services.ledger.batches.count_finished_chunk(batch_id, chunk_no)
    if batch.status == BatchStatus.DONE:
        return
    if batch.chunk_count is not None and batch.chunks_finished >= batch.chunk_count:
        services.queues.send(services.settings.report_queue_url, {"batchId": batch_id})
