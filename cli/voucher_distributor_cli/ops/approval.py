"""``voucher-distributor approve BATCH`` / ``reject BATCH --reason TEXT``: decide a waiting batch.

The decision is recorded on the batch in the ledger (a conditional write: of two decisions, or
a decision and the timeout, exactly one counts) with the caller's AWS identity and the time;
then a message on the report queue asks the report function to carry it out (hand the batch
out, or reject it: claims given back, rows ``rejected``, summary written). The same message
is sent again by the pipeline until the batch has left ``AWAITING_APPROVAL``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from voucher_distributor.models.ledger import BatchRecord
from voucher_distributor.pipeline.decisions import DecisionRefused, decide_batch
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.ops.target import OpsError, Target


def caller_identity(target: Target) -> str:
    """Who is deciding: the caller's AWS identity (an ARN), as STS sees it."""
    return caller_names(target)[0]


def caller_names(target: Target) -> tuple[str, str]:
    """The caller's ARN and its user id (``AIDA…``, ``AROA…:session``): an uploader or an
    SQS sender is recorded by the latter."""
    got = target.client("sts").get_caller_identity()
    return str(got["Arn"]), str(got.get("UserId", ""))


def decide(
    target: Target,
    batch_id: str,
    *,
    decision: str,
    note: str | None = None,
    now: float | None = None,
) -> BatchRecord:
    """Record ``approved`` or ``rejected`` on a waiting batch and ask for it to be carried out."""
    send = target.queue_sender("ReportQueue")
    if target.ledger.batches.get_batch(batch_id) is None:
        raise OpsError(f"no batch {batch_id} in {target.table_name}")
    arn, user_id = caller_names(target)
    allowed = target.function_env.get("APPROVAL_BY_SUBMITTER", "false").lower() == "true"
    try:
        return decide_batch(
            target.ledger,
            send,
            batch_id,
            decision=decision,
            by=arn,
            at=int(time.time() if now is None else now),
            note=note,
            deciders=(arn, user_id),
            approval_by_submitter=allowed,
        )
    except DecisionRefused as exc:
        raise OpsError(str(exc)) from exc


def decision_view(batch: BatchRecord) -> dict[str, Any]:
    return {
        "batchId": batch.batch_id,
        "decision": batch.approval_decision,
        "by": batch.approval_by,
        "at": batch.approval_at,
        "note": batch.approval_note,
        "vouchers": batch.vouchers_planned,
        "waitedBecause": batch.approval_reason,
    }


def format_decision(batch: BatchRecord, args: argparse.Namespace | None = None) -> str:
    """What was decided, and the ``status`` command to follow it (with ``args``' stack
    options, as it can be pasted)."""
    if batch.approval_decision == "approved":
        what = f"approved: its {batch.vouchers_planned:,} vouchers are being bought"
    else:
        what = "rejected: nothing is bought, its rows are reported 'rejected'"
    return (
        f"batch {batch.batch_id} {what} (recorded as {batch.approval_by}); follow it with "
        f"`{command_hint(args, 'status', batch.batch_id)}`"
    )
