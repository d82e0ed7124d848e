"""Identities of batches and chunks, derived from their source so that a redelivered upload or a
re-sent request is the same batch, never a second one."""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

INCOMING_PREFIX = "incoming/"
#: Uploads under here are dry runs (as is object metadata ``x-amz-meta-mode: dry-run``).
DRY_RUN_PREFIX = INCOMING_PREFIX + "dry-run/"
#: The ``mode`` metadata value, and the tag a dry run's results carry in their names.
DRY_RUN = "dry-run"
RESULTS_PREFIX = "results/"
WORK_PREFIX = "work/"
#: Per batch, under work/: the rejected rows as JSON lines, in row order.
REJECTED_ROWS_FILE = "rejected.jsonl"
#: Per batch, under work/: rows whose person already holds a voucher, with the holding's row.
EXISTING_ROWS_FILE = "existing.jsonl"

_MARKER = re.compile(r"\[vd:(?P<batch>[a-z0-9-]+):(?P<chunk>\d{5})\]")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._ -]")


def csv_batch_id(bucket: str, key: str, version: str) -> str:
    """Batch id of an upload: the bucket, the key and the object's version id (or ETag)."""
    digest = hashlib.sha256(f"s3://{bucket}/{key}#{version}".encode()).hexdigest()
    return f"f-{digest[:24]}"


def request_batch_id(request_id: str, *, dry_run: bool = False) -> str:
    """Batch id of an HR request: its ``requestId``, the caller's idempotency key. A dry run
    of a request is a batch of its own, so the real request after it is not a repeat."""
    seed = f"{DRY_RUN}:{request_id}" if dry_run else request_id
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"r-{digest[:24]}"


def chunk_marker(batch_id: str, chunk_no: int) -> str:
    """The tag put in a purchase's notes; finding it later proves the chunk was bought."""
    return f"[vd:{batch_id}:{chunk_no:05d}]"


def find_marker(notes: str, batch_id: str, chunk_no: int) -> bool:
    return any(
        m.group("batch") == batch_id and int(m.group("chunk")) == chunk_no
        for m in _MARKER.finditer(notes or "")
    )


def purchase_notes(user_notes: str, batch_id: str, chunk_no: int) -> str:
    base = " ".join(user_notes.split())[:200] or "voucher-distributor"
    return f"{base} {chunk_marker(batch_id, chunk_no)}"


@dataclass(frozen=True)
class ResultKeys:
    results_csv: str
    summary_json: str


def dry_run_keys(keys: ResultKeys) -> ResultKeys:
    """``x.results.csv`` → ``x.dry-run.results.csv``: a dry run never overwrites a real run's."""
    return ResultKeys(
        results_csv=keys.results_csv.removesuffix(".results.csv") + f".{DRY_RUN}.results.csv",
        summary_json=keys.summary_json.removesuffix(".summary.json") + f".{DRY_RUN}.summary.json",
    )


def result_keys_for_upload(key: str) -> ResultKeys:
    """``incoming/a/b/x.csv`` → ``results/a/b/x.results.csv`` and ``x.summary.json``; never
    outside ``results/`` whatever the key holds (``..``, absolute parts, odd characters)."""
    relative = key[len(INCOMING_PREFIX) :] if key.startswith(INCOMING_PREFIX) else key
    parts = [_safe_part(p) for p in relative.split("/") if p not in {"", ".", ".."}]
    if not parts:
        parts = ["upload"]
    folder, name = parts[:-1], parts[-1]
    stem = name[:-4] if name.lower().endswith(".csv") else name
    base = posixpath.join(RESULTS_PREFIX, *folder, stem or "upload")
    return ResultKeys(results_csv=f"{base}.results.csv", summary_json=f"{base}.summary.json")


def result_keys_for_request(request_id: str) -> ResultKeys:
    name = _safe_part(request_id)[:100] or "request"
    base = posixpath.join(RESULTS_PREFIX, "requests", name, name)
    return ResultKeys(results_csv=f"{base}.results.csv", summary_json=f"{base}.summary.json")


def _safe_part(part: str) -> str:
    cleaned = _UNSAFE_KEY_CHARS.sub("_", part).strip(" .")
    return cleaned or "_"


def work_key(batch_id: str, name: str) -> str:
    """Where a batch's intermediate files live (not watched by any trigger)."""
    return f"{WORK_PREFIX}{batch_id}/{name}"
