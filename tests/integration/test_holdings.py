"""Holdings in the ledger (moto, the template's table): one voucher per person per program."""

from __future__ import annotations

import threading

import pytest

from voucher_distributor.adapters.ledger import Claim, Ledger
from voucher_distributor.models.ledger import AssignmentRecord

from ..invariants import iter_holdings


def claim(batch: str, row: int, email: str = "ann@acme.example", **kw: object) -> Claim:
    return Claim(email, "Acme Corp", "Spring Drive", batch, row, **kw)  # type: ignore[arg-type]


def assigned(batch: str, row: int, code: str) -> AssignmentRecord:
    return AssignmentRecord(
        batch_id=batch, row_number=row, email="ann@acme.example", partner_name="Acme Corp",
        program_name="Spring Drive", chunk_no=0, status="assigned", voucher_code=code,
        purchase_code="VP-1", expires_utc="2027-01-01T00:00:00Z",
    )  # fmt: skip


def test_first_claim_wins_and_a_replay_gets_its_claim_back(ledger: Ledger) -> None:
    assert [o.kind for o in ledger.holdings.claim_holdings([claim("f-a", 1)], now=10)] == [
        "claimed"
    ]
    assert ledger.holdings.claim_holdings([claim("f-a", 1)], now=11)[0].kind == "claimed"
    other = ledger.holdings.claim_holdings([claim("f-b", 4)], now=12)[0]
    assert other.kind == "held"
    assert other.holding is not None
    assert (other.holding.batch_id, other.holding.row_number) == ("f-a", 1)
    # Names compare case-insensitively: the same program, whatever the spelling.
    spelled = Claim("ann@acme.example", "ACME CORP", "spring drive", "f-c", 2)
    assert ledger.holdings.claim_holdings([spelled], now=13)[0].kind == "held"


def test_concurrent_claims_of_the_same_people_buy_once_per_person(ledger: Ledger) -> None:
    people = [f"p{i}@acme.example" for i in range(40)]
    outcomes: dict[str, list[str]] = {}

    def run(batch: str) -> None:
        got = ledger.holdings.claim_holdings(
            [claim(batch, i, p) for i, p in enumerate(people)], now=1
        )
        outcomes[batch] = [o.kind for o in got]

    threads = [threading.Thread(target=run, args=(f"f-{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index in range(len(people)):
        kinds = [outcomes[f"f-{n}"][index] for n in range(4)]
        assert sorted(kinds) == ["claimed", "held", "held", "held"], people[index]
    assert len(list(iter_holdings(ledger))) == 40
    assert len(ledger.holdings.holdings_for_email("p7@acme.example")) == 1


def test_reissue_moves_the_holding_and_keeps_history(ledger: Ledger) -> None:
    ledger.holdings.claim_holdings([claim("f-a", 1)], now=10)
    ledger.assignments.put_assignments([assigned("f-a", 1, "OLD-CODE")])
    outcome = ledger.holdings.claim_holdings([claim("f-b", 3, reissue=True)], now=20)[0]
    assert outcome.kind == "reissued"
    assert outcome.previous is not None
    assert outcome.previous.voucher_code == "OLD-CODE"
    # Replayed: the same answer, history not doubled.
    again = ledger.holdings.claim_holdings([claim("f-b", 3, reissue=True)], now=21)[0]
    assert again.kind == "reissued"
    assert again.previous is not None
    assert again.previous.voucher_code == "OLD-CODE"
    holding = ledger.holdings.get_holding("ann@acme.example", "Acme Corp", "Spring Drive")
    assert holding is not None
    assert (holding.batch_id, holding.row_number) == ("f-b", 3)
    assert [h.voucher_code for h in holding.history] == ["OLD-CODE"]

    # The reissue failed: the holding goes back to the voucher it replaced.
    assert ledger.holdings.release_holding(claim("f-b", 3))
    assert not ledger.holdings.release_holding(claim("f-b", 3))
    holding = ledger.holdings.get_holding("ann@acme.example", "Acme Corp", "Spring Drive")
    assert holding is not None
    assert (holding.batch_id, holding.row_number, holding.history) == ("f-a", 1, [])


def test_release_removes_a_first_claim_only_for_its_own_row(ledger: Ledger) -> None:
    ledger.holdings.claim_holdings([claim("f-a", 1)], now=10)
    assert not ledger.holdings.release_holding(claim("f-b", 1))
    assert ledger.holdings.release_holdings([claim("f-a", 1)]) == 1
    assert ledger.holdings.get_holding("ann@acme.example", "Acme Corp", "Spring Drive") is None
    assert ledger.holdings.claim_holdings([claim("f-b", 1)], now=11)[0].kind == "claimed"


def test_holdings_stay_out_of_the_assignment_index(ledger: Ledger) -> None:
    ledger.holdings.claim_holdings([claim("f-a", 1)], now=10)
    ledger.assignments.put_assignments([assigned("f-a", 1, "CODE-1")])
    found = ledger.assignments.assignments_for_email("ann@acme.example")
    assert [a.voucher_code for a in found] == ["CODE-1"]
    assert ledger.assignments.get_assignments([("f-a", 1), ("f-a", 2)]).keys() == {("f-a", 1)}


def test_a_transaction_cancelled_by_a_concurrent_one_goes_again(ledger: Ledger) -> None:
    """DynamoDB cancels a transaction that races another on the same items
    (TransactionConflict); the emulation never does, so the answer is given at the wire."""
    from botocore.stub import Stubber

    claims = [claim("f-a", 1, "x@acme.example"), claim("f-a", 2, "y@acme.example")]
    wire = ledger.table.wire
    with Stubber(wire) as stub:
        stub.add_client_error(
            "transact_write_items",
            service_error_code="TransactionCanceledException",
            modeled_fields={
                "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}]
            },
        )
        stub.add_response("transact_write_items", {})
        outcomes = ledger.holdings.claim_holdings(claims, now=5)
        stub.assert_no_pending_responses()
    assert [o.kind for o in outcomes] == ["claimed", "claimed"]


def _cancelled(stub: object, *codes: str) -> None:
    stub.add_client_error(  # type: ignore[attr-defined]
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        modeled_fields={"CancellationReasons": [{"Code": c} for c in codes]},
    )


def test_a_throttled_claim_backs_off_and_goes_again(ledger: Ledger) -> None:
    """Throttling is retryable: the transaction goes again after a pause, and succeeds."""
    from botocore.stub import Stubber

    claims = [claim("f-a", 1, "x@acme.example"), claim("f-a", 2, "y@acme.example")]
    with Stubber(ledger.table.wire) as stub:
        _cancelled(stub, "ThrottlingError", "None")
        _cancelled(stub, "None", "ProvisionedThroughputExceeded")
        stub.add_response("transact_write_items", {})
        outcomes = ledger.holdings.claim_holdings(claims, now=5)
        stub.assert_no_pending_responses()
    assert [o.kind for o in outcomes] == ["claimed", "claimed"]


def test_throttling_that_never_ends_is_capped(ledger: Ledger) -> None:
    """A retryable reason is retried a bounded number of times, then the ledger error goes up
    (SQS retries the message later) instead of spinning until the ingest times out."""
    from botocore.stub import Stubber

    from voucher_distributor.adapters.ledger.table import LedgerError

    claims = [claim("f-a", 1, "x@acme.example"), claim("f-a", 2, "y@acme.example")]
    with Stubber(ledger.table.wire) as stub:
        for _ in range(40):  # more than any bound worth having
            _cancelled(stub, "ThrottlingError", "None")
        with pytest.raises(LedgerError, match="ThrottlingError"):
            ledger.holdings.claim_holdings(claims, now=5)
        left = len(stub._queue)
    assert left >= 30


@pytest.mark.parametrize("reason", ["ValidationError", "ItemCollectionSizeLimitExceeded"])
def test_a_cancellation_that_never_heals_raises_at_once(ledger: Ledger, reason: str) -> None:
    """A validation error does not heal by retrying: raise on the first one, for claims and
    for releases alike."""
    from botocore.stub import Stubber

    from voucher_distributor.adapters.ledger.table import LedgerError

    claims = [claim("f-a", 1, "x@acme.example"), claim("f-a", 2, "y@acme.example")]
    with Stubber(ledger.table.wire) as stub:
        for _ in range(5):
            _cancelled(stub, reason, "None")
        with pytest.raises(LedgerError, match=reason):
            ledger.holdings.claim_holdings(claims, now=5)
        assert len(stub._queue) == 4
        with pytest.raises(LedgerError, match=reason):
            ledger.holdings.release_holdings(claims)
        assert len(stub._queue) == 3
