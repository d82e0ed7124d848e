"""Results that are not the batch's own are never used (issue 23, item 10): before results keys
carried the batch id, a later batch with the same readable name wrote over them. ``results``
(the API's link) and ``retry-failed`` look at the summary's ``batchId`` first."""

from __future__ import annotations

import pytest

from voucher_distributor.domain.tenancy import Reach
from voucher_distributor.models.ledger import BatchRecord, BatchStatus
from voucher_distributor.pipeline.distributions import NotFound, results_link
from voucher_distributor_cli.ops.retry import retry_failed
from voucher_distributor_cli.ops.target import OpsError

from .purchase_rig import Rig, rig

#: An operator's client, bound to no partner: the partner rule is not what these tests check.
EVERY_PARTNER = Reach(client_id="ops", partners=None)

__all__ = ["rig"]

FAILED_ROW = (
    "row,email,first_name,last_name,external_id,partner,program,status,voucher_code,"
    "purchase_code,expires_utc,reason\r\n"
)


def _ended(rig: Rig, batch_id: str, written_for: str) -> BatchRecord:
    """A batch that ended, its summary key holding the summary of ``written_for``."""
    batch = BatchRecord(
        batch_id=batch_id, kind="request", source="a/b", input_name="a/b",
        results_csv_key="results/requests/a_b/a_b.results.csv",
        summary_key="results/requests/a_b/a_b.summary.json", created_at=1_000,
        status=BatchStatus.DONE,
    )  # fmt: skip
    rig.ledger.batches.create_batch(batch)
    storage = rig.services.storage
    storage.put_json(batch.summary_key, {"batchId": written_for, "status": "completed"})
    storage.put_bytes(batch.results_csv_key, FAILED_ROW.encode(), content_type="text/csv")
    return batch


def test_retry_failed_refuses_another_batchs_results(rig: Rig) -> None:
    _ended(rig, "r-aaaa", written_for="r-bbbb")
    with pytest.raises(OpsError, match="batch r-bbbb's, not r-aaaa's"):
        retry_failed(rig.ledger, rig.stack.client("s3"), rig.services.storage.bucket, "r-aaaa")


def test_the_results_link_refuses_another_batchs_results(rig: Rig) -> None:
    _ended(rig, "r-aaaa", written_for="r-bbbb")
    with pytest.raises(NotFound, match="r-bbbb"):
        results_link(rig.services, EVERY_PARTNER, "r-aaaa")


def test_its_own_results_are_linked(rig: Rig) -> None:
    _ended(rig, "r-cccc", written_for="r-cccc")
    link = results_link(rig.services, EVERY_PARTNER, "r-cccc")
    assert link["batchId"] == "r-cccc"
    assert link["resultsUrl"]
