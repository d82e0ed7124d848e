"""The operators' look-ups read only what they show (issue 23, item 6): each goes through a
sparse index or the batch's key, never a Scan of the table, and its number of read calls does
not grow with the table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from voucher_distributor.adapters.ledger import Claim, Ledger
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    ChunkRecord,
    ChunkState,
)

READS = {"GetItem", "BatchGetItem", "Query", "Scan"}


@contextmanager
def counted(ledger: Ledger) -> Iterator[Counter[str]]:
    """The DynamoDB read calls made through the ledger's client meanwhile, by operation."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        if model.name in READS:
            calls[model.name] += 1

    events = ledger.table.client.meta.events
    events.register("before-call.dynamodb", count, unique_id="count-reads")
    try:
        yield calls
    finally:
        events.unregister("before-call.dynamodb", unique_id="count-reads")


def _batch(batch_id: str, status: BatchStatus, created_at: int = 1_000) -> BatchRecord:
    return BatchRecord(
        batch_id=batch_id, kind="csv", source=f"s3://b/incoming/{batch_id}.csv",
        results_csv_key=f"results/{batch_id}.results.csv",
        summary_key=f"results/{batch_id}.summary.json", created_at=created_at, status=status,
    )  # fmt: skip


def _row(batch: str, row: int, program: str, code: str = "") -> AssignmentRecord:
    return AssignmentRecord(
        batch_id=batch, row_number=row, email=f"p{row}@acme.example", partner_name="Acme Corp",
        program_name=program, chunk_no=0, status="assigned" if code else "failed",
        voucher_code=code, purchase_code="VP-1" if code else "",
        expires_utc="2027-01-01T00:00:00Z" if code else "", reason="" if code else "Certiverse",
    )  # fmt: skip


def _filled(ledger: Ledger, rows: int) -> None:
    """Batches in every status, chunks in every state, assigned and failed rows of two
    programs, and a holding per person: what a table holds after a while."""
    for n, status in enumerate(BatchStatus):
        ledger.batches.create_batch(_batch(f"f-{status.value.lower()}", status, 1_000 + n))
    ledger.batches.create_batch(_batch("f-waiting-2", BatchStatus.AWAITING_APPROVAL, 999))
    for n, state in enumerate(ChunkState):
        ledger.chunks.put_chunk_if_absent(
            ChunkRecord(
                batch_id="f-done", chunk_no=n, partner_name="Acme Corp", program_name="Spring",
                quantity=2, rows_key=f"work/f-done/chunks/{n:05d}.jsonl", state=state,
                purchase_code=f"VP-{n}" if state != ChunkState.PENDING else None,
            )
        )  # fmt: skip
    records = [
        _row("f-done", r, "Spring" if r % 2 else "Autumn", f"CODE-{r}" if r % 5 else "")
        for r in range(1, rows + 1)
    ]
    ledger.assignments.put_assignments(records)
    ledger.holdings.claim_holdings(
        [Claim(r.email, r.partner_name, r.program_name, "f-done", r.row_number) for r in records],
        now=5,
    )


def test_a_code_is_found_in_one_read(ledger: Ledger) -> None:
    _filled(ledger, 60)
    with counted(ledger) as calls:
        found = ledger.assignments.find_voucher_code("CODE-7")
    assert found is not None
    assert (found.batch_id, found.row_number, found.email) == ("f-done", 7, "p7@acme.example")
    assert (found.status, found.purchase_code, found.program_name) == ("assigned", "VP-1", "Spring")
    assert calls == Counter({"Query": 1})
    with counted(ledger) as calls:
        assert ledger.assignments.find_voucher_code("CODE-404") is None
        assert ledger.assignments.find_voucher_code("CODE-5") is None  # row 5 failed: no code
    assert calls == Counter({"Query": 2})


def test_a_programs_codes_are_read_from_its_index(ledger: Ledger) -> None:
    _filled(ledger, 60)
    with counted(ledger) as calls:
        got = list(ledger.assignments.iter_program_assignments("Spring"))
    expected = {f"CODE-{r}" for r in range(1, 61) if r % 2 and r % 5}
    assert {a.voucher_code for a in got} == expected
    assert {a.program_name for a in got} == {"Spring"}
    assert all(a.status == "assigned" for a in got)
    assert set(calls) == {"Query"}


def test_batches_awaiting_approval_are_read_from_their_index(ledger: Ledger) -> None:
    _filled(ledger, 20)
    with counted(ledger) as calls:
        waiting = ledger.batches.batches_awaiting_approval()
    assert [b.batch_id for b in waiting] == ["f-waiting-2", "f-awaiting_approval"]
    assert calls == Counter({"Query": 1, "GetItem": 2})  # one per batch shown


def test_every_chunk_is_read_from_the_state_index(ledger: Ledger) -> None:
    _filled(ledger, 20)
    with counted(ledger) as calls:
        chunks = list(ledger.chunks.iter_chunks_by_state())
    assert sorted((c.chunk_no, c.state) for c in chunks) == list(enumerate(ChunkState))
    assert {c.purchase_code for c in chunks if c.state != ChunkState.PENDING} == {
        f"VP-{n}" for n in range(1, len(ChunkState))
    }
    assert calls == Counter({"Query": len(ChunkState)})
