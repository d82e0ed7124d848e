"""Report: when every chunk of a batch has ended, write its results and announce them.

The results CSV has one row per input row, in input order: outcomes come from each ended
chunk's outcome file (merged by row, a chunk loaded only when the merge reaches it),
rejections and early failures from the batch's rejected-rows file, and rows whose person
already held a voucher from its existing-rows file, each in row order; the streams are merged
without holding the batch in memory. The batch's counts come from its chunk records.

An ``existing`` row shows the code its person holds, read from the assignment of the batch row
that holds it. When that row is still being bought (two lists with the same people at once),
the report waits for it: it asks again later on a delayed message. When it was not bought after
all, the row is ``failed`` and ``retry-failed`` gives it a voucher.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from voucher_distributor.domain.approval import approval_summary, rejection_reason
from voucher_distributor.domain.batches import EXISTING_ROWS_FILE, REJECTED_ROWS_FILE, work_key
from voucher_distributor.domain.emails import redact_emails
from voucher_distributor.domain.outcomes import merge_outcomes, outcomes_file, tally_chunks
from voucher_distributor.domain.results_csv import (
    ResultRow,
    ResultsCsvWriter,
    ResultStatus,
    spreadsheet_safe,
)
from voucher_distributor.domain.send_schedule import SCHEDULED
from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.email import EmailDelivery, EmailState
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
)
from voucher_distributor.pipeline.callbacks import deliveries_view, send_event_callback
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.email import emails_wanted, refresh_window

#: Lifetime of the completion callback's ``resultsUrl`` (a fresh one: ``GET …/results``).
CALLBACK_LINK_S = 3600


class HoldersPending(RuntimeError):
    """A row's person holds a voucher another batch is still buying; report once it is bought."""


def report_batch(services: Services, batch_id: str) -> str:
    batch = services.ledger.batches.start_report(batch_id)
    if batch is None:
        return "already-reported"
    chunks = list(services.ledger.chunks.iter_chunks(batch_id))
    try:
        counts, emails = _write_results(services, batch, chunks)
    except HoldersPending as exc:
        wait = services.settings.report_wait_seconds
        services.queues.send(
            services.settings.report_queue_url, {"batchId": batch_id}, delay_seconds=wait
        )
        log.info("batch %s: %s; reporting again in %d s", batch_id, exc, wait)
        return "waiting-for-holders"
    finished_at = services.now()
    # Nothing could be done at all (Certiverse unusable from the first look-up): the batch
    # failed, though its results list every row as failed for retry-failed.
    failed = bool(batch.error) and not chunks and counts.get("existing", 0) == 0
    status = BatchStatus.FAILED if failed else BatchStatus.DONE
    summary = _summary(services, batch, chunks, counts, finished_at, status=status)
    if emails_wanted(services, batch):
        summary["emails"] = dict(emails)
    services.storage.put_json(batch.summary_key, summary)
    _announce(services, batch, summary, completed=not failed)
    tally = tally_chunks(chunks)
    services.ledger.batches.update_batch(
        batch_id,
        status=status.value,
        finished_at=finished_at,
        rows_assigned=tally.assigned,
        rows_failed=tally.failed,
        purchases_created=tally.purchases_created,
        purchases_adopted=tally.purchases_adopted,
    )
    if batch.send_state == SCHEDULED and tally.assigned == 0:
        # A scheduled send with no code to mail (everyone existing, rejected or failed).
        services.ledger.sends.nothing_to_send(batch_id)
    services.metrics.count("BatchDurationSeconds", finished_at - batch.created_at, unit="Seconds")
    log.info("batch %s reported: %s", batch_id, dict(counts))
    return "reported"


def _write_results(
    services: Services, batch: BatchRecord, chunks: list[ChunkRecord], *, wait: bool = True
) -> tuple[Counter[str], Counter[str]]:
    """Write the results CSV (and, when the batch mails, its deliveries CSV): the counts of
    rows by status and by e-mail status.

    One Query of the batch's delivery items serves both files, read as the rows stream past:
    DynamoDB charges a read by the item's size whatever it projects, so a second Query for the
    states would double the refresh's reads (once a minute per mailing batch); and the two
    files then show the same moment."""
    counts: Counter[str] = Counter()
    emails: Counter[str] = Counter()
    mails = emails_wanted(services, batch)
    with contextlib.ExitStack() as files:
        out = files.enter_context(_csv_tempfile())
        writer = ResultsCsvWriter(out, batch.extra_columns, delimiter=batch.results_delimiter)
        rows: Iterable[ResultRow] = _result_rows(services, batch, chunks, wait)
        history: DeliveriesCsv | None = None
        if mails:
            history = DeliveriesCsv(files.enter_context(_csv_tempfile()))
            deliveries = services.ledger.deliveries.for_batch(batch.batch_id)
            rows = with_email_status(rows, deliveries, passed=history.write)
        for row in rows:
            counts[row.status] += 1
            emails[row.email_status] += 1
            writer.write(row)
        out.flush()
        services.storage.upload_file(
            batch.results_csv_key, Path(out.name), content_type="text/csv; charset=utf-8"
        )
        if history is not None:
            history.upload(services, deliveries_csv_key(batch.results_csv_key))
    return counts, emails


def _csv_tempfile() -> IO[str]:
    # Closed by the caller's ExitStack.
    return tempfile.NamedTemporaryFile("w+", encoding="utf-8", newline="", suffix=".csv")


def with_email_status(
    rows: Iterable[ResultRow],
    deliveries: Iterator[EmailDelivery],
    *,
    passed: Callable[[EmailDelivery], None],
) -> Iterator[ResultRow]:
    """``rows`` (in row order) with each one's e-mail state, merged with the batch's delivery
    items (in row order, never the whole batch in memory); each item is handed to ``passed``
    once, in order, as the merge moves past it (all of them, rows or not)."""
    pending = next(deliveries, None)
    for row in rows:
        while pending is not None and pending.row_number < row.row_number:
            passed(pending)
            pending = next(deliveries, None)
        if pending is not None and pending.row_number == row.row_number:
            yield replace(row, email_status=pending.state.value)
        elif row.status == "assigned":
            yield replace(row, email_status=EmailState.SCHEDULED.value)
        else:
            yield row
    while pending is not None:
        passed(pending)
        pending = next(deliveries, None)


def deliveries_csv_key(results_csv_key: str) -> str:
    """``<name>.deliveries.csv`` beside ``<name>.results.csv``."""
    return results_csv_key.removesuffix(".results.csv").removesuffix(".csv") + ".deliveries.csv"


DELIVERIES_COLUMNS = (
    "row",
    "to",
    "voucher_code",
    "attempt",
    "at_utc",
    "email_status",
    "source",
    "detail",
    "message_id",
)


class DeliveriesCsv:
    """Every row's e-mail history, one line per step, beside the results CSV."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        out.write("\ufeff")
        self._writer = csv.writer(out)
        self._writer.writerow(DELIVERIES_COLUMNS)

    def write(self, delivery: EmailDelivery) -> None:
        for step in delivery.history:
            attempt = step.delivery_id.rsplit(".", 1)[-1] if step.delivery_id else ""
            cells = [
                str(delivery.row_number),
                delivery.to_address,
                delivery.voucher_code,
                attempt,
                iso_utc(step.at),
                step.state.value,
                step.source,
                step.detail,
                delivery.message_id,
            ]
            self._writer.writerow([spreadsheet_safe(c) for c in cells])

    def upload(self, services: Services, key: str) -> str:
        self._out.flush()
        services.storage.upload_file(
            key, Path(self._out.name), content_type="text/csv; charset=utf-8"
        )
        return key


def refresh_results(services: Services, batch_id: str) -> str:
    """Rewrite a reported batch's results with the e-mail states as they are now (the e-mail
    events ask for it at most once a minute per batch)."""
    batch = services.ledger.batches.get_batch(batch_id)
    if batch is None or batch.status != BatchStatus.DONE or not emails_wanted(services, batch):
        return "not-reported"
    started = services.clock()
    chunks = list(services.ledger.chunks.iter_chunks(batch_id))
    _, emails = _write_results(services, batch, chunks, wait=False)
    summary = services.storage.get_json(batch.summary_key) or {}
    summary["emails"] = dict(emails)
    services.storage.put_json(batch.summary_key, summary)
    # A slow rewrite (a large batch) asks for a longer wait before the next one.
    window = refresh_window(services.settings.email_refresh_seconds, services.clock() - started)
    if window != batch.email_refresh_window:
        services.ledger.batches.update_batch(batch_id, email_refresh_window=window)
    return "refreshed"


def fail_batch(
    services: Services, batch_id: str, reason: str, *, input_rejected: bool = False
) -> None:
    """The input was unusable (``input_rejected``: the sender's to fix, reported
    ``rejected``) or the system could not go on: record why under results/, announce it, buy
    nothing."""
    batch = services.ledger.batches.update_batch(
        batch_id,
        status=BatchStatus.FAILED.value,
        error=reason,
        finished_at=services.now(),
        **({"input_rejected": True} if input_rejected else {}),
    )
    chunks = list(services.ledger.chunks.iter_chunks(batch_id))
    summary = _summary(services, batch, chunks, Counter(), services.now())
    services.storage.put_json(batch.summary_key, summary)
    _announce(services, batch, summary, completed=False)
    # The reason may quote the file (e.g. an address where the header should be): the summary
    # under results/ keeps it whole for the user; logs and announcements get it redacted.
    log.error("batch %s failed: %s", batch_id, redact_emails(reason))


def _result_rows(
    services: Services, batch: BatchRecord, chunks: list[ChunkRecord], wait_ok: bool = True
) -> Iterator[ResultRow]:
    rejected_whole = batch.approval_decision == "rejected"
    unbought = batch.dry_run or rejected_whole

    def load(chunk: ChunkRecord) -> list[AssignmentRecord]:
        if rejected_whole:
            return _planned(services, chunk, "rejected", rejection_reason(batch))
        if batch.dry_run:
            return _planned(services, chunk, "would-assign", _would_buy(chunk))
        name = outcomes_file(chunk.chunk_no, chunk.state)
        return services.storage.read_records(work_key(batch.batch_id, name), AssignmentRecord)

    def status(a: AssignmentRecord) -> ResultStatus:
        if a.status in {"assigned", "would-assign", "rejected"}:
            return a.status  # type: ignore[return-value]
        return "failed"

    assigned = (
        ResultRow(
            row_number=a.row_number,
            email=a.email,
            first_name=a.first_name,
            last_name=a.last_name,
            external_id=a.external_id,
            partner=a.partner_name,
            program=a.program_name,
            status=status(a),
            voucher_code=a.voucher_code,
            purchase_code=a.purchase_code,
            expires_utc=_parse_time(a.expires_utc),
            reason=a.reason,
            extra=a.extra,
            line=a.line,
        )
        for a in merge_outcomes(chunks, load, ended=not unbought)
    )
    rejected = (
        _plain_row(r, "failed" if r.get("status") == "failed" else "rejected")
        for r in services.storage.iter_json_lines(work_key(batch.batch_id, REJECTED_ROWS_FILE))
    )
    waited = services.now() - batch.created_at
    wait = waited < services.settings.holder_wait_seconds and not batch.dry_run and wait_ok
    existing = ExistingRows(services, wait=wait, dry_run=batch.dry_run).rows(
        services.storage.iter_json_lines(work_key(batch.batch_id, EXISTING_ROWS_FILE))
    )
    return heapq.merge(assigned, rejected, existing, key=lambda row: row.row_number)


def _would_buy(chunk: ChunkRecord) -> str:
    return (
        f"dry run: a new voucher would be bought (purchase {chunk.chunk_no + 1}, "
        f"{chunk.quantity:,} of {chunk.program_name!r})"
    )


def _planned(
    services: Services, chunk: ChunkRecord, status: str, reason: str
) -> list[AssignmentRecord]:
    """A chunk never bought (a dry run's, a rejected batch's) as the rows it was planned for."""
    return [
        AssignmentRecord(
            batch_id=chunk.batch_id,
            row_number=r.row_number,
            line=r.line,
            email=r.email,
            first_name=r.first_name,
            last_name=r.last_name,
            external_id=r.external_id,
            partner_name=chunk.partner_name,
            program_name=chunk.program_name,
            chunk_no=chunk.chunk_no,
            status=status,
            reason=reason + (f"; {r.note}" if r.note and status == "would-assign" else ""),
            extra=r.extra,
        )
        for r in services.storage.read_recipients(chunk.rows_key)
    ]


def _plain_row(r: dict[str, Any], status: ResultStatus, **values: Any) -> ResultRow:
    """A result row from a work-file record (rejected, failed early or existing)."""
    line = r.get("line")
    fields: dict[str, Any] = {
        "row_number": int(r["row_number"]),
        "line": None if line is None else int(line),
        "email": str(r.get("email", "")),
        "first_name": str(r.get("first_name", "")),
        "last_name": str(r.get("last_name", "")),
        "external_id": str(r.get("external_id", "")),
        "partner": str(r.get("partner_name", "")),
        "program": str(r.get("program_name", "")),
        "status": status,
        "reason": str(r.get("reason", "")),
        "extra": {str(k): str(v) for k, v in (r.get("extra") or {}).items()},
    }
    fields.update(values)
    return ResultRow(**fields)


class ExistingRows:
    """Turns existing-row records into result rows with the code each person holds."""

    BLOCK = 100  # one BatchGetItem per block

    def __init__(self, services: Services, *, wait: bool = True, dry_run: bool = False) -> None:
        self._services = services
        self._wait = wait
        self._dry_run = dry_run
        self._batches: dict[str, BatchRecord | None] = {}

    def rows(self, records: Iterable[dict[str, Any]]) -> Iterator[ResultRow]:
        block: list[dict[str, Any]] = []
        for record in records:
            block.append(record)
            if len(block) >= self.BLOCK:
                yield from self._resolve(block)
                block = []
        yield from self._resolve(block)

    def _resolve(self, block: list[dict[str, Any]]) -> Iterator[ResultRow]:
        if not block:
            return
        holders = self._services.ledger.assignments.get_assignments(
            (str(r["holder_batch"]), int(r["holder_row"])) for r in block
        )
        for record in block:
            found = holders.get((str(record["holder_batch"]), int(record["holder_row"])))
            if found is not None and found.status == "assigned":
                yield self._existing(record, found, int(record.get("claimed_at") or 0))
            else:
                yield self._look_again(record, found)

    def _look_again(self, record: dict[str, Any], found: AssignmentRecord | None) -> ResultRow:
        """The recorded holder has no code: who holds the person's voucher now?"""
        ledger = self._services.ledger
        holding = ledger.holdings.get_holding(
            str(record["email"]), str(record["partner_name"]), str(record["program_name"])
        )
        holder = (str(record["holder_batch"]), int(record["holder_row"]))
        if holding is not None and (holding.batch_id, holding.row_number) != holder:
            holder = (holding.batch_id, holding.row_number)
            found = ledger.assignments.get_assignments([holder]).get(holder)
            if found is not None and found.status == "assigned":
                return self._existing(record, found, holding.claimed_at)
        if holding is not None and found is None:
            holder_batch = self._batch(holder[0])
            if holder_batch is not None and holder_batch.status != BatchStatus.FAILED:
                if self._dry_run:
                    return _plain_row(
                        record,
                        "existing",
                        reason=(
                            f"dry run: this person's voucher is being bought in batch "
                            f"{holder[0]} ({holder_batch.status.value}); nothing would be "
                            "bought here"
                        ),
                    )
                if self._wait:
                    raise HoldersPending(f"batch {holder[0]} is still buying row {holder[1]}")
                return _plain_row(
                    record,
                    "failed",
                    reason=(
                        f"this person's voucher is still being bought in batch {holder[0]} "
                        f"({holder_batch.status.value}), past the poll deadline: see that "
                        "batch's status; nothing was bought here — run retry-failed later"
                    ),
                )
        why = f" ({found.reason})" if found is not None and found.reason else ""
        return _plain_row(
            record,
            "failed",
            reason=(
                f"this person's voucher was being bought in batch {holder[0]}, which did not "
                f"get it{why}; nothing was bought here — run retry-failed for this batch"
            ),
        )

    def _existing(
        self, record: dict[str, Any], holder: AssignmentRecord, claimed_at: int
    ) -> ResultRow:
        given_in = self._batch(holder.batch_id)
        source = f", {given_in.input_name}" if given_in is not None and given_in.input_name else ""
        when = iso_utc(claimed_at)[:10] if claimed_at else "an earlier date"
        return _plain_row(
            record,
            "existing",
            voucher_code=holder.voucher_code,
            purchase_code=holder.purchase_code,
            expires_utc=_parse_time(holder.expires_utc),
            reason=(
                f"already holds voucher {holder.voucher_code} for {holder.program_name!r}, "
                f"given in batch {holder.batch_id}{source} on {when}; nothing bought (add "
                "reissue=yes to buy a new one)"
            ),
        )

    def _batch(self, batch_id: str) -> BatchRecord | None:
        if batch_id not in self._batches:
            self._batches[batch_id] = self._services.ledger.batches.get_batch(batch_id)
        return self._batches[batch_id]


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
    *,
    status: BatchStatus | None = None,
) -> dict[str, Any]:
    purchases = [
        {
            "chunk": c.chunk_no,
            "partner": c.partner_name,
            "program": c.program_name,
            "quantity": c.quantity,
            # A dry run's purchases are the ones the real run would make: nothing more to say.
            **(
                {}
                if batch.dry_run
                else {"purchaseCode": c.purchase_code, "adopted": c.adopted, "state": c.state.value}
            ),
            **({"reason": c.failure_reason} if c.state == ChunkState.FAILED else {}),
        }
        for c in chunks
    ]
    return {
        "batchId": batch.batch_id,
        "source": batch.source,
        "status": _summary_status(batch, status),
        "dryRun": batch.dry_run,
        "error": batch.error,
        "counts": {
            "rows": batch.rows_total,
            "assigned": counts.get("assigned", 0),
            **({"wouldAssign": counts.get("would-assign", 0)} if batch.dry_run else {}),
            "existing": counts.get("existing", 0),
            "rejected": counts.get("rejected", 0),
            "failed": counts.get("failed", 0),
        },
        # Blank lines of a CSV input: skipped, never a row (they keep their row numbers).
        "blankLines": batch.blank_lines,
        # The results file is written as the input was: its delimiter, UTF-8 with a BOM.
        "resultsFormat": {"delimiter": batch.results_delimiter, "encoding": "utf-8", "bom": True},
        "purchases": purchases,
        "results": {
            "bucket": services.storage.bucket,
            "csv": batch.results_csv_key if batch.status != BatchStatus.FAILED else None,
            "summary": batch.summary_key,
        },
        **({"approval": approval} if (approval := approval_summary(batch)) else {}),
        **({"wouldAwaitApproval": batch.would_wait} if batch.dry_run else {}),
        **({"retryOf": batch.retry_of} if batch.retry_of else {}),
        **({"retriedBy": batch.retried_by} if batch.retried_by else {}),
        # Deliveries so far (e.g. "awaiting approval"); this report's own event is added by
        # its first attempt, which rewrites the summary.
        **(
            {
                "callbacks": deliveries_view(
                    services.ledger.outbox.callback_deliveries(batch.batch_id)
                )
            }
            if batch.callback_url
            else {}
        ),
        "timings": {
            "createdAt": iso_utc(batch.created_at),
            "finishedAt": iso_utc(finished_at),
            "durationSeconds": finished_at - batch.created_at,
        },
    }


def _summary_status(batch: BatchRecord, status: BatchStatus | None) -> str:
    if batch.input_rejected:
        return "rejected"  # the input itself: the sender fixes it (exit 3 from local run)
    if (status or batch.status) == BatchStatus.FAILED:
        return "failed"
    return "rejected" if batch.approval_decision == "rejected" else "completed"


def _announce(
    services: Services, batch: BatchRecord, summary: dict[str, Any], *, completed: bool
) -> None:
    detail = {k: summary[k] for k in ("batchId", "status", "dryRun", "counts", "results", "error")}
    if batch.retry_of:
        # A retry's outcome, told to the original request's callback under its requestId.
        detail["retryOf"] = batch.retry_of
        if batch.origin_request_id:
            detail["requestId"] = batch.origin_request_id
    if detail["error"]:
        detail["error"] = redact_emails(str(detail["error"]))
    if batch.dry_run:
        # Its own detail-type: a rule acting on completed batches never acts on a dry run.
        detail["purchases"] = summary["purchases"]
        detail_type = "Voucher Batch Dry Run Completed" if completed else "Voucher Batch Failed"
    elif batch.approval_decision == "rejected":
        detail["approval"] = summary["approval"]
        detail_type = "Voucher Batch Rejected"
    else:
        detail_type = "Voucher Batch Completed" if completed else "Voucher Batch Failed"
    services.events.publish(detail_type, detail)
    # The callback also carries the results as links: the CSV (presigned, short-lived) and the
    # rows as JSON pages over the API (signed requests, the caller's partners). Not in the
    # event: whoever reads the bus need not hold a link to the people's codes.
    links: dict[str, Any] = {}
    # (A link is signed locally with the role's credentials: the HEAD makes sure the role can
    # read what it links to.)
    if completed and batch.callback_url and services.storage.exists(batch.results_csv_key):
        links["resultsUrl"] = services.storage.link(
            batch.results_csv_key, expires_s=CALLBACK_LINK_S
        )
        links["resultsUrlExpiresAt"] = iso_utc(services.now() + CALLBACK_LINK_S)
        if base := services.settings.api_base_url.rstrip("/"):
            links["assignmentsUrl"] = f"{base}/v1/distributions/{batch.batch_id}/assignments"
    # Recorded and queued, not sent here: the callback queue retries it for a day.
    send_event_callback(services, batch, detail_type, {**detail, **links})
