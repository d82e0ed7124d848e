"""The DynamoDB ledger: one table, one store per aggregate.

Chunk state only moves through conditional writes. An ended chunk carries its own counts and is
added to the batch's ``finished_chunks`` number set, an idempotent write: replays never count
twice. The use cases reach a store through :class:`Ledger` (``ledger.batches.get_batch(...)``);
each store's module says which keys it owns (see ``table``).
"""

from __future__ import annotations

from typing import Any

from voucher_distributor.adapters.ledger.assignments import AssignmentStore
from voucher_distributor.adapters.ledger.batches import BatchStore
from voucher_distributor.adapters.ledger.chunks import ChunkStore
from voucher_distributor.adapters.ledger.counts import CountStore
from voucher_distributor.adapters.ledger.deliveries import DeliveryStore
from voucher_distributor.adapters.ledger.holdings import Claim, ClaimOutcome, HoldingStore
from voucher_distributor.adapters.ledger.outbox import OutboxStore
from voucher_distributor.adapters.ledger.requests import ApiRequestStore
from voucher_distributor.adapters.ledger.resends import ResendStore
from voucher_distributor.adapters.ledger.sends import SendStore
from voucher_distributor.adapters.ledger.signatures import SignatureStore
from voucher_distributor.adapters.ledger.table import EMAIL_INDEX, LedgerError, LedgerTable
from voucher_distributor.adapters.ledger.templates import TemplateStore
from voucher_distributor.adapters.ledger.tracking import TrackingStore

__all__ = [
    "EMAIL_INDEX",
    "Claim",
    "ClaimOutcome",
    "Ledger",
    "LedgerError",
    "LedgerTable",
]


class Ledger:
    """Every store over one table, built once per process."""

    def __init__(self, table_name: str, *, dynamodb: Any = None, claim_workers: int = 16) -> None:
        # Room in the connection pool for every claim worker (botocore keeps 10 by default).
        self.table = LedgerTable(table_name, dynamodb=dynamodb, pool=claim_workers + 2)
        self.table_name = table_name
        self.batches = BatchStore(self.table)
        self.chunks = ChunkStore(self.table)
        self.assignments = AssignmentStore(self.table)
        self.holdings = HoldingStore(self.table, self.assignments, claim_workers=claim_workers)
        self.outbox = OutboxStore(self.table)
        self.requests = ApiRequestStore(self.table)
        self.signatures = SignatureStore(self.table)
        self.tracking = TrackingStore(self.table)
        self.counts = CountStore(self.table)
        self.deliveries = DeliveryStore(self.table)
        self.resends = ResendStore(self.table)
        self.templates = TemplateStore(self.table)
        self.sends = SendStore(self.table)
