"""A slice of rows claimed in one transaction and recorded in one (moto): the same guarantees
as one row at a time — a row claimed or mailed already is never claimed again."""

from __future__ import annotations

import pytest

from voucher_distributor.adapters.ledger.deliveries import MAX_SLICE, SliceClaim
from voucher_distributor.models.email import EmailEventRecord, EmailState


def _slice(rows):
    return [SliceClaim("f-batch", r, f"p{r}@example.com", f"CODE-{r}") for r in rows]


def test_a_slice_claims_every_row_not_claimed_yet_and_leaves_the_others_alone(ledger):
    earlier = ledger.deliveries.claim(
        "f-batch", 3, to_address="p3@example.com", voucher_code="CODE-3", now=50
    )
    assert earlier is not None
    claimed = ledger.deliveries.claim_slice(_slice(range(1, 6)), now=100)
    assert [c.row_number for c in claimed] == [1, 2, 4, 5]
    assert all(c.state == EmailState.UNKNOWN and c.attempts == 1 for c in claimed)
    kept = ledger.deliveries.get("f-batch", 3)
    assert kept is not None
    assert kept.delivery_id == earlier.delivery_id
    assert kept.claimed_at == 50  # the earlier claim, untouched
    stored = ledger.deliveries.get("f-batch", 4)
    assert stored is not None
    assert (stored.state, stored.to_address, stored.voucher_code) == (
        EmailState.UNKNOWN, "p4@example.com", "CODE-4",
    )  # fmt: skip


def test_a_redelivered_slice_claims_nothing(ledger):
    assert len(ledger.deliveries.claim_slice(_slice(range(1, 11)), now=100)) == 10
    assert ledger.deliveries.claim_slice(_slice(range(1, 11)), now=101) == []
    assert ledger.deliveries.claim(
        "f-batch", 4, to_address="p4@example.com", voucher_code="CODE-4", now=102
    ) is None  # fmt: skip


def test_a_slice_is_at_most_one_transaction(ledger):
    with pytest.raises(ValueError, match="at most 100"):
        ledger.deliveries.claim_slice(_slice(range(MAX_SLICE + 1)), now=100)


def test_a_slice_records_its_sends_together_and_each_row_if_an_event_came_first(ledger):
    claimed = ledger.deliveries.claim_slice(_slice(range(1, 5)), now=100)
    # Row 2's Send event arrived before the record (it moves the row to sent itself).
    ledger.deliveries.record_event(
        "f-batch", 2,
        EmailEventRecord(at=101, state=EmailState.SENT, source="Send",
                         delivery_id=claimed[1].delivery_id),
    )  # fmt: skip
    ledger.deliveries.record_sent_slice([(c, f"m-{c.row_number}") for c in claimed], now=102)
    for row in range(1, 5):
        stored = ledger.deliveries.get("f-batch", row)
        assert stored is not None
        assert stored.state == EmailState.SENT
        assert stored.message_id == f"m-{row}"
    assert [h.source for h in ledger.deliveries.get("f-batch", 1).history] == ["claim", "send"]


def test_the_recorded_slice_is_sent(ledger):
    claimed = ledger.deliveries.claim_slice(_slice(range(1, 4)), now=100)
    ledger.deliveries.record_sent_slice([(c, f"m-{c.row_number}") for c in claimed], now=102)
    assert dict(ledger.deliveries.states("f-batch")) == {
        1: EmailState.SENT, 2: EmailState.SENT, 3: EmailState.SENT,
    }  # fmt: skip
