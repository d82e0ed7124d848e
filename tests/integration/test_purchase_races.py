"""Two workers on one chunk, their steps run in a chosen order (issue 23): the purchase stage's
use cases against moto and the sandbox, Certiverse's faults injected at the wire."""

from __future__ import annotations

import contextlib

from voucher_distributor.models.ledger import ChunkState
from voucher_distributor.pipeline.poll import check_codes

from .purchase_rig import TOKEN, Rig, rig

__all__ = ["rig"]


def _bought(rig: Rig, batch_id: str, people: int = 3):
    """A chunk bought and recorded (PURCHASED), as every worker that reads it then sees it."""
    rig.add_batch(batch_id, people)
    ledger, services = rig.ledger, rig.services
    leased = ledger.chunks.acquire_purchase_lease(
        batch_id, 0, owner="w", now=services.now(), lease_seconds=60
    )
    assert leased is not None
    from voucher_distributor.pipeline.purchase import _buy_or_adopt

    purchase, _ = _buy_or_adopt(services, leased)
    assert ledger.chunks.record_purchase(
        batch_id, 0, owner="w", purchase_code=purchase.voucher_purchase_code,
        purchase_id=purchase.id, purchased_at=services.now(),
        deadline_at=services.now() + 3600, adopted=False,
    )  # fmt: skip
    chunk = ledger.chunks.get_chunk(batch_id, 0)
    assert chunk is not None
    assert chunk.state == ChunkState.PURCHASED
    return chunk


def test_a_worker_that_loses_the_end_does_not_write_over_the_winner(rig: Rig) -> None:
    """Workers A and B both read the chunk PURCHASED. A sees the codes and assigns them; then B,
    whose look at Certiverse meets a revoked token, fails the chunk. B's end loses: the ledger
    keeps A's assignments, which agree with the outcome file that won."""
    chunk = _bought(rig, "f-race-end")
    seen_by_a = seen_by_b = chunk  # both read it before either ended it
    assert check_codes(rig.services, seen_by_a) == "assigned"
    rig.sandbox.set_token("a-new-token")  # B's call: 401 at the wire, so B fails the chunk
    try:
        assert check_codes(rig.services, seen_by_b) == "failed"
    finally:
        rig.sandbox.set_token(TOKEN)
    ended = rig.ledger.chunks.get_chunk("f-race-end", 0)
    assert ended is not None
    assert ended.state == ChunkState.ASSIGNED
    items = list(rig.ledger.assignments.iter_assignments("f-race-end"))
    assert [(a.row_number, a.status) for a in items] == [
        (1, "assigned"),
        (2, "assigned"),
        (3, "assigned"),
    ]
    assert all(a.voucher_code for a in items)
    codes = {v.voucher_code for v in rig.sandbox.vouchers()}
    assert {a.voucher_code for a in items} <= codes


def test_a_winner_that_died_before_its_items_is_made_good_by_the_loser(rig: Rig) -> None:
    """A ends the chunk (assigned) and dies before writing its assignment items; B then loses
    the end: B writes the winner's items from the winning outcome file, not its own."""
    chunk = _bought(rig, "f-race-died")
    from voucher_distributor.domain.batches import work_key
    from voucher_distributor.domain.outcomes import outcomes_file

    class Died(BaseException):
        """Worker A's process ends here (not an error the code could catch)."""

    written = []

    def dies(**_: object) -> None:  # at the wire: A's first write of assignment items
        written.append(True)
        raise Died

    events = rig.ledger.table.client.meta.events
    events.register_first("before-call.dynamodb.BatchWriteItem", dies, unique_id="a-dies")
    try:
        with contextlib.suppress(Died):
            check_codes(rig.services, chunk)
    finally:
        events.unregister("before-call.dynamodb.BatchWriteItem", unique_id="a-dies")
    assert written, "A ended the chunk first"
    assert rig.ledger.chunks.get_chunk("f-race-died", 0).state == ChunkState.ASSIGNED
    assert list(rig.ledger.assignments.iter_assignments("f-race-died")) == []
    rig.sandbox.set_token("a-new-token")
    try:
        assert check_codes(rig.services, chunk) == "failed"  # B, on its stale read
    finally:
        rig.sandbox.set_token(TOKEN)
    items = list(rig.ledger.assignments.iter_assignments("f-race-died"))
    assert [a.status for a in items] == ["assigned"] * 3
    won = rig.services.storage.read_records(
        work_key("f-race-died", outcomes_file(0, ChunkState.ASSIGNED)), type(items[0])
    )
    assert [a.voucher_code for a in items] == [a.voucher_code for a in won]
