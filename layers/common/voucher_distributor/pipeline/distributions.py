"""The HTTP API's use cases: accept a distribution, show it, link its results, show holdings.

A distribution posted to the API becomes the same HR request an SQS sender enqueues (a CSV body
is stored under ``api/`` and named by ``recipientsS3Uri``), so everything after the door is the
pipeline that already exists. What the door adds is idempotency across clients and bodies.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from voucher_distributor.domain.approval import approval_summary
from voucher_distributor.domain.batches import request_batch_id
from voucher_distributor.domain.outcomes import tally_chunks
from voucher_distributor.domain.redemption import code_record
from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.ledger import ApiRequestRecord, BatchRecord, BatchStatus
from voucher_distributor.models.messages import DistributionRequest
from voucher_distributor.pipeline.callbacks import deliveries_view
from voucher_distributor.pipeline.context import Services

#: CSV bodies posted to the API: not under ``incoming/``, so the upload trigger never sees them.
API_UPLOADS_PREFIX = "api/"
#: How long the API remembers an idempotency key (senders retry for a day or two).
REMEMBER_REQUESTS_S = 30 * 86_400
#: Lifetime of a results link.
RESULTS_LINK_S = 15 * 60
#: A dry run's purchase state: one the real run would make (never ``PENDING``: nothing is
#: bought).
DRY_RUN_PURCHASE = "would-buy"
#: The SQS message attribute naming the API client that asked (the audit trail's "sender").
API_CLIENT_ATTRIBUTE = "apiClient"


class IdempotencyConflict(Exception):
    """409: the key was used before, with another body or by another client."""


class NotFound(LookupError):
    """404: no such batch (or not this client's to see)."""


class NotReady(Exception):
    """409: the batch has no results yet."""


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


@dataclass(frozen=True)
class Accepted:
    batch_id: str
    request_id: str
    #: True when this answers a request seen before (the sender retried).
    repeat: bool


def submit_distribution(services: Services, client_id: str, submission: Submission) -> Accepted:
    """Remember the key, then hand the request to the request queue.

    The request is enqueued on every call, repeats included: a sender retrying after a crash
    between the two steps must not be answered 202 for a request nobody queued, and the batch's
    identity (its ``requestId``) makes a second delivery buy nothing.
    """
    request = submission.request
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


def distribution_view(services: Services, batch_id: str) -> dict[str, Any]:
    """One batch as the API shows it: state, counts, purchases, approval, callbacks.

    Accepted but not yet read by ingest, it is ``queued`` (the API's own record of it).
    """
    batch = services.ledger.batches.get_batch(batch_id) if batch_id else None
    if batch is None:
        return _queued_view(services, batch_id)
    chunks = list(services.ledger.chunks.iter_chunks(batch_id))
    tally = tally_chunks(chunks)
    return {
        "batchId": batch.batch_id,
        "requestId": batch.source if batch.kind == "request" else None,
        "state": state_word(batch),
        "dryRun": batch.dry_run,
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
            Counter(d.state.value for d in services.ledger.deliveries.for_batch(batch_id))
        ),
        "resultsReady": batch.status == BatchStatus.DONE,
        **({"error": batch.error} if batch.error else {}),
    }


def _queued_view(services: Services, batch_id: str) -> dict[str, Any]:
    accepted = services.ledger.requests.get_api_request(batch_id) if batch_id else None
    if accepted is None:
        raise NotFound(f"no distribution {batch_id!r}")
    return {
        "batchId": batch_id,
        "requestId": accepted.idempotency_key,
        "state": "queued",
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


def results_link(services: Services, batch_id: str) -> dict[str, Any]:
    """Short-lived links to the results CSV and the summary, once the batch is reported."""
    batch = services.ledger.batches.get_batch(batch_id) if batch_id else None
    if batch is None:
        _queued_view(services, batch_id)  # NotFound unless the API accepted it
        raise NotReady(f"distribution {batch_id} is queued; its results come when it ends")
    if batch.status not in {BatchStatus.DONE, BatchStatus.FAILED}:
        raise NotReady(
            f"batch {batch_id} is {state_word(batch)}; its results are written when it ends — "
            "poll GET /v1/distributions/{batchId} or wait for the callback"
        )
    summary = services.storage.get_json(batch.summary_key)
    written_for = summary.get("batchId") if isinstance(summary, dict) else None
    if written_for != batch_id:
        # Before results keys carried the batch id, a later batch could write over them.
        raise NotFound(
            f"the results of batch {batch_id} at {batch.summary_key} are "
            + (f"batch {written_for}'s" if written_for else "missing")
            + "; its rows are in the ledger (voucher-distributor status --batch "
            f"{batch_id}), or send the request again under a new requestId"
        )
    has_csv = batch.status == BatchStatus.DONE and services.storage.exists(batch.results_csv_key)
    expires = services.now() + RESULTS_LINK_S
    return {
        "batchId": batch_id,
        "state": state_word(batch),
        "resultsUrl": (
            services.storage.link(batch.results_csv_key, expires_s=RESULTS_LINK_S)
            if has_csv
            else None
        ),
        "summaryUrl": services.storage.link(batch.summary_key, expires_s=RESULTS_LINK_S),
        "expiresAt": iso_utc(expires),
    }


def holdings_view(services: Services, email: str) -> list[dict[str, Any]]:
    """The vouchers a person holds now, one per (partner, program): each code's record (state,
    expiry, use, reservation, reissue history), as ``voucher`` and ``find`` show it."""
    holdings = services.ledger.holdings.holdings_for_email(email)
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
                    record, batches[h.batch_id], h, emails.get((h.batch_id, h.row_number))
                ),
                "claimedAt": iso_utc(h.claimed_at),
            }
        )
    return out
