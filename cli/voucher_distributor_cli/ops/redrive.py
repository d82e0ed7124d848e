"""``voucher-distributor redrive``: move dead-letter messages back to their source queues."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from voucher_distributor_cli.ops.target import OpsError, Target

_SQS_MAX_BATCH = 10


@dataclass
class RedriveReport:
    dead_letter_queue: str
    source_queue: str
    found: int
    moved: int
    sample: list[str]

    def line(self, *, dry_run: bool) -> str:
        verb = "would move" if dry_run else "moved"
        count = self.found if dry_run else self.moved
        return f"{self.dead_letter_queue} -> {self.source_queue}: {verb} {count} message(s)"


def redrive(
    target: Target,
    *,
    queue: str | None = None,
    dry_run: bool = False,
    limit: int | None = None,
) -> list[RedriveReport]:
    """Move messages from dead-letter queues back to their source queues.

    A dry run counts and samples without moving (messages it looked at become visible again at
    once). ``queue`` names a DLQ or its source queue by logical id; default: every DLQ.
    """
    pairs = target.redrives
    if queue is not None:
        pairs = {dlq: src for dlq, src in pairs.items() if queue in {dlq, src}}
        if not pairs:
            known = ", ".join(sorted(target.redrives))
            raise OpsError(f"no dead-letter queue {queue!r}; known: {known}")
    sqs = target.client("sqs")
    reports = []
    for dlq, source in sorted(pairs.items()):
        reports.append(_move(sqs, target, dlq, source, dry_run=dry_run, limit=limit))
    return reports


def _move(
    sqs: Any, target: Target, dlq: str, source: str, *, dry_run: bool, limit: int | None
) -> RedriveReport:
    dlq_url, source_url = target.queues[dlq], target.queues[source]
    found = moved = 0
    sample: list[str] = []
    looked: list[str] = []
    while limit is None or found < limit:
        want = _SQS_MAX_BATCH if limit is None else min(_SQS_MAX_BATCH, limit - found)
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=want,
            VisibilityTimeout=30,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        found += len(messages)
        sample.extend(m["Body"][:200] for m in messages[: max(0, 3 - len(sample))])
        if dry_run:
            looked.extend(m["ReceiptHandle"] for m in messages)
            continue
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        ok = {e["Id"] for e in sent.get("Successful", [])}
        done = [m for i, m in enumerate(messages) if str(i) in ok]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        moved += len(done)
        if len(done) < len(messages):
            break  # the rest stay in the DLQ and reappear after the visibility timeout
    for chunk in _chunks(looked, _SQS_MAX_BATCH):  # a dry run leaves the DLQ as it was
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(chunk)
            ],
        )
    return RedriveReport(dlq, source, found, moved, sample)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
