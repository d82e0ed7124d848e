"""The callback outbox against moto: the ledger's conditional writes, and the deliverer's steps
(attempt, record, retry in hops, end, summary) with the receiver faked at the wire (httpx) and
the clock in the test's hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest

from voucher_distributor.adapters.callbacks import CallbackSender, SignedCallbacks
from voucher_distributor.adapters.events import Events
from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.queues import Queues
from voucher_distributor.adapters.storage import Storage
from voucher_distributor.models.ledger import (
    BatchRecord,
    CallbackAttempt,
    CallbackDelivery,
    DeliveryState,
)
from voucher_distributor.models.messages import CallbackMessage
from voucher_distributor.pipeline.callbacks import (
    deliver,
    deliveries_view,
    redeliver,
    send_event_callback,
)
from voucher_distributor.pipeline.context import Services
from voucher_distributor_cli.local.runner import MotoStack

from .moto_stack import TEMPLATE, boto_kwargs, stack_ledger, stack_settings

T0 = 1_800_000_000
KEY = "integration-signing-key"


def _delivery(batch_id: str = "r-1", slug: str = "completed", **values: Any) -> CallbackDelivery:
    fields: dict[str, Any] = {
        "batch_id": batch_id,
        "slug": slug,
        "webhook_id": f"msg_{batch_id}_{slug}",
        "event": "Voucher Batch Completed",
        "url": "https://hooks.example/cb",
        "body": '{"type":"Voucher Batch Completed"}',
        "created_at": T0,
        "next_attempt_at": T0,
    }
    return CallbackDelivery(**(fields | values))


def _put(ledger: Ledger) -> CallbackDelivery:
    """``_delivery()`` put in the outbox, as the ledger reads it back."""
    ledger.outbox.put_callback_delivery(_delivery())
    seen = ledger.outbox.get_callback_delivery("r-1", "completed")
    assert seen is not None
    return seen


# ---------------------------------------------------------------------- the ledger's writes


def test_a_delivery_is_recorded_once(ledger: Ledger) -> None:
    assert ledger.outbox.put_callback_delivery(_delivery())
    assert not ledger.outbox.put_callback_delivery(_delivery(url="https://elsewhere.example/x"))
    (stored,) = ledger.outbox.callback_deliveries("r-1")
    assert stored.url == "https://hooks.example/cb"
    assert stored.state == DeliveryState.PENDING
    assert ledger.batches.get_batch("r-1") is None  # the outbox item is not a batch


def test_two_workers_cannot_both_take_one_attempt(ledger: Ledger) -> None:
    seen = _put(ledger)
    assert ledger.outbox.claim_callback_attempt(seen, owner="a", now=T0, lease_seconds=60)
    assert not ledger.outbox.claim_callback_attempt(seen, owner="b", now=T0 + 1, lease_seconds=60)
    attempt = CallbackAttempt(at=T0 + 1, status=503, latency_ms=12)
    assert not ledger.outbox.record_callback_attempt(
        seen, attempt, owner="b", state=DeliveryState.PENDING, next_attempt_at=T0 + 6, reason="x"
    )
    assert ledger.outbox.record_callback_attempt(
        seen, attempt, owner="a", state=DeliveryState.PENDING, next_attempt_at=T0 + 6, reason="x"
    )
    # The attempt is made: the same view of the delivery can take it no more.
    assert not ledger.outbox.claim_callback_attempt(seen, owner="c", now=T0 + 100, lease_seconds=60)
    after = ledger.outbox.get_callback_delivery("r-1", "completed")
    assert after is not None
    assert after.tries == 1
    assert after.attempts == [attempt]
    assert after.lease_owner is None
    assert after.next_attempt_at == T0 + 6


def test_a_dead_workers_lease_runs_out_and_the_attempt_is_taken_over(ledger: Ledger) -> None:
    seen = _put(ledger)
    assert ledger.outbox.claim_callback_attempt(seen, owner="dead", now=T0, lease_seconds=60)
    assert not ledger.outbox.claim_callback_attempt(seen, owner="b", now=T0 + 59, lease_seconds=60)
    assert ledger.outbox.claim_callback_attempt(seen, owner="b", now=T0 + 61, lease_seconds=60)


def test_only_an_ended_delivery_is_restarted_and_the_old_round_goes_stale(ledger: Ledger) -> None:
    seen = _put(ledger)
    assert (
        ledger.outbox.restart_callback_delivery(seen, now=T0, states={DeliveryState.FAILED}) is None
    )
    ledger.outbox.claim_callback_attempt(seen, owner="a", now=T0, lease_seconds=60)
    ledger.outbox.record_callback_attempt(
        seen,
        CallbackAttempt(at=T0, status=410),
        owner="a",
        state=DeliveryState.FAILED,
        next_attempt_at=None,
        reason="HTTP 410",
    )
    failed = ledger.outbox.get_callback_delivery("r-1", "completed")
    assert failed is not None
    again = ledger.outbox.restart_callback_delivery(
        failed, now=T0 + 5, states={DeliveryState.FAILED}
    )
    assert again is not None
    assert (again.state, again.round, again.tries, again.reason) == ("pending", 1, 0, None)
    assert again.attempts == failed.attempts  # the history stays
    # The same restart asked twice (two operators): once.
    assert (
        ledger.outbox.restart_callback_delivery(failed, now=T0 + 6, states={DeliveryState.FAILED})
        is None
    )
    assert not ledger.outbox.claim_callback_attempt(
        failed, owner="old", now=T0 + 7, lease_seconds=60
    )


# ---------------------------------------------------------------------- the deliverer's steps


@dataclass
class Receiver:
    """The receiver at the wire: answers from a script, then 200."""

    script: list[int] = field(default_factory=list)
    got: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.got.append(request)
        return httpx.Response(self.script.pop(0) if self.script else 200)


@dataclass
class Rig:
    services: Services
    receiver: Receiver
    sqs: Any
    queue_url: str
    now: list[int]

    def delayed(self) -> int:
        got = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )
        return int(got["Attributes"]["ApproximateNumberOfMessagesDelayed"])

    def visible(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        bodies = [json.loads(m["Body"]) for m in got.get("Messages", [])]
        for m in got.get("Messages", []):
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return bodies


@pytest.fixture
def rig() -> Iterator[Rig]:
    with MotoStack(TEMPLATE) as stack:
        kwargs = boto_kwargs(stack)
        sqs, s3 = boto3.client("sqs", **kwargs), boto3.client("s3", **kwargs)
        queue_url = stack.resource("CallbackQueue").ref
        settings = stack_settings(
            stack,
            certiverse_base_url="https://api.example/api",
            callback_queue_url=queue_url,
            callback_retry_schedule="5,3600",
        )
        receiver = Receiver()
        now = [T0]
        sender = CallbackSender(
            resolver=lambda host, port: ["93.184.216.34"],
            transport=httpx.MockTransport(receiver),
            clock=lambda: now[0],
        )
        services = Services(
            settings=settings,
            ledger=stack_ledger(stack),
            storage=Storage(settings.inbox_bucket, s3=s3),
            queues=Queues(sqs=sqs),
            events=Events(events=boto3.client("events", **kwargs)),
            certiverse=None,  # type: ignore[arg-type] - callbacks never call Certiverse
            callbacks=SignedCallbacks(sender, lambda: KEY),
            clock=lambda: now[0],
        )
        yield Rig(services, receiver, sqs, queue_url, now)


def _batch(rig: Rig, batch_id: str = "r-cb", url: str | None = "https://hooks.example/cb?t=1"):
    batch = BatchRecord(
        batch_id=batch_id,
        kind="request",
        source=batch_id,
        results_csv_key=f"results/requests/{batch_id}.results.csv",
        summary_key=f"results/requests/{batch_id}.summary.json",
        created_at=T0,
        callback_url=url,
        status="DONE",
    )
    rig.services.ledger.batches.create_batch(batch)
    rig.services.storage.put_json(batch.summary_key, {"batchId": batch_id, "status": "completed"})
    return batch


def _announced(rig: Rig, *script: int) -> BatchRecord:
    """A batch with a callback URL that announced "Voucher Batch Completed"; the receiver will
    answer ``script`` (then 200)."""
    batch = _batch(rig)
    send_event_callback(rig.services, batch, "Voucher Batch Completed", {"batchId": "r-cb"})
    rig.receiver.script = list(script)
    return batch


def test_no_callback_url_means_no_delivery(rig: Rig) -> None:
    batch = _batch(rig, url=None)
    send_event_callback(rig.services, batch, "Voucher Batch Completed", {"batchId": "r-cb"})
    assert rig.services.ledger.outbox.callback_deliveries(batch.batch_id) == []
    assert rig.visible() == []


def test_an_event_announced_twice_is_one_message_with_one_id(rig: Rig) -> None:
    batch = _batch(rig)
    for _ in range(2):  # a re-run of the report
        send_event_callback(rig.services, batch, "Voucher Batch Completed", {"batchId": "r-cb"})
    (delivery,) = rig.services.ledger.outbox.callback_deliveries("r-cb")
    assert delivery.webhook_id == "msg_r-cb_completed"
    assert json.loads(delivery.body) == {"type": "Voucher Batch Completed", "batchId": "r-cb"}
    messages = rig.visible()
    assert messages  # the first attempt is queued (again, harmlessly, by the re-run)
    assert {json.dumps(m, sort_keys=True) for m in messages} == {
        json.dumps({"batchId": "r-cb", "delivery": "completed", "round": 0, "attempt": 1},
                   sort_keys=True)
    }  # fmt: skip


def test_retries_wait_in_hops_of_at_most_fifteen_minutes_then_deliver(rig: Rig) -> None:
    batch = _announced(rig, 503, 502)
    rig.visible()
    first = CallbackMessage(batch_id="r-cb", delivery="completed", round=0, attempt=1)
    assert deliver(rig.services, first) == "pending"
    assert deliver(rig.services, first) == "duplicate"  # the same message again sends nothing
    assert len(rig.receiver.got) == 1
    rig.now[0] += 5
    second = CallbackMessage(batch_id="r-cb", delivery="completed", round=0, attempt=2)
    assert deliver(rig.services, second) == "pending"
    (delivery,) = rig.services.ledger.outbox.callback_deliveries("r-cb")
    assert delivery.next_attempt_at == T0 + 5 + 3600
    third = CallbackMessage(batch_id="r-cb", delivery="completed", round=0, attempt=3)
    rig.now[0] += 900  # a hop arrives: not due yet, sent on again
    assert deliver(rig.services, third) == "hop"
    assert len(rig.receiver.got) == 2
    assert rig.delayed() >= 1
    rig.now[0] += 2700
    assert deliver(rig.services, third) == "delivered"
    (delivery,) = rig.services.ledger.outbox.callback_deliveries("r-cb")
    assert [a.status for a in delivery.attempts] == [503, 502, 200]
    assert [a.at for a in delivery.attempts] == [T0, T0 + 5, T0 + 3605]
    # The same bytes and id every time; the timestamp per attempt.
    assert len({r.content for r in rig.receiver.got}) == 1
    assert {r.headers["webhook-id"] for r in rig.receiver.got} == {"msg_r-cb_completed"}
    assert [r.headers["webhook-timestamp"] for r in rig.receiver.got] == [
        str(T0),
        str(T0 + 5),
        str(T0 + 3605),
    ]
    summary = rig.services.storage.get_json(batch.summary_key)
    assert summary["status"] == "completed"  # the rest of the summary is kept
    assert summary["callbacks"] == deliveries_view([delivery])
    assert summary["callbacks"][0]["url"] == "https://hooks.example/cb"
    assert summary["callbacks"][0]["nextAttemptAt"] is None


def test_attempts_run_out_then_redeliver_gives_a_fresh_budget_under_the_same_id(
    rig: Rig,
) -> None:
    _announced(rig, 503, 503, 503)
    for attempt, wait in ((1, 5), (2, 3600), (3, 0)):
        message = CallbackMessage(batch_id="r-cb", delivery="completed", attempt=attempt)
        deliver(rig.services, message)
        rig.now[0] += wait
    (failed,) = rig.services.ledger.outbox.callback_deliveries("r-cb")
    assert failed.state == DeliveryState.FAILED
    assert failed.reason == "HTTP 503 on the last of 3 attempts"
    assert deliveries_view([failed])[0]["reason"] == failed.reason
    rig.visible()
    restarted = redeliver(
        rig.services.ledger, rig.services.queues, rig.queue_url, "r-cb", now=rig.now[0]
    )
    assert [d.webhook_id for d in restarted] == ["msg_r-cb_completed"]
    (message,) = rig.visible()
    assert message == {"batchId": "r-cb", "delivery": "completed", "round": 1, "attempt": 1}
    old_round = CallbackMessage(batch_id="r-cb", delivery="completed", round=0, attempt=3)
    assert deliver(rig.services, old_round) == "stale"
    assert deliver(rig.services, CallbackMessage.model_validate(message)) == "delivered"
    (done,) = rig.services.ledger.outbox.callback_deliveries("r-cb")
    assert [(a.round, a.status) for a in done.attempts] == [(0, 503)] * 3 + [(1, 200)]


def test_a_refusing_receiver_ends_the_delivery_at_once(rig: Rig) -> None:
    _announced(rig, 410)
    message = CallbackMessage(batch_id="r-cb", delivery="completed", attempt=1)
    assert deliver(rig.services, message) == "failed"
    rig.visible()
    assert rig.delayed() == 0  # nothing more queued


def test_a_worker_that_died_before_queueing_the_next_attempt_is_made_good(rig: Rig) -> None:
    _announced(rig, 503)
    message = CallbackMessage(batch_id="r-cb", delivery="completed", attempt=1)
    assert deliver(rig.services, message) == "pending"
    rig.visible()
    rig.sqs.purge_queue(QueueUrl=rig.queue_url)  # as if the next attempt's message never went
    rig.now[0] += 180  # the first message comes back after its visibility timeout
    assert deliver(rig.services, message) == "requeued"
    (next_message,) = rig.visible()
    assert next_message["attempt"] == 2
