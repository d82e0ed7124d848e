"""Chunks: one purchase each, its lease, its purchase and its end, only by conditional writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger.table import (
    CHUNK_STATE_INDEX,
    Store,
    batch_pk,
    chunk_sk,
    compact,
    conditional_failed,
    plain,
)
from voucher_distributor.models.ledger import FINAL_CHUNK_STATES, ChunkRecord, ChunkState


class ChunkStore(Store):
    """A chunk's item (``B#<batch>``/``C#<chunk:05>``) carries its state, lease and counts."""

    def put_chunk_if_absent(self, chunk: ChunkRecord) -> bool:
        item = {
            "pk": batch_pk(chunk.batch_id),
            "sk": chunk_sk(chunk.chunk_no),
            **chunk.model_dump(mode="json"),
        }
        return self._put_if_absent(compact(item))

    def replace_pending_chunk(self, chunk: ChunkRecord) -> None:
        """Plan a chunk anew while no worker has taken it (a replayed ingest planned it again)."""
        item = {
            "pk": batch_pk(chunk.batch_id),
            "sk": chunk_sk(chunk.chunk_no),
            **chunk.model_dump(mode="json"),
        }
        self._table.put_item(
            Item=compact(item),
            ConditionExpression="#state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":pending": ChunkState.PENDING.value},
        )

    def get_chunk(self, batch_id: str, chunk_no: int) -> ChunkRecord | None:
        item = self._get(batch_pk(batch_id), chunk_sk(chunk_no))
        return ChunkRecord.model_validate(item) if item else None

    def iter_chunks(self, batch_id: str) -> Iterator[ChunkRecord]:
        for item in self._query_prefix(batch_id, "C#"):
            yield ChunkRecord.model_validate(item)

    def delete_pending_chunks(self, batch_id: str, *, from_chunk: int = 0) -> int:
        """Delete the batch's chunks that are still PENDING; how many went.

        Only for an ingest that failed before handing its chunks to the purchase queue: such
        chunks will never be bought, and left behind they would read as stuck work. A chunk a
        worker has already taken (any other state) is kept.
        """
        deleted = 0
        for chunk in list(self.iter_chunks(batch_id)):
            if chunk.state != ChunkState.PENDING or chunk.chunk_no < from_chunk:
                continue
            try:
                self._table.delete_item(
                    Key={"pk": batch_pk(batch_id), "sk": chunk_sk(chunk.chunk_no)},
                    ConditionExpression="#state = :pending",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={":pending": ChunkState.PENDING.value},
                )
            except ClientError as exc:
                if not conditional_failed(exc):
                    raise
                continue
            deleted += 1
        return deleted

    def iter_all_chunks(self) -> Iterator[ChunkRecord]:
        """Every chunk of every batch, whole: a filtered scan of the table (only ``sync
        --track-existing``, a one-time migration, reads this)."""
        for item in self._scan_prefix("sk", "C#"):
            yield ChunkRecord.model_validate(plain(item))

    def iter_chunks_by_state(
        self, states: Iterable[ChunkState] = tuple(ChunkState)
    ) -> Iterator[ChunkRecord]:
        """Every chunk in ``states``, from the ``chunks-by-state`` index (chunk items only,
        projected to what reconcile compares: keys, names, quantity, purchase, counts; not the
        lease or the failure reason)."""
        for state in states:
            for item in self._pages(
                self._table.query,
                IndexName=CHUNK_STATE_INDEX,
                KeyConditionExpression="#state = :state",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":state": state.value},
            ):
                yield ChunkRecord.model_validate(plain(item))

    def acquire_purchase_lease(
        self, batch_id: str, chunk_no: int, *, owner: str, now: int, lease_seconds: int
    ) -> ChunkRecord | None:
        """Take the chunk into PURCHASING (from PENDING, or from an expired lease).

        Counts the attempt in the same write: an attempt number above 1 means an earlier worker
        may have POSTed, so the caller must look for its purchase before buying.
        """
        got = self._updated_if(
            Key={"pk": batch_pk(batch_id), "sk": chunk_sk(chunk_no)},
            UpdateExpression=(
                "SET #state = :purchasing, lease_owner = :owner, lease_until = :until "
                "ADD purchase_attempts :one"
            ),
            ConditionExpression=(
                "#state = :pending OR (#state = :purchasing AND lease_until < :now)"
            ),
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":purchasing": ChunkState.PURCHASING.value,
                ":pending": ChunkState.PENDING.value,
                ":owner": owner,
                ":until": now + lease_seconds,
                ":now": now,
                ":one": 1,
            },
            ReturnValues="ALL_NEW",
        )
        return None if got is None else ChunkRecord.model_validate(got)

    def renew_purchase_lease(
        self, batch_id: str, chunk_no: int, *, owner: str, now: int, lease_seconds: int
    ) -> bool:
        """Extend this worker's live lease to ``now + lease_seconds``, right before it POSTs.

        False when the lease is over or held by another worker: then this worker must not POST,
        since whoever holds the chunk now may be buying it.
        """
        return self._update_if(
            Key={"pk": batch_pk(batch_id), "sk": chunk_sk(chunk_no)},
            UpdateExpression="SET lease_until = :until",
            ConditionExpression=(
                "#state = :purchasing AND lease_owner = :owner AND lease_until >= :now"
            ),
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":purchasing": ChunkState.PURCHASING.value,
                ":owner": owner,
                ":now": now,
                ":until": now + lease_seconds,
            },
        )

    def record_purchase(
        self,
        batch_id: str,
        chunk_no: int,
        *,
        owner: str,
        purchase_code: str,
        purchase_id: str,
        purchased_at: int,
        deadline_at: int,
        adopted: bool,
    ) -> bool:
        """PURCHASING → PURCHASED, only while this worker still holds the lease."""
        return self._update_if(
            Key={"pk": batch_pk(batch_id), "sk": chunk_sk(chunk_no)},
            UpdateExpression=(
                "SET #state = :purchased, purchase_code = :code, purchase_id = :pid, "
                "purchased_at = :at, deadline_at = :deadline, adopted = :adopted "
                "REMOVE lease_owner, lease_until"
            ),
            ConditionExpression="#state = :purchasing AND lease_owner = :owner",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":purchased": ChunkState.PURCHASED.value,
                ":purchasing": ChunkState.PURCHASING.value,
                ":owner": owner,
                ":code": purchase_code,
                ":pid": purchase_id,
                ":at": purchased_at,
                ":deadline": deadline_at,
                ":adopted": adopted,
            },
        )

    def hand_over_poll(
        self, batch_id: str, chunk_no: int, *, after: str | None, token: str, attempt: int
    ) -> bool:
        """Make ``token`` (attempt ``attempt``) the chunk's live poll chain, if the live one is
        still ``after`` (None: no chain yet) and the chunk still waits for its codes; False if
        another copy of the message handed over first (a duplicate chain: stop)."""
        condition = "#state = :purchased AND " + (
            "attribute_not_exists(poll_token)" if after is None else "poll_token = :after"
        )
        return self._update_if(
            Key={"pk": batch_pk(batch_id), "sk": chunk_sk(chunk_no)},
            UpdateExpression=(
                "SET poll_token = :token, poll_attempt = :attempt ADD poll_attempts :one"
            ),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":purchased": ChunkState.PURCHASED.value,
                ":token": token,
                ":attempt": attempt,
                ":one": 1,
                **({":after": after} if after is not None else {}),
            },
        )

    def finish_chunk(
        self,
        chunk: ChunkRecord,
        *,
        state: ChunkState,
        assigned: int,
        failed: int,
        reason: str | None = None,
    ) -> bool:
        """Move the chunk to its final state with its counts, once; False if it had ended.

        A single conditional write, not a transaction with the batch: the batch learns of it
        through ``count_finished_chunk``, which is idempotent, so nothing is counted twice and a
        worker that dies between the two writes is made good by the next delivery.
        """
        if state not in FINAL_CHUNK_STATES:
            raise ValueError(f"{state} is not a final chunk state")
        return self._update_if(
            Key={"pk": batch_pk(chunk.batch_id), "sk": chunk_sk(chunk.chunk_no)},
            UpdateExpression=(
                "SET #state = :final, assigned_count = :assigned, failed_count = :failed"
                + (", failure_reason = :reason" if reason else "")
                + " REMOVE lease_owner, lease_until"
            ),
            ConditionExpression="attribute_exists(pk) AND NOT #state IN (:done, :failed_state)",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":final": state.value,
                ":assigned": assigned,
                ":failed": failed,
                ":done": ChunkState.ASSIGNED.value,
                ":failed_state": ChunkState.FAILED.value,
                **({":reason": reason} if reason else {}),
            },
        )
