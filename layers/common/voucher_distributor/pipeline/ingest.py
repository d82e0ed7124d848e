"""Ingest: turn an input (an uploaded CSV or an HR request) into planned chunks.

Streaming: rows are read one at a time. An accepted row claims its person's holding for the
(partner, program) — one conditional put, 100 to a transaction, ten transactions at a time,
one round of 1,000 on its way while the next 1,000 rows are read — before it joins one open
chunk per (partner, program) of at most 1000, written out as soon as it fills. A person who
already holds a voucher is not bought for: the row is ``existing`` and gets the held code in
the report. Rejected and failed rows go to a temporary JSON-lines file, existing ones to
another. Nothing is bought here. Chunk messages are sent only after the whole input was read,
so a file that turns out unusable half-way buys nothing (and gives back its claims).

Re-running ingest for the same batch (a redelivered event after a crash) plans the same chunks
with the same numbers: its claims come back to it, and existing chunk records are kept.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from voucher_distributor.adapters.certiverse import CertiverseUnauthorized
from voucher_distributor.adapters.ledger.holdings import Claim
from voucher_distributor.adapters.queues import MAX_VISIBILITY_SECONDS
from voucher_distributor.domain.batches import EXISTING_ROWS_FILE, REJECTED_ROWS_FILE, work_key
from voucher_distributor.domain.csv_input import CsvInputError
from voucher_distributor.models.ledger import (
    BatchRecord,
    BatchStatus,
)
from voucher_distributor.pipeline.approval import (
    APPROVAL_CHECK,
    record_plan_or_wait,
)
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.ingest_plan import (
    flush,
    plan_claimed,
    plan_rows,
)
from voucher_distributor.pipeline.ingest_types import (
    IngestBusy,
    IngestOutcome,
    IngestRequest,
    IngestRetryLater,
    InputTooLarge,
    Plan,
    PreflightUnavailable,
)
from voucher_distributor.pipeline.preflight import Preflight
from voucher_distributor.pipeline.report import fail_batch
from voucher_distributor.settings import Settings

__all__ = [
    "IngestBusy",
    "IngestOutcome",
    "IngestRequest",
    "IngestRetryLater",
    "InputTooLarge",
    "PreflightUnavailable",
    "ingest",
    "ingest_delivery",
    "preflight_retry_delay",
]


def ingest_delivery(
    services: Services,
    request: IngestRequest,
    *,
    attempt: int,
    queue_url: str,
    receipt_handle: str,
    message_id: str = "",
) -> IngestOutcome:
    """One delivery of an input from its queue (the ``attempt``-th): ingest it, and when a
    Certiverse outage during pre-flight sends it back, set the message's visibility so the next
    delivery comes after the schedule's wait (not the queue's 90-minute visibility timeout)."""
    final = attempt >= services.settings.max_ingest_attempts
    try:
        delivered = replace(request, final_attempt=final, attempt=attempt, message_id=message_id)
        return ingest(services, delivered)
    except IngestRetryLater as exc:
        services.queues.return_later(queue_url, receipt_handle, exc.retry_in)
        raise


def preflight_retry_delay(settings: Settings, attempt: int, retry_after_s: float | None) -> int:
    """Seconds before the delivery after ``attempt`` (1-based): the schedule's entry (its last
    one repeating), or Certiverse's ``Retry-After`` when that is longer."""
    schedule = settings.ingest_retry_schedule
    wait = schedule[min(max(attempt, 1), len(schedule)) - 1]
    if retry_after_s is not None:
        wait = max(wait, math.ceil(retry_after_s))
    return min(wait, MAX_VISIBILITY_SECONDS)


def ingest(services: Services, request: IngestRequest) -> IngestOutcome:
    lease = _IngestLease(services, request.batch.batch_id, request.message_id, request.attempt)
    try:
        return _ingest(services, request, lease)
    except Exception:
        # A delivery that fails (a throttled write, Certiverse refusing) ends here: its lease
        # ends with it, so the input's next delivery takes the batch at once instead of
        # spending a delivery of its queue's few on waiting the lease out. (A process that
        # dies cannot do this; its lease is taken over once it runs out.)
        lease.give_up()
        raise


def _ingest(services: Services, request: IngestRequest, lease: _IngestLease) -> IngestOutcome:
    batch = request.batch
    ledger = services.ledger
    replay = not ledger.batches.create_batch(lease.on(batch))
    if replay:
        resumed = resume(services, batch.batch_id)
        if resumed is not None:
            return resumed
        lease.take()

    with (
        tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl") as rejected_file,
        tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl") as existing_file,
        tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".tsv") as claims_file,
        ThreadPoolExecutor(1, thread_name_prefix="claim-round") as claimer,
    ):
        plan = Plan(
            rejected_file=rejected_file,
            existing_file=existing_file,
            claims_file=claims_file,
            claimer=claimer,
            replay=replay,
        )
        preflight = Preflight(
            services.certiverse,
            accept_portal_assignment=services.settings.accept_portal_assignment,
        )
        try:
            plan_rows(services, request, plan, preflight)
        except CsvInputError as exc:
            lease.keep()
            _give_back(services, batch.batch_id, plan)
            over = isinstance(exc, InputTooLarge)
            prefix = "" if over else "the input file is unusable: "
            fail_batch(services, batch.batch_id, f"{prefix}{exc}", input_rejected=True)
            services.metrics.count("InputsOverLimit" if over else "InputsRefused")
            return IngestOutcome(batch.batch_id, failed=str(exc))
        except CertiverseUnauthorized as exc:
            lease.keep()
            _give_back(services, batch.batch_id, plan)
            fail_batch(services, batch.batch_id, str(exc))
            services.metrics.count("CertiverseUnauthorized")
            return IngestOutcome(batch.batch_id, failed=str(exc))
        if preflight.transient and not request.final_attempt:
            lease.keep()
            _send_back(services, request, plan, preflight, lease)
        for target in list(plan.open_chunks):
            flush(services, batch, target, plan)
        if replay:
            lease.keep()
            _forget_earlier_attempt(services, batch.batch_id, plan)
        for file, name in (
            (rejected_file, REJECTED_ROWS_FILE),
            (existing_file, EXISTING_ROWS_FILE),
        ):
            file.flush()
            services.storage.upload_file(
                work_key(batch.batch_id, name),
                Path(file.name),
                content_type="application/x-ndjson",
            )
    if preflight.failure is not None:
        services.metrics.count(
            "CertiverseUnauthorized" if preflight.unauthorized else "PreflightFailures"
        )
        log.error("batch %s: Certiverse could not be used: %s", batch.batch_id, preflight.failure)

    if batch.retry_of:
        _link_retry(services, batch.retry_of, batch.batch_id)
    # The plan is recorded in one write (with the day's count of vouchers); from here a replay
    # hands it out as it stands. Over a limit it waits for approval instead.
    plan_values = {
        "chunk_count": len(plan.chunk_numbers),
        "rows_total": plan.rows,
        "rows_rejected": plan.rejected,
        "rows_existing": plan.existing,
        "rows_failed_early": plan.failed,
        "extra_columns": plan.extra_columns,
        "partners": sorted(plan.partners),
        "programs": sorted(plan.programs),
        "vouchers_planned": plan.to_buy,
        "blank_lines": request.tally.blank_lines,
        "results_delimiter": request.tally.delimiter,
        **({"error": preflight.failure} if preflight.failure else {}),
    }
    lease.keep()  # the plan is recorded, and handed out, only by the delivery holding it
    if record_plan_or_wait(services, batch, plan_values):
        # A dry run stops here: its chunks are never handed out; the report says what they hold.
        _hand_out(services, batch.batch_id, [] if batch.dry_run else plan.chunk_numbers)
    _count_planned(services, batch, plan)
    return IngestOutcome(
        batch.batch_id,
        rows=plan.rows,
        rejected=plan.rejected,
        chunks=len(plan.chunk_numbers),
        existing=plan.existing,
        failed_rows=plan.failed,
    )


class _IngestLease:
    """This delivery's lease on its batch while it ingests (``BatchStore.take_ingest_lease``).

    Taken when the batch is created, or on a replay; checked (and renewed) right before each
    step that would undo or settle another delivery's work: giving back, failing, dropping the
    earlier attempt's chunks, recording and handing out the plan. Lost: :class:`IngestBusy`.
    """

    def __init__(
        self, services: Services, batch_id: str, message_id: str = "", attempt: int = 1
    ) -> None:
        self._services = services
        self._batch_id = batch_id
        # A receive of a queue message is its own owner, named by the message: a later receive
        # of the same message means the earlier one's invocation ended (the queue's visibility
        # timeout outlasts the function's, and a send-back ends its delivery), so it takes over
        # at once instead of waiting the dead one's lease out, spending one of the queue's few
        # deliveries. The lease's checks keep even a duplicate receive from changing anything.
        self.same_message = f"ingest-m-{message_id}-" if message_id else ""
        self.owner = (
            f"{self.same_message}{attempt}" if message_id else f"ingest-{uuid.uuid4().hex[:16]}"
        )

    def on(self, batch: BatchRecord) -> BatchRecord:
        """The new batch's record, leased to this delivery from its first write."""
        until = self._services.now() + self._services.settings.ingest_lease_seconds
        return batch.model_copy(update={"ingest_owner": self.owner, "ingest_lease_until": until})

    def take(self) -> None:
        taken = self._services.ledger.batches.take_ingest_lease(
            self._batch_id, same_message=self.same_message, **self._terms()
        )
        if not taken:
            # Come back when the holder's lease runs out (a crashed holder's is taken over
            # then; a live one will have planned the batch by then, and this one is a repeat).
            held = self._services.ledger.batches.get_batch(self._batch_id)
            until = (held.ingest_lease_until or 0) if held is not None else 0
            self._busy("another delivery is ingesting it", until - self._services.now() + 1)

    def keep(self) -> None:
        if not self._services.ledger.batches.holds_ingest_lease(self._batch_id, **self._terms()):
            self._busy("this delivery's ingest lease was taken over, or its plan was recorded")

    def give_up(self) -> None:
        """End this delivery's lease, if it still holds it (best effort: it is failing)."""
        try:
            self._services.ledger.batches.release_ingest_lease(self._batch_id, owner=self.owner)
        except Exception as exc:  # the delivery's own failure is what counts
            log.warning("batch %s: the ingest lease was not given up (%s); it runs out on "
                        "its own", self._batch_id, type(exc).__name__)  # fmt: skip

    def _terms(self) -> dict[str, Any]:
        settings = self._services.settings
        return {
            "owner": self.owner,
            "now": self._services.now(),
            "lease_seconds": settings.ingest_lease_seconds,
        }

    def _busy(self, why: str, wait: int = 0) -> NoReturn:
        self._services.metrics.count("IngestsBusy")
        retry_in = min(
            max(self._services.settings.ingest_retry_schedule[0], wait), MAX_VISIBILITY_SECONDS
        )
        log.warning(
            "batch %s: %s; this delivery changes nothing and comes back in %d s",
            self._batch_id, why, retry_in,
        )  # fmt: skip
        raise IngestBusy(f"batch {self._batch_id}: {why}", retry_in=retry_in)


def _send_back(
    services: Services,
    request: IngestRequest,
    plan: Plan,
    preflight: Preflight,
    lease: _IngestLease,
) -> NoReturn:
    """A Certiverse outage during pre-flight, not on the last delivery: give back what this
    delivery claimed and planned, say when it retries, and send the input back."""
    batch = request.batch
    _give_back(services, batch.batch_id, plan)
    if plan.replay:
        services.ledger.holdings.release_holdings(plan.unclaimed)
    services.metrics.count("PreflightRetries")
    retry_in = preflight_retry_delay(services.settings, request.attempt, preflight.retry_after_s)
    # The lease ends with this delivery, so the next one takes the batch at once.
    services.ledger.batches.release_ingest_lease(
        batch.batch_id,
        owner=lease.owner,
        preflight_retry_at=services.now() + retry_in,
        preflight_retry_in=retry_in,
        preflight_attempt=request.attempt,
    )
    log.warning(
        "batch %s: Certiverse unavailable during pre-flight, retrying in %d s "
        "(delivery %d of %d)",
        batch.batch_id, retry_in, request.attempt, services.settings.max_ingest_attempts,
    )  # fmt: skip
    raise PreflightUnavailable(
        f"batch {batch.batch_id}: {preflight.failure} (the input returns to its queue; "
        f"retrying in {retry_in} s)",
        retry_in=retry_in,
    )


def _count_planned(services: Services, batch: BatchRecord, plan: Plan) -> None:
    if batch.dry_run:
        services.metrics.count("DryRuns")
    services.metrics.count("RowsReceived", plan.rows)
    services.metrics.count("RowsRejected", plan.rejected)
    services.metrics.count("RowsExisting", plan.existing)
    for name, count in sorted(plan.rejected_by_class.items()):
        services.metrics.count(name, count)
    log.info(
        "batch %s planned: %d rows, %d rejected, %d existing, %d failed, %d chunks",
        batch.batch_id, plan.rows, plan.rejected, plan.existing, plan.failed,
        len(plan.chunk_numbers),
    )  # fmt: skip


def resume(services: Services, batch_id: str) -> IngestOutcome | None:
    """A later delivery of an input already seen: finish what is left, or say to plan again."""
    existing = services.ledger.batches.get_batch(batch_id)
    if existing is not None and existing.status != BatchStatus.INGESTING:
        log.info("batch %s already ingested (%s): nothing to do", batch_id, existing.status)
        if existing.status == BatchStatus.PLANNED and (
            existing.chunk_count == 0 or existing.dry_run
        ):
            # Nothing to buy (every row rejected, existing or failed, or a dry run): the report
            # request is the only thing after PLANNED, and the process may have died before it.
            services.queues.send(services.settings.report_queue_url, {"batchId": batch_id})
        if existing.status == BatchStatus.AWAITING_APPROVAL:
            # The process may have died before asking for its approval check: ask again.
            services.queues.send(
                services.settings.report_queue_url, {"batchId": batch_id, "check": APPROVAL_CHECK}
            )
        services.metrics.count("DuplicateDeliveries")
        return IngestOutcome(batch_id, duplicate=True)
    if existing is not None and existing.chunk_count is not None:
        # The earlier attempt recorded its whole plan (its files were written before): its
        # chunks may be bought already, so the plan stands; only hand it out again.
        log.warning("batch %s was interrupted after planning: handing it out", batch_id)
        chunks = [] if existing.dry_run else list(range(existing.chunk_count))
        _hand_out(services, batch_id, chunks)
        return IngestOutcome(batch_id, chunks=existing.chunk_count)
    log.warning("batch %s was interrupted while ingesting: planning it again", batch_id)
    return None


def _hand_out(services: Services, batch_id: str, chunk_numbers: list[int]) -> None:
    """Send the planned chunks to the purchase queue (or, with none, ask for the report)."""
    settings = services.settings
    services.queues.send_many(
        settings.purchase_queue_url,
        ({"batchId": batch_id, "chunkNo": n} for n in chunk_numbers),
    )
    services.ledger.batches.update_batch(batch_id, status=BatchStatus.PLANNED.value)
    if not chunk_numbers:
        services.queues.send(settings.report_queue_url, {"batchId": batch_id})


def _link_retry(services: Services, original_id: str, batch_id: str) -> None:
    """``retry-failed``: name this batch in the original's record and summary."""
    original = services.ledger.batches.link_retry(original_id, batch_id)
    if original is None:
        log.warning("batch %s retries unknown batch %s", batch_id, original_id)
        return
    summary = services.storage.get_json(original.summary_key)
    if isinstance(summary, dict) and summary.get("batchId") == original_id:
        summary["retriedBy"] = original.retried_by
        services.storage.put_json(original.summary_key, summary)


def _forget_earlier_attempt(services: Services, batch_id: str, plan: Plan) -> None:
    """A replay planned afresh: drop what only the interrupted attempt had planned.

    Pre-flight can answer otherwise the second time (a token revoked, Certiverse down): chunks
    numbered past this plan's are dropped (none was handed out: the plan was never recorded),
    and rows this attempt did not claim give back what the earlier one claimed for them.
    """
    dropped = services.ledger.chunks.delete_pending_chunks(batch_id, from_chunk=plan.next_chunk)
    released = services.ledger.holdings.release_holdings(plan.unclaimed)
    if dropped or released:
        log.info(
            "batch %s: the earlier attempt's %d chunk(s) and %d claim(s) dropped",
            batch_id, dropped, released,
        )  # fmt: skip


def _give_back(services: Services, batch_id: str, plan: Plan) -> None:
    """The input failed part-way: give back its claims and drop its planned chunks.

    None was handed out (chunk messages go only after the whole input was read), so nothing
    was bought; every claim this run made is released for other batches.
    """
    round_ = plan.in_flight
    plan.in_flight = None
    if round_ is not None:
        try:
            plan_claimed(services, plan, round_, record_only=True)
        except Exception:  # the round failed: it recorded nothing to give back
            log.warning("batch %s: a round of claims failed while giving back", batch_id)
    plan.claims_file.flush()
    plan.claims_file.seek(0)
    claims = []
    for line in plan.claims_file:
        email, partner, program, row, reissued = line.rstrip("\n").split("\t")
        claims.append(Claim(email, partner, program, batch_id, int(row), reissue=reissued == "1"))
    released = services.ledger.holdings.release_holdings(claims)
    dropped = services.ledger.chunks.delete_pending_chunks(batch_id)
    if dropped or released:
        log.info(
            "batch %s: dropped %d planned chunk(s), released %d claim(s); nothing was bought",
            batch_id, dropped, released,
        )  # fmt: skip
