"""Deciding a batch that waits for approval: the one path the CLI and the HTTP API share.

The decision is recorded on the batch with a conditional write (of two decisions, or a decision
and the timeout, exactly one counts), naming who gave it; then a message on the report queue
asks the report function to carry it out (hand the batch out, or reject it).

Who submitted a batch may not decide it too (``ApprovalBySubmitter=false``, the default): the
API client that posted it, or the AWS principal that uploaded or enqueued it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.domain.tenancy import submitter_refusal
from voucher_distributor.models.ledger import BatchRecord, BatchStatus
from voucher_distributor.pipeline.approval import APPROVAL_CHECK

DECISIONS = ("approved", "rejected")


class DecisionRefused(Exception):
    """The batch is missing, not waiting, or already decided, or the decider submitted it
    (``forbidden``); the message says which."""

    def __init__(self, message: str, *, missing: bool = False, forbidden: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.forbidden = forbidden


def decide_batch(
    ledger: Ledger,
    send_report: Callable[[dict[str, Any]], None],
    batch_id: str,
    *,
    decision: str,
    by: str,
    at: int,
    note: str | None = None,
    deciders: Iterable[str] = (),
    decider_channel: str = "",
    approval_by_submitter: bool,
) -> BatchRecord:
    """Record ``approved`` or ``rejected`` and ask for it to be carried out.

    ``deciders``: the names the decider goes by (an API client id with ``decider_channel``
    ``api``; an AWS identity's ARN and user id otherwise), checked against who submitted the
    batch unless ``approval_by_submitter``.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    batch = ledger.batches.get_batch(batch_id)
    if batch is None:
        raise DecisionRefused(f"no batch {batch_id} in {ledger.table_name}", missing=True)
    if batch.status != BatchStatus.AWAITING_APPROVAL or batch.approval_decision:
        raise DecisionRefused(not_waiting(batch))
    refusal = submitter_refusal(
        batch.submitted_by,
        deciders,
        channel=batch.channel,
        decider_channel=decider_channel,
        allowed=approval_by_submitter,
    )
    if refusal is not None:
        raise DecisionRefused(refusal, forbidden=True)
    decided = ledger.batches.decide_approval(batch_id, decision=decision, by=by, at=at, note=note)
    if decided is None:  # decided (or timed out) between the read and the write
        current = ledger.batches.get_batch(batch_id)
        raise DecisionRefused(not_waiting(current) if current else f"batch {batch_id} is gone")
    send_report({"batchId": batch_id, "check": APPROVAL_CHECK})
    return decided


def not_waiting(batch: BatchRecord) -> str:
    if batch.approval_decision:
        return (
            f"batch {batch.batch_id} was already {batch.approval_decision} by "
            f"{batch.approval_by}; a decision is final"
        )
    return (
        f"batch {batch.batch_id} is {batch.status.value}, not awaiting approval: only a batch "
        "over ApprovalThreshold or the daily limit waits for a decision"
    )
