"""Regression: a worker buys only with a whole lease ahead (found by the race fault: a chunk
bought twice when the first worker's look-ups outlasted its lease)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor_cli.local.runner import MotoStack

from ..integration.moto_stack import TEMPLATE, stack_ledger
from ..integration.test_ledger import batch, chunk


@pytest.fixture
def leased() -> Iterator[Ledger]:
    with MotoStack(TEMPLATE) as stack:
        ledger = stack_ledger(stack)
        ledger.batches.create_batch(batch())
        ledger.chunks.put_chunk_if_absent(chunk())
        assert ledger.chunks.acquire_purchase_lease("f-1", 0, owner="a", now=100, lease_seconds=10)
        yield ledger


def test_a_live_lease_is_renewed_for_a_whole_period(leased: Ledger) -> None:
    assert leased.chunks.renew_purchase_lease("f-1", 0, owner="a", now=109, lease_seconds=10)
    assert leased.chunks.get_chunk("f-1", 0).lease_until == 119
    # so a second worker at 112 cannot take it over while the POST is in flight
    assert (
        leased.chunks.acquire_purchase_lease("f-1", 0, owner="b", now=112, lease_seconds=10) is None
    )


def test_an_expired_lease_is_not_renewed(leased: Ledger) -> None:
    assert not leased.chunks.renew_purchase_lease("f-1", 0, owner="a", now=111, lease_seconds=10)


def test_another_workers_lease_is_not_renewed(leased: Ledger) -> None:
    assert leased.chunks.acquire_purchase_lease("f-1", 0, owner="b", now=111, lease_seconds=10)
    assert not leased.chunks.renew_purchase_lease("f-1", 0, owner="a", now=112, lease_seconds=10)
