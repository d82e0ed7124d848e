"""The report's merge of chunk outcome files, and the batch tally from chunk records."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voucher_distributor.domain.outcomes import (
    ChunkNotEnded,
    merge_outcomes,
    outcomes_file,
    tally_chunks,
)
from voucher_distributor.models.ledger import AssignmentRecord, ChunkRecord, ChunkState


def _chunk(no: int, rows: list[int], state: ChunkState = ChunkState.ASSIGNED) -> ChunkRecord:
    return ChunkRecord(
        batch_id="b", chunk_no=no, partner_name="P", program_name=f"prog-{no % 3}",
        quantity=len(rows), rows_key=f"k{no}", state=state,
        first_row=min(rows) if rows else None,
    )  # fmt: skip


def _record(no: int, row: int) -> AssignmentRecord:
    return AssignmentRecord(
        batch_id="b", row_number=row, email=f"r{row}@x.example", partner_name="P",
        program_name="p", chunk_no=no, status="assigned",
    )  # fmt: skip


def _plan(rows: int, targets: int, size: int, rng: random.Random) -> dict[int, list[int]]:
    """Rows dealt to targets at random, cut into chunks of ``size`` per target, like ingest."""
    open_rows: dict[int, list[int]] = {}
    chunks: dict[int, list[int]] = {}
    for row in range(2, rows + 2):
        target = rng.randrange(targets)
        open_rows.setdefault(target, []).append(row)
        if len(open_rows[target]) == size:
            chunks[len(chunks)] = open_rows.pop(target)
    for tail in open_rows.values():
        chunks[len(chunks)] = tail
    return chunks


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 400),
    targets=st.integers(1, 5),
    size=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_merge_yields_every_row_once_in_order_loading_chunks_lazily(
    rows: int, targets: int, size: int, seed: int
) -> None:
    plan = _plan(rows, targets, size, random.Random(seed))
    chunks = [_chunk(no, r) for no, r in plan.items()]
    loaded: list[int] = []
    open_at_most = 0

    def load(chunk: ChunkRecord) -> list[AssignmentRecord]:
        loaded.append(chunk.chunk_no)
        return [_record(chunk.chunk_no, row) for row in plan[chunk.chunk_no]]

    merged = []
    for record in merge_outcomes(chunks, load):
        merged.append(record.row_number)
        # chunks loaded but not yet drained: bounded by the number of targets
        drained = {r.chunk_no for r in chunks if max(plan[r.chunk_no]) <= record.row_number}
        open_at_most = max(open_at_most, len(set(loaded) - drained))
    assert merged == sorted(row for r in plan.values() for row in r)
    assert sorted(loaded) == sorted(plan)
    assert open_at_most <= targets


def test_merge_refuses_a_chunk_that_has_not_ended() -> None:
    chunks = [_chunk(0, [2, 3]), _chunk(1, [4], ChunkState.PURCHASED)]
    with pytest.raises(ChunkNotEnded, match="b/00001 is PURCHASED"):
        list(merge_outcomes(chunks, lambda c: []))


def test_tally_counts_ended_chunks_and_purchases() -> None:
    ended = _chunk(0, [2, 3]).model_copy(
        update={"assigned_count": 2, "purchase_code": "VP-1", "adopted": False}
    )
    failed = _chunk(1, [4], ChunkState.FAILED).model_copy(
        update={"failed_count": 1, "purchase_code": "VP-2", "adopted": True}
    )
    waiting = _chunk(2, [5], ChunkState.PURCHASED).model_copy(update={"purchase_code": "VP-3"})
    tally = tally_chunks([ended, failed, waiting, _chunk(3, [6], ChunkState.PENDING)])
    assert (tally.chunks_finished, tally.assigned, tally.failed) == (2, 2, 1)
    assert (tally.purchases_created, tally.purchases_adopted) == (2, 1)


def test_outcome_files_are_named_after_the_final_state() -> None:
    assert outcomes_file(7, ChunkState.ASSIGNED) == "outcomes/00007.assigned.jsonl"
    assert outcomes_file(7, ChunkState.FAILED) == "outcomes/00007.failed.jsonl"
