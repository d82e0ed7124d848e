"""SQS: the work queues between the pipeline's functions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import islice
from typing import Any

import boto3

#: SQS refuses per-message delays above 15 minutes.
MAX_DELAY_SECONDS = 900
#: ... and a message's visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS = 43_200
_SEND_BATCH = 10


class QueueSendError(RuntimeError):
    """Some messages could not be sent; the caller's message is retried."""


class Queues:
    def __init__(self, *, sqs: Any = None) -> None:
        self._sqs = sqs or boto3.client("sqs")

    def send(
        self,
        queue_url: str,
        body: dict[str, Any],
        *,
        delay_seconds: int = 0,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """``attributes``: string message attributes (who asked, for the audit trail)."""
        self._sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps(body, separators=(",", ":")),
            DelaySeconds=max(0, min(MAX_DELAY_SECONDS, int(delay_seconds))),
            **(
                {
                    "MessageAttributes": {
                        k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                    }
                }
                if attributes
                else {}
            ),
        )

    def return_later(self, queue_url: str, receipt_handle: str, delay_seconds: int) -> None:
        """The message being handled comes back ``delay_seconds`` from now (its visibility),
        instead of when the queue's visibility timeout lapses; the handler then fails it."""
        self._sqs.change_message_visibility(
            QueueUrl=queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(MAX_VISIBILITY_SECONDS, int(delay_seconds))),
        )

    def send_many(self, queue_url: str, bodies: Iterable[dict[str, Any]]) -> int:
        """Send in batches of ten; raise if any entry failed (the caller retries them all)."""
        sent = 0
        iterator = iter(bodies)
        while batch := list(islice(iterator, _SEND_BATCH)):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(body, separators=(",", ":"))}
                for i, body in enumerate(batch)
            ]
            got = self._sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if got.get("Failed"):
                reasons = {f.get("Code", "?") for f in got["Failed"]}
                raise QueueSendError(
                    f"{len(got['Failed'])} message(s) to {queue_url} failed: {sorted(reasons)}"
                )
            sent += len(batch)
        return sent
