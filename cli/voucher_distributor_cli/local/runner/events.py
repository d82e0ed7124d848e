"""The SQS event-source mapping's side of the local runner: the ``aws:sqs`` record and the
``Scheduled Event`` a handler is given, Lambda's reading of a ``ReportBatchItemFailures`` answer,
what a pump did (``PumpReport``), and the handler's own visibility changes, left alone."""

from __future__ import annotations

import base64
import functools
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voucher_distributor_cli.local.runner.specs import FunctionSpec, SqsEventSpec
from voucher_distributor_cli.local.runner.stack import MotoStack

log = logging.getLogger(__name__)

_MAX_RECEIVE = 10  # SQS ReceiveMessage limit


@dataclass(frozen=True)
class EventSource:
    """One SQS event-source mapping: which queue feeds which function, and how."""

    function_id: str
    event: SqsEventSpec
    queue_url: str
    queue_arn: str


@dataclass(frozen=True)
class InvocationFailure:
    """An invocation whose messages (all or some) went back to the queue."""

    function_id: str
    message_ids: tuple[str, ...]
    reason: str


@dataclass
class PumpReport:
    """What a pump (or a whole run) did, for progress output."""

    invocations: int = 0
    delivered: int = 0
    deleted: int = 0
    returned: int = 0
    errors: int = 0
    by_function: dict[str, int] = field(default_factory=dict)
    failures: list[InvocationFailure] = field(default_factory=list)

    def add(self, other: PumpReport) -> None:
        """Accumulate another report into this one."""
        self.invocations += other.invocations
        self.delivered += other.delivered
        self.deleted += other.deleted
        self.returned += other.returned
        self.errors += other.errors
        for name, count in other.by_function.items():
            self.by_function[name] = self.by_function.get(name, 0) + count
        self.failures.extend(other.failures)


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A ``ReceiveMessage`` message in the shape Lambda gives it to a handler."""
    attributes = dict(message.get("Attributes") or {})
    message_attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        converted: dict[str, Any] = {}
        if "StringValue" in value:
            converted["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        converted["stringListValues"] = list(value.get("StringListValues") or [])
        converted["binaryListValues"] = [
            base64.b64encode(item).decode() for item in value.get("BinaryListValues") or []
        ]
        converted["dataType"] = value["DataType"]
        message_attributes[name] = converted
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update(
        {
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
    )
    return record


class _VisibilityChanges:
    """Receipt handles whose visibility was changed (by a handler) since last asked.

    Recorded in the moto server, which runs in this process: a handler's own
    ``ChangeMessageVisibility`` on the message it is handling is then left alone, where the
    runner would otherwise reset a failed message's visibility to its short local retry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: set[str] = set()
        self._installed = False

    def install(self) -> None:
        with self._lock:
            if self._installed:
                return
            from moto.sqs.models import SQSBackend  # noqa: PLC0415 - the runner's moto only

            original = SQSBackend.change_message_visibility
            changes = self

            @functools.wraps(original)
            def recorded(
                backend: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
            ) -> None:
                original(backend, queue_name, receipt_handle, visibility_timeout)
                with changes._lock:
                    changes._handles.add(receipt_handle)

            SQSBackend.change_message_visibility = recorded  # type: ignore[method-assign,assignment]
            self._installed = True

    def forget(self, handles: Iterable[str]) -> None:
        with self._lock:
            self._handles.difference_update(handles)

    def take(self, handle: str) -> bool:
        with self._lock:
            if handle in self._handles:
                self._handles.discard(handle)
                return True
            return False


_visibility_changes = _VisibilityChanges()


def scheduled_event(spec: FunctionSpec, stack: MotoStack) -> dict[str, Any]:
    """The ``Scheduled Event`` EventBridge delivers for the function's first schedule rule."""
    rule = spec.schedules[0]
    region = stack.region
    account = stack.account_id
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule.rule_name}"],
        "detail": {},
    }


def _batch_item_failures(
    function_id: str, result: Any, handles: Mapping[str, str]
) -> tuple[list[str], str]:
    """Lambda's reading of a ReportBatchItemFailures response: ids to return, and why.

    An empty list (or no ``batchItemFailures`` at all) is full success; an identifier that is
    missing, empty or not in the batch makes Lambda treat the whole batch as failed.
    """
    if not isinstance(result, Mapping):
        return [], ""
    items = result.get("batchItemFailures")
    if not items:
        return [], ""
    failed: list[str] = []
    for item in items if isinstance(items, list) else [items]:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not identifier or identifier not in handles:
            log.error(
                "%s returned an invalid batchItemFailures entry %r: the whole batch fails",
                function_id,
                item,
            )
            return list(handles), f"invalid batchItemFailures entry {item!r}"
        if identifier not in failed:
            failed.append(str(identifier))
    return failed, "batchItemFailures"


def _chunks(items: list[str], size: int = _MAX_RECEIVE) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
