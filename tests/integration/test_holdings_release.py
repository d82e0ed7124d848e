"""Issue 23 item 15: a reissue's release never points a person back at a row without a code.

The interleaving is forced step by step on the ledger (moto): batch O claims X, batch R
reissues X while O is still buying, O's chunk fails (its release finds R holding X and does
nothing), then R's chunk fails and gives X back.
"""

from __future__ import annotations

from voucher_distributor.adapters.ledger import Claim, Ledger
from voucher_distributor.models.ledger import AssignmentRecord, BatchRecord, BatchStatus

EMAIL, PARTNER, PROGRAM = "x@acme.example", "Acme Corp", "Spring Drive"


def claim(batch: str, row: int, *, reissue: bool = False) -> Claim:
    return Claim(EMAIL, PARTNER, PROGRAM, batch, row, reissue=reissue)


def outcome(batch: str, row: int, status: str, code: str = "") -> AssignmentRecord:
    return AssignmentRecord(
        batch_id=batch, row_number=row, email=EMAIL, partner_name=PARTNER, program_name=PROGRAM,
        chunk_no=0, status=status, voucher_code=code, purchase_code="VP-1" if code else "",
        expires_utc="2027-01-01T00:00:00Z" if code else "",
    )  # fmt: skip


def batch(ledger: Ledger, batch_id: str, status: BatchStatus = BatchStatus.PLANNED) -> None:
    ledger.batches.create_batch(
        BatchRecord(batch_id=batch_id, kind="csv", source=f"s3://b/{batch_id}",
                    results_csv_key=f"results/{batch_id}.csv",
                    summary_key=f"results/{batch_id}.json", created_at=1, status=status)
    )  # fmt: skip


def holder(ledger: Ledger) -> tuple[str, int] | None:
    held = ledger.holdings.get_holding(EMAIL, PARTNER, PROGRAM)
    return None if held is None else (held.batch_id, held.row_number)


def test_o_fails_then_r_fails_leaves_no_holding_pointing_at_o(ledger: Ledger) -> None:
    batch(ledger, "O")
    batch(ledger, "R")
    assert ledger.holdings.claim_holdings([claim("O", 1)], now=10)[0].kind == "claimed"
    assert ledger.holdings.claim_holdings([claim("R", 4, reissue=True)], now=11)[0].kind == (
        "reissued"
    )
    # O's chunk fails: its row's outcome is written, its release finds R holding X.
    ledger.assignments.put_assignments([outcome("O", 1, "failed")])
    assert ledger.holdings.release_holdings([claim("O", 1)]) == 0
    assert holder(ledger) == ("R", 4)
    # R's chunk fails: X must not point back at O's failed row.
    ledger.assignments.put_assignments([outcome("R", 4, "failed")])
    assert ledger.holdings.release_holdings([claim("R", 4, reissue=True)]) == 1
    assert holder(ledger) is None
    # So the next list buys X a voucher instead of reporting the failed row as held.
    assert ledger.holdings.claim_holdings([claim("N", 1)], now=20)[0].kind == "claimed"


def test_the_release_goes_back_past_a_failed_row_to_an_assigned_one(ledger: Ledger) -> None:
    batch(ledger, "A", BatchStatus.DONE)
    batch(ledger, "O")
    batch(ledger, "R")
    ledger.holdings.claim_holdings([claim("A", 1)], now=10)
    ledger.assignments.put_assignments([outcome("A", 1, "assigned", "CODE-A")])
    ledger.holdings.claim_holdings([claim("O", 2, reissue=True)], now=11)
    ledger.holdings.claim_holdings([claim("R", 3, reissue=True)], now=12)
    ledger.assignments.put_assignments([outcome("O", 2, "failed")])
    assert ledger.holdings.release_holdings([claim("O", 2, reissue=True)]) == 0
    ledger.assignments.put_assignments([outcome("R", 3, "failed")])
    assert ledger.holdings.release_holdings([claim("R", 3, reissue=True)]) == 1
    held = ledger.holdings.get_holding(EMAIL, PARTNER, PROGRAM)
    assert held is not None
    assert (held.batch_id, held.row_number, held.history) == ("A", 1, [])


def test_a_replaced_row_still_buying_or_assigned_gets_the_holding_back(ledger: Ledger) -> None:
    batch(ledger, "O")
    batch(ledger, "R")
    ledger.holdings.claim_holdings([claim("O", 1)], now=10)
    ledger.holdings.claim_holdings([claim("R", 4, reissue=True)], now=11)
    # R fails while O is still buying: X goes back to O, whose own release runs if it fails.
    assert ledger.holdings.release_holdings([claim("R", 4, reissue=True)]) == 1
    assert holder(ledger) == ("O", 1)
    assert ledger.holdings.release_holdings([claim("O", 1)]) == 1
    assert holder(ledger) is None


def test_a_rejected_batch_row_is_not_given_the_holding_back(ledger: Ledger) -> None:
    """A rejected batch writes no outcomes: once it has ended its rows hold nothing."""
    batch(ledger, "O")
    batch(ledger, "R")
    ledger.holdings.claim_holdings([claim("O", 1)], now=10)
    ledger.holdings.claim_holdings([claim("R", 4, reissue=True)], now=11)
    ledger.batches.update_batch("O", status=BatchStatus.DONE.value)
    assert ledger.holdings.release_holdings([claim("R", 4, reissue=True)]) == 1
    assert holder(ledger) is None
