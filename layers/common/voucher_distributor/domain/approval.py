"""What a batch's approval says, in the summary, the status and each rejected row (pure)."""

from __future__ import annotations

from typing import Any

from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.ledger import BatchRecord

#: Who "decided" a batch that nobody decided within ``ApprovalTimeoutHours``.
TIMEOUT_DECIDER = "timeout"


def rejection_reason(batch: BatchRecord) -> str:
    """Why a rejected batch's rows got nothing, as each row and the summary say it."""
    if batch.approval_by == TIMEOUT_DECIDER:
        return f"not bought: {batch.approval_note}; it waited because {batch.approval_reason}"
    note = f": {batch.approval_note}" if batch.approval_note else ""
    return f"not bought: rejected by {batch.approval_by}{note}"


def approval_summary(batch: BatchRecord) -> dict[str, Any] | None:
    """The summary's ``approval`` object, for a batch that had to wait for one."""
    if batch.approval_reason is None:
        return None
    return {
        "reason": batch.approval_reason,
        "deadline": iso_utc(batch.approval_deadline or 0),
        "decision": batch.approval_decision,
        "by": batch.approval_by,
        "at": iso_utc(batch.approval_at) if batch.approval_at else None,
        "note": batch.approval_note,
    }
