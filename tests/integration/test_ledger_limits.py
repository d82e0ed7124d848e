"""The daily voucher count and approval decisions in the ledger (moto, the template's table):
conditional writes and transactions that hold under concurrency."""

from __future__ import annotations

import threading

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.models.ledger import BatchRecord, BatchStatus

DAY = "2026-11-30"


def batch(ledger: Ledger, batch_id: str) -> str:
    ledger.batches.create_batch(
        BatchRecord(batch_id=batch_id, kind="csv", source=f"s3://b/{batch_id}",
                    results_csv_key="r.csv", summary_key="s.json", created_at=1)
    )  # fmt: skip
    return batch_id


def plan(count: int) -> dict[str, int]:
    return {"chunk_count": 1, "rows_total": count, "vouchers_planned": count}


def test_a_plan_is_counted_once_and_one_that_would_cross_the_limit_writes_nothing(
    ledger: Ledger,
) -> None:
    assert ledger.batches.record_plan(batch(ledger, "b1"), plan(30), day=DAY, count=30, limit=50)
    assert ledger.counts.vouchers_counted(DAY) == 30
    # the same batch again (a duplicate delivery that planned it too): counted once
    assert ledger.batches.record_plan("b1", plan(30), day=DAY, count=30, limit=50)
    assert ledger.counts.vouchers_counted(DAY) == 30
    # 30 + 25 > 50: refused whole, the batch's plan not recorded
    assert not ledger.batches.record_plan(
        batch(ledger, "b2"), plan(25), day=DAY, count=25, limit=50
    )
    assert ledger.counts.vouchers_counted(DAY) == 30
    b2 = ledger.batches.get_batch("b2")
    assert b2 is not None
    assert b2.chunk_count is None
    assert ledger.batches.record_plan(batch(ledger, "b3"), plan(20), day=DAY, count=20, limit=50)
    assert ledger.counts.vouchers_counted(DAY) == 50
    assert ledger.counts.vouchers_counted("2026-12-01") == 0  # another day, another count


def test_concurrent_batches_never_together_cross_the_limit(ledger: Ledger) -> None:
    ids = [batch(ledger, f"c{n}") for n in range(8)]
    won: list[str] = []

    def go(batch_id: str) -> None:
        if ledger.batches.record_plan(batch_id, plan(10), day=DAY, count=10, limit=45):
            won.append(batch_id)

    threads = [threading.Thread(target=go, args=(b,)) for b in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 4
    assert ledger.counts.vouchers_counted(DAY) == 40


def test_one_decision_per_waiting_batch_and_an_approval_counts_past_the_limit(
    ledger: Ledger,
) -> None:
    waiting = batch(ledger, "w1")
    assert (
        ledger.batches.decide_approval(waiting, decision="approved", by="me", at=5) is None
    )  # not waiting
    ledger.batches.update_batch(waiting, status=BatchStatus.AWAITING_APPROVAL.value)
    results: list[object] = []

    def decide(decision: str) -> None:
        results.append(
            ledger.batches.decide_approval(waiting, decision=decision, by=decision, at=6)
        )

    threads = [threading.Thread(target=decide, args=(d,)) for d in ("approved", "rejected") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    decided = [r for r in results if r is not None]
    assert len(decided) == 1
    record = ledger.batches.get_batch(waiting)
    assert record is not None
    assert record.approval_decision == record.approval_by  # the one that won, recorded whole
    if record.approval_decision == "approved":
        ledger.batches.update_batch(waiting, vouchers_planned=70)
        assert ledger.batches.release_approved(waiting, day=DAY, count=70)
        assert not ledger.batches.release_approved(waiting, day=DAY, count=70)  # once
        assert ledger.counts.vouchers_counted(DAY) == 70  # no limit applies to an approval
        moved = ledger.batches.get_batch(waiting)
        assert moved is not None
        assert moved.status == BatchStatus.PLANNED
    else:
        assert not ledger.batches.release_approved(waiting, day=DAY, count=70)  # a rejected batch
        assert ledger.counts.vouchers_counted(DAY) == 0
    assert [b.batch_id for b in ledger.batches.batches_awaiting_approval()] == (
        [] if record.approval_decision == "approved" else [waiting]
    )


def test_a_failed_chunk_gives_its_count_back_once(ledger: Ledger) -> None:
    """Issue 23 item 4: to the day it was counted on, once, whatever the repeats."""
    from voucher_distributor.models.ledger import ChunkRecord, ChunkState

    ledger.batches.record_plan(batch(ledger, "g1"), plan(30), day=DAY, count=30, limit=0)
    chunk = ChunkRecord(batch_id="g1", chunk_no=0, partner_name="Acme Corp",
                        program_name="Spring", quantity=30, rows_key="k")  # fmt: skip
    ledger.chunks.put_chunk_if_absent(chunk)
    # Not failed (yet): nothing to give back.
    assert not ledger.counts.give_back_failed_chunk("g1", 0, day=DAY, count=30)
    assert ledger.counts.vouchers_counted(DAY) == 30
    ledger.chunks.finish_chunk(chunk, state=ChunkState.FAILED, assigned=0, failed=30)
    results: list[bool] = []
    workers = [
        threading.Thread(
            target=lambda: results.append(
                ledger.counts.give_back_failed_chunk("g1", 0, day=DAY, count=30)
            )
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(results) == [False, False, False, True]
    assert ledger.counts.vouchers_counted(DAY) == 0
    ended = ledger.chunks.get_chunk("g1", 0)
    assert ended is not None
    assert ended.count_given_back == DAY
