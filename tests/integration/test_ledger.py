"""The DynamoDB ledger against the template's own table in moto: conditional writes hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
)
from voucher_distributor.pipeline.email import refresh_window
from voucher_distributor_cli.local.runner import MotoStack

from .moto_stack import TEMPLATE, stack_ledger


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with MotoStack(TEMPLATE) as stack:
        yield stack_ledger(stack)


def batch(batch_id: str = "f-1") -> BatchRecord:
    return BatchRecord(
        batch_id=batch_id, kind="csv", source="s3://b/incoming/x.csv",
        results_csv_key="results/x.results.csv", summary_key="results/x.summary.json",
        created_at=1_000,
    )  # fmt: skip


def chunk(no: int = 0, quantity: int = 3) -> ChunkRecord:
    return ChunkRecord(
        batch_id="f-1", chunk_no=no, partner_name="Acme Corp", program_name="Spring",
        quantity=quantity, rows_key=f"work/f-1/chunks/{no:05d}.jsonl",
    )  # fmt: skip


def test_a_batch_is_created_once(ledger: Ledger) -> None:
    assert ledger.batches.create_batch(batch())
    assert not ledger.batches.create_batch(batch())  # the same source delivered again
    assert ledger.batches.get_batch("f-1").status == BatchStatus.INGESTING


def test_only_one_worker_gets_the_lease(ledger: Ledger) -> None:
    ledger.batches.create_batch(batch())
    assert ledger.chunks.put_chunk_if_absent(chunk())
    assert not ledger.chunks.put_chunk_if_absent(chunk())  # re-planning keeps the existing record
    first = ledger.chunks.acquire_purchase_lease("f-1", 0, owner="w1", now=100, lease_seconds=60)
    second = ledger.chunks.acquire_purchase_lease("f-1", 0, owner="w2", now=130, lease_seconds=60)
    assert first is not None
    assert first.purchase_attempts == 1
    assert second is None


def test_an_expired_lease_is_taken_over_and_counts_the_attempt(ledger: Ledger) -> None:
    ledger.batches.create_batch(batch())
    ledger.chunks.put_chunk_if_absent(chunk())
    ledger.chunks.acquire_purchase_lease("f-1", 0, owner="w1", now=100, lease_seconds=60)
    taken = ledger.chunks.acquire_purchase_lease("f-1", 0, owner="w2", now=161, lease_seconds=60)
    assert taken is not None
    assert taken.lease_owner == "w2"
    assert taken.purchase_attempts == 2  # the new owner must look for w1's purchase first
    # the old owner can no longer record a purchase
    assert not ledger.chunks.record_purchase(
        "f-1", 0, owner="w1", purchase_code="VP-1", purchase_id="1",
        purchased_at=170, deadline_at=999, adopted=False,
    )  # fmt: skip
    assert ledger.chunks.record_purchase(
        "f-1", 0, owner="w2", purchase_code="VP-1", purchase_id="1",
        purchased_at=170, deadline_at=999, adopted=True,
    )  # fmt: skip
    recorded = ledger.chunks.get_chunk("f-1", 0)
    assert (recorded.state, recorded.purchase_code, recorded.adopted) == (
        ChunkState.PURCHASED, "VP-1", True,
    )  # fmt: skip
    assert recorded.lease_owner is None
    # a purchased chunk cannot be leased again
    assert (
        ledger.chunks.acquire_purchase_lease("f-1", 0, owner="w3", now=10_000, lease_seconds=60)
        is None
    )


def test_finishing_a_chunk_counts_once(ledger: Ledger) -> None:
    ledger.batches.create_batch(batch())
    ledger.batches.update_batch("f-1", chunk_count=2)
    for no in (0, 1):
        ledger.chunks.put_chunk_if_absent(chunk(no))
    done = ledger.chunks.get_chunk("f-1", 0)
    assert ledger.chunks.finish_chunk(done, state=ChunkState.ASSIGNED, assigned=3, failed=0)
    assert not ledger.chunks.finish_chunk(done, state=ChunkState.ASSIGNED, assigned=3, failed=0)
    failed = ledger.chunks.get_chunk("f-1", 1)
    assert ledger.chunks.finish_chunk(
        failed, state=ChunkState.FAILED, assigned=0, failed=3, reason="x"
    )
    ended = list(ledger.chunks.iter_chunks("f-1"))
    assert [(c.state, c.assigned_count, c.failed_count) for c in ended] == [
        (ChunkState.ASSIGNED, 3, 0),
        (ChunkState.FAILED, 0, 3),
    ]
    assert ledger.chunks.get_chunk("f-1", 1).failure_reason == "x"
    # counting in the batch is idempotent: a replay or a second worker never counts twice
    assert ledger.batches.count_finished_chunk("f-1", 0).chunks_finished == 1
    assert ledger.batches.count_finished_chunk("f-1", 0).chunks_finished == 1
    record = ledger.batches.count_finished_chunk("f-1", 1)
    assert (record.finished_chunks, record.chunks_finished) == ({0, 1}, 2)
    assert ledger.batches.get_batch("f-1").finished_chunks == {0, 1}
    with pytest.raises(ValueError, match="not a final"):
        ledger.chunks.finish_chunk(failed, state=ChunkState.PURCHASED, assigned=0, failed=0)


def test_report_starts_once_the_batch_is_done(ledger: Ledger) -> None:
    ledger.batches.create_batch(batch())
    assert ledger.batches.start_report("f-1").status == BatchStatus.REPORTING
    assert ledger.batches.start_report("f-1") is not None  # a crashed report may run again
    ledger.batches.update_batch("f-1", status=BatchStatus.DONE.value)
    assert ledger.batches.start_report("f-1") is None


def test_assignments_are_idempotent_ordered_and_found_by_email(ledger: Ledger) -> None:
    records = [
        AssignmentRecord(
            batch_id="f-1", row_number=n, email=f"p{n % 3}@acme.example",
            partner_name="Acme Corp", program_name="Spring", chunk_no=0, status="assigned",
            voucher_code=f"C{n}", purchase_code="VP-1", extra={"Department": "Eng"},
        )
        for n in (12, 3, 7, 100)
    ]  # fmt: skip
    assert ledger.assignments.put_assignments(records) == 4
    assert ledger.assignments.put_assignments(records) == 4  # a replay rewrites the same items
    assert [a.row_number for a in ledger.assignments.iter_assignments("f-1")] == [3, 7, 12, 100]
    assert {
        a.voucher_code for a in ledger.assignments.assignments_for_email("p0@acme.example")
    } == {
        "C12",
        "C3",
    }
    # the ledger keeps the voucher, not the recipient's row: extra columns stay in the results
    first = next(ledger.assignments.iter_assignments("f-1"))
    assert (first.batch_id, first.row_number, first.voucher_code) == ("f-1", 3, "C3")
    assert (first.extra, first.first_name) == ({}, "")


def test_a_webhook_id_is_remembered_with_what_it_signed(ledger: Ledger) -> None:
    """Issue 24: the first use of a ``webhook-id`` is kept (a TTL item); a second use finds it,
    and ``access.remember_signature`` tells the same request from a replay by the binding."""
    from voucher_distributor.models.ledger import SignatureUse

    first = SignatureUse(
        webhook_id="msg_1", client_id="acme-hr", method="GET", path="/v1/distributions/r-1",
        query="", body_sha256="e3b0", used_at=1_000, expires_at=1_660,
    )  # fmt: skip
    assert ledger.signatures.remember_signature(first) is None
    again = ledger.signatures.remember_signature(first.model_copy(update={"used_at": 1_010}))
    assert again is not None
    assert again.binding() == first.binding()
    assert again.used_at == 1_000  # the first use stands
    elsewhere = first.model_copy(update={"method": "POST", "path": "/v1/distributions/r-1/approve"})
    earlier = ledger.signatures.remember_signature(elsewhere)
    assert earlier is not None
    assert earlier.binding() != elsewhere.binding()
    item = ledger.table.table.get_item(Key={"pk": "API#sig#msg_1", "sk": "SIGNATURE"})["Item"]
    assert int(item["expires_at"]) == 1_660  # the table's TTL attribute
    # beside the idempotency records, never on them
    assert ledger.requests.get_api_request("sig#msg_1") is None


def test_an_ingest_lease_that_ran_out_is_kept_until_another_delivery_takes_it(
    ledger: Ledger,
) -> None:
    """A slow read of a long file on a busy machine outlives its lease: it is not a crash.

    Only a takeover ends it; before, every slow delivery gave up at its next step and the input
    climbed to the dead-letter queue (seen with a 12,000-row file under a loaded test run).
    """
    ledger.batches.create_batch(batch())
    terms = {"now": 100, "lease_seconds": 5}
    assert ledger.batches.take_ingest_lease("f-1", owner="a", **terms)
    # Ran out at 105, nobody took it: still a's, and renewed.
    assert ledger.batches.holds_ingest_lease("f-1", owner="a", now=200, lease_seconds=5)
    assert not ledger.batches.take_ingest_lease("f-1", owner="b", now=204, lease_seconds=5)
    # Taken over once it ran out: a changes nothing from then on.
    assert ledger.batches.take_ingest_lease("f-1", owner="b", now=206, lease_seconds=5)
    assert not ledger.batches.holds_ingest_lease("f-1", owner="a", now=207, lease_seconds=5)
    assert ledger.batches.holds_ingest_lease("f-1", owner="b", now=207, lease_seconds=5)


def test_a_later_receive_of_the_same_message_takes_its_earlier_receives_lease_at_once(
    ledger: Ledger,
) -> None:
    """Reliability seed 169: an outage's three send-backs, a crash, a wait for the crashed
    receive's lease and a second crash spent the queue's six deliveries. The crashed receive
    was the same message's: once its message is received again it has ended (the queue's
    visibility timeout outlasts the function's), so its lease is not waited out."""
    ledger.batches.create_batch(batch())
    terms = {"now": 100, "lease_seconds": 60}
    same = "ingest-m-msg-1-"
    assert ledger.batches.take_ingest_lease("f-1", owner=f"{same}4", same_message=same, **terms)
    # Another message (an upload's second notification) waits the live lease out ...
    other = "ingest-m-msg-2-"
    assert not ledger.batches.take_ingest_lease(
        "f-1", owner=f"{other}1", same_message=other, now=101, lease_seconds=60
    )
    # ... a later receive of the same message does not, and the earlier receive is out.
    assert ledger.batches.take_ingest_lease(
        "f-1", owner=f"{same}5", same_message=same, now=101, lease_seconds=60
    )
    assert not ledger.batches.holds_ingest_lease("f-1", owner=f"{same}4", now=102, lease_seconds=60)
    assert ledger.batches.holds_ingest_lease("f-1", owner=f"{same}5", now=102, lease_seconds=60)


def test_a_results_refresh_is_taken_once_a_window_and_a_slow_one_asks_for_a_longer_window(
    ledger: Ledger,
) -> None:
    ledger.batches.create_batch(batch())
    deliveries = ledger.deliveries
    assert deliveries.take_refresh("f-1", now=1_000, every=60) == 60
    assert deliveries.take_refresh("f-1", now=1_030, every=60) is None  # taken this window
    assert deliveries.take_refresh("f-1", now=1_060, every=60) == 60
    # the last rewrite took 30 s: the next waits refresh_window(60, 30) = 120 s
    ledger.batches.update_batch("f-1", email_refresh_window=refresh_window(60, 30.0))
    assert deliveries.take_refresh("f-1", now=1_120, every=60) == 120
    assert deliveries.take_refresh("f-1", now=1_200, every=60) is None
    assert deliveries.take_refresh("f-1", now=1_240, every=60) == 120
