"""The DynamoDB ledger: batches, chunks, assignments and holdings in one table.

Keys: ``pk = B#<batch>``; ``sk = BATCH`` (the batch), ``C#<chunk:05>`` (a chunk),
``R#<row:09>`` (an assignment) or ``W#<event>`` (a callback delivery, the outbox).
Assignment items carry ``email``, the key of the ``by-email`` index, and the code, purchase
and status, but not the recipient's names or extra columns.

Holdings (one voucher per person per program): ``pk = H#<e-mail>``, ``sk = P#<partner>\t<program>``
(names case-folded), so every holding of a person is one Query. A holding is claimed with a
conditional write before anything is bought and points at the batch row that gets the code.

Chunk state only moves through conditional writes. An ended chunk carries its own counts and is
added to the batch's ``finished_chunks`` number set, an idempotent write: replays never count
twice, and no write touches more than one item (no transactions).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from botocore.exceptions import ClientError

from voucher_distributor.models.ledger import (
    FINAL_CHUNK_STATES,
    ApiRequestRecord,
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    CallbackAttempt,
    CallbackDelivery,
    ChunkRecord,
    ChunkState,
    DeliveryState,
    HoldingRecord,
    PreviousHolding,
    RedemptionRecord,
    TrackedPurchase,
)

EMAIL_INDEX = "by-email"
#: Claims per TransactWriteItems call (DynamoDB's limit).
_CLAIMS_PER_CALL = 100
#: Transactions cancelled by a concurrent one on the same people, before giving up.
_MAX_CONFLICT_RETRIES = 8
_rng = random.Random()  # noqa: S311 - backoff jitter, not a secret
_BATCH_SK = "BATCH"
_API_REQUEST_SK = "REQUEST"


class LedgerError(RuntimeError):
    """The ledger could not be read or written; the message is retried by SQS."""


#: The daily voucher counts: one item per UTC day.
_COUNTER_PK = "COUNT#vouchers"


def _day_sk(day: str) -> str:
    return f"D#{day}"


def _api_request_pk(batch_id: str) -> str:
    return f"API#{batch_id}"


def _batch_pk(batch_id: str) -> str:
    return f"B#{batch_id}"


def _chunk_sk(chunk_no: int) -> str:
    return f"C#{chunk_no:05d}"


def _delivery_sk(slug: str) -> str:
    return f"W#{slug}"


def _row_sk(row_number: int) -> str:
    return f"R#{row_number:09d}"


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; our records hold ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _item(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None and v not in ({}, [])}


#: What an assignment item holds besides its keys (pk = the batch, sk = the row).
_ASSIGNMENT_FIELDS = (
    "email",
    "partner_name",
    "program_name",
    "chunk_no",
    "status",
    "voucher_code",
    "purchase_code",
    "expires_utc",
    "reason",
)


def _assignment_item(record: AssignmentRecord) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": _batch_pk(record.batch_id), "sk": _row_sk(record.row_number)}
    for name in _ASSIGNMENT_FIELDS:
        value = getattr(record, name)
        if value != "":
            item[name] = value
    return item


def _assignment_record(item: Mapping[str, Any]) -> AssignmentRecord:
    redemption = None
    if "redemption" in item:
        redemption = RedemptionRecord.model_validate(
            {
                **_plain(item["redemption"]),
                "expiry_noticed_at": _plain(item.get("expiry_noticed_at")),
            }
        )
    return AssignmentRecord(
        batch_id=str(item["pk"]).removeprefix("B#"),
        row_number=int(str(item["sk"]).removeprefix("R#")),
        redemption=redemption,
        **{name: item[name] for name in _ASSIGNMENT_FIELDS if name in item},
    )


#: The redemption sync's purchases: ``pk = SYNC#open`` while a code may still change (one Query
#: lists them), ``SYNC#settled`` once every code is used, expired or inactive; ``sk = P#<code>``.
_TRACK_OPEN = "SYNC#open"
_TRACK_SETTLED = "SYNC#settled"


def _track_sk(purchase_code: str) -> str:
    return f"P#{purchase_code}"


def _plain_client(resource_client: Any, pool: int, *, own_session: bool) -> Any:
    """A DynamoDB client like the resource's (endpoint, region, credentials) without boto3's
    value conversion, and without parameter validation (our requests are built, not typed).

    From boto3's default session, as the resource is, unless the caller brought a resource of
    its own (another session's credentials): then from those credentials.
    """
    meta = resource_client.meta
    config = meta.config.merge(Config(parameter_validation=False, max_pool_connections=pool))
    signer = getattr(resource_client, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    if not own_session or credentials is None:
        return boto3.client(
            "dynamodb", endpoint_url=meta.endpoint_url, region_name=meta.region_name, config=config
        )
    frozen = credentials.get_frozen_credentials()
    return boto3.session.Session(
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
        region_name=meta.region_name,
    ).client("dynamodb", endpoint_url=meta.endpoint_url, config=config)


def _holding_pk(email: str) -> str:
    return f"H#{email}"


def _holding_sk(partner_name: str, program_name: str) -> str:
    return f"P#{partner_name.strip().casefold()}\t{program_name.strip().casefold()}"


@dataclass(frozen=True, slots=True)
class Claim:
    """A batch row asking for a person's voucher of one (partner, program)."""

    email: str
    partner_name: str
    program_name: str
    batch_id: str
    row_number: int
    reissue: bool = False


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """``claimed``: the row gets a new code. ``reissued``: the same, replacing ``previous``.
    ``held``: the person already holds one (``holding``); nothing is bought for the row."""

    kind: Literal["claimed", "reissued", "held"]
    holding: HoldingRecord | None = None
    previous: PreviousHolding | None = None


def _cancellation_reasons(exc: ClientError, items: int) -> list[dict[str, Any]]:
    """A cancelled transaction's reason per item; any other error goes on up."""
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        raise exc
    reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
    if len(reasons) != items:
        raise exc
    return reasons


def _back_off_on_conflict(exc: ClientError, reasons: list[dict[str, Any]], conflicts: int) -> int:
    """Another batch's transaction touched the same people: wait a little (jittered, doubling)
    before going again, a bounded number of times; the conflicts so far."""
    if not any(r.get("Code") == "TransactionConflict" for r in reasons):
        return conflicts
    conflicts += 1
    if conflicts > _MAX_CONFLICT_RETRIES:
        raise exc
    time.sleep(_rng.uniform(0, 0.05 * 2**conflicts))
    return conflicts


def _conditional_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}


class Ledger:
    def __init__(self, table_name: str, *, dynamodb: Any = None, claim_workers: int = 16) -> None:
        # Room in the connection pool for every claim worker (botocore keeps 10 by default).
        resource = dynamodb or boto3.resource(
            "dynamodb", config=Config(max_pool_connections=max(10, claim_workers + 2))
        )
        self._table = resource.Table(table_name)
        # The resource's client takes plain Python values and, unlike the resource, is safe to
        # share between threads: claims go out on it in parallel.
        self._client = self._table.meta.client
        # Claims, the one write per recipient at ingest, go out on a plain client with values
        # already in DynamoDB's wire form and no parameter validation: a third of the client
        # CPU of the resource's client, which walks every request to convert it.
        self._wire = _plain_client(
            self._client, max(10, claim_workers + 2), own_session=dynamodb is not None
        )
        self._claim_workers = max(1, claim_workers)
        self._pool: ThreadPoolExecutor | None = None
        self.table_name = table_name

    # ------------------------------------------------------------------ batches

    def create_batch(self, batch: BatchRecord) -> bool:
        """Create the batch unless it exists; False means this source was seen before."""
        item = {"pk": _batch_pk(batch.batch_id), "sk": _BATCH_SK, **batch.model_dump(mode="json")}
        return self._put_if_absent(_item(item))

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        got = self._table.get_item(
            Key={"pk": _batch_pk(batch_id), "sk": _BATCH_SK}, ConsistentRead=True
        )
        item = got.get("Item")
        return BatchRecord.model_validate(_plain(item)) if item else None

    def update_batch(self, batch_id: str, **values: Any) -> BatchRecord:
        names = {f"#{k}": k for k in values}
        vals = {f":{k}": v for k, v in values.items()}
        sets = ", ".join(f"#{k} = :{k}" for k in values)
        got = self._table.update_item(
            Key={"pk": _batch_pk(batch_id), "sk": _BATCH_SK},
            UpdateExpression=f"SET {sets}",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=vals,
            ReturnValues="ALL_NEW",
        )
        return BatchRecord.model_validate(_plain(got["Attributes"]))

    def link_retry(self, batch_id: str, retry_batch_id: str) -> BatchRecord | None:
        """Record that ``retry_batch_id`` retries this batch's failed rows (once); the batch."""
        try:
            got = self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _BATCH_SK},
                UpdateExpression="SET retried_by = list_append(if_not_exists(retried_by, :e), :r)",
                ConditionExpression="attribute_exists(pk) AND NOT contains(retried_by, :id)",
                ExpressionAttributeValues={":e": [], ":r": [retry_batch_id], ":id": retry_batch_id},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return self.get_batch(batch_id)
            raise
        return BatchRecord.model_validate(_plain(got["Attributes"]))

    # ------------------------------------------------------------------ limits and approval

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
            "Key": {"pk": _COUNTER_PK, "sk": _day_sk(day)},
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
            "Key": {"pk": _batch_pk(batch_id), "sk": _BATCH_SK},
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
            reasons = _cancellation_reasons(exc, 2)
            if reasons[1].get("Code") == "ConditionalCheckFailed":
                return True  # recorded (and counted) already, by a delivery racing this one
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def vouchers_counted(self, day: str) -> int:
        """Vouchers bought (or being bought) on ``day`` by every batch of the stage."""
        got = self._table.get_item(Key={"pk": _COUNTER_PK, "sk": _day_sk(day)}, ConsistentRead=True)
        return int((got.get("Item") or {}).get("used", 0))

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
                            "Key": {"pk": _COUNTER_PK, "sk": _day_sk(day)},
                            "UpdateExpression": "ADD used :n",
                            "ExpressionAttributeValues": {":n": count},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {"pk": _batch_pk(batch_id), "sk": _BATCH_SK},
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
            if _conditional_failed(exc):
                return False
            raise
        return True

    def batches_awaiting_approval(self) -> list[BatchRecord]:
        """Every batch waiting for a decision: a filtered scan (operators)."""
        return [
            BatchRecord.model_validate(_plain(item))
            for item in self._pages(
                self._table.scan,
                FilterExpression="sk = :batch AND #s = :waiting",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":batch": _BATCH_SK,
                    ":waiting": BatchStatus.AWAITING_APPROVAL.value,
                },
            )
        ]

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

    def _put_if_absent(self, item: dict[str, Any]) -> bool:
        """Put the item unless its key exists; False when it did (another writer, a replay)."""
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def _update_batch_if(self, batch_id: str, **update: Any) -> BatchRecord | None:
        """A conditional update of the batch item: the record after it, or None if the
        condition did not hold."""
        try:
            got = self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _BATCH_SK}, ReturnValues="ALL_NEW", **update
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return BatchRecord.model_validate(_plain(got["Attributes"]))

    # ------------------------------------------------------------------ callbacks (outbox)

    def put_callback_delivery(self, delivery: CallbackDelivery) -> bool:
        """Record an event's delivery unless it is recorded already (a re-run of the step that
        announced it); False then, and the first record stands."""
        item = {
            "pk": _batch_pk(delivery.batch_id),
            "sk": _delivery_sk(delivery.slug),
            **delivery.model_dump(mode="json"),
        }
        return self._put_if_absent(_item(item))

    def get_callback_delivery(self, batch_id: str, slug: str) -> CallbackDelivery | None:
        got = self._table.get_item(
            Key={"pk": _batch_pk(batch_id), "sk": _delivery_sk(slug)}, ConsistentRead=True
        )
        item = got.get("Item")
        return CallbackDelivery.model_validate(_plain(item)) if item else None

    def callback_deliveries(self, batch_id: str) -> list[CallbackDelivery]:
        """Every callback delivery of the batch (one per event), oldest first."""
        found = [CallbackDelivery.model_validate(i) for i in self._query_prefix(batch_id, "W#")]
        return sorted(found, key=lambda d: (d.created_at, d.slug))

    def claim_callback_attempt(
        self, delivery: CallbackDelivery, *, owner: str, now: int, lease_seconds: int
    ) -> bool:
        """Take the next attempt of a pending delivery: False when it was made meanwhile, the
        delivery ended or was restarted, or another worker's lease on it is still live."""
        return self._update_delivery_if(
            delivery,
            UpdateExpression="SET lease_owner = :owner, lease_until = :until",
            ConditionExpression=(
                "#state = :pending AND #round = :round AND tries = :tries "
                "AND (attribute_not_exists(lease_until) OR lease_until < :now)"
            ),
            ExpressionAttributeNames={"#state": "state", "#round": "round"},
            ExpressionAttributeValues={
                ":owner": owner,
                ":until": now + lease_seconds,
                ":pending": DeliveryState.PENDING.value,
                ":round": delivery.round,
                ":tries": delivery.tries,
                ":now": now,
            },
        )

    def record_callback_attempt(
        self,
        delivery: CallbackDelivery,
        attempt: CallbackAttempt,
        *,
        owner: str,
        state: DeliveryState,
        next_attempt_at: int | None,
        reason: str | None,
    ) -> bool:
        """Record the attempt this worker claimed, and the delivery's next state; False when
        its lease was lost (another worker took the attempt over and records it)."""
        final = state != DeliveryState.PENDING
        return self._update_delivery_if(
            delivery,
            UpdateExpression=(
                "SET tries = :next, attempts = list_append(if_not_exists(attempts, :empty), :a), "
                "#state = :state, next_attempt_at = :due, reason = :reason, finished_at = :fin "
                "REMOVE lease_owner, lease_until"
            ),
            ConditionExpression="lease_owner = :owner AND #round = :round AND tries = :tries",
            ExpressionAttributeNames={"#state": "state", "#round": "round"},
            ExpressionAttributeValues={
                ":next": delivery.tries + 1,
                ":empty": [],
                ":a": [attempt.model_dump(mode="json")],
                ":state": state.value,
                ":due": next_attempt_at,
                ":reason": reason,
                ":fin": attempt.at if final else None,
                ":owner": owner,
                ":round": delivery.round,
                ":tries": delivery.tries,
            },
        )

    def restart_callback_delivery(
        self, delivery: CallbackDelivery, *, now: int, states: Iterable[DeliveryState]
    ) -> CallbackDelivery | None:
        """A new round with a fresh attempt budget (same body, same webhook id), if the
        delivery is still in one of ``states``; the delivery after, or None."""
        allowed = sorted({s.value for s in states})
        names = ", ".join(f":s{i}" for i in range(len(allowed)))
        try:
            got = self._table.update_item(
                Key={"pk": _batch_pk(delivery.batch_id), "sk": _delivery_sk(delivery.slug)},
                UpdateExpression=(
                    "SET #state = :pending, #round = :round, tries = :zero, next_attempt_at = :now,"
                    " reason = :none, finished_at = :none REMOVE lease_owner, lease_until"
                ),
                ConditionExpression=f"#round = :old AND #state IN ({names})",
                ExpressionAttributeNames={"#state": "state", "#round": "round"},
                ExpressionAttributeValues={
                    ":pending": DeliveryState.PENDING.value,
                    ":round": delivery.round + 1,
                    ":old": delivery.round,
                    ":zero": 0,
                    ":now": now,
                    ":none": None,
                    **{f":s{i}": value for i, value in enumerate(allowed)},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return CallbackDelivery.model_validate(_plain(got["Attributes"]))

    def _update_delivery_if(self, delivery: CallbackDelivery, **update: Any) -> bool:
        try:
            self._table.update_item(
                Key={"pk": _batch_pk(delivery.batch_id), "sk": _delivery_sk(delivery.slug)},
                **update,
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    # ------------------------------------------------------------------ chunks

    def put_chunk_if_absent(self, chunk: ChunkRecord) -> bool:
        item = {
            "pk": _batch_pk(chunk.batch_id),
            "sk": _chunk_sk(chunk.chunk_no),
            **chunk.model_dump(mode="json"),
        }
        return self._put_if_absent(_item(item))

    def replace_pending_chunk(self, chunk: ChunkRecord) -> None:
        """Plan a chunk anew while no worker has taken it (a replayed ingest planned it again)."""
        item = {
            "pk": _batch_pk(chunk.batch_id),
            "sk": _chunk_sk(chunk.chunk_no),
            **chunk.model_dump(mode="json"),
        }
        self._table.put_item(
            Item=_item(item),
            ConditionExpression="#state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":pending": ChunkState.PENDING.value},
        )

    def get_chunk(self, batch_id: str, chunk_no: int) -> ChunkRecord | None:
        got = self._table.get_item(
            Key={"pk": _batch_pk(batch_id), "sk": _chunk_sk(chunk_no)}, ConsistentRead=True
        )
        item = got.get("Item")
        return ChunkRecord.model_validate(_plain(item)) if item else None

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
                    Key={"pk": _batch_pk(batch_id), "sk": _chunk_sk(chunk.chunk_no)},
                    ConditionExpression="#state = :pending",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={":pending": ChunkState.PENDING.value},
                )
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                continue
            deleted += 1
        return deleted

    def iter_all_chunks(self) -> Iterator[ChunkRecord]:
        """Every chunk of every batch: a filtered scan for operators (reconcile)."""
        for item in self._scan_prefix("sk", "C#"):
            yield ChunkRecord.model_validate(_plain(item))

    def acquire_purchase_lease(
        self, batch_id: str, chunk_no: int, *, owner: str, now: int, lease_seconds: int
    ) -> ChunkRecord | None:
        """Take the chunk into PURCHASING (from PENDING, or from an expired lease).

        Counts the attempt in the same write: an attempt number above 1 means an earlier worker
        may have POSTed, so the caller must look for its purchase before buying.
        """
        try:
            got = self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _chunk_sk(chunk_no)},
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
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return ChunkRecord.model_validate(_plain(got["Attributes"]))

    def renew_purchase_lease(
        self, batch_id: str, chunk_no: int, *, owner: str, now: int, lease_seconds: int
    ) -> bool:
        """Extend this worker's live lease to ``now + lease_seconds``, right before it POSTs.

        False when the lease is over or held by another worker: then this worker must not POST,
        since whoever holds the chunk now may be buying it.
        """
        try:
            self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _chunk_sk(chunk_no)},
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
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

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
        try:
            self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _chunk_sk(chunk_no)},
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
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def count_poll(self, batch_id: str, chunk_no: int) -> int:
        got = self._table.update_item(
            Key={"pk": _batch_pk(batch_id), "sk": _chunk_sk(chunk_no)},
            UpdateExpression="ADD poll_attempts :one",
            ExpressionAttributeValues={":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        return int(got["Attributes"]["poll_attempts"])

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
        try:
            self._table.update_item(
                Key={"pk": _batch_pk(chunk.batch_id), "sk": _chunk_sk(chunk.chunk_no)},
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
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def count_finished_chunk(self, batch_id: str, chunk_no: int) -> BatchRecord:
        """Add the chunk to the batch's set of ended chunks (a no-op when it is there)."""
        got = self._table.update_item(
            Key={"pk": _batch_pk(batch_id), "sk": _BATCH_SK},
            UpdateExpression="ADD finished_chunks :chunk",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":chunk": {chunk_no}},
            ReturnValues="ALL_NEW",
        )
        return BatchRecord.model_validate(_plain(got["Attributes"]))

    # ------------------------------------------------------------------ assignments

    def put_assignments(self, records: Iterable[AssignmentRecord]) -> int:
        """Write assignment items (25 per request); rewriting the same item is harmless.

        An item keeps what the ledger is for (who got which code from which purchase, or why
        not), not a copy of the recipient's row: names, external ids and extra columns live in
        the results file only. Fewer attributes also means cheaper writes.
        """
        count = 0
        with self._table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as writer:
            for record in records:
                writer.put_item(Item=_assignment_item(record))
                count += 1
        return count

    def iter_assignments(self, batch_id: str) -> Iterator[AssignmentRecord]:
        """A batch's assignments in row order."""
        for item in self._query_prefix(batch_id, "R#"):
            yield _assignment_record(item)

    def assignments_for_email(self, email: str) -> list[AssignmentRecord]:
        return [
            _assignment_record(_plain(item))
            for item in self._pages(
                self._table.query,
                IndexName=EMAIL_INDEX,
                KeyConditionExpression="email = :email",
                ExpressionAttributeValues={":email": email},
            )
        ]

    def get_assignments(
        self, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], AssignmentRecord]:
        """Assignment items by (batch, row), 100 keys a request; missing ones are left out."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, int], AssignmentRecord] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [
                        {"pk": _batch_pk(b), "sk": _row_sk(r)}
                        for b, r in wanted[start : start + 100]
                    ],
                    "ConsistentRead": True,
                }
            }
            while request:
                got = self._client.batch_get_item(RequestItems=request)
                for item in got["Responses"].get(self.table_name, []):
                    record = _assignment_record(_plain(item))
                    found[(record.batch_id, record.row_number)] = record
                request = got.get("UnprocessedKeys") or {}
        return found

    # ------------------------------------------------------------------ API requests

    def remember_api_request(self, record: ApiRequestRecord) -> ApiRequestRecord | None:
        """Record the first answer to an idempotency key; the earlier record if there is one.

        Keyed by the batch id, which the key determines: a status look-up finds it too.
        """
        item = {"pk": _api_request_pk(record.batch_id), "sk": _API_REQUEST_SK}
        if not self._put_if_absent(_item({**item, **record.model_dump(mode="json")})):
            got = self._table.get_item(Key=item, ConsistentRead=True).get("Item")
            if got is None:  # expired between the write and the read: this answer stands
                return self.remember_api_request(record)
            return ApiRequestRecord.model_validate(_plain(got))
        return None

    def get_api_request(self, batch_id: str) -> ApiRequestRecord | None:
        got = self._table.get_item(
            Key={"pk": _api_request_pk(batch_id), "sk": _API_REQUEST_SK}, ConsistentRead=True
        ).get("Item")
        return ApiRequestRecord.model_validate(_plain(got)) if got else None

    # ------------------------------------------------------------------ redemption

    def track_purchase(self, purchase: TrackedPurchase) -> bool:
        """Follow a bought purchase's codes after the hand-out; False if already followed."""
        item = {
            "pk": _TRACK_OPEN,
            "sk": _track_sk(purchase.purchase_code),
            **_item(purchase.model_dump(mode="json")),
        }
        return self._put_if_absent(item)

    def open_purchases(self) -> list[TrackedPurchase]:
        """Purchases with codes that may still change: one Query."""
        return [
            TrackedPurchase.model_validate(_plain(item))
            for item in self._pages(
                self._table.query,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _TRACK_OPEN},
                ConsistentRead=True,
            )
        ]

    def settled_purchases(self) -> list[TrackedPurchase]:
        """Purchases whose every code is settled (their last counts), never read again."""
        return [
            TrackedPurchase.model_validate(_plain(item))
            for item in self._pages(
                self._table.query,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _TRACK_SETTLED},
            )
        ]

    def record_purchase_sync(self, purchase: TrackedPurchase) -> None:
        """The counts by state of a purchase still open, after a sync."""
        self._table.update_item(
            Key={"pk": _TRACK_OPEN, "sk": _track_sk(purchase.purchase_code)},
            UpdateExpression="SET synced_at = :now, #counts = :counts",
            ExpressionAttributeNames={"#counts": "counts"},
            ExpressionAttributeValues={":now": purchase.synced_at, ":counts": purchase.counts},
        )

    def settle_purchase(self, purchase: TrackedPurchase) -> None:
        """Move the purchase out of the open list: one transaction of a put and a delete."""
        key = _track_sk(purchase.purchase_code)
        settled = {"pk": _TRACK_SETTLED, "sk": key, **_item(purchase.model_dump(mode="json"))}
        self._client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table_name, "Item": settled}},
                {"Delete": {"TableName": self.table_name, "Key": {"pk": _TRACK_OPEN, "sk": key}}},
            ]
        )

    def record_redemption(self, batch_id: str, row_number: int, record: RedemptionRecord) -> None:
        """Store what Certiverse says of the code on its assignment item (the holding's code).

        The expiry notice's mark is a separate attribute, so this write never undoes it.
        """
        facts = record.model_dump(mode="json", exclude={"expiry_noticed_at"})
        self._table.update_item(
            Key={"pk": _batch_pk(batch_id), "sk": _row_sk(row_number)},
            UpdateExpression="SET redemption = :r",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":r": _item(facts)},
        )

    def mark_expiry_noticed(self, batch_id: str, row_number: int, *, now: int) -> bool:
        """Claim the code's one expiry notice; False if it was announced already."""
        try:
            self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _row_sk(row_number)},
                UpdateExpression="SET expiry_noticed_at = :now",
                ConditionExpression=(
                    "attribute_exists(pk) AND attribute_not_exists(expiry_noticed_at)"
                ),
                ExpressionAttributeValues={":now": now},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def unmark_expiry_noticed(self, batch_id: str, row_number: int, *, now: int) -> None:
        """Give the notice back (it could not be sent): the next sync announces the code."""
        try:
            self._table.update_item(
                Key={"pk": _batch_pk(batch_id), "sk": _row_sk(row_number)},
                UpdateExpression="REMOVE expiry_noticed_at",
                ConditionExpression="expiry_noticed_at = :now",
                ExpressionAttributeValues={":now": now},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def find_voucher_code(self, voucher_code: str) -> AssignmentRecord | None:
        """The assignment that handed out ``voucher_code``: a filtered scan, for operators."""
        for item in self._pages(
            self._table.scan,
            FilterExpression="begins_with(sk, :r) AND voucher_code = :code",
            ExpressionAttributeValues={":r": "R#", ":code": voucher_code},
        ):
            return _assignment_record(_plain(item))
        return None

    def iter_program_assignments(self, program_name: str) -> Iterator[AssignmentRecord]:
        """Every handed-out code of a program (any partner): a filtered scan, for operators."""
        for item in self._pages(
            self._table.scan,
            FilterExpression="begins_with(sk, :r) AND program_name = :program AND #s = :assigned",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":r": "R#",
                ":program": program_name,
                ":assigned": "assigned",
            },
        ):
            yield _assignment_record(_plain(item))

    # ------------------------------------------------------------------ holdings

    def claim_holdings(self, claims: Sequence[Claim], *, now: int) -> list[ClaimOutcome]:
        """Claim each person's voucher of a program; outcomes in ``claims`` order.

        Race-free: every claim is a conditional put, so of two batches claiming the same person
        at the same moment exactly one gets ``claimed`` and the other ``held``. A batch claiming
        again what it already holds (a replayed ingest) gets its claim back. Claims go out 100
        to a transaction (one call instead of a hundred; a cancelled one says which items were
        held, and the rest go again), the transactions in parallel; a reissue is a read and a
        conditional update of its own.
        """
        outcomes: list[ClaimOutcome | None] = [None] * len(claims)
        groups = [
            list(range(start, min(start + _CLAIMS_PER_CALL, len(claims))))
            for start in range(0, len(claims), _CLAIMS_PER_CALL)
        ]
        firsts = [[i for i in group if not claims[i].reissue] for group in groups]
        reissues = [i for i, c in enumerate(claims) if c.reissue]
        for indices, got in zip(
            firsts,
            self._map(lambda ix: self._claim_together([claims[i] for i in ix], now), firsts),
            strict=True,
        ):
            for index, outcome in zip(indices, got, strict=True):
                outcomes[index] = outcome
        for index, outcome in zip(
            reissues, self._map(lambda i: self._claim(claims[i], now), reissues), strict=True
        ):
            outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    def look_up_holdings(self, claims: Sequence[Claim], *, now: int) -> list[ClaimOutcome]:
        """What :meth:`claim_holdings` would answer, without writing anything (a dry run).

        One consistent ``BatchGetItem`` per 100 claims. A reissue's ``previous`` names the
        batch row it would replace (its code is not looked up: nothing is replaced).
        """
        keys = [self._holding_key(c) for c in claims]
        wanted = list({(k["pk"], k["sk"]): k for k in keys}.values())
        found: dict[tuple[str, str], HoldingRecord] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {"Keys": wanted[start : start + 100], "ConsistentRead": True}
            }
            while request:
                got = self._client.batch_get_item(RequestItems=request)
                for item in got["Responses"].get(self.table_name, []):
                    found[(str(item["pk"]), str(item["sk"]))] = _holding_record(item)
                request = got.get("UnprocessedKeys") or {}
        outcomes: list[ClaimOutcome] = []
        for claim, key in zip(claims, keys, strict=True):
            held = found.get((key["pk"], key["sk"]))
            if held is None or held.batch_id == claim.batch_id:
                outcomes.append(ClaimOutcome("claimed"))
            elif claim.reissue:
                previous = PreviousHolding(
                    batch_id=held.batch_id,
                    row_number=held.row_number,
                    replaced_at=now,
                    replaced_by=claim.batch_id,
                )
                outcomes.append(ClaimOutcome("reissued", holding=held, previous=previous))
            else:
                outcomes.append(ClaimOutcome("held", holding=held))
        return outcomes

    def _map(self, work: Any, items: Sequence[Any]) -> list[Any]:
        """``work`` over ``items`` on the claim workers (in the caller's thread for one)."""
        if len(items) <= 1 or self._claim_workers == 1:
            return [work(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._claim_workers, thread_name_prefix="claim")
        return list(self._pool.map(work, items))

    def _claim_together(self, claims: Sequence[Claim], now: int) -> list[ClaimOutcome]:
        """First claims (no reissue), at most 100, in one transaction of conditional puts."""
        outcomes: dict[int, ClaimOutcome] = {}
        pending = list(range(len(claims)))
        conflicts = 0
        while pending:
            try:
                self._wire.transact_write_items(
                    TransactItems=[{"Put": self._claim_put(claims[i], now)} for i in pending]
                )
            except ClientError as exc:
                reasons = _cancellation_reasons(exc, len(pending))
                again: list[int] = []
                for index, reason in zip(pending, reasons, strict=True):
                    code = reason.get("Code")
                    held = None
                    if code == "ConditionalCheckFailed":
                        old = reason.get("Item")  # wire-typed: errors skip the decoding
                        claim = claims[index]
                        held = (
                            _holding_record(_untyped(old))
                            if old
                            else self.get_holding(
                                claim.email, claim.partner_name, claim.program_name
                            )
                        )
                    if held is not None:
                        outcomes[index] = ClaimOutcome("held", holding=held)
                    else:
                        # Would have gone through ("None"), lost a race with another batch's
                        # transaction ("TransactionConflict"), or was released in between.
                        again.append(index)
                conflicts = _back_off_on_conflict(exc, reasons, conflicts)
                pending = again
                continue
            outcomes.update((i, ClaimOutcome("claimed")) for i in pending)
            pending = []
        return [outcomes[i] for i in range(len(claims))]

    def _claim_put(self, claim: Claim, now: int) -> dict[str, Any]:
        """The claim's conditional put, in wire form (for the plain client).

        A put, not an update: one item write either way, and the emulation parses no update
        expression. Only this batch's replay may overwrite, and a first claim has no history.
        """
        key = self._holding_key(claim)
        return {
            "TableName": self.table_name,
            "Item": {
                "pk": {"S": key["pk"]},
                "sk": {"S": key["sk"]},
                "holder": {"S": claim.email},
                "partner_name": {"S": claim.partner_name},
                "program_name": {"S": claim.program_name},
                "batch_id": {"S": claim.batch_id},
                "row_number": {"N": str(claim.row_number)},
                "claimed_at": {"N": str(now)},
            },
            "ConditionExpression": "attribute_not_exists(pk) OR batch_id = :batch",
            "ExpressionAttributeValues": {":batch": {"S": claim.batch_id}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _claim(self, claim: Claim, now: int) -> ClaimOutcome:
        while True:
            if claim.reissue:
                current = self.get_holding(claim.email, claim.partner_name, claim.program_name)
                if current is not None:
                    outcome = self._reissue(claim, current, now)
                    if outcome is not None:
                        return outcome
                    continue  # the holding changed under us: look again
            try:
                self._wire.put_item(**self._claim_put(claim, now))
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                old = exc.response.get("Item")  # wire-typed: errors skip the resource's decoding
                holding = _holding_record(_untyped(old)) if old else None
                if holding is None:
                    holding = self.get_holding(claim.email, claim.partner_name, claim.program_name)
                if holding is None:
                    continue  # released in between: try again
                if claim.reissue:
                    continue  # taken in between: reissue against what is there now
                return ClaimOutcome("held", holding=holding)
            return ClaimOutcome("claimed")

    def _reissue(self, claim: Claim, current: HoldingRecord, now: int) -> ClaimOutcome | None:
        """Point the holding at this row, keeping the one it replaces; None if it moved."""
        if current.batch_id == claim.batch_id:
            last = current.history[-1] if current.history else None
            previous = last if last is not None and last.replaced_by == claim.batch_id else None
            return ClaimOutcome("reissued", holding=current, previous=previous)
        old = self.get_assignments([(current.batch_id, current.row_number)]).get(
            (current.batch_id, current.row_number)
        )
        previous = PreviousHolding(
            batch_id=current.batch_id,
            row_number=current.row_number,
            voucher_code=old.voucher_code if old and old.status == "assigned" else "",
            purchase_code=old.purchase_code if old and old.status == "assigned" else "",
            replaced_at=now,
            replaced_by=claim.batch_id,
        )
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=self._holding_key(claim),
                UpdateExpression=(
                    "SET batch_id = :batch, row_number = :row, claimed_at = :now, "
                    "history = list_append(if_not_exists(history, :empty), :previous)"
                ),
                ConditionExpression="batch_id = :old_batch AND row_number = :old_row",
                ExpressionAttributeValues={
                    ":batch": claim.batch_id,
                    ":row": claim.row_number,
                    ":now": now,
                    ":empty": [],
                    ":previous": [previous.model_dump(mode="json")],
                    ":old_batch": current.batch_id,
                    ":old_row": current.row_number,
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return ClaimOutcome("reissued", holding=current, previous=previous)

    def release_holding(self, claim: Claim) -> bool:
        """Give up this row's claim (nothing was bought for it); False if it holds none.

        A reissue's claim gives the holding back to the voucher it replaced; a first claim
        removes the holding. Safe to repeat.
        """
        current = self.get_holding(claim.email, claim.partner_name, claim.program_name)
        if (
            current is None
            or current.batch_id != claim.batch_id
            or current.row_number != claim.row_number
        ):
            return False
        mine = "batch_id = :batch AND row_number = :row"
        values: dict[str, Any] = {":batch": claim.batch_id, ":row": claim.row_number}
        last = current.history[-1] if current.history else None
        try:
            if last is not None and last.replaced_by == claim.batch_id:
                self._client.update_item(
                    TableName=self.table_name,
                    Key=self._holding_key(claim),
                    UpdateExpression=(
                        f"SET batch_id = :old_batch, row_number = :old_row "
                        f"REMOVE history[{len(current.history) - 1}]"
                    ),
                    ConditionExpression=mine,
                    ExpressionAttributeValues={
                        **values,
                        ":old_batch": last.batch_id,
                        ":old_row": last.row_number,
                    },
                )
            else:
                self._client.delete_item(
                    TableName=self.table_name,
                    Key=self._holding_key(claim),
                    ConditionExpression=mine,
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def release_holdings(self, claims: Sequence[Claim]) -> int:
        """Give up many rows' claims; how many were released.

        First claims go 100 to a transaction of conditional deletes (only where the holding is
        still this row's), in parallel; a reissue's claim is given back on its own.
        """
        firsts = [c for c in claims if not c.reissue]
        groups = [
            firsts[start : start + _CLAIMS_PER_CALL]
            for start in range(0, len(firsts), _CLAIMS_PER_CALL)
        ]
        released: int = sum(self._map(self._release_together, groups))
        reissues = [c for c in claims if c.reissue]
        return released + sum(bool(r) for r in self._map(self.release_holding, reissues))

    def _release_together(self, claims: Sequence[Claim]) -> int:
        """Delete the holdings these rows still hold, in one transaction; how many."""
        pending = list(claims)
        conflicts = 0
        released = 0
        while pending:
            try:
                self._wire.transact_write_items(
                    TransactItems=[{"Delete": self._release_delete(c)} for c in pending]
                )
            except ClientError as exc:
                reasons = _cancellation_reasons(exc, len(pending))
                # Held by another row (or gone) needs nothing; the rest go again.
                again = [
                    c
                    for c, r in zip(pending, reasons, strict=True)
                    if r.get("Code") != "ConditionalCheckFailed"
                ]
                conflicts = _back_off_on_conflict(exc, reasons, conflicts)
                pending = again
                continue
            released += len(pending)
            pending = []
        return released

    def _release_delete(self, claim: Claim) -> dict[str, Any]:
        key = self._holding_key(claim)
        return {
            "TableName": self.table_name,
            "Key": {"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}},
            "ConditionExpression": "batch_id = :batch AND row_number = :row",
            "ExpressionAttributeValues": {
                ":batch": {"S": claim.batch_id},
                ":row": {"N": str(claim.row_number)},
            },
        }

    def get_holding(self, email: str, partner_name: str, program_name: str) -> HoldingRecord | None:
        got = self._client.get_item(
            TableName=self.table_name,
            Key={"pk": _holding_pk(email), "sk": _holding_sk(partner_name, program_name)},
            ConsistentRead=True,
        )
        item = got.get("Item")
        return _holding_record(item) if item else None

    def holdings_for_email(self, email: str) -> list[HoldingRecord]:
        """Every voucher this person holds, one per (partner, program): one Query."""
        return [
            _holding_record(item)
            for item in self._pages(
                self._table.query,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                ExpressionAttributeValues={":pk": _holding_pk(email), ":p": "P#"},
                ConsistentRead=True,
            )
        ]

    def iter_holdings(self) -> Iterator[HoldingRecord]:
        """Every holding in the table: a filtered scan, for operators and checks."""
        for item in self._scan_prefix("pk", "H#"):
            yield _holding_record(item)

    @staticmethod
    def _holding_key(claim: Claim) -> dict[str, str]:
        return {
            "pk": _holding_pk(claim.email),
            "sk": _holding_sk(claim.partner_name, claim.program_name),
        }

    # ------------------------------------------------------------------ helpers

    def _query_prefix(self, batch_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        for item in self._pages(
            self._table.query,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": _batch_pk(batch_id), ":prefix": prefix},
            ConsistentRead=True,
        ):
            yield _plain(item)

    def _scan_prefix(self, key: str, prefix: str) -> Iterator[dict[str, Any]]:
        """Items whose ``key`` starts with ``prefix``: a filtered scan (operators, checks)."""
        return self._pages(
            self._table.scan,
            FilterExpression=f"begins_with({key}, :prefix)",
            ExpressionAttributeValues={":prefix": prefix},
        )

    @staticmethod
    def _pages(read: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a Query or Scan, page after page."""
        while True:
            got = read(**kwargs)
            yield from got["Items"]
            if "LastEvaluatedKey" not in got:
                return
            kwargs["ExclusiveStartKey"] = got["LastEvaluatedKey"]


_deserializer = TypeDeserializer()


def _untyped(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _holding_record(item: Mapping[str, Any]) -> HoldingRecord:
    # Stored as ``holder``, not ``email``: an ``email`` attribute would put the holding in the
    # by-email index of assignments.
    values = _plain(dict(item))
    values["email"] = values.pop("holder", "")
    return HoldingRecord.model_validate(values)
