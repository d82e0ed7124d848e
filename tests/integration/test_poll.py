"""The poll stage under duplicates and a failing Certiverse (issue 23, item 11): a duplicated
poll message never doubles the chain, and the deadline is looked at first."""

from __future__ import annotations

import time

from voucher_distributor.models.ledger import ChunkState
from voucher_distributor.pipeline.poll import poll_chunk
from voucher_distributor.pipeline.purchase import purchase_chunk
from voucher_distributor_cli.sandbox import FaultSettings

from .purchase_rig import Rig, rig

__all__ = ["rig"]


def _waiting(rig: Rig, batch_id: str) -> dict:  # type: ignore[type-arg]
    """A chunk bought whose codes take a minute: the purchase hands over to one poll message."""
    rig.sandbox.set_faults(FaultSettings(generation_delay_s=600))
    rig.add_batch(batch_id, 2)
    assert purchase_chunk(rig.services, batch_id, 0, owner="w1") == "polling"
    (message,) = rig.visible("PollQueue")
    assert message["attempt"] == 1
    return message


def test_a_duplicated_poll_message_does_not_double_the_chain(rig: Rig) -> None:
    first = _waiting(rig, "f-dup-poll")
    # SQS delivers the message twice (at-least-once): both copies run, one after the other.
    assert poll_chunk(rig.services, "f-dup-poll", 0, 1, first["token"]) == "polling"
    assert poll_chunk(rig.services, "f-dup-poll", 0, 1, first["token"]) == "duplicate"
    (second,) = rig.visible("PollQueue")  # one chain goes on
    assert second["attempt"] == 2
    # The purchase message redelivered on the bought chunk starts no second chain either.
    assert purchase_chunk(rig.services, "f-dup-poll", 0, owner="w2") == "polling"
    assert rig.visible("PollQueue") == []
    chunk = rig.ledger.chunks.get_chunk("f-dup-poll", 0)
    assert chunk is not None
    assert (chunk.poll_attempt, chunk.poll_token) == (2, second["token"])
    assert poll_chunk(rig.services, "f-dup-poll", 0, 2, second["token"]) == "polling"


def test_two_copies_racing_hand_over_once(rig: Rig) -> None:
    """Two copies of one step both read the chunk before either hands over: both send, one
    hands over, and the other's message is dropped when it arrives."""
    first = _waiting(rig, "f-race-poll")
    chunk = rig.ledger.chunks.get_chunk("f-race-poll", 0)
    assert chunk is not None
    from voucher_distributor.pipeline.poll import _schedule_poll

    _schedule_poll(rig.services, chunk, attempt=2, after=first["token"])  # copy A
    _schedule_poll(rig.services, chunk, attempt=2, after=first["token"])  # copy B, same read
    sent = rig.visible("PollQueue")
    assert len(sent) == 2
    outcomes = sorted(poll_chunk(rig.services, "f-race-poll", 0, 2, m["token"]) for m in sent)
    assert outcomes == ["duplicate", "polling"]
    assert len(rig.visible("PollQueue")) == 1


def test_past_the_deadline_a_failing_certiverse_fails_the_chunk(rig: Rig) -> None:
    """The deadline is looked at first: past it, a Certiverse that keeps answering 503 no longer
    keeps the chunk PURCHASED (before: the error went up, the message back, until the DLQ)."""
    first = _waiting(rig, "f-late")
    later = rig.with_settings(clock=lambda: time.time() + 2 * 86_400)
    rig.sandbox.set_faults(FaultSettings(error_503_rate=1.0, retry_after_s=0))
    try:
        assert poll_chunk(later, "f-late", 0, 1, first["token"]) == "failed"
    finally:
        rig.sandbox.set_faults(FaultSettings())
    chunk = rig.ledger.chunks.get_chunk("f-late", 0)
    assert chunk is not None
    assert chunk.state == ChunkState.FAILED
    assert "deadline" in (chunk.failure_reason or "")
    assert "last look failed" in (chunk.failure_reason or "")
