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

import json
import math
import tempfile
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, NoReturn

from voucher_distributor.adapters.certiverse import CertiverseUnauthorized
from voucher_distributor.adapters.ledger.holdings import Claim, ClaimOutcome
from voucher_distributor.adapters.queues import MAX_VISIBILITY_SECONDS
from voucher_distributor.domain.batches import EXISTING_ROWS_FILE, REJECTED_ROWS_FILE, work_key
from voucher_distributor.domain.chunking import (
    MAX_CHUNK,
    DuplicateTracker,
    Target,
    missing_target_reason,
    resolve_target,
    spelling_note,
)
from voucher_distributor.domain.csv_input import CsvInputError, ReadTally
from voucher_distributor.domain.eligibility import email_refusal
from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.models.certiverse import PartnerVoucherProgramModel
from voucher_distributor.models.email import ProgramExam
from voucher_distributor.models.ledger import (
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
    RecipientRecord,
)
from voucher_distributor.pipeline.approval import (
    APPROVAL_CHECK,
    record_plan_or_wait,
)
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.preflight import Preflight
from voucher_distributor.pipeline.report import fail_batch
from voucher_distributor.settings import Settings


@dataclass(frozen=True)
class IngestRequest:
    """Everything ingest needs to know about one input, whatever its kind."""

    batch: BatchRecord
    rows: Iterable[InputRow]
    metadata_partner: str | None = None
    metadata_program: str | None = None
    #: What reading ``rows`` skipped (blank lines), complete once they have been read.
    tally: ReadTally = field(default_factory=ReadTally)
    #: The last delivery of this input its queue will make before giving up: a Certiverse
    #: outage during pre-flight then fails the rows instead of sending the input back.
    final_attempt: bool = True
    #: Which delivery this is (1 the first time): picks the wait before the next one.
    attempt: int = 1


class InputTooLarge(CsvInputError):
    """More rows than ``MaxRecipientsPerBatch``: the input is refused whole."""


class IngestRetryLater(RuntimeError):
    """This delivery of the input ends without a result: its message comes back in
    ``retry_in`` seconds (its visibility), to be read again."""

    def __init__(self, message: str, *, retry_in: int) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class PreflightUnavailable(IngestRetryLater):
    """Certiverse was down during pre-flight: the input goes back to its queue to be read again.

    Nothing was bought and the claims were given back; the batch stays ``INGESTING`` and the
    next delivery, ``retry_in`` seconds later, plans it afresh. The last delivery fails the rows
    instead (``retry-failed``).
    """


class IngestBusy(IngestRetryLater):
    """Another delivery of the same input holds the batch's ingest lease (a repeat POST, an
    upload delivered twice), or took it from this one: this delivery changes nothing — no
    claim given back, no chunk dropped, no failure, no hand-out — and comes back later, when
    the batch is planned (``_resume``) or the other's lease has run out."""


def ingest_delivery(
    services: Services,
    request: IngestRequest,
    *,
    attempt: int,
    queue_url: str,
    receipt_handle: str,
) -> IngestOutcome:
    """One delivery of an input from its queue (the ``attempt``-th): ingest it, and when a
    Certiverse outage during pre-flight sends it back, set the message's visibility so the next
    delivery comes after the schedule's wait (not the queue's 90-minute visibility timeout)."""
    final = attempt >= services.settings.max_ingest_attempts
    try:
        return ingest(services, replace(request, final_attempt=final, attempt=attempt))
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


#: Accepted rows claimed together before they join their chunks: ten transactions of 100
#: claims, sent in parallel (the ledger's claim workers).
CLAIM_BATCH = 1000


@dataclass
class IngestOutcome:
    batch_id: str
    duplicate: bool = False
    failed: str | None = None
    rows: int = 0
    rejected: int = 0
    chunks: int = 0
    existing: int = 0
    failed_rows: int = 0


@dataclass(frozen=True, slots=True)
class _Accepted:
    row: InputRow
    target: Target
    reissue: bool
    #: What the row is told beside its code (Certiverse's spelling of the names, if another).
    note: str = ""


@dataclass
class _ClaimRound:
    """Up to CLAIM_BATCH rows whose claims are on their way to the ledger."""

    accepted: list[_Accepted]
    claims: list[Claim]
    outcomes: Future[list[ClaimOutcome]]


@dataclass
class _Plan:
    """Open chunks and counters while the input streams by."""

    rejected_file: IO[str]
    existing_file: IO[str]
    claims_file: IO[str]
    #: Sends a round of claims while the next rows are read (one round in flight at a time).
    claimer: ThreadPoolExecutor | None = None
    in_flight: _ClaimRound | None = None
    replay: bool = False  # an earlier attempt at this batch was interrupted
    next_chunk: int = 0
    rows: int = 0
    rejected: int = 0
    existing: int = 0
    failed: int = 0
    to_buy: int = 0  # rows planned into chunks: the vouchers the batch buys
    pending: list[_Accepted] = field(default_factory=list)
    #: On a replay: rows with a target that this attempt did not claim (their earlier claims,
    #: if any, are given back). Checked one by one: a replay is rare.
    unclaimed: list[Claim] = field(default_factory=list)
    open_chunks: dict[Target, list[RecipientRecord]] = field(default_factory=dict)
    chunk_numbers: list[int] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    #: Every partner and program a row named (defaults applied): the API's partner rule.
    partners: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    #: Rejected rows by reason class (metric name): a handful of billed metrics, no dimension.
    rejected_by_class: dict[str, int] = field(default_factory=dict)
    #: What each assigned row of a target is told (an enforced assignment: do it in the portal).
    notes: dict[Target, str] = field(default_factory=dict)
    #: The exams each target's voucher covers (its program's storeExams), for the e-mail.
    exams: dict[Target, list[ProgramExam]] = field(default_factory=dict)


def ingest(services: Services, request: IngestRequest) -> IngestOutcome:
    batch = request.batch
    ledger = services.ledger
    lease = _IngestLease(services, batch.batch_id)
    replay = not ledger.batches.create_batch(lease.on(batch))
    if replay:
        resumed = _resume(services, batch.batch_id)
        if resumed is not None:
            return resumed
        lease.take()

    with (
        tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl") as rejected_file,
        tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl") as existing_file,
        tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".tsv") as claims_file,
        ThreadPoolExecutor(1, thread_name_prefix="claim-round") as claimer,
    ):
        plan = _Plan(
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
            _plan_rows(services, request, plan, preflight)
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
            _flush(services, batch, target, plan)
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

    def __init__(self, services: Services, batch_id: str) -> None:
        self._services = services
        self._batch_id = batch_id
        self.owner = f"ingest-{uuid.uuid4().hex[:16]}"

    def on(self, batch: BatchRecord) -> BatchRecord:
        """The new batch's record, leased to this delivery from its first write."""
        until = self._services.now() + self._services.settings.ingest_lease_seconds
        return batch.model_copy(update={"ingest_owner": self.owner, "ingest_lease_until": until})

    def take(self) -> None:
        if not self._services.ledger.batches.take_ingest_lease(self._batch_id, **self._terms()):
            # Come back when the holder's lease runs out (a crashed holder's is taken over
            # then; a live one will have planned the batch by then, and this one is a repeat).
            held = self._services.ledger.batches.get_batch(self._batch_id)
            until = (held.ingest_lease_until or 0) if held is not None else 0
            self._busy("another delivery is ingesting it", until - self._services.now() + 1)

    def keep(self) -> None:
        if not self._services.ledger.batches.holds_ingest_lease(self._batch_id, **self._terms()):
            self._busy("this delivery's ingest lease was taken over, or its plan was recorded")

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
    plan: _Plan,
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


def _count_planned(services: Services, batch: BatchRecord, plan: _Plan) -> None:
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


def _resume(services: Services, batch_id: str) -> IngestOutcome | None:
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


def _forget_earlier_attempt(services: Services, batch_id: str, plan: _Plan) -> None:
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


def _give_back(services: Services, batch_id: str, plan: _Plan) -> None:
    """The input failed part-way: give back its claims and drop its planned chunks.

    None was handed out (chunk messages go only after the whole input was read), so nothing
    was bought; every claim this run made is released for other batches.
    """
    round_ = plan.in_flight
    plan.in_flight = None
    if round_ is not None:
        try:
            _plan_claimed(services, plan, round_, record_only=True)
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


def _plan_rows(
    services: Services, request: IngestRequest, plan: _Plan, preflight: Preflight
) -> None:
    settings = services.settings
    duplicates = DuplicateTracker()
    seen_extra = False
    most = settings.max_recipients_per_batch
    rows = iter(request.rows)
    for row in rows:
        plan.rows += 1
        if most and plan.rows > most:
            total = plan.rows + sum(1 for _ in rows)
            raise InputTooLarge(
                f"{total:,} rows, over MaxRecipientsPerBatch ({most:,}): split it into "
                f"{-(-total // most)} inputs of at most {most:,} rows each; nothing was bought"
            )
        if not seen_extra:
            plan.extra_columns = list(row.extra)
            seen_extra = True
        target = resolve_target(
            row,
            metadata_partner=request.metadata_partner,
            metadata_program=request.metadata_program,
            default_partner=settings.default_partner_name or None,
            default_program=settings.default_program_name or None,
        )
        _note_target(plan, target)
        reason = row.problem
        failure: str | None = None
        spelling = ""
        if reason is None and target is None:
            reason = missing_target_reason(
                row,
                metadata_partner=request.metadata_partner,
                metadata_program=request.metadata_program,
                default_partner=settings.default_partner_name or None,
                default_program=settings.default_program_name or None,
            )
        if reason is None and target is not None:
            verdict = preflight.check(target)
            reason = verdict.refusal
            failure = verdict.failure
            if failure is not None:
                plan.failed += 1
                _write_rejected(
                    plan.rejected_file, row, target, failure, status="failed",
                    reissue=row.reissue or request.batch.reissue,
                )  # fmt: skip
                _unclaimed(plan, request.batch, row, target)
                continue
            if reason is None and verdict.program is not None:
                reason = email_refusal(verdict.program, row.email)
            if reason is None:
                # The canonical spelling from Certiverse, so chunks of one program group together.
                assert verdict.partner is not None
                assert verdict.program is not None
                given, target = target, Target(verdict.partner.name, verdict.program.name)
                spelling = spelling_note(given, target)
                _remember_target(plan, target, verdict.program, verdict.note)
                if duplicates.seen(target.program_name, row.email):
                    reason = (
                        "duplicate: this e-mail already appears for program "
                        f"{target.program_name!r}"
                    )
        if reason is not None or target is None:
            _unclaimed(plan, request.batch, row, target)
            plan.rejected += 1
            _write_rejected(plan.rejected_file, row, target, reason or "rejected")
            name = _rejection_metric(row, target, reason)
            plan.rejected_by_class[name] = plan.rejected_by_class.get(name, 0) + 1
            continue
        plan.pending.append(_Accepted(row, target, row.reissue or request.batch.reissue, spelling))
        if len(plan.pending) >= CLAIM_BATCH:
            _settle_claims(services, request.batch, plan)
    _settle_claims(services, request.batch, plan, last=True)


def _note_target(plan: _Plan, target: Target | None) -> None:
    if target is not None:
        plan.partners.add(target.partner_name)
        plan.programs.add(target.program_name)


def _remember_target(
    plan: _Plan, target: Target, program: PartnerVoucherProgramModel, note: str | None
) -> None:
    """What every assigned row of ``target`` is told, and the exams its e-mail lists."""
    if note:
        plan.notes[target] = note
    if target not in plan.exams:
        plan.exams[target] = [ProgramExam(name=e.name, code=e.code) for e in program.store_exams]


def _unclaimed(plan: _Plan, batch: BatchRecord, row: InputRow, target: Target | None) -> None:
    if plan.replay and target is not None and row.problem is None:
        plan.unclaimed.append(
            Claim(
                row.email,
                target.partner_name,
                target.program_name,
                batch.batch_id,
                row.row_number,
                reissue=True,  # looked up one by one: a reissue's claim restores what it replaced
            )
        )


def _settle_claims(
    services: Services, batch: BatchRecord, plan: _Plan, *, last: bool = False
) -> None:
    """Send the pending rows' claims, then plan the previous round's rows by what theirs found.

    One round is in flight while the next CLAIM_BATCH rows are read and checked, so reading
    overlaps the ledger's round trips; rows still join their chunks in row order. ``last``:
    wait for every round.
    """
    previous, plan.in_flight = plan.in_flight, None
    if plan.pending:
        claims = [
            Claim(
                a.row.email,
                a.target.partner_name,
                a.target.program_name,
                batch.batch_id,
                a.row.row_number,
                reissue=a.reissue,
            )
            for a in plan.pending
        ]
        ledger = services.ledger
        # A dry run only looks at what the claims would find; nothing is written.
        send = ledger.holdings.look_up_holdings if batch.dry_run else ledger.holdings.claim_holdings
        assert plan.claimer is not None
        sent = plan.claimer.submit(send, claims, now=services.now())
        plan.in_flight = _ClaimRound(plan.pending, claims, sent)
        plan.pending = []
    if previous is not None:
        _plan_claimed(services, plan, previous, dry_run=batch.dry_run, batch=batch)
    if last and plan.in_flight is not None:
        round_, plan.in_flight = plan.in_flight, None
        _plan_claimed(services, plan, round_, dry_run=batch.dry_run, batch=batch)


def _plan_claimed(
    services: Services,
    plan: _Plan,
    round_: _ClaimRound,
    *,
    dry_run: bool = False,
    batch: BatchRecord | None = None,
    record_only: bool = False,
) -> None:
    """A round's rows by what their claims found: ``existing``, or into a chunk (its claim
    recorded for giving back). ``record_only``: only record the claims (the input failed)."""
    outcomes = round_.outcomes.result()
    for accepted, claim, outcome in zip(round_.accepted, round_.claims, outcomes, strict=True):
        if outcome.kind == "held":
            if not record_only:
                plan.existing += 1
                _write_existing(plan.existing_file, accepted, outcome)
            continue
        reissued = outcome.kind == "reissued"
        if not dry_run:
            plan.claims_file.write(
                f"{claim.email}\t{claim.partner_name}\t{claim.program_name}"
                f"\t{claim.row_number}\t{int(reissued)}\n"
            )
        if not record_only:
            assert batch is not None
            _add_to_chunk(
                services, batch, plan, accepted, _reissue_note(outcome), reissued,
                replaces_code=outcome.previous.voucher_code if outcome.previous else "",
            )  # fmt: skip


def _reissue_note(outcome: ClaimOutcome) -> str:
    if outcome.kind != "reissued":
        return ""
    previous = outcome.previous
    if previous is None:
        return "reissued as asked"
    if previous.voucher_code:
        return f"reissued as asked; replaces voucher {previous.voucher_code}"
    return f"reissued as asked; replaces the voucher of batch {previous.batch_id}"


def _add_to_chunk(
    services: Services,
    batch: BatchRecord,
    plan: _Plan,
    accepted: _Accepted,
    note: str,
    reissued: bool,
    *,
    replaces_code: str = "",
) -> None:
    row, target = accepted.row, accepted.target
    note = "; ".join(n for n in (note, accepted.note, plan.notes.get(target, "")) if n)
    plan.to_buy += 1
    chunk = plan.open_chunks.setdefault(target, [])
    chunk.append(
        RecipientRecord(
            row_number=row.row_number,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            external_id=row.external_id,
            extra=row.extra,
            line=row.line,
            note=note,
            reissue=reissued,
            replaces_code=replaces_code if reissued else "",
        )
    )
    if len(chunk) >= MAX_CHUNK:
        _flush(services, batch, target, plan)


def _flush(services: Services, batch: BatchRecord, target: Target, plan: _Plan) -> None:
    recipients = plan.open_chunks.pop(target, [])
    if not recipients:
        return
    chunk_no = plan.next_chunk
    plan.next_chunk += 1
    rows_key = work_key(batch.batch_id, f"chunks/{chunk_no:05d}.jsonl")
    record = ChunkRecord(
        batch_id=batch.batch_id,
        chunk_no=chunk_no,
        partner_name=target.partner_name,
        program_name=target.program_name,
        quantity=len(recipients),
        rows_key=rows_key,
        first_row=recipients[0].row_number,
        exams=plan.exams.get(target, []),
    )
    if plan.replay and not _replan_chunk(services, record):
        plan.chunk_numbers.append(chunk_no)
        return
    services.storage.put_recipients(rows_key, recipients)
    services.ledger.chunks.put_chunk_if_absent(record)
    plan.chunk_numbers.append(chunk_no)


class PlanChanged(RuntimeError):
    """A replayed ingest planned a chunk differently from one already being bought."""


def _replan_chunk(services: Services, record: ChunkRecord) -> bool:
    """On a replayed ingest: may this chunk's file and record be (re)written?

    A claim another batch held the first time may have been released since, so a replay can
    plan a chunk differently. A chunk nobody has taken yet (PENDING) is planned anew; one a
    worker took is kept exactly as it was bought, and must not have changed.
    """
    current = services.ledger.chunks.get_chunk(record.batch_id, record.chunk_no)
    if current is None:
        return True
    same = (current.quantity, current.first_row, current.program_name) == (
        record.quantity,
        record.first_row,
        record.program_name,
    )
    if current.state == ChunkState.PENDING:
        if not same:
            services.ledger.chunks.replace_pending_chunk(record)
        return True
    if not same:
        raise PlanChanged(
            f"chunk {record.batch_id}/{record.chunk_no:05d} is {current.state} for "
            f"{current.quantity} rows but would now hold {record.quantity}"
        )
    return False


def _rejection_metric(row: InputRow, target: Target | None, reason: str | None) -> str:
    """The reason class of a rejected row, as the name of its metric."""
    if row.problem is not None:
        return "RowsRejectedInvalid"  # malformed e-mail or row
    if target is None:
        return "RowsRejectedUnresolved"  # no partner/program to buy from
    if (reason or "").startswith("duplicate:"):
        return "RowsRejectedDuplicate"
    return "RowsRejectedIneligible"  # partner/program refused, or e-mail outside its domains


def _write_rejected(
    out: IO[str],
    row: InputRow,
    target: Target | None,
    reason: str,
    *,
    status: str = "rejected",
    reissue: bool = False,
) -> None:
    record = {
        "status": status,
        "row_number": row.row_number,
        "line": row.line,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "external_id": row.external_id,
        "partner_name": target.partner_name if target else (row.partner_name or ""),
        "program_name": target.program_name if target else (row.program_name or ""),
        "reason": reason,
        "extra": row.extra,
        # A failed row that asked for a new voucher: ``retry-failed`` retries it as a reissue.
        **({"reissue": True} if reissue else {}),
    }
    out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_existing(out: IO[str], accepted: _Accepted, outcome: ClaimOutcome) -> None:
    """The row, and which batch row holds the person's voucher (resolved by the report)."""
    holding = outcome.holding
    assert holding is not None
    row = accepted.row
    record = {
        "row_number": row.row_number,
        "line": row.line,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "external_id": row.external_id,
        "partner_name": accepted.target.partner_name,
        "program_name": accepted.target.program_name,
        "extra": row.extra,
        "holder_batch": holding.batch_id,
        "holder_row": holding.row_number,
        "claimed_at": holding.claimed_at,
    }
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
