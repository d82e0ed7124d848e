"""What every store of the ledger shares: the one DynamoDB table, its keys and its writes.

One table holds every aggregate; each store (``batches``, ``chunks``, ``assignments``,
``holdings``, ``outbox``, ``requests``, ``signatures``, ``tracking``, ``counts``) owns its
keys' prefixes:

- ``pk = B#<batch>``: ``sk = BATCH`` (the batch), ``C#<chunk:05>`` (a chunk), ``R#<row:09>`` (an
  assignment), ``E#<row:09>`` (the row's e-mail, ``deliveries``), ``S#<row:09>`` (its resend
  asks, ``resends``) or ``W#<event>`` (a callback
  delivery, the outbox).
- ``pk = H#<e-mail>``, ``sk = P#<partner>\t<program>`` (names case-folded): a holding.
- ``pk = API#<batch>``, ``sk = REQUEST``: an API request's idempotency record.
- ``pk = API#sig#<webhook-id>``, ``sk = SIGNATURE``: an accepted signature (``signatures``).
- ``pk = SYNC#open`` / ``SYNC#settled``, ``sk = P#<purchase code>``: a tracked purchase.
- ``pk = COUNT#vouchers``, ``sk = D#<day>``: the day's voucher count.
- ``pk = TPL#<folder>``, ``sk = TEMPLATE``: an accepted e-mail template (``templates``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

EMAIL_INDEX = "by-email"
#: The operators' sparse indexes (template.yaml says what each holds and projects).
CODE_INDEX = "by-code"
PROGRAM_INDEX = "by-program"
BATCH_STATUS_INDEX = "batches-by-status"
CHUNK_STATE_INDEX = "chunks-by-state"
#: Claims per TransactWriteItems call (DynamoDB's limit).
CLAIMS_PER_CALL = 100
#: Transactions cancelled for a retryable reason (a concurrent one, throttling), before giving up.
_MAX_CONFLICT_RETRIES = 8
_rng = random.Random()  # noqa: S311 - backoff jitter, not a secret
BATCH_SK = "BATCH"
API_REQUEST_SK = "REQUEST"
SIGNATURE_SK = "SIGNATURE"
#: The daily voucher counts: one item per UTC day.
COUNTER_PK = "COUNT#vouchers"
#: The redemption sync's purchases: ``pk = SYNC#open`` while a code may still change (one Query
#: lists them), ``SYNC#settled`` once every code is used, expired or inactive; ``sk = P#<code>``.
TRACK_OPEN = "SYNC#open"
TRACK_SETTLED = "SYNC#settled"


class LedgerError(RuntimeError):
    """The ledger could not be read or written; the message is retried by SQS."""


def day_sk(day: str) -> str:
    return f"D#{day}"


def api_request_pk(batch_id: str) -> str:
    return f"API#{batch_id}"


def signature_pk(webhook_id: str) -> str:
    return f"API#sig#{webhook_id}"


def batch_pk(batch_id: str) -> str:
    return f"B#{batch_id}"


def chunk_sk(chunk_no: int) -> str:
    return f"C#{chunk_no:05d}"


def delivery_sk(slug: str) -> str:
    return f"W#{slug}"


def row_sk(row_number: int) -> str:
    return f"R#{row_number:09d}"


def track_sk(purchase_code: str) -> str:
    return f"P#{purchase_code}"


def holding_pk(email: str) -> str:
    return f"H#{email}"


def holding_sk(partner_name: str, program_name: str) -> str:
    return f"P#{partner_name.strip().casefold()}\t{program_name.strip().casefold()}"


def plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; our records hold ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set):
        return {plain(v) for v in value}
    return value


def compact(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None and v not in ({}, [])}


def plain_client(resource_client: Any, pool: int, *, own_session: bool) -> Any:
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


def cancellation_reasons(exc: ClientError, items: int) -> list[dict[str, Any]]:
    """A cancelled transaction's reason per item; any other error goes on up."""
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        raise exc
    reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
    if len(reasons) != items:
        raise exc
    return reasons


#: Cancellation reasons that heal by going again after a pause: another transaction on the
#: same items, or DynamoDB shedding load.
RETRYABLE_REASONS = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)
#: Reasons the stores handle item by item: went through had the rest (``None``), or the item's
#: condition did not hold (the caller looks at what is there).
_HANDLED_REASONS = frozenset({"None", "ConditionalCheckFailed"})


def back_off_on_conflict(exc: ClientError, reasons: list[dict[str, Any]], conflicts: int) -> int:
    """After a cancelled transaction: the number of retryable cancellations so far.

    A retryable reason (a concurrent transaction, throttling) waits a little (jittered,
    doubling) before the caller goes again, a bounded number of times; any other reason (a
    validation error, an item too large) never heals by retrying and raises at once.
    """
    codes = {str(r.get("Code") or "None") for r in reasons}
    unexpected = codes - RETRYABLE_REASONS - _HANDLED_REASONS
    if unexpected:
        raise LedgerError(
            f"DynamoDB refused the transaction ({', '.join(sorted(unexpected))}); "
            "it will not succeed by retrying: check the table and the item"
        ) from exc
    if not codes & RETRYABLE_REASONS:
        return conflicts
    conflicts += 1
    if conflicts > _MAX_CONFLICT_RETRIES:
        raise LedgerError(
            f"DynamoDB cancelled the transaction {conflicts} times "
            f"({', '.join(sorted(codes & RETRYABLE_REASONS))}); the message is retried later"
        ) from exc
    time.sleep(_rng.uniform(0, 0.05 * 2**conflicts))
    return conflicts


def conditional_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}


class LedgerTable:
    """The table and the clients every store writes through, built once per process."""

    def __init__(self, table_name: str, *, dynamodb: Any = None, pool: int = 10) -> None:
        resource = dynamodb or boto3.resource(
            "dynamodb", config=Config(max_pool_connections=max(10, pool))
        )
        self.table = resource.Table(table_name)
        # The resource's client takes plain Python values and, unlike the resource, is safe to
        # share between threads: claims go out on it in parallel.
        self.client = self.table.meta.client
        # Claims, the one write per recipient at ingest, go out on a plain client with values
        # already in DynamoDB's wire form and no parameter validation: a third of the client
        # CPU of the resource's client, which walks every request to convert it.
        self.wire = plain_client(self.client, max(10, pool), own_session=dynamodb is not None)
        self.name = table_name


class Store:
    """A store of one aggregate: the shared table, and the reads and writes all stores use."""

    def __init__(self, table: LedgerTable) -> None:
        self._ledger_table = table
        self._table = table.table
        self._client = table.client
        self._wire = table.wire
        self.table_name = table.name

    def _put_if_absent(self, item: dict[str, Any]) -> bool:
        """Put the item unless its key exists; False when it did (another writer, a replay)."""
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if conditional_failed(exc):
                return False
            raise
        return True

    def _update_if(self, **update: Any) -> bool:
        """A conditional UpdateItem: False when its condition did not hold."""
        try:
            self._table.update_item(**update)
        except ClientError as exc:
            if conditional_failed(exc):
                return False
            raise
        return True

    def _mark_once(self, pk: str, sk: str, attribute: str, now: int) -> bool:
        """Set ``attribute`` to ``now`` on the item unless it has one already; False when it
        has (or there is no item)."""
        return self._update_if(
            Key={"pk": pk, "sk": sk},
            UpdateExpression=f"SET {attribute} = :now",
            ConditionExpression=f"attribute_exists(pk) AND attribute_not_exists({attribute})",
            ExpressionAttributeValues={":now": now},
        )

    def _updated_if(self, **update: Any) -> dict[str, Any] | None:
        """A conditional UpdateItem asking for ``ReturnValues``: those attributes (plain), or
        None when its condition did not hold."""
        try:
            got = self._table.update_item(**update)
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        attributes: dict[str, Any] = plain(got["Attributes"])
        return attributes

    def _transact_if(self, items: list[dict[str, Any]]) -> int | None:
        """Write ``items`` in one transaction: None when it went through, else the index of the
        first item whose condition did not hold (any other cancellation goes on up)."""
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = cancellation_reasons(exc, len(items))
            failed = [i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"]
            if not failed:
                raise
            return failed[0]
        return None

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        """One item by its key (a consistent read), plain; None when there is none."""
        item = self._table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def _query_pk(self, pk: str, **read: Any) -> Iterator[dict[str, Any]]:
        """Every item of one partition key, plain (``read``: more of the Query's parameters)."""
        for item in self._pages(
            self._table.query,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": pk},
            **read,
        ):
            yield plain(item)

    def _query_prefix(self, batch_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        for item in self._pages(
            self._table.query,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": batch_pk(batch_id), ":prefix": prefix},
            ConsistentRead=True,
        ):
            yield plain(item)

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
