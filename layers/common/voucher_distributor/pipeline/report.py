"""Report: when every chunk of a batch has ended, write its results and announce them.

The results CSV has one row per input row, in input order: outcomes come from each ended
chunk's outcome file (merged by row, a chunk loaded only when the merge reaches it),
rejections from the batch's rejected-rows file (in row order), and the streams are merged
without holding the batch in memory. The batch's counts come from its chunk records.
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voucher_distributor.adapters.callbacks import CallbackFailed, CallbackRefused
from voucher_distributor.domain.batches import REJECTED_ROWS_FILE, work_key
from voucher_distributor.domain.emails import redact_emails
from voucher_distributor.domain.outcomes import merge_outcomes, outcomes_file, tally_chunks
from voucher_distributor.domain.results_csv import ResultRow, ResultsCsvWriter
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
)
from voucher_distributor.pipeline.context import Services, log


def report_batch(services: Services, batch_id: str) -> str:
    batch = services.ledger.start_report(batch_id)
    if batch is None:
        return "already-reported"
    chunks = list(services.ledger.iter_chunks(batch_id))
    counts: Counter[str] = Counter()
    with tempfile.NamedTemporaryFile("w+", encoding="utf-8", newline="", suffix=".csv") as out:
        writer = ResultsCsvWriter(out, batch.extra_columns)
        for row in _result_rows(services, batch, chunks):
            counts[row.status] += 1
            writer.write(row)
        out.flush()
        services.storage.upload_file(
            batch.results_csv_key, Path(out.name), content_type="text/csv; charset=utf-8"
        )
    finished_at = services.now()
    summary = _summary(services, batch, chunks, counts, finished_at)
    services.storage.put_json(batch.summary_key, summary)
    _announce(services, batch, summary, completed=True)
    tally = tally_chunks(chunks)
    services.ledger.update_batch(
        batch_id,
        status=BatchStatus.DONE.value,
        finished_at=finished_at,
        rows_assigned=tally.assigned,
        rows_failed=tally.failed,
        purchases_created=tally.purchases_created,
        purchases_adopted=tally.purchases_adopted,
    )
    services.metrics.count("BatchDurationSeconds", finished_at - batch.created_at, unit="Seconds")
    log.info("batch %s reported: %s", batch_id, dict(counts))
    return "reported"


def fail_batch(services: Services, batch_id: str, reason: str) -> None:
    """The input was unusable: record why under results/, announce it, buy nothing."""
    batch = services.ledger.update_batch(
        batch_id, status=BatchStatus.FAILED.value, error=reason, finished_at=services.now()
    )
    chunks = list(services.ledger.iter_chunks(batch_id))
    summary = _summary(services, batch, chunks, Counter(), services.now())
    services.storage.put_json(batch.summary_key, summary)
    _announce(services, batch, summary, completed=False)
    # The reason may quote the file (e.g. an address where the header should be): the summary
    # under results/ keeps it whole for the user; logs and announcements get it redacted.
    log.error("batch %s failed: %s", batch_id, redact_emails(reason))


def _result_rows(
    services: Services, batch: BatchRecord, chunks: list[ChunkRecord]
) -> Iterator[ResultRow]:
    def load(chunk: ChunkRecord) -> list[AssignmentRecord]:
        name = outcomes_file(chunk.chunk_no, chunk.state)
        return services.storage.read_records(work_key(batch.batch_id, name), AssignmentRecord)

    assigned = (
        ResultRow(
            row_number=a.row_number,
            email=a.email,
            first_name=a.first_name,
            last_name=a.last_name,
            external_id=a.external_id,
            partner=a.partner_name,
            program=a.program_name,
            status="assigned" if a.status == "assigned" else "failed",
            voucher_code=a.voucher_code,
            purchase_code=a.purchase_code,
            expires_utc=_parse_time(a.expires_utc),
            reason=a.reason,
            extra=a.extra,
        )
        for a in merge_outcomes(chunks, load)
    )
    rejected = (
        ResultRow(
            row_number=int(r["row_number"]),
            email=str(r.get("email", "")),
            first_name=str(r.get("first_name", "")),
            last_name=str(r.get("last_name", "")),
            external_id=str(r.get("external_id", "")),
            partner=str(r.get("partner_name", "")),
            program=str(r.get("program_name", "")),
            status="rejected",
            reason=str(r.get("reason", "")),
            extra={str(k): str(v) for k, v in (r.get("extra") or {}).items()},
        )
        for r in services.storage.iter_json_lines(work_key(batch.batch_id, REJECTED_ROWS_FILE))
    )
    return heapq.merge(assigned, rejected, key=lambda row: row.row_number)


def _parse_time(value: str) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _summary(
    services: Services,
    batch: BatchRecord,
    chunks: list[ChunkRecord],
    counts: Counter[str],
    finished_at: int,
) -> dict[str, Any]:
    purchases = [
        {
            "chunk": c.chunk_no,
            "partner": c.partner_name,
            "program": c.program_name,
            "quantity": c.quantity,
            "purchaseCode": c.purchase_code,
            "adopted": c.adopted,
            "state": c.state.value,
            **({"reason": c.failure_reason} if c.state == ChunkState.FAILED else {}),
        }
        for c in chunks
    ]
    return {
        "batchId": batch.batch_id,
        "source": batch.source,
        "status": "failed" if batch.status == BatchStatus.FAILED else "completed",
        "error": batch.error,
        "counts": {
            "rows": batch.rows_total,
            "assigned": counts.get("assigned", 0),
            "rejected": counts.get("rejected", 0),
            "failed": counts.get("failed", 0),
        },
        "purchases": purchases,
        "results": {
            "bucket": services.storage.bucket,
            "csv": batch.results_csv_key if batch.status != BatchStatus.FAILED else None,
            "summary": batch.summary_key,
        },
        "timings": {
            "createdAt": _iso(batch.created_at),
            "finishedAt": _iso(finished_at),
            "durationSeconds": finished_at - batch.created_at,
        },
    }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _announce(
    services: Services, batch: BatchRecord, summary: dict[str, Any], *, completed: bool
) -> None:
    detail = {k: summary[k] for k in ("batchId", "status", "counts", "results", "error")}
    if detail["error"]:
        detail["error"] = redact_emails(str(detail["error"]))
    services.events.publish(
        "Voucher Batch Completed" if completed else "Voucher Batch Failed", detail
    )
    if batch.callback_url and services.callbacks is not None:
        body = json.dumps(detail, separators=(",", ":"), default=str).encode()
        try:
            services.callbacks.send(batch.callback_url, body)
            services.metrics.count("CallbacksDelivered")
        except (CallbackRefused, CallbackFailed) as exc:
            services.metrics.count("CallbacksFailed")
            log.error("callback of batch %s not delivered: %s", batch.batch_id, exc)
