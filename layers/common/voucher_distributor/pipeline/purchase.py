"""Buy each chunk exactly once, wait for its codes, and give one code to each recipient.

The purchase POST has no idempotency key. The protocol that keeps it exactly-once:

1. A worker takes the chunk with a conditional write (PENDING → PURCHASING, or an expired
   lease), counting the attempt in the same write. The lease outlives the function timeout, so
   a crashed worker's POST is never still in flight when another worker takes over.
2. From the second attempt on, the worker first looks for a purchase whose notes carry the
   chunk's marker and adopts it instead of buying.
3. After a POST whose outcome is unknown (timeout, 5xx, dropped reply) it looks again; if the
   purchase is not there it leaves the lease to expire and lets SQS retry — the next attempt
   looks again before buying.
4. PURCHASING → PURCHASED only while the worker still holds the lease.

Waiting for the codes, assigning them and ending the chunk are
:mod:`~voucher_distributor.pipeline.poll`'s.
"""

from __future__ import annotations

from voucher_distributor.adapters.certiverse import (
    CertiverseBadRequest,
    CertiverseRecordLimitExceeded,
    CertiverseServerError,
    CertiverseUnauthorized,
    PurchaseOutcomeUnknown,
)
from voucher_distributor.domain.batches import (
    chunk_marker,
    find_marker,
    purchase_notes,
    stack_tag,
)
from voucher_distributor.models.certiverse import (
    PartnerVoucherPurchaseModel,
    VoucherPurchaseCreateCommand,
)
from voucher_distributor.models.ledger import ChunkRecord, ChunkState
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.poll import check_then_schedule, fail_chunk, settle_ended


class ChunkBusy(RuntimeError):
    """Another worker holds this chunk's purchase lease; SQS delivers the message again later."""


class LeaseLost(RuntimeError):
    """This worker's lease ended before it could buy; whoever holds the chunk now goes on."""


class PurchaseNotConfirmed(RuntimeError):
    """The POST's outcome is unknown and the purchase is not (yet) listed; retried later."""


# ---------------------------------------------------------------------- purchase


def purchase_chunk(  # noqa: PLR0911, PLR0912 - one exit per outcome of the protocol
    services: Services, batch_id: str, chunk_no: int, *, owner: str, receive_count: int = 1
) -> str:
    """Handle one purchase-queue message. Returns what happened, for logs and tests."""
    chunk = services.ledger.chunks.get_chunk(batch_id, chunk_no)
    if chunk is None:
        log.warning("chunk %s/%05d does not exist; dropping the message", batch_id, chunk_no)
        return "missing"
    if chunk.state in {ChunkState.ASSIGNED, ChunkState.FAILED}:
        settle_ended(services, chunk)
        return "already-final"
    if chunk.state == ChunkState.PURCHASED:
        return check_then_schedule(services, chunk)

    leased = services.ledger.chunks.acquire_purchase_lease(
        batch_id,
        chunk_no,
        owner=owner,
        now=services.now(),
        lease_seconds=services.settings.purchase_lease_seconds,
    )
    if leased is None:
        current = services.ledger.chunks.get_chunk(batch_id, chunk_no)
        if current is not None and current.state == ChunkState.PURCHASING:
            # Not a failure: look again once the lease is over, on a message of its own, so a
            # chunk whose holder died never rides its last receive into the DLQ.
            wait = (current.lease_until or 0) - services.now() + 1
            services.queues.send(
                services.settings.purchase_queue_url,
                {"batchId": batch_id, "chunkNo": chunk_no},
                delay_seconds=max(1, wait),
            )
            log.info("chunk %s/%05d is being bought by another worker", batch_id, chunk_no)
            return "busy"
        return purchase_chunk(
            services, batch_id, chunk_no, owner=owner, receive_count=receive_count
        )

    final_attempt = receive_count >= services.settings.max_purchase_attempts
    try:
        purchase, adopted = _buy_or_adopt(services, leased)
    except LeaseLost as exc:
        # Look again shortly: the chunk is then either taken by another worker or free to take.
        log.warning("%s", exc)
        services.queues.send(
            services.settings.purchase_queue_url,
            {"batchId": batch_id, "chunkNo": chunk_no},
            delay_seconds=1,
        )
        return "lease-lost"
    except CertiverseBadRequest as exc:
        return fail_chunk(services, leased, f"Certiverse refused the purchase: {exc.api_message}")
    except CertiverseUnauthorized as exc:
        services.metrics.count("CertiverseUnauthorized")
        reason = str(exc)
        if leased.purchase_attempts > 1:
            # An earlier attempt may have bought it and we can no longer look: say so.
            reason += (
                "; an earlier attempt may have bought this chunk: once the token is fixed, run "
                f"reconcile for marker {_marker(services, batch_id, chunk_no)}"
            )
        return fail_chunk(services, leased, reason)
    except CertiverseRecordLimitExceeded as exc:
        # Even narrowed, the look for an earlier purchase lists too many: buying blind could
        # buy twice, so it never buys; on the last delivery the chunk fails, visibly.
        if not final_attempt:
            raise
        return fail_chunk(
            services,
            leased,
            f"could not look for an earlier purchase of this chunk ({exc}); set "
            f"CertiverseApiUserEmail to the API user's e-mail, or run reconcile for marker "
            f"{_marker(services, batch_id, chunk_no)}",
        )
    except (CertiverseServerError, PurchaseNotConfirmed) as exc:
        if not final_attempt:
            raise
        return fail_chunk(
            services,
            leased,
            f"Certiverse kept failing ({exc}); if a purchase with marker "
            f"{_marker(services, batch_id, chunk_no)} exists, run reconcile",
        )

    now = services.now()
    recorded = services.ledger.chunks.record_purchase(
        batch_id,
        chunk_no,
        owner=owner,
        purchase_code=purchase.voucher_purchase_code,
        purchase_id=purchase.id,
        purchased_at=now,
        deadline_at=now + services.settings.poll_deadline_seconds,
        adopted=adopted,
    )
    if not recorded:
        # Only possible if this invocation outlived its lease; the worker that took over looks
        # for the marker before buying, so it adopts this purchase.
        log.error("lost the lease of chunk %s/%05d after buying", batch_id, chunk_no)
        return "lease-lost"
    services.metrics.count("PurchasesAdopted" if adopted else "PurchasesCreated")
    log.info(
        "chunk %s/%05d %s purchase %s (%d vouchers)",
        batch_id, chunk_no, "adopted" if adopted else "created",
        purchase.voucher_purchase_code, purchase.quantity,
    )  # fmt: skip
    bought = services.ledger.chunks.get_chunk(batch_id, chunk_no)
    assert bought is not None
    return check_then_schedule(services, bought)


def _buy_or_adopt(
    services: Services, chunk: ChunkRecord
) -> tuple[PartnerVoucherPurchaseModel, bool]:
    if chunk.purchase_attempts > 1:
        found = find_chunk_purchase(services, chunk)
        if found is not None:
            return found, True
    batch = services.ledger.batches.get_batch(chunk.batch_id)
    # The look-up above may have taken a while (retries): buy only with a whole lease ahead, so
    # no other worker can take the chunk over while this POST is in flight.
    assert chunk.lease_owner is not None
    if not services.ledger.chunks.renew_purchase_lease(
        chunk.batch_id,
        chunk.chunk_no,
        owner=chunk.lease_owner,
        now=services.now(),
        lease_seconds=services.settings.purchase_lease_seconds,
    ):
        raise LeaseLost(f"chunk {chunk.batch_id}/{chunk.chunk_no:05d}: lease over before buying")
    command = VoucherPurchaseCreateCommand(
        notes=purchase_notes(
            batch.notes if batch else "", chunk.batch_id, chunk.chunk_no, _stack(services)
        ),
        partner_name=chunk.partner_name,
        program_name=chunk.program_name,
        quantity=chunk.quantity,
    )
    try:
        return services.certiverse.create_purchase(command), False
    except PurchaseOutcomeUnknown as exc:
        log.warning("purchase of chunk %s/%05d: %s", chunk.batch_id, chunk.chunk_no, exc)
        found = find_chunk_purchase(services, chunk)
        if found is not None:
            return found, True
        raise PurchaseNotConfirmed(str(exc)) from exc


def _stack(services: Services) -> str:
    return stack_tag(services.settings.stack_id)


def _marker(services: Services, batch_id: str, chunk_no: int) -> str:
    return chunk_marker(batch_id, chunk_no, _stack(services))


def find_chunk_purchase(
    services: Services, chunk: ChunkRecord
) -> PartnerVoucherPurchaseModel | None:
    """The purchase this stack made for this chunk, if Certiverse has one.

    Its notes must end with the chunk's marker of this stack (a marker elsewhere in the notes
    was typed, not appended), and its quantity and program must be the chunk's: anything else
    is someone else's purchase, and adopting it would give one code to two people.
    """
    stack = _stack(services)
    matches = []
    for p in services.certiverse.iter_pair_purchases(
        partner_name=chunk.partner_name,
        program_name=chunk.program_name,
        purchased_by_email=services.settings.certiverse_api_user_email or None,
    ):
        if not find_marker(p.notes, chunk.batch_id, chunk.chunk_no, stack):
            continue
        if p.quantity != chunk.quantity or not _same_name(p.program_name, chunk.program_name):
            log.error(
                "chunk %s/%05d: purchase %s carries its marker but is for %d of %s, not %d of "
                "%s; not adopting it",
                chunk.batch_id, chunk.chunk_no, p.voucher_purchase_code, p.quantity,
                p.program_name, chunk.quantity, chunk.program_name,
            )  # fmt: skip
            continue
        matches.append(p)
    if len(matches) > 1:
        log.error(
            "chunk %s/%05d has %d purchases with its marker; adopting the first",
            chunk.batch_id, chunk.chunk_no, len(matches),
        )  # fmt: skip
    return min(matches, key=lambda p: p.purchase_date_utc) if matches else None


def _same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()
