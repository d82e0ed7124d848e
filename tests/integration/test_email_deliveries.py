"""The e-mail delivery records in the ledger (moto): claim before, record after, events forward."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from voucher_distributor.adapters.ledger.deliveries import parse_delivery_id
from voucher_distributor.models.email import EmailEventRecord, EmailState


def _claim(ledger, row=7, **kw):
    return ledger.deliveries.claim(
        "f-batch", row, to_address="ada@example.com", voucher_code="CODE-7", now=100, **kw
    )


def test_a_row_is_claimed_once_and_reads_unknown_until_recorded(ledger):
    claimed = _claim(ledger)
    assert claimed is not None
    assert claimed.state == EmailState.UNKNOWN
    assert parse_delivery_id(claimed.delivery_id) == ("f-batch", 7, 1)
    assert _claim(ledger) is None  # a redelivered message: nothing to send
    stored = ledger.deliveries.get("f-batch", 7)
    assert stored is not None
    assert stored.state == EmailState.UNKNOWN
    assert stored.to_address == "ada@example.com"
    assert stored.attempts == 1


def test_concurrent_claims_let_exactly_one_send(ledger):
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: _claim(ledger, row=9), range(8)))
    assert sum(1 for g in got if g is not None) == 1


def test_the_record_after_the_call_makes_it_sent_with_the_message_id(ledger):
    claimed = _claim(ledger)
    ledger.deliveries.record_sent(claimed, message_id="m-1", now=105)
    stored = ledger.deliveries.get("f-batch", 7)
    assert stored.state == EmailState.SENT
    assert stored.message_id == "m-1"
    assert stored.sent_at == 105
    assert [h.state for h in stored.history] == [EmailState.UNKNOWN, EmailState.SENT]


def test_a_send_event_before_the_record_is_kept(ledger):
    claimed = _claim(ledger)
    event = EmailEventRecord(
        at=103, state=EmailState.DELIVERED, source="Delivery", delivery_id=claimed.delivery_id,
        event_id="e-1",
    )  # fmt: skip
    ledger.deliveries.record_event("f-batch", 7, event)
    ledger.deliveries.record_sent(claimed, message_id="m-1", now=105)
    stored = ledger.deliveries.get("f-batch", 7)
    assert stored.state == EmailState.DELIVERED
    assert stored.message_id == "m-1"


def test_a_refusal_fails_the_row_with_the_reason(ledger):
    claimed = _claim(ledger)
    ledger.deliveries.record_failed(claimed, reason="MessageRejected: bad", now=101)
    stored = ledger.deliveries.get("f-batch", 7)
    assert stored.state == EmailState.FAILED
    assert stored.reason == "MessageRejected: bad"


def test_a_released_claim_can_be_claimed_again(ledger):
    claimed = _claim(ledger)
    assert ledger.deliveries.release(claimed)
    assert ledger.deliveries.get("f-batch", 7) is None
    assert _claim(ledger) is not None


def test_a_sent_row_cannot_be_released(ledger):
    claimed = _claim(ledger)
    ledger.deliveries.record_sent(claimed, message_id="m", now=101)
    assert not ledger.deliveries.release(claimed)
    assert ledger.deliveries.get("f-batch", 7).state == EmailState.SENT


def test_a_resend_is_a_new_claim_on_the_same_item(ledger):
    first = _claim(ledger)
    ledger.deliveries.record_sent(first, message_id="m-1", now=101)
    current = ledger.deliveries.get("f-batch", 7)
    again = _claim(ledger, replacing=current)
    assert again is not None
    assert again.attempts == 2
    assert again.delivery_id.endswith(".2")
    assert _claim(ledger, replacing=current) is None  # the same resend, twice: once
    assert ledger.deliveries.release(again)
    back = ledger.deliveries.get("f-batch", 7)
    assert back.state == EmailState.SENT


def test_events_move_forward_only_and_duplicates_are_dropped(ledger):
    claimed = _claim(ledger)
    ledger.deliveries.record_sent(claimed, message_id="m-1", now=101)

    def event(state, event_id, at):
        return EmailEventRecord(
            at=at, state=state, source="ses", delivery_id=claimed.delivery_id, event_id=event_id
        )

    _, changed = ledger.deliveries.record_event("f-batch", 7, event(EmailState.DELIVERED, "a", 5))
    assert changed
    _, changed = ledger.deliveries.record_event("f-batch", 7, event(EmailState.DELIVERED, "a", 5))
    assert not changed
    _, changed = ledger.deliveries.record_event("f-batch", 7, event(EmailState.DELAYED, "b", 4))
    assert not changed
    stored = ledger.deliveries.get("f-batch", 7)
    assert stored.state == EmailState.DELIVERED
    assert len(stored.history) == 4  # claim, send, delivered, the late delay


def test_an_event_for_a_row_never_mailed_finds_nothing(ledger):
    event = EmailEventRecord(at=1, state=EmailState.SENT, source="Send")
    assert ledger.deliveries.record_event("f-batch", 99, event) is None


def test_an_outcome_without_a_send_and_reads_by_batch_and_key(ledger):
    assert ledger.deliveries.put_outcome(
        "f-batch", 3, state=EmailState.FAILED, reason="template", now=1
    )
    assert not ledger.deliveries.put_outcome(
        "f-batch", 3, state=EmailState.FAILED, reason="again", now=2
    )
    _claim(ledger, row=5)
    rows = [d.row_number for d in ledger.deliveries.for_batch("f-batch")]
    assert rows == [3, 5]
    found = ledger.deliveries.get_many([("f-batch", 3), ("f-batch", 5), ("f-batch", 6)])
    assert set(found) == {("f-batch", 3), ("f-batch", 5)}
    # The delivery items are not assignments: the batch's assignments stay as they were.
    assert list(ledger.assignments.iter_assignments("f-batch")) == []


def test_a_delivery_item_joins_none_of_the_ledgers_sparse_indexes(ledger):
    claimed = _claim(ledger)
    ledger.deliveries.record_sent(claimed, message_id="m-1", now=101)
    item = ledger.table.table.get_item(Key={"pk": "B#f-batch", "sk": "E#000000007"})["Item"]
    # by-email (email), by-code (voucher_code), by-program (program_name), batches-by-status
    # (status), chunks-by-state (state): a delivery carries none of their keys.
    assert not {"email", "voucher_code", "program_name", "status", "state"} & set(item)
    assert ledger.assignments.find_voucher_code("CODE-7") is None
    assert ledger.deliveries.get("f-batch", 7).voucher_code == "CODE-7"
