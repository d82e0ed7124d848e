"""``voucher-distributor reconcile``: the ledger's chunks against Certiverse's purchases."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from voucher_distributor.adapters.certiverse import CertiverseClient
from voucher_distributor.domain.batches import stack_tag, trailing_marker
from voucher_distributor.models.certiverse import PartnerVoucherPurchaseModel
from voucher_distributor.models.ledger import BatchRecord, ChunkRecord, ChunkState
from voucher_distributor_cli.ops.target import Target


@dataclass
class Reconciliation:
    """What the ledger and Certiverse disagree on; empty lists mean they agree."""

    chunks: int = 0
    purchases_seen: int = 0
    unknown_purchases: list[dict[str, Any]] = field(default_factory=list)
    chunks_without_purchase: list[dict[str, Any]] = field(default_factory=list)
    count_mismatches: list[dict[str, Any]] = field(default_factory=list)
    #: Codes Certiverse holds assigned to another e-mail than their holder (the redemption
    #: sync's last look): that person cannot book with an enforced assignment.
    email_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.unknown_purchases
            or self.chunks_without_purchase
            or self.count_mismatches
            or self.email_mismatches
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "chunks": self.chunks,
            "purchasesSeen": self.purchases_seen,
            "unknownPurchases": self.unknown_purchases,
            "chunksWithoutPurchase": self.chunks_without_purchase,
            "countMismatches": self.count_mismatches,
            "emailMismatches": self.email_mismatches,
        }


_BOUGHT = {ChunkState.PURCHASED, ChunkState.ASSIGNED}


def iter_all_chunks(target: Target) -> Iterator[ChunkRecord]:
    """Every chunk of every batch, state by state from the ``chunks-by-state`` index (chunk
    items only: no assignment, holding or batch is read)."""
    return target.ledger.chunks.iter_chunks_by_state()


def reconcile(  # noqa: PLR0912 - one branch per kind of disagreement
    target: Target,
    certiverse: CertiverseClient,
    *,
    batch_id: str | None = None,
    now: float | None = None,
    stale_after_s: int = 3600,
) -> Reconciliation:
    """Compare our chunks with Certiverse's purchases and vouchers.

    * a purchase carrying our marker that no chunk records (a duplicate buy, or a chunk whose
      state write was lost and never adopted it);
    * a chunk recorded as bought whose purchase Certiverse does not have, or one that has waited
      longer than ``stale_after_s`` without a purchase;
    * a purchase whose quantity, or whose listed vouchers (for assigned chunks), or whose
      assignments in the ledger differ from the chunk's quantity.
    """
    now_s = int(time.time() if now is None else now)
    chunks = list(
        iter_all_chunks(target) if batch_id is None else target.ledger.chunks.iter_chunks(batch_id)
    )
    report = Reconciliation(chunks=len(chunks))
    ours = {(c.batch_id, c.chunk_no): c for c in chunks}
    by_code = {c.purchase_code: c for c in chunks if c.purchase_code}
    batches = {c.batch_id for c in chunks}
    purchases: dict[str, PartnerVoucherPurchaseModel] = {}
    for partner, program in sorted({(c.partner_name, c.program_name) for c in chunks}):
        for purchase in certiverse.iter_pair_purchases(partner_name=partner, program_name=program):
            purchases[purchase.voucher_purchase_code] = purchase
    report.purchases_seen = len(purchases)
    # Only this stack's markers (another stack on the account buys for its own batches).
    stack_id = target.function_env.get("STACK_ID")
    stack = stack_tag(stack_id) if stack_id else None
    for code, purchase in sorted(purchases.items()):
        marker = trailing_marker(purchase.notes)
        if marker is not None and (stack is None or marker[0] == stack):
            key = (marker[1], marker[2])
            if batch_id is not None and key[0] != batch_id:
                continue
            chunk = ours.get(key)
            if code not in by_code:
                report.unknown_purchases.append(
                    {
                        "purchaseCode": code,
                        "batchId": key[0],
                        "chunk": key[1],
                        "quantity": purchase.quantity,
                        "status": str(purchase.status),
                        "chunkState": chunk.state.value if chunk else None,
                        "chunkPurchaseCode": chunk.purchase_code if chunk else None,
                    }
                )
    assigned_rows = _assigned_rows_by_chunk(target, batches, report.email_mismatches)
    created: dict[str, int] = {}
    for chunk in chunks:
        where = {"batchId": chunk.batch_id, "chunk": chunk.chunk_no}
        if chunk.purchase_code is None:
            waited = now_s - _created_at(target, chunk.batch_id, created)
            if chunk.state in _BOUGHT or (
                chunk.state in {ChunkState.PENDING, ChunkState.PURCHASING}
                and waited > stale_after_s
            ):
                report.chunks_without_purchase.append(
                    {**where, "state": chunk.state.value, "waitedSeconds": waited}
                )
            continue
        found = purchases.get(chunk.purchase_code)
        if found is None:
            report.chunks_without_purchase.append(
                {
                    **where,
                    "state": chunk.state.value,
                    "purchaseCode": chunk.purchase_code,
                    "problem": "Certiverse has no purchase with this code",
                }
            )
            continue
        purchase = found
        if purchase.quantity != chunk.quantity:
            report.count_mismatches.append(
                {
                    **where,
                    "purchaseCode": chunk.purchase_code,
                    "what": "purchase quantity",
                    "ledger": chunk.quantity,
                    "certiverse": purchase.quantity,
                }
            )
        if chunk.state == ChunkState.ASSIGNED:
            vouchers = sum(1 for _ in certiverse.iter_vouchers(purchase_code=chunk.purchase_code))
            if vouchers != chunk.quantity:
                report.count_mismatches.append(
                    {
                        **where,
                        "purchaseCode": chunk.purchase_code,
                        "what": "vouchers listed",
                        "ledger": chunk.quantity,
                        "certiverse": vouchers,
                    }
                )
            rows = assigned_rows.get((chunk.batch_id, chunk.chunk_no), 0)
            if rows != chunk.quantity:
                report.count_mismatches.append(
                    {
                        **where,
                        "purchaseCode": chunk.purchase_code,
                        "what": "rows assigned",
                        "ledger": rows,
                        "certiverse": chunk.quantity,
                    }
                )
    return report


def _assigned_rows_by_chunk(
    target: Target, batches: Iterable[str], mismatches: list[dict[str, Any]]
) -> Counter[tuple[str, int]]:
    """Assigned rows per chunk; codes assigned to another e-mail in Certiverse go to
    ``mismatches`` on the way (one read of the assignments serves both)."""
    counts: Counter[tuple[str, int]] = Counter()
    for batch in sorted(batches):
        for record in target.ledger.assignments.iter_assignments(batch):
            if record.status == "assigned":
                counts[(batch, record.chunk_no)] += 1
            if record.redemption is not None and record.redemption.email_mismatch:
                mismatches.append(
                    {
                        "batchId": batch,
                        "row": record.row_number,
                        "voucherCode": record.voucher_code,
                        "holder": record.email,
                        "certiverseEmail": record.redemption.certiverse_email,
                        "program": record.program_name,
                    }
                )
    return counts


def _created_at(target: Target, batch_id: str, cache: dict[str, int]) -> int:
    if batch_id not in cache:
        batch: BatchRecord | None = target.ledger.batches.get_batch(batch_id)
        cache[batch_id] = batch.created_at if batch else 0
    return cache[batch_id]


def format_reconciliation(report: Reconciliation) -> str:
    lines = [
        f"{report.chunks} chunk(s) in the ledger, {report.purchases_seen} purchase(s) at "
        "Certiverse for their partner/program pairs"
    ]
    sections = (
        ("purchases we do not know", report.unknown_purchases),
        ("chunks without a purchase", report.chunks_without_purchase),
        ("count mismatches", report.count_mismatches),
        (
            "codes assigned in Certiverse to another e-mail than their holder",
            report.email_mismatches,
        ),
    )
    for title, items in sections:
        lines.append(f"{title}: {len(items) or 'none'}")
        lines.extend(f"  {json.dumps(item, default=str)}" for item in items)
    return "\n".join(lines)
