"""Adoption after an unknown outcome adopts only our own purchase of the chunk (issue 23, item
9): a marker of another stack, a marker a submitter typed, or a purchase of another size or
program is someone else's, and adopting it would give one code to two people."""

from __future__ import annotations

from voucher_distributor.domain.batches import purchase_notes, stack_tag
from voucher_distributor.models.certiverse import VoucherPurchaseCreateCommand
from voucher_distributor.pipeline.purchase import find_chunk_purchase, purchase_chunk

from .purchase_rig import PARTNER, SPRING, Rig, rig

__all__ = ["rig"]


def _retried(rig: Rig, batch_id: str) -> None:
    """A first worker took the chunk and died (its lease long over): the next is attempt 2,
    which looks for an earlier purchase before buying."""
    assert rig.ledger.chunks.acquire_purchase_lease(
        batch_id, 0, owner="dead", now=0, lease_seconds=1
    )


def _buy(rig: Rig, notes: str, quantity: int, program: str = SPRING) -> str:
    bought = rig.services.certiverse.create_purchase(
        VoucherPurchaseCreateCommand(
            notes=notes, partner_name=PARTNER, program_name=program, quantity=quantity
        )
    )
    return bought.voucher_purchase_code


def _bought_code(rig: Rig, batch_id: str) -> str | None:
    chunk = rig.ledger.chunks.get_chunk(batch_id, 0)
    assert chunk is not None
    return chunk.purchase_code


def test_another_stacks_purchase_of_the_same_batch_id_is_not_adopted(rig: Rig) -> None:
    """Staging and production on one Certiverse account both receive requestId X: the same
    batch id. Production's retry must not adopt staging's purchase."""
    ours = rig.with_settings(stack_id="arn:aws:cloudformation:us-east-1:1:stack/prod/1")
    staging = stack_tag("arn:aws:cloudformation:us-east-1:1:stack/staging/2")
    theirs = _buy(rig, purchase_notes("", "r-shared", 0, staging), quantity=3)
    rig.add_batch("r-shared", 3)
    _retried(rig, "r-shared")
    assert purchase_chunk(ours, "r-shared", 0, owner="w2", receive_count=2) == "assigned"
    mine = _bought_code(rig, "r-shared")
    assert mine is not None
    assert mine != theirs
    assert len(rig.sandbox.purchases()) == 2


def test_a_marker_typed_into_notes_is_stripped_and_never_matched(rig: Rig) -> None:
    """A submitter types the victim chunk's marker into their batch's notes: their purchase's
    notes do not carry it, and the victim's retry buys its own."""
    services = rig.services
    victim_marker = f"[vd:{stack_tag(services.settings.stack_id)}:f-victim:00000]"
    rig.add_batch("f-typer", 3, notes=f"team Q3 {victim_marker}")
    assert purchase_chunk(services, "f-typer", 0, owner="w1") == "assigned"
    typed = rig.sandbox.purchases()[0]
    assert "[vd:" not in typed.notes.removesuffix(typed.notes[typed.notes.rindex("[vd:") :])
    rig.add_batch("f-victim", 3)
    victim = rig.ledger.chunks.get_chunk("f-victim", 0)
    assert victim is not None
    assert find_chunk_purchase(services, victim) is None
    # And a purchase made by hand with the marker anywhere but at the end is not ours either.
    _buy(rig, f"{victim_marker} by hand", quantity=3)
    assert find_chunk_purchase(services, victim) is None


def test_a_purchase_of_another_size_or_program_is_not_adopted(rig: Rig) -> None:
    services = rig.services
    marker = purchase_notes("", "f-sized", 0, stack_tag(services.settings.stack_id))
    wrong_size = _buy(rig, marker, quantity=1)
    rig.add_batch("f-sized", 3)
    chunk = rig.ledger.chunks.get_chunk("f-sized", 0)
    assert chunk is not None
    assert find_chunk_purchase(services, chunk) is None
    right = _buy(rig, marker, quantity=3)
    found = find_chunk_purchase(services, chunk)
    assert found is not None
    assert found.voucher_purchase_code == right != wrong_size
