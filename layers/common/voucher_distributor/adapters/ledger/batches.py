"""Batches: the batch item, its plan and daily count, approval and the report's start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger.table import (
    BATCH_SK,
    BATCH_STATUS_INDEX,
    COUNTER_PK,
    Store,
    batch_pk,
    cancellation_reasons,
    compact,
    conditional_failed,
    day_sk,
    plain,
)
from voucher_distributor.models.ledger import BatchRecord, BatchStatus


class BatchStore(Store):
    """One item per batch (``B#<batch>``/``BATCH``); its status moves by conditional writes."""

    def create_batch(self, batch: BatchRecord) -> bool:
        """Create the batch unless it exists; False means this source was seen before."""
        item = {"pk": batch_pk(batch.batch_id), "sk": BATCH_SK, **batch.model_dump(mode="json")}
        return self._put_if_absent(compact(item))

    def take_ingest_lease(
        self, batch_id: str, *, owner: str, now: int, lease_seconds: int, same_message: str = ""
    ) -> bool:
        """Take (or renew) the batch's ingest lease for ``owner``: only while the batch is
        INGESTING with no plan recorded, and nobody else holds a live lease (an owner starting
        with ``same_message``, an earlier receive of this delivery's message, does not count).
        False otherwise: another delivery is ingesting it, or has planned it."""
        held_by = "attribute_not_exists(ingest_owner) OR ingest_owner = :owner"
        values: dict[str, Any] = {
            ":owner": owner,
            ":until": now + lease_seconds,
            ":now": now,
            ":ingesting": BatchStatus.INGESTING.value,
        }
        if same_message:
            held_by += " OR begins_with(ingest_owner, :same)"
            values[":same"] = same_message
        return (
            self._update_batch_if(
                batch_id,
                UpdateExpression="SET ingest_owner = :owner, ingest_lease_until = :until",
                ConditionExpression=(
                    "#s = :ingesting AND attribute_not_exists(chunk_count) AND ("
                    f"{held_by} OR ingest_lease_until < :now)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
            )
            is not None
        )

    def holds_ingest_lease(
        self, batch_id: str, *, owner: str, now: int, lease_seconds: int
    ) -> bool:
        """Renew ``owner``'s lease, right before it gives back, fails or hands out the batch;
        False when another delivery took it over, or the plan is recorded: then this delivery
        must change nothing, since another may be ingesting (or buying) the batch.

        A lease that ran out but was not taken over is still this delivery's: only a takeover
        (``take_ingest_lease``, which changes the owner) ends it, so a slow read of a long file
        on a busy machine is never mistaken for a crash.
        """
        return (
            self._update_batch_if(
                batch_id,
                UpdateExpression="SET ingest_lease_until = :until",
                ConditionExpression=(
                    "#s = :ingesting AND attribute_not_exists(chunk_count) AND "
                    "ingest_owner = :owner"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":owner": owner,
                    ":until": now + lease_seconds,
                    ":ingesting": BatchStatus.INGESTING.value,
                },
            )
            is not None
        )

    def release_ingest_lease(self, batch_id: str, *, owner: str, **values: Any) -> bool:
        """End ``owner``'s lease at once (its delivery sent the input back), writing
        ``values`` with it; False (nothing written) if the lease is not ``owner``'s."""
        names = {f"#{k}": k for k in values}
        vals = {f":{k}": v for k, v in values.items()}
        sets = "".join(f", #{k} = :{k}" for k in values)
        return (
            self._update_batch_if(
                batch_id,
                UpdateExpression=f"SET ingest_lease_until = :over{sets}",
                ConditionExpression="ingest_owner = :owner",
                ExpressionAttributeValues={**vals, ":owner": owner, ":over": 0},
                **({"ExpressionAttributeNames": names} if names else {}),
            )
            is not None
        )

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        item = self._get(batch_pk(batch_id), BATCH_SK)
        return BatchRecord.model_validate(item) if item else None

    def update_batch(self, batch_id: str, **values: Any) -> BatchRecord:
        names = {f"#{k}": k for k in values}
        vals = {f":{k}": v for k, v in values.items()}
        sets = ", ".join(f"#{k} = :{k}" for k in values)
        got = self._table.update_item(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK},
            UpdateExpression=f"SET {sets}",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=vals,
            ReturnValues="ALL_NEW",
        )
        return BatchRecord.model_validate(plain(got["Attributes"]))

    def link_retry(self, batch_id: str, retry_batch_id: str) -> BatchRecord | None:
        """Record that ``retry_batch_id`` retries this batch's failed rows (once); the batch."""
        try:
            got = self._table.update_item(
                Key={"pk": batch_pk(batch_id), "sk": BATCH_SK},
                UpdateExpression="SET retried_by = list_append(if_not_exists(retried_by, :e), :r)",
                ConditionExpression="attribute_exists(pk) AND NOT contains(retried_by, :id)",
                ExpressionAttributeValues={":e": [], ":r": [retry_batch_id], ":id": retry_batch_id},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return self.get_batch(batch_id)
            raise
        return BatchRecord.model_validate(plain(got["Attributes"]))

    def record_plan(
        self, batch_id: str, values: Mapping[str, Any], *, day: str, count: int, limit: int
    ) -> bool:
        """Record the batch's plan and add its ``count`` vouchers to ``day``'s count, at once.

        One transaction, so concurrent batches can never together cross ``limit`` (0: none)
        and a replayed ingest never counts twice (the plan is recorded only while INGESTING).
        False, with nothing written, when the count would cross the limit.
        """
        counter: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": COUNTER_PK, "sk": day_sk(day)},
            "UpdateExpression": "ADD used :n",
            "ExpressionAttributeValues": {":n": count},
        }
        if limit:
            counter["ConditionExpression"] = "attribute_not_exists(used) OR used <= :room"
            counter["ExpressionAttributeValues"][":room"] = limit - count
        names = {f"#{k}": k for k in values}
        vals = {f":{k}": v for k, v in values.items()}
        batch = {
            "TableName": self.table_name,
            "Key": {"pk": batch_pk(batch_id), "sk": BATCH_SK},
            "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in values),
            # Only once: a duplicate delivery planning the same batch at the same time counts
            # nothing more.
            "ConditionExpression": "#status = :ingesting AND attribute_not_exists(chunk_count)",
            "ExpressionAttributeNames": {**names, "#status": "status"},
            "ExpressionAttributeValues": {**vals, ":ingesting": BatchStatus.INGESTING.value},
        }
        try:
            self._client.transact_write_items(
                TransactItems=[{"Update": counter}, {"Update": batch}]
            )
        except ClientError as exc:
            reasons = cancellation_reasons(exc, 2)
            if reasons[1].get("Code") == "ConditionalCheckFailed":
                return True  # recorded (and counted) already, by a delivery racing this one
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def decide_approval(
        self, batch_id: str, *, decision: str, by: str, at: int, note: str | None = None
    ) -> BatchRecord | None:
        """Record the one decision on a waiting batch; None when it was not waiting (any more)."""
        return self._update_batch_if(
            batch_id,
            UpdateExpression=(
                "SET approval_decision = :d, approval_by = :by, approval_at = :at, "
                "approval_note = :note"
            ),
            ConditionExpression=(
                "#s = :waiting AND (attribute_not_exists(approval_decision) "
                "OR approval_decision = :none)"
            ),
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":d": decision,
                ":by": by,
                ":at": at,
                ":note": note,
                ":none": None,
                ":waiting": BatchStatus.AWAITING_APPROVAL.value,
            },
        )

    def release_approved(self, batch_id: str, *, day: str, count: int) -> bool:
        """An approved batch leaves AWAITING_APPROVAL for PLANNED, its vouchers counted on
        ``day`` (past the limit if need be: the approval is for that). False if it had left."""
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"pk": COUNTER_PK, "sk": day_sk(day)},
                            "UpdateExpression": "ADD used :n",
                            "ExpressionAttributeValues": {":n": count},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"pk": batch_pk(batch_id), "sk": BATCH_SK},
                            "UpdateExpression": "SET #s = :planned, counted_day = :day",
                            "ConditionExpression": "#s = :waiting AND approval_decision = :yes",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": {
                                ":planned": BatchStatus.PLANNED.value,
                                ":waiting": BatchStatus.AWAITING_APPROVAL.value,
                                ":yes": "approved",
                                ":day": day,
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return False
            raise
        return True

    def batches_awaiting_approval(self) -> list[BatchRecord]:
        """Every batch waiting for a decision, oldest first: a Query of the
        ``batches-by-status`` index (keys only), then each waiting batch read."""
        keys = [
            item["pk"]
            for item in self._pages(
                self._table.query,
                IndexName=BATCH_STATUS_INDEX,
                KeyConditionExpression="#s = :waiting",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":waiting": BatchStatus.AWAITING_APPROVAL.value},
            )
            if item.get("sk") == BATCH_SK
        ]
        found = [self.get_batch(str(pk).removeprefix("B#")) for pk in keys]
        return [b for b in found if b is not None and b.status == BatchStatus.AWAITING_APPROVAL]

    def start_report(self, batch_id: str) -> BatchRecord | None:
        """Move the batch to REPORTING unless it has ended (DONE/FAILED); None when it has."""
        return self._update_batch_if(
            batch_id,
            UpdateExpression="SET #s = :reporting",
            ConditionExpression="attribute_exists(pk) AND NOT #s IN (:done, :failed)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":reporting": BatchStatus.REPORTING.value,
                ":done": BatchStatus.DONE.value,
                ":failed": BatchStatus.FAILED.value,
            },
        )

    def count_finished_chunk(self, batch_id: str, chunk_no: int) -> BatchRecord:
        """Add the chunk to the batch's set of ended chunks (a no-op when it is there)."""
        got = self._table.update_item(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK},
            UpdateExpression="ADD finished_chunks :chunk",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":chunk": {chunk_no}},
            ReturnValues="ALL_NEW",
        )
        return BatchRecord.model_validate(plain(got["Attributes"]))

    def _update_batch_if(self, batch_id: str, **update: Any) -> BatchRecord | None:
        """A conditional update of the batch item: the record after it, or None if the
        condition did not hold."""
        got = self._updated_if(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK}, ReturnValues="ALL_NEW", **update
        )
        return None if got is None else BatchRecord.model_validate(got)
