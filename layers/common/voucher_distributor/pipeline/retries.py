"""Retrying a batch's failed rows as a new batch (``retry-failed BATCH``, and over the HTTP API
``POST /v1/distributions/{id}/retry``).

After the cause is fixed (a token, a base URL, a Certiverse outage), the batch's ``failed`` rows
are uploaded as a new CSV under ``incoming/retries/<batch>/`` with the object metadata
``retry-of: <batch>``: the pipeline ingests it like any upload, links the two batches in both
summaries, and its holdings make sure nobody who meanwhile got a voucher is bought another
(such a row comes back ``existing``). A row that asked for a new voucher (a ``reissue`` column,
or the whole input's ``reissue`` metadata) is retried as a reissue, and each row keeps its
original row and line numbers (``original_row``, ``original_line``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.domain.batches import REJECTED_ROWS_FILE, csv_batch_id, work_key
from voucher_distributor.domain.results_csv import RESULT_COLUMNS, read_results
from voucher_distributor.models.ledger import BatchRecord, BatchStatus, ChunkState, RecipientRecord


class RetryRefused(Exception):
    """The batch cannot be retried (yet): unknown (``missing``), running, or nothing failed."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


#: Results columns that become the retry file's own (the rest are the user's, passed through).
_CARRIED = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "external_id": "external_id",
    "partner": "partner_name",
    "program": "program_name",
}


@dataclass(frozen=True)
class RetryStarted:
    retry_of: str
    batch_id: str
    key: str
    rows: int
    #: The batch had been retried already: this is that retry, nothing new was uploaded.
    existing: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "retryOf": self.retry_of,
            "batchId": self.batch_id,
            "upload": self.key,
            "rows": self.rows,
            "existing": self.existing,
        }


def failed_rows_csv(
    results_csv: bytes, *, reissue_rows: Collection[int] = (), reissue_all: bool = False
) -> tuple[bytes, int]:
    """The retry file for a results CSV: its failed rows, with their original row and line
    numbers, and ``reissue: yes`` on those that asked for a new voucher (``reissue_rows``, by
    row number, or every row)."""
    rows = read_results(results_csv)
    extra = [name for name in (rows[0] if rows else {}) if name not in RESULT_COLUMNS]
    header = [*_CARRIED.values(), "reissue", "original_row", "original_line", *extra]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        if row.get("status") != "failed":
            continue
        number = row.get("row", "")
        reissue = reissue_all or (number.isdigit() and int(number) in reissue_rows)
        writer.writerow(
            [*(_unsafe(row.get(name, "")) for name in _CARRIED), "yes" if reissue else ""]
            + [number, row.get("line", "")]
            + [_unsafe(row.get(name, "")) for name in extra]
        )
        count += 1
    return out.getvalue().encode("utf-8"), count


def _unsafe(cell: str | None) -> str:
    """Undo the results file's formula guard (a leading ``'``); the pipeline adds it again."""
    value = cell or ""
    if value.startswith("'") and value[1:2] in {"=", "+", "-", "@", "\t", "\r"}:
        return value[1:]
    return value


def retry_prefix(batch_id: str) -> str:
    """Where ``retry-failed`` uploads a batch's failed rows."""
    return f"incoming/retries/{batch_id}/"


def _earlier_retry(ledger: Ledger, s3: Any, bucket: str, batch_id: str) -> tuple[str, str] | None:
    """The retry batch (id, upload key) made for ``batch_id`` before, if any: the one linked
    (``retriedBy``), else the last upload under its retries folder (not yet read)."""
    batch = ledger.batches.get_batch(batch_id)
    listed = s3.list_object_versions(Bucket=bucket, Prefix=retry_prefix(batch_id))
    versions = sorted(
        (v for v in listed.get("Versions", []) if v.get("IsLatest")),
        key=lambda v: v["LastModified"],
    )
    by_id = {csv_batch_id(bucket, v["Key"], v["VersionId"]): v["Key"] for v in versions}
    if batch is not None and batch.retried_by:
        last = batch.retried_by[-1]
        return last, by_id.get(last, "")
    if versions:
        newest = versions[-1]
        return csv_batch_id(bucket, newest["Key"], newest["VersionId"]), newest["Key"]
    return None


def _check_results_are_its_own(s3: Any, bucket: str, batch: BatchRecord) -> None:
    """The results file is this batch's (its summary names it): before results keys carried the
    batch id, a later batch with the same readable name wrote over them, and retrying those
    rows would retry another batch's people."""
    try:
        summary = json.loads(s3.get_object(Bucket=bucket, Key=batch.summary_key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return  # no summary: the results file's absence is reported next
    written_for = summary.get("batchId") if isinstance(summary, dict) else None
    if written_for != batch.batch_id:
        raise RetryRefused(
            f"the results at {batch.results_csv_key} are batch {written_for}'s, not "
            f"{batch.batch_id}'s (written over before results keys carried the batch id): "
            f"retry-failed {written_for} if you meant that one; this batch's rows are in "
            f"the ledger (status --batch {batch.batch_id})"
        )


def start_retry(
    ledger: Ledger, s3: Any, bucket: str, batch_id: str, *, now: float | None = None
) -> RetryStarted:
    """Upload the batch's failed rows as a new input linked to it (at once: the original names
    it in ``retried_by`` before it is even read); the new batch's id."""
    batch = ledger.batches.get_batch(batch_id)
    if batch is None:
        raise RetryRefused(f"no batch {batch_id}", missing=True)
    if batch.status not in {BatchStatus.DONE, BatchStatus.FAILED}:
        raise RetryRefused(
            f"batch {batch_id} is still {batch.status.value}: retry its failed rows once it ends"
        )
    _check_results_are_its_own(s3, bucket, batch)
    try:
        body = s3.get_object(Bucket=bucket, Key=batch.results_csv_key)["Body"].read()
    except s3.exceptions.NoSuchKey as exc:
        raise RetryRefused(
            f"batch {batch_id} has no results file ({batch.error or 'the input was unusable'}): "
            "fix the input and upload it again"
        ) from exc
    content, count = failed_rows_csv(
        body, reissue_rows=_reissue_rows(ledger, s3, bucket, batch), reissue_all=batch.reissue
    )
    if count == 0:
        raise RetryRefused(f"batch {batch_id} has no failed rows")
    earlier = _earlier_retry(ledger, s3, bucket, batch_id)
    if earlier is not None:
        return RetryStarted(batch_id, earlier[0], earlier[1], count, existing=True)
    stem = (batch.input_name or batch_id).rsplit(".", 1)[0] or batch_id
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    key = f"{retry_prefix(batch_id)}{stem}.retry-{stamp}.csv"
    put = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=content,
        ContentType="text/csv; charset=utf-8",
        Metadata={"retry-of": batch_id, **({"reissue": "true"} if batch.reissue else {})},
    )
    version = put.get("VersionId") or str(put.get("ETag", "")).strip('"')
    started = RetryStarted(batch_id, csv_batch_id(bucket, key, version), key, count)
    ledger.batches.link_retry(batch_id, started.batch_id)
    return started


def _reissue_rows(ledger: Ledger, s3: Any, bucket: str, batch: BatchRecord) -> set[int]:
    """Row numbers of the batch's failed rows that were reissues (the results file does not
    say): those of its failed chunks whose claim replaced a voucher, and those that failed
    before any purchase (pre-flight) asking for a new one."""
    rows: set[int] = set()
    for chunk in ledger.chunks.iter_chunks(batch.batch_id):
        if chunk.state != ChunkState.FAILED:
            continue
        for line in _json_lines(s3, bucket, chunk.rows_key):
            recipient = RecipientRecord.model_validate(line)
            if recipient.reissue:
                rows.add(recipient.row_number)
    for line in _json_lines(s3, bucket, work_key(batch.batch_id, REJECTED_ROWS_FILE)):
        if line.get("status") == "failed" and line.get("reissue"):
            rows.add(int(line["row_number"]))
    return rows


def _json_lines(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return []
    return [json.loads(line) for line in body.splitlines() if line.strip()]
