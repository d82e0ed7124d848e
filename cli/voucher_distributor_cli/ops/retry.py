"""``voucher-distributor retry-failed BATCH``: a new batch of only the rows that failed.

The work is the layer's (``pipeline/retries.py``), shared with the HTTP API's
``POST /v1/distributions/{id}/retry``; here its refusals become the command's (exit 2).
"""

from __future__ import annotations

from typing import Any

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.pipeline.retries import (
    RetryRefused,
    RetryStarted,
    failed_rows_csv,
    retry_prefix,
    start_retry,
)
from voucher_distributor_cli.ops.target import OpsError

__all__ = ["RetryStarted", "failed_rows_csv", "retry_failed", "retry_prefix"]


def retry_failed(
    ledger: Ledger, s3: Any, bucket: str, batch_id: str, *, now: float | None = None
) -> RetryStarted:
    """Upload the batch's failed rows as a new input linked to it; the new batch's id."""
    try:
        return start_retry(ledger, s3, bucket, batch_id, now=now)
    except RetryRefused as exc:
        raise OpsError(str(exc)) from exc
