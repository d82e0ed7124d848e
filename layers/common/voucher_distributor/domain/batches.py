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
#: Where an HR request's recipients CSV goes (``recipientsS3Uri``), and the HTTP API's CSV
#: bodies (``requests/api/``). The request queue reads only here and under ``incoming/``.
REQUESTS_PREFIX = "requests/"
#: The prefixes a ``recipientsS3Uri`` may name (never ``results/`` or ``work/``).
RECIPIENTS_PREFIXES = (INCOMING_PREFIX, REQUESTS_PREFIX)
WORK_PREFIX = "work/"
#: Per batch, under work/: the rejected rows as JSON lines, in row order.
REJECTED_ROWS_FILE = "rejected.jsonl"
#: Per batch, under work/: rows whose person already holds a voucher, with the holding's row.
EXISTING_ROWS_FILE = "existing.jsonl"

#: ``[vd:<stack>:<batch>:<chunk>]``, appended last to a purchase's notes. The stack tag tells
#: apart two stacks on one Certiverse account that gave a batch the same id (staging and
#: production receiving one ``requestId``).
MARKER_PATTERN = r"\[vd:(?P<stack>[0-9a-f]{8}):(?P<batch>[a-z0-9-]+):(?P<chunk>\d{5})\]"
_TRAILING_MARKER = re.compile(MARKER_PATTERN + r"\s*\Z")
_MARKER_OPENING = re.compile(r"\[vd:", re.IGNORECASE)
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


def stack_tag(stack_id: str) -> str:
    """The 8 hex digits that name one stack (its CloudFormation stack id) in its markers."""
    return hashlib.sha256(stack_id.encode()).hexdigest()[:8]


def chunk_marker(batch_id: str, chunk_no: int, stack: str) -> str:
    """The tag put last in a purchase's notes; finding it later proves the chunk was bought."""
    return f"[vd:{stack}:{batch_id}:{chunk_no:05d}]"


def trailing_marker(notes: str) -> tuple[str, str, int] | None:
    """(stack, batch, chunk) of the marker that ends ``notes``; None if they end otherwise.

    Only the last one counts: a marker anywhere else was not appended by us (a user typed it).
    """
    match = _TRAILING_MARKER.search(notes or "")
    if match is None:
        return None
    return match.group("stack"), match.group("batch"), int(match.group("chunk"))


def find_marker(notes: str, batch_id: str, chunk_no: int, stack: str | None) -> bool:
    """True when ``notes`` end with this chunk's marker of ``stack`` (None: of any stack, for
    checks that look at one sandbox from outside)."""
    found = trailing_marker(notes)
    return (
        found is not None
        and found[1:] == (batch_id, chunk_no)
        and (stack is None or found[0] == stack)
    )


def strip_markers(text: str) -> str:
    """``text`` with every ``[vd:`` taken out (repeatedly: taking one out may join another)."""
    while _MARKER_OPENING.search(text):
        text = _MARKER_OPENING.sub("", text)
    return text


def purchase_notes(user_notes: str, batch_id: str, chunk_no: int, stack: str) -> str:
    base = " ".join(strip_markers(user_notes).split())[:200] or "voucher-distributor"
    return f"{base} {chunk_marker(batch_id, chunk_no, stack)}"


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


def short_batch_id(batch_id: str) -> str:
    """The batch id as results keys carry it: its kind and the first 12 digits of its hash."""
    return batch_id[:14]


def result_keys_for_upload(key: str, batch_id: str) -> ResultKeys:
    """``incoming/a/b/x.csv`` → ``results/a/b/x.<batch>.results.csv`` and
    ``x.<batch>.summary.json``; never outside ``results/`` whatever the key holds (``..``,
    absolute parts, odd characters).

    ``<batch>`` is the short batch id (:func:`short_batch_id`): two batches never share a
    results file, though their readable names may meet (a new version of the same upload,
    ``a/b`` and ``a_b``, an upload under ``incoming/requests/x/`` and the request ``x``).
    """
    relative = key[len(INCOMING_PREFIX) :] if key.startswith(INCOMING_PREFIX) else key
    parts = [_safe_part(p) for p in relative.split("/") if p not in {"", ".", ".."}]
    if not parts:
        parts = ["upload"]
    folder, name = parts[:-1], parts[-1]
    stem = name[:-4] if name.lower().endswith(".csv") else name
    return _keys(posixpath.join(RESULTS_PREFIX, *folder, stem or "upload"), batch_id)


def result_keys_for_request(request_id: str, batch_id: str) -> ResultKeys:
    """``results/requests/<name>/<name>.<batch>.results.csv``: ``<name>`` the readable
    ``requestId`` (odd characters replaced, at most 100), ``<batch>`` the short batch id."""
    name = _safe_part(request_id)[:100] or "request"
    return _keys(posixpath.join(RESULTS_PREFIX, "requests", name, name), batch_id)


def _keys(base: str, batch_id: str) -> ResultKeys:
    tagged = f"{base}.{short_batch_id(batch_id)}"
    return ResultKeys(results_csv=f"{tagged}.results.csv", summary_json=f"{tagged}.summary.json")


def _safe_part(part: str) -> str:
    cleaned = _UNSAFE_KEY_CHARS.sub("_", part).strip(" .")
    return cleaned or "_"


def work_key(batch_id: str, name: str) -> str:
    """Where a batch's intermediate files live (not watched by any trigger)."""
    return f"{WORK_PREFIX}{batch_id}/{name}"
