"""The stage's daily voucher counts (written with a batch's plan, in ``batches``)."""

from __future__ import annotations

from voucher_distributor.adapters.ledger.table import (
    COUNTER_PK,
    Store,
    day_sk,
)


class CountStore(Store):
    """One item per UTC day."""

    def vouchers_counted(self, day: str) -> int:
        """Vouchers bought (or being bought) on ``day`` by every batch of the stage."""
        got = self._table.get_item(Key={"pk": COUNTER_PK, "sk": day_sk(day)}, ConsistentRead=True)
        return int((got.get("Item") or {}).get("used", 0))
