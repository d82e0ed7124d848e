"""Partial-batch processing of SQS events (the event sources' ``ReportBatchItemFailures``).

What Powertools' ``BatchProcessor`` + ``process_partial_response`` did for the handlers, without
its import cost (~85 ms of a cold start: the batch utility imports asyncio and every event data
class): call the record handler for each record of ``event["Records"]`` in order, and answer
``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}`` for the ones that raised, so
Lambda deletes the others and returns only those to the queue.

- A record that raises an ``Exception`` is logged (``logger.exception`` with its message id and
  receive count, never its body: bodies may hold e-mail addresses) and reported as failed; the
  loop goes on with the next record. ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``)
  is not caught, as before.
- When *every* record of a non-empty batch failed, :class:`BatchFailed` is raised instead of
  returning them all, like Powertools' default (``raise_on_entire_batch_failure``). Lambda treats
  both the same way for the messages (all return to the queue after the visibility timeout), but
  only a raised error counts in the function's ``Errors`` metric, which ``FunctionErrorsAlarm``
  watches, and slows the event source's scaling. Four of the five functions read batches of 1,
  so every failure there is an entire-batch failure: returning it would hide all of them from
  the alarm.
- ``Records`` empty: nothing to do, no failures. ``Records`` missing or not a list: not an SQS
  event, ``ValueError``. A record without ``messageId`` cannot be reported: ``KeyError`` (the
  whole batch fails, as Lambda would treat an unknown identifier).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypedDict

__all__ = [
    "BatchFailed",
    "BatchItemFailure",
    "PartialBatchResponse",
    "SqsRecord",
    "process_sqs_batch",
]

_log = logging.getLogger(__name__)


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


class ExceptionLogger(Protocol):
    """What the loop needs of a logger (``logging.Logger`` and Powertools' ``Logger`` have it)."""

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> Any: ...


class BatchFailed(RuntimeError):
    """Every record of the batch failed (each one is logged); the invocation is an error."""

    def __init__(self, message_ids: list[str]) -> None:
        self.message_ids = message_ids
        super().__init__(
            f"all {len(message_ids)} record(s) of the batch failed (logged above): "
            f"{', '.join(message_ids)}"
        )


class SqsRecord:
    """A read-only view of one record of a Lambda SQS event (the fields the handlers use)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @property
    def message_id(self) -> str:
        return str(self.raw["messageId"])

    @property
    def body(self) -> str:
        return str(self.raw["body"])

    @property
    def attributes(self) -> Mapping[str, str]:
        """System attributes (``ApproximateReceiveCount``, ``SentTimestamp``, ...)."""
        attributes: Mapping[str, str] = self.raw.get("attributes") or {}
        return attributes

    def message_attribute(self, name: str) -> str | None:
        """A string message attribute the sender set, if any."""
        attributes = self.raw.get("messageAttributes") or {}
        value = (attributes.get(name) or {}).get("stringValue")
        return str(value) if value is not None else None

    @property
    def approximate_receive_count(self) -> int:
        """How many times the message was received, this delivery included (1 the first time)."""
        return int(self.attributes["ApproximateReceiveCount"])

    @property
    def event_source_arn(self) -> str:
        return str(self.raw.get("eventSourceARN", ""))

    @property
    def receipt_handle(self) -> str:
        return str(self.raw.get("receiptHandle", ""))

    @property
    def queue_url(self) -> str:
        """The source queue's URL, from its ARN (``arn:aws:sqs:REGION:ACCOUNT:NAME``): what
        ``ChangeMessageVisibility`` needs to set this message's own visibility."""
        parts = self.event_source_arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise ValueError(f"not an SQS queue ARN: {self.event_source_arn!r}")
        _, partition, _, region, account, name = parts
        suffix = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
        return f"https://sqs.{region}.{suffix}/{account}/{name}"

    def __repr__(self) -> str:  # never the body: it may hold e-mail addresses
        return f"SqsRecord(message_id={self.raw.get('messageId')!r})"


def process_sqs_batch(
    event: Mapping[str, Any],
    record_handler: Callable[[SqsRecord], object],
    *,
    logger: ExceptionLogger | None = None,
    time_is_short: Callable[[], bool] | None = None,
    defer: Callable[[SqsRecord], object] | None = None,
) -> PartialBatchResponse:
    """Run ``record_handler`` on each record; the failed ones as a partial-batch response.

    With ``time_is_short`` and ``defer``: before each record after the first, if time is short
    (the invocation's remaining time), that record and the rest are not handled but handed to
    ``defer`` (sent again as new messages, their receive counts fresh), so an invocation never
    times out halfway and returns every message to the queue, handled ones included. A record
    ``defer`` fails on is reported failed, as a handler's failure.

    Raises :class:`BatchFailed` when every record of a non-empty batch failed (see the module).
    """
    records = event.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an SQS event: 'Records' is missing or not a list")
    log = _log if logger is None else logger
    failed: list[str] = []
    deferring = False
    for index, raw in enumerate(records):
        record = SqsRecord(raw)
        message_id = record.message_id
        if defer is not None and time_is_short is not None and index > 0 and not deferring:
            deferring = time_is_short()
        try:
            if deferring:
                assert defer is not None
                defer(record)
                continue
            record_handler(record)
        except Exception:
            log.exception(
                "SQS message %s failed; it returns to the queue",
                message_id,
                extra={
                    "sqs_message_id": message_id,
                    "receive_count": record.attributes.get("ApproximateReceiveCount"),
                },
            )
            failed.append(message_id)
    if records and len(failed) == len(records):
        raise BatchFailed(failed)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failed]}
