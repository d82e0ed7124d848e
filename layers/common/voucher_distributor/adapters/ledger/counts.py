"""The stage's daily voucher counts (written with a batch's plan, in ``batches``; a failed
chunk's vouchers given back here)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger.table import (
    COUNTER_PK,
    Store,
    batch_pk,
    cancellation_reasons,
    chunk_sk,
    conditional_failed,
    day_sk,
)
from voucher_distributor.models.ledger import ChunkState


class CountStore(Store):
    """One item per UTC day."""

    def vouchers_counted(self, day: str) -> int:
        """Vouchers bought (or being bought) on ``day`` by every batch of the stage."""
        got = self._table.get_item(Key={"pk": COUNTER_PK, "sk": day_sk(day)}, ConsistentRead=True)
        return int((got.get("Item") or {}).get("used", 0))

    def give_back_failed_chunk(self, batch_id: str, chunk_no: int, *, day: str, count: int) -> bool:
        """A failed chunk bought nothing: take its ``count`` vouchers off ``day``'s count, once.

        One transaction with the chunk item, which records the day given back to
        (``count_given_back``) only while the chunk is FAILED and has not given back yet: a
        repeat (a later delivery, a second worker) takes nothing more off. False when it had.
        """
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"pk": batch_pk(batch_id), "sk": chunk_sk(chunk_no)},
                            "UpdateExpression": "SET count_given_back = :day",
                            "ConditionExpression": (
                                "#state = :failed AND attribute_not_exists(count_given_back)"
                            ),
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": {
                                ":day": day,
                                ":failed": ChunkState.FAILED.value,
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"pk": COUNTER_PK, "sk": day_sk(day)},
                            "UpdateExpression": "ADD used :minus",
                            "ConditionExpression": "attribute_exists(used)",
                            "ExpressionAttributeValues": {":minus": -count},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if not conditional_failed(exc):
                raise
            reasons = cancellation_reasons(exc, 2)
            if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                return False  # given back already (or the day was never counted)
            raise  # a conflict or throttling: the delivery goes again, and so does this
        return True
