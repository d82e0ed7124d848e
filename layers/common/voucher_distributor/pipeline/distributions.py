"""The HTTP API's use cases: accept a distribution, show it, link its results, page its
assignments, show holdings — each within the caller's partners (``pipeline.access``).

A distribution posted to the API becomes the same HR request an SQS sender enqueues (a CSV body
is stored under ``requests/api/`` and named by ``recipientsS3Uri``), so everything after the
door is the pipeline that already exists. What the door adds is idempotency across clients and
bodies, and the partner rule.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from voucher_distributor.domain.approval import approval_summary
from voucher_distributor.domain.batches import REQUESTS_PREFIX, request_batch_id
from voucher_distributor.domain.csv_input import CsvInputError, read_rows
from voucher_distributor.domain.outcomes import tally_chunks
from voucher_distributor.domain.redemption import code_record
from voucher_distributor.domain.results_csv import read_results_page
from voucher_distributor.domain.send_schedule import send_summary
from voucher_distributor.domain.tenancy import CHANNEL_API, Action, Reach
from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.ledger import ApiRequestRecord, BatchRecord, BatchStatus
from voucher_distributor.models.messages import DistributionRequest
from voucher_distributor.pipeline.access import (
    Denied,
    Distribution,
    NotFound,
    check_submission,
    reachable,
)
from voucher_distributor.pipeline.callbacks import deliveries_view
from voucher_distributor.pipeline.context import Services
from voucher_distributor.pipeline.retries import RetryRefused, start_retry
from voucher_distributor.settings import Settings

__all__ = ["Denied", "NotFound"]

#: CSV bodies posted to the API: under the requests prefix (the request queue reads only there
#: and ``incoming/``), not under ``incoming/``, so the upload trigger never sees them.
API_UPLOADS_PREFIX = f"{REQUESTS_PREFIX}api/"
#: How long the API remembers an idempotency key (senders retry for a day or two).
REMEMBER_REQUESTS_S = 30 * 86_400
#: Lifetime of a results link.
RESULTS_LINK_S = 15 * 60
#: A dry run's purchase state: one the real run would make (never ``PENDING``: nothing is
#: bought).
DRY_RUN_PURCHASE = "would-buy"
#: Rows of ``GET …/assignments`` per page (``pageSize`` may ask for fewer or up to the most).
ASSIGNMENTS_PAGE = 500
ASSIGNMENTS_PAGE_MAX = 1000
#: The SQS message attribute naming the API client that asked (the audit trail's "sender").
API_CLIENT_ATTRIBUTE = "apiClient"


class IdempotencyConflict(Exception):
    """409: the key was used before, with another body or by another client."""


class NotReady(Exception):
    """409: the batch has no results yet."""


class UriRefused(ValueError):
    """422: over the API, a request may not name ``recipientsS3Uri`` (send the CSV as the body)."""

    problem = {
        "field": "recipientsS3Uri",
        "problem": "not taken over the API: POST the CSV itself as the body (Content-Type: "
        "text/csv), or put it under incoming/ in the inbox bucket",
    }


class BadPage(ValueError):
    """422: the ``page`` token or ``pageSize`` is not one the API gave or takes."""


@dataclass(frozen=True)
class Submission:
    """A validated distribution, with ``request_id`` already set to its idempotency key."""

    request: DistributionRequest
    csv_body: bytes | None = None

    @property
    def fingerprint(self) -> str:
        """What "the same body" means: the request's fields (not their order) and the CSV."""
        fields = self.request.model_dump(mode="json", by_alias=True, exclude_none=True)
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
        if self.csv_body is not None:
            digest.update(b"\0csv\0" + self.csv_body)
        return digest.hexdigest()

    def targets(self, settings: Settings) -> tuple[set[str], set[str]]:
        """Every partner and program the submission names, as ingest will resolve them: a
        row's own, else the request's (or query's), else the stack's defaults."""
        request = self.request
        partner = _given(request.partner_name, settings.default_partner_name)
        program = _given(request.program_name, settings.default_program_name)
        if self.csv_body is None:
            return ({partner} if partner else set()), ({program} if program else set())
        partners: set[str] = set()
        programs: set[str] = set()
        try:
            for row in read_rows([self.csv_body]):
                if row_partner := _given(row.partner_name, partner):
                    partners.add(row_partner)
                if row_program := _given(row.program_name, program):
                    programs.add(row_program)
        except CsvInputError:
            pass  # unusable past here: ingest refuses the whole body and buys nothing
        return partners, programs


def _given(*names: str | None) -> str:
    for name in names:
        if name and name.strip():
            return name.strip()
    return ""


@dataclass(frozen=True)
class Accepted:
    batch_id: str
    request_id: str
    #: True when this answers a request seen before (the sender retried).
    repeat: bool


def submit_distribution(services: Services, reach: Reach, submission: Submission) -> Accepted:
    """Check the partner rule, remember the key, then hand the request to the request queue.

    :class:`Denied` (403) when the submission names a partner or program outside the
    client's; nothing is remembered or queued then.

    The request is enqueued on every call, repeats included: a sender retrying after a crash
    between the two steps must not be answered 202 for a request nobody queued, and the batch's
    identity (its ``requestId``) makes a second delivery buy nothing.
    """
    request = submission.request
    if submission.csv_body is None and request.recipients_s3_uri:
        # Another client's upload or another batch's results are in the same bucket.
        raise UriRefused(UriRefused.problem["problem"])
    client_id = reach.client_id
    partners, programs = submission.targets(services.settings)
    check_submission(services, reach, partners, programs)
    batch_id = request_batch_id(request.request_id, dry_run=request.dry_run)
    now = services.now()
    earlier = services.ledger.requests.remember_api_request(
        ApiRequestRecord(
            idempotency_key=request.request_id,
            client_id=client_id,
            body_sha256=submission.fingerprint,
            batch_id=batch_id,
            accepted_at=now,
            expires_at=now + REMEMBER_REQUESTS_S,
            partners=sorted(partners),
            programs=sorted(programs),
        )
    )
    if earlier is not None and earlier.client_id != client_id:
        raise IdempotencyConflict(
            f"requestId {request.request_id!r} was already used by another API client; "
            "choose another requestId (or Idempotency-Key)"
        )
    if earlier is not None and earlier.body_sha256 != submission.fingerprint:
        raise IdempotencyConflict(
            f"requestId {request.request_id!r} was already used at "
            f"{iso_utc(earlier.accepted_at)} with a different body (batch {earlier.batch_id}); "
            "a retry must send the same body, a new distribution needs a new requestId"
        )
    if submission.csv_body is not None:
        key = f"{API_UPLOADS_PREFIX}{batch_id}.csv"
        services.storage.put_bytes(key, submission.csv_body, content_type="text/csv")
        request = request.model_copy(
            update={"recipients_s3_uri": f"s3://{services.storage.bucket}/{key}"}
        )
    services.queues.send(
        services.settings.request_queue_url,
        request.model_dump(mode="json", by_alias=True, exclude_none=True),
        attributes={API_CLIENT_ATTRIBUTE: client_id},
    )
    services.metrics.count("ApiRequestsAccepted")
    return Accepted(batch_id=batch_id, request_id=request.request_id, repeat=earlier is not None)


def distribution_view(services: Services, reach: Reach, batch_id: str) -> dict[str, Any]:
    """One batch as the API shows it: state, counts, purchases, approval, callbacks, who
    submitted it and how. Accepted but not yet read by ingest, it is ``queued`` (the API's own
    record of it). Outside the caller's partners: :class:`NotFound`.
    """
    found = reachable(services, reach, batch_id, Action.READ)
    batch = found.batch
    if batch is None:
        return _queued_view(found)
    chunks = list(services.ledger.chunks.iter_chunks(batch_id))
    tally = tally_chunks(chunks)
    return {
        "batchId": batch.batch_id,
        "requestId": batch.source if batch.kind == "request" else None,
        "state": state_word(batch),
        "dryRun": batch.dry_run,
        "channel": batch.channel or None,
        "submittedBy": batch.submitted_by or None,
        "partners": batch.partners,
        "createdAt": iso_utc(batch.created_at),
        "finishedAt": iso_utc(batch.finished_at) if batch.finished_at else None,
        "counts": {
            "rows": batch.rows_total,
            "assigned": tally.assigned,
            # A dry run's planned rows: what the real run would buy (the summary's count).
            **({"wouldAssign": sum(c.quantity for c in chunks)} if batch.dry_run else {}),
            "existing": batch.rows_existing,
            "rejected": batch.rows_rejected,
            "failed": tally.failed + batch.rows_failed_early,
        },
        "purchases": [
            {
                "partner": c.partner_name,
                "program": c.program_name,
                "quantity": c.quantity,
                # A dry run never buys: its purchases are the ones the real run would make.
                "state": DRY_RUN_PURCHASE if batch.dry_run else c.state.value,
                "purchaseCode": c.purchase_code,
                **({"reason": c.failure_reason} if c.failure_reason else {}),
            }
            for c in chunks
        ],
        "approval": approval_summary(batch),
        "callbacks": deliveries_view(services.ledger.outbox.callback_deliveries(batch_id)),
        # The rows mailed so far by e-mail state (empty: the batch mails nobody, or not yet).
        "emails": dict(
            Counter(s.value for _, s in services.ledger.deliveries.states(batch_id))
        ),
        # A scheduled send: when, and what became of it (send-now, cancel-send: who, when).
        "sendAt": iso_utc(batch.send_at) if batch.send_at else None,
        **({"send": send_summary(batch)} if batch.send_at else {}),
        "resultsReady": batch.status == BatchStatus.DONE,
        **({"error": batch.error} if batch.error else {}),
        **({"retryOf": batch.retry_of} if batch.retry_of else {}),
        **({"retries": [_retry_view(services, r) for r in batch.retried_by]}
           if batch.retried_by else {}),
    }  # fmt: skip


def _retry_view(services: Services, retry_id: str) -> dict[str, Any]:
    """A retry of this batch's failed rows, as its original shows it: state and counts."""
    retry = services.ledger.batches.get_batch(retry_id)
    if retry is None:  # uploaded, not yet read
        return {"batchId": retry_id, "state": "queued", "counts": None}
    tally = tally_chunks(services.ledger.chunks.iter_chunks(retry_id))
    return {
        "batchId": retry_id,
        "state": state_word(retry),
        "counts": {
            "rows": retry.rows_total,
            "assigned": tally.assigned,
            "existing": retry.rows_existing,
            "rejected": retry.rows_rejected,
            "failed": tally.failed + retry.rows_failed_early,
        },
        "statusPath": f"/v1/distributions/{retry_id}",
    }


def retry_distribution(services: Services, batch_id: str) -> dict[str, Any]:
    """``POST /v1/distributions/{id}/retry``: a new batch of the ended batch's failed rows,
    linked from it (``retries`` in its view); its completion goes to the original's callback
    under the original ``requestId``. :class:`RetryRefused` when it cannot be retried."""
    if not batch_id:
        raise RetryRefused("no batch id", missing=True)
    started = start_retry(
        services.ledger, services.storage.client, services.storage.bucket, batch_id,
        now=services.now(),
    )  # fmt: skip
    services.metrics.count("RetriesStarted")
    return {**started.as_dict(), "statusPath": f"/v1/distributions/{started.batch_id}"}


def _queued_view(found: Distribution) -> dict[str, Any]:
    accepted = found.accepted
    assert accepted is not None  # reachable: a batch, or the API's record of it
    return {
        "batchId": found.batch_id,
        "requestId": accepted.idempotency_key,
        "state": "queued",
        "channel": CHANNEL_API,
        "submittedBy": accepted.client_id,
        "partners": accepted.partners,
        "acceptedAt": iso_utc(accepted.accepted_at),
        "resultsReady": False,
    }


def state_word(batch: BatchRecord) -> str:
    """The batch's state in the API's words (lower-case, hyphenated)."""
    if batch.status == BatchStatus.DONE and batch.approval_decision == "rejected":
        return "rejected"
    if batch.input_rejected:
        return "rejected"  # the input itself was unusable: the sender fixes it
    return {
        BatchStatus.INGESTING: "ingesting",
        BatchStatus.AWAITING_APPROVAL: "awaiting-approval",
        BatchStatus.PLANNED: "in-progress",
        BatchStatus.REPORTING: "reporting",
        BatchStatus.DONE: "completed",
        BatchStatus.FAILED: "failed",
    }[batch.status]


def results_link(services: Services, reach: Reach, batch_id: str) -> dict[str, Any]:
    """Short-lived links to the results CSV and the summary, once the batch is reported."""
    batch = _ended(reachable(services, reach, batch_id, Action.READ))
    _own_results(services, batch)
    return result_links(services, batch, expires_s=RESULTS_LINK_S)


def _own_results(services: Services, batch: BatchRecord) -> None:
    """:class:`NotFound` when the batch's results files are another batch's (see below)."""
    summary = services.storage.get_json(batch.summary_key)
    written_for = summary.get("batchId") if isinstance(summary, dict) else None
    if written_for != batch.batch_id:
        # Before results keys carried the batch id, a later batch could write over them.
        raise NotFound(
            f"the results of batch {batch.batch_id} at {batch.summary_key} are "
            + (f"batch {written_for}'s" if written_for else "missing")
            + "; its rows are in the ledger (voucher-distributor status --batch "
            f"{batch.batch_id}), or send the request again under a new requestId"
        )


def result_links(services: Services, batch: BatchRecord, *, expires_s: int) -> dict[str, Any]:
    """The results CSV's and summary's presigned links (also put in the completion callback)."""
    has_csv = batch.status == BatchStatus.DONE and services.storage.exists(batch.results_csv_key)
    expires = services.now() + expires_s
    return {
        "batchId": batch.batch_id,
        "state": state_word(batch),
        "resultsUrl": (
            services.storage.link(batch.results_csv_key, expires_s=expires_s) if has_csv else None
        ),
        "summaryUrl": services.storage.link(batch.summary_key, expires_s=expires_s),
        "expiresAt": iso_utc(expires),
    }


def _ended(found: Distribution) -> BatchRecord:
    batch = found.batch
    if batch is None:
        raise NotReady(f"distribution {found.batch_id} is queued; its results come when it ends")
    if batch.status not in {BatchStatus.DONE, BatchStatus.FAILED}:
        raise NotReady(
            f"batch {batch.batch_id} is {state_word(batch)}; its results are written when it "
            "ends — poll GET /v1/distributions/{batchId} or wait for the callback"
        )
    return batch


def assignments_page(
    services: Services,
    reach: Reach,
    batch_id: str,
    *,
    page: str | None = None,
    page_size: str | None = None,
) -> dict[str, Any]:
    """One page of the batch's rows as JSON (status, code, expiry, e-mail state, reason):
    ``nextLink`` is the path of the next page, ``None`` after the last one.

    Read from the results file (every row, whatever its status), from where the page token
    says the next page starts: a page costs its own rows, however deep in the file.
    """
    batch = _ended(reachable(services, reach, batch_id, Action.READ))
    size = _page_size(page_size)
    start = _page_token(page)
    if batch.status != BatchStatus.DONE or not services.storage.exists(batch.results_csv_key):
        if start is not None:
            raise BadPage("this batch has no rows to page through")
        return {"batchId": batch_id, "state": state_word(batch), "assignments": [],
                "nextLink": None, **({"error": batch.error} if batch.error else {})}  # fmt: skip
    _own_results(services, batch)
    header = services.storage.open(batch.results_csv_key).body
    offset, row = start or (0, None)
    body = services.storage.open(batch.results_csv_key, start_byte=offset).body if offset else None
    try:
        got = read_results_page(header, body, size=size, rest_from=offset, first_row=row)
    except ValueError as exc:
        if start is None:
            raise BadPage(f"the page token is not valid for this batch: {exc}") from exc
        # The results were rewritten since the token was given (e-mail states arrive as SES
        # reports them): its offset no longer holds, so find its row from the file's start.
        whole = services.storage.open(batch.results_csv_key).body
        try:
            got = read_results_page(whole, size=size, first_row=row, find_row=True)
        except ValueError as again:
            raise BadPage(f"the page token is not valid for this batch: {again}") from again
    next_link = None
    if got.next is not None:
        next_offset, next_row = got.next
        next_link = f"/v1/distributions/{batch_id}/assignments?page={next_offset}.{next_row}" + (
            f"&pageSize={size}" if page_size else ""
        )
    return {
        "batchId": batch_id,
        "state": state_word(batch),
        "assignments": got.rows,
        "nextLink": next_link,
    }


def _page_size(raw: str | None) -> int:
    if not raw:
        return ASSIGNMENTS_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= ASSIGNMENTS_PAGE_MAX:
        raise BadPage(f"pageSize is a whole number from 1 to {ASSIGNMENTS_PAGE_MAX}")
    return int(raw)


def _page_token(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    offset, _, row = raw.partition(".")
    if not (offset.isdigit() and row.isdigit()) or int(offset) <= 0:
        raise BadPage("page is the token of a nextLink; start without it")
    return int(offset), int(row)


def holdings_view(services: Services, reach: Reach, email: str) -> list[dict[str, Any]]:
    """The vouchers a person holds now, one per (partner, program): each code's record (state,
    expiry, use, reservation, reissue history), as ``voucher`` and ``find`` show it. Only
    those within the caller's partners (and programs): the rest do not exist for it."""
    holdings = [
        h
        for h in services.ledger.holdings.holdings_for_email(email)
        if reach.holds(h.partner_name, h.program_name)
    ]
    records = services.ledger.assignments.get_assignments(
        (h.batch_id, h.row_number) for h in holdings
    )
    batches = {b: services.ledger.batches.get_batch(b) for b in {h.batch_id for h in holdings}}
    emails = services.ledger.deliveries.get_many((h.batch_id, h.row_number) for h in holdings)
    out = []
    for h in holdings:
        record = records.get((h.batch_id, h.row_number))
        if record is None:  # claimed, and its code still being bought
            out.append(
                {"holder": h.email, "partner": h.partner_name, "program": h.program_name,
                 "batchId": h.batch_id, "row": h.row_number, "voucherCode": None,
                 "state": "pending", "claimedAt": iso_utc(h.claimed_at)}
            )  # fmt: skip
            continue
        out.append(
            {
                **code_record(
                    record,
                    batches[h.batch_id],
                    h,
                    emails.get((h.batch_id, h.row_number)),
                    services.ledger.deliveries.reminders_for_row(h.batch_id, h.row_number),
                ),
                "claimedAt": iso_utc(h.claimed_at),
            }
        )
    return out
