"""Ingest: turn an input (an uploaded CSV or an HR request) into planned chunks.

Streaming: rows are read one at a time; accepted rows wait in one open chunk per
(partner, program) of at most 1000 and are written out as soon as it fills; rejected rows go to
a temporary JSON-lines file. Nothing is bought here. Chunk messages are sent only after the
whole input was read, so a file that turns out unusable half-way buys nothing.

Re-running ingest for the same batch (a redelivered event after a crash) plans the same chunks
with the same numbers; existing chunk records are kept as they are.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from voucher_distributor.adapters.certiverse import CertiverseUnauthorized
from voucher_distributor.domain.batches import REJECTED_ROWS_FILE, work_key
from voucher_distributor.domain.chunking import MAX_CHUNK, DuplicateTracker, Target, resolve_target
from voucher_distributor.domain.csv_input import CsvInputError
from voucher_distributor.domain.eligibility import email_refusal
from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.models.ledger import (
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    RecipientRecord,
)
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.preflight import Preflight
from voucher_distributor.pipeline.report import fail_batch


@dataclass(frozen=True)
class IngestRequest:
    """Everything ingest needs to know about one input, whatever its kind."""

    batch: BatchRecord
    rows: Iterable[InputRow]
    metadata_partner: str | None = None
    metadata_program: str | None = None


@dataclass
class IngestOutcome:
    batch_id: str
    duplicate: bool = False
    failed: str | None = None
    rows: int = 0
    rejected: int = 0
    chunks: int = 0


@dataclass
class _Plan:
    """Open chunks and counters while the input streams by."""

    rejected_file: IO[str]
    next_chunk: int = 0
    rows: int = 0
    rejected: int = 0
    open_chunks: dict[Target, list[RecipientRecord]] = field(default_factory=dict)
    chunk_numbers: list[int] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    #: Rejected rows by reason class (metric name): a handful of billed metrics, no dimension.
    rejected_by_class: dict[str, int] = field(default_factory=dict)


def ingest(services: Services, request: IngestRequest) -> IngestOutcome:
    batch = request.batch
    ledger = services.ledger
    if not ledger.create_batch(batch):
        existing = ledger.get_batch(batch.batch_id)
        if existing is not None and existing.status != BatchStatus.INGESTING:
            log.info(
                "batch %s already ingested (%s): nothing to do", batch.batch_id, existing.status
            )
            services.metrics.count("DuplicateDeliveries")
            return IngestOutcome(batch.batch_id, duplicate=True)
        log.warning("batch %s was interrupted while ingesting: planning it again", batch.batch_id)

    with tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl") as rejected_file:
        plan = _Plan(rejected_file=rejected_file)
        try:
            _plan_rows(services, request, plan)
        except CsvInputError as exc:
            _discard_plan(services, batch.batch_id)
            fail_batch(services, batch.batch_id, f"the input file is unusable: {exc}")
            services.metrics.count("InputsRefused")
            return IngestOutcome(batch.batch_id, failed=str(exc))
        except CertiverseUnauthorized as exc:
            _discard_plan(services, batch.batch_id)
            fail_batch(services, batch.batch_id, str(exc))
            services.metrics.count("CertiverseUnauthorized")
            return IngestOutcome(batch.batch_id, failed=str(exc))
        for target in list(plan.open_chunks):
            _flush(services, batch, target, plan)
        rejected_file.flush()
        services.storage.upload_file(
            work_key(batch.batch_id, REJECTED_ROWS_FILE),
            Path(rejected_file.name),
            content_type="application/x-ndjson",
        )

    ledger.update_batch(
        batch.batch_id,
        chunk_count=len(plan.chunk_numbers),
        rows_total=plan.rows,
        rows_rejected=plan.rejected,
        extra_columns=plan.extra_columns,
    )
    settings = services.settings
    services.queues.send_many(
        settings.purchase_queue_url,
        ({"batchId": batch.batch_id, "chunkNo": n} for n in plan.chunk_numbers),
    )
    ledger.update_batch(batch.batch_id, status=BatchStatus.PLANNED.value)
    if not plan.chunk_numbers:
        services.queues.send(settings.report_queue_url, {"batchId": batch.batch_id})
    services.metrics.count("RowsReceived", plan.rows)
    services.metrics.count("RowsRejected", plan.rejected)
    for name, count in sorted(plan.rejected_by_class.items()):
        services.metrics.count(name, count)
    log.info(
        "batch %s planned: %d rows, %d rejected, %d chunks",
        batch.batch_id, plan.rows, plan.rejected, len(plan.chunk_numbers),
    )  # fmt: skip
    return IngestOutcome(
        batch.batch_id, rows=plan.rows, rejected=plan.rejected, chunks=len(plan.chunk_numbers)
    )


def _discard_plan(services: Services, batch_id: str) -> None:
    """The input failed part-way: drop the chunks planned so far (none was handed out)."""
    dropped = services.ledger.delete_pending_chunks(batch_id)
    if dropped:
        log.info("batch %s: dropped %d planned chunk(s); nothing was bought", batch_id, dropped)


def _plan_rows(services: Services, request: IngestRequest, plan: _Plan) -> None:
    settings = services.settings
    preflight = Preflight(services.certiverse)
    duplicates = DuplicateTracker()
    seen_extra = False
    for row in request.rows:
        plan.rows += 1
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
        reason = row.problem
        if reason is None and target is None:
            reason = (
                "no partner or program: give partner_name and program_name columns, object "
                "metadata, or stack defaults"
            )
        if reason is None and target is not None:
            verdict = preflight.check(target)
            reason = verdict.refusal
            if reason is None and verdict.program is not None:
                reason = email_refusal(verdict.program, row.email)
            if reason is None:
                # The canonical spelling from Certiverse, so chunks of one program group together.
                assert verdict.partner is not None
                assert verdict.program is not None
                target = Target(verdict.partner.name, verdict.program.name)
                if duplicates.seen(target.program_name, row.email):
                    reason = (
                        "duplicate: this e-mail already appears for program "
                        f"{target.program_name!r}"
                    )
        if reason is not None or target is None:
            plan.rejected += 1
            _write_rejected(plan.rejected_file, row, target, reason or "rejected")
            name = _rejection_metric(row, target, reason)
            plan.rejected_by_class[name] = plan.rejected_by_class.get(name, 0) + 1
            continue
        chunk = plan.open_chunks.setdefault(target, [])
        chunk.append(
            RecipientRecord(
                row_number=row.row_number,
                email=row.email,
                first_name=row.first_name,
                last_name=row.last_name,
                external_id=row.external_id,
                extra=row.extra,
            )
        )
        if len(chunk) >= MAX_CHUNK:
            _flush(services, request.batch, target, plan)


def _flush(services: Services, batch: BatchRecord, target: Target, plan: _Plan) -> None:
    recipients = plan.open_chunks.pop(target, [])
    if not recipients:
        return
    chunk_no = plan.next_chunk
    plan.next_chunk += 1
    rows_key = work_key(batch.batch_id, f"chunks/{chunk_no:05d}.jsonl")
    services.storage.put_recipients(rows_key, recipients)
    services.ledger.put_chunk_if_absent(
        ChunkRecord(
            batch_id=batch.batch_id,
            chunk_no=chunk_no,
            partner_name=target.partner_name,
            program_name=target.program_name,
            quantity=len(recipients),
            rows_key=rows_key,
            first_row=recipients[0].row_number,
        )
    )
    plan.chunk_numbers.append(chunk_no)


def _rejection_metric(row: InputRow, target: Target | None, reason: str | None) -> str:
    """The reason class of a rejected row, as the name of its metric."""
    if row.problem is not None:
        return "RowsRejectedInvalid"  # malformed e-mail or row
    if target is None:
        return "RowsRejectedUnresolved"  # no partner/program to buy from
    if (reason or "").startswith("duplicate:"):
        return "RowsRejectedDuplicate"
    return "RowsRejectedIneligible"  # partner/program refused, or e-mail outside its domains


def _write_rejected(out: IO[str], row: InputRow, target: Target | None, reason: str) -> None:
    record = {
        "row_number": row.row_number,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "external_id": row.external_id,
        "partner_name": target.partner_name if target else (row.partner_name or ""),
        "program_name": target.program_name if target else (row.program_name or ""),
        "reason": reason,
        "extra": row.extra,
    }
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
