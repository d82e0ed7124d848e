"""After the hand-out: the purchases the redemption sync follows, and what it learns per code."""

from __future__ import annotations

from voucher_distributor.adapters.ledger.table import (
    TRACK_OPEN,
    TRACK_SETTLED,
    Store,
    batch_pk,
    compact,
    row_sk,
    track_sk,
)
from voucher_distributor.models.ledger import RedemptionRecord, TrackedPurchase


class TrackingStore(Store):
    """Tracked purchases (``SYNC#open``, ``SYNC#settled``) and the facts on assignment items."""

    def track_purchase(self, purchase: TrackedPurchase) -> bool:
        """Follow a bought purchase's codes after the hand-out; False if already followed."""
        item = {
            "pk": TRACK_OPEN,
            "sk": track_sk(purchase.purchase_code),
            **compact(purchase.model_dump(mode="json")),
        }
        return self._put_if_absent(item)

    def open_purchases(self) -> list[TrackedPurchase]:
        """Purchases with codes that may still change: one Query."""
        return [
            TrackedPurchase.model_validate(item)
            for item in self._query_pk(TRACK_OPEN, ConsistentRead=True)
        ]

    def settled_purchases(self) -> list[TrackedPurchase]:
        """Purchases whose every code is settled (their last counts), never read again."""
        return [TrackedPurchase.model_validate(item) for item in self._query_pk(TRACK_SETTLED)]

    def record_purchase_sync(self, purchase: TrackedPurchase) -> None:
        """The counts by state of a purchase still open, after a sync."""
        self._table.update_item(
            Key={"pk": TRACK_OPEN, "sk": track_sk(purchase.purchase_code)},
            UpdateExpression="SET synced_at = :now, #counts = :counts",
            ExpressionAttributeNames={"#counts": "counts"},
            ExpressionAttributeValues={":now": purchase.synced_at, ":counts": purchase.counts},
        )

    def settle_purchase(self, purchase: TrackedPurchase) -> None:
        """Move the purchase out of the open list: one transaction of a put and a delete."""
        key = track_sk(purchase.purchase_code)
        settled = {"pk": TRACK_SETTLED, "sk": key, **compact(purchase.model_dump(mode="json"))}
        self._client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table_name, "Item": settled}},
                {"Delete": {"TableName": self.table_name, "Key": {"pk": TRACK_OPEN, "sk": key}}},
            ]
        )

    def record_redemption(self, batch_id: str, row_number: int, record: RedemptionRecord) -> None:
        """Store what Certiverse says of the code on its assignment item (the holding's code).

        The expiry notice's mark is a separate attribute, so this write never undoes it.
        """
        facts = record.model_dump(mode="json", exclude={"expiry_noticed_at"})
        self._table.update_item(
            Key={"pk": batch_pk(batch_id), "sk": row_sk(row_number)},
            UpdateExpression="SET redemption = :r",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":r": compact(facts)},
        )

    def mark_expiry_noticed(self, batch_id: str, row_number: int, *, now: int) -> bool:
        """Claim the code's one expiry notice; False if it was announced already."""
        return self._mark_once(batch_pk(batch_id), row_sk(row_number), "expiry_noticed_at", now)

    def unmark_expiry_noticed(self, batch_id: str, row_number: int, *, now: int) -> None:
        """Give the notice back (it could not be sent): the next sync announces the code."""
        self._update_if(
            Key={"pk": batch_pk(batch_id), "sk": row_sk(row_number)},
            UpdateExpression="REMOVE expiry_noticed_at",
            ConditionExpression="expiry_noticed_at = :now",
            ExpressionAttributeValues={":now": now},
        )
