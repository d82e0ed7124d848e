"""Where moto's emulation differs from AWS in a way the pipeline can see, made as AWS does it.

- **S3 event notifications carry no ``versionId``.** On a versioned bucket AWS puts the
  object's version id in ``s3.object.versionId`` (and a ``sequencer``), so two uploads of one
  key in the same second are two batches. moto 5 leaves both out, so ingest would read the
  newest version for both events. It leaves out ``userIdentity`` (who uploaded) too. Patched
  in the moto server's process (it runs in ours).
- **A transaction deep-copies every table it touches** (its rollback plan), so its cost grows
  with the table: claims go 100 to a transaction, and a 100,000-row run would copy the ledger a
  thousand times. A transaction of puts, deletes and updates — claims and their release, a
  plan recorded with the day's voucher count, an approved batch released — is decided the way
  DynamoDB decides it instead: every condition is checked first, and then either all writes
  land or none does (``TransactionCanceledException`` with a reason per item, the old item
  where asked). (An update expression moto rejects would land the writes before it: ours are
  all valid.) A transaction with a ``ConditionCheck`` goes the original way.
- **A conditional write is not atomic across threads**: moto checks the condition, then
  writes, and its server answers requests on threads. DynamoDB decides each conditional write
  (and each transaction) on its own; here one lock serialises them, so two batches claiming the
  same person at once cannot both win.
- **A schedule rule matches every event.** An EventBridge rule with a ``ScheduleExpression``
  and no ``EventPattern`` fires on its schedule only; moto treats the missing pattern as
  "match all" and sends every ``PutEvents`` to its target (the sync function, which moto would
  run in Docker: the put fails). Such a rule receives no events here; the local runner runs
  its function on demand (``LocalLambdas.run_scheduled``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_applied = False
#: The uploader S3 notifications name locally (AWS: the caller's principal id).
LOCAL_PRINCIPAL = "AWS:local-runner"
_writes = threading.RLock()


def apply() -> None:
    """Idempotent: patch once per process."""
    global _applied  # noqa: PLW0603 - a once-per-process switch
    if _applied:
        return
    from moto.s3 import notifications  # noqa: PLC0415

    original = notifications._get_s3_event

    def with_version(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        event = original(event_name, bucket, key, notification_id)
        version = getattr(key, "version_id", None)
        for record in event.get("Records", []):
            if version and version != "null":
                record["s3"]["object"]["versionId"] = version
            # AWS names the uploader; moto does not (the local runner's one identity).
            record.setdefault("userIdentity", {"principalId": LOCAL_PRINCIPAL})
        return event

    notifications._get_s3_event = with_version
    _patch_put_transactions()
    _patch_schedule_rules()
    _applied = True


def _patch_schedule_rules() -> None:
    from moto.events.models import Rule  # noqa: PLC0415

    original = Rule.send_to_targets

    @functools.wraps(original)
    def on_schedule_only(self: Any, *args: Any, **kwargs: Any) -> None:
        pattern = getattr(self.event_pattern, "_pattern", None)
        if getattr(self, "scheduled_expression", None) and not pattern:
            return
        original(self, *args, **kwargs)

    Rule.send_to_targets = on_schedule_only  # type: ignore[method-assign]


def _patch_put_transactions() -> None:
    from moto.dynamodb.comparisons import get_filter_expression  # noqa: PLC0415
    from moto.dynamodb.exceptions import (  # noqa: PLC0415
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
    )
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(  # noqa: PLR0912 - DynamoDB's rules, one branch each
        self: Any, transact_items: list[dict[str, Any]]
    ) -> None:
        if not transact_items or any(
            set(item) not in ({"Put"}, {"Delete"}, {"Update"}) for item in transact_items
        ):
            original(self, transact_items)
            return
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        seen: set[tuple[str, str]] = set()
        errors: list[tuple[Any, Any, Any]] = []
        for item in transact_items:
            put = item.get("Put") or item.get("Delete") or item["Update"]
            table = self.get_table(put["TableName"])
            if "Put" in item:
                attrs = put["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = put["Key"]
            unique = (put["TableName"], str(sorted(key.items())))
            if unique in seen:
                raise MultipleTransactionsException()
            seen.add(unique)
            condition = put.get("ConditionExpression")
            if condition is None:
                errors.append((None, None, None))
                continue
            current = self.get_item(put["TableName"], key)
            holds = get_filter_expression(
                condition,
                put.get("ExpressionAttributeNames"),
                put.get("ExpressionAttributeValues"),
            ).expr(current)
            if holds:
                errors.append((None, None, None))
                continue
            old = None
            if put.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for item in transact_items:
            if "Put" in item:
                self.put_item(item["Put"]["TableName"], item["Put"]["Item"])
            elif "Update" in item:
                update = item["Update"]
                self.update_item(
                    update["TableName"],
                    update["Key"],
                    update["UpdateExpression"],
                    update.get("ExpressionAttributeNames") or {},
                    update.get("ExpressionAttributeValues") or {},
                )
            else:
                self.delete_item(item["Delete"]["TableName"], item["Delete"]["Key"])

    setattr(DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        setattr(DynamoDBBackend, name, _serialised(getattr(DynamoDBBackend, name)))


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _writes:
            return method(*args, **kwargs)

    return locked
