"""Durable, signed callbacks: an outbox in the ledger, delivered through the callback queue.

:func:`send_event_callback` records one delivery per (batch, event) — with a conditional put,
so a re-run of the step that announced the event never makes a second message — and queues its
first attempt. :func:`deliver` makes one attempt per message: it claims the attempt with a
conditional write (two deliveries of one message cannot both send it), POSTs, records the
attempt (time, status, latency) and either ends the delivery (``delivered`` / ``failed``, with
the ``CallbacksDelivered`` / ``CallbacksFailed`` metric) or queues the next attempt per
``CallbackRetrySchedule``, in hops of at most 15 minutes. After each attempt the batch's
``summary.json`` shows every delivery under ``callbacks`` (:func:`deliveries_view`).

The body is fixed when the delivery is recorded; every attempt sends the same bytes under the
same ``webhook-id``, so a receiver that got an event twice (an attempt whose answer was lost, a
redelivery) drops the repeat by that id.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.queues import Queues
from voucher_distributor.domain.callbacks import (
    after_attempt,
    event_slug,
    hop_delay,
    safe_url,
    webhook_id,
)
from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.ledger import (
    BatchRecord,
    CallbackAttempt,
    CallbackDelivery,
    DeliveryState,
)
from voucher_distributor.models.messages import CallbackMessage
from voucher_distributor.pipeline.context import Services, log

#: A claimed attempt is another worker's to take over after this long: longer than the deliver
#: function's timeout (30 s), so a worker that died can no longer be sending it.
ATTEMPT_LEASE_SECONDS = 60


class CallbacksNotConfigured(RuntimeError):
    """A batch names a callback URL but the stack has no callback queue or signing key: set
    CALLBACK_QUEUE_URL and CALLBACK_SECRET_ARN (the template does)."""


def send_event_callback(
    services: Services,
    batch: BatchRecord,
    detail_type: str,
    detail: dict[str, Any],
    *,
    key: str | None = None,
) -> None:
    """Record the event's delivery to the batch's callback URL and queue its first attempt.

    A no-op when the batch names no callback URL. ``key`` tells apart repeated events of one
    type for one batch (e.g. a reminder per day); without it, an event type is sent once per
    batch. The body is the event's detail with its ``type`` (the EventBridge detail-type).
    """
    if not batch.callback_url:
        return
    settings = services.settings
    if not settings.callback_queue_url:
        raise CallbacksNotConfigured(CallbacksNotConfigured.__doc__)
    slug = event_slug(detail_type, key)
    body = json.dumps({"type": detail_type, **detail}, separators=(",", ":"), default=str)
    delivery = CallbackDelivery(
        batch_id=batch.batch_id,
        slug=slug,
        webhook_id=webhook_id(batch.batch_id, slug),
        event=detail_type,
        url=batch.callback_url,
        body=body,
        created_at=services.now(),
        next_attempt_at=services.now(),
    )
    if not services.ledger.outbox.put_callback_delivery(delivery):
        existing = services.ledger.outbox.get_callback_delivery(batch.batch_id, slug)
        if existing is None or existing.state != DeliveryState.PENDING or existing.tries:
            return  # recorded and under way (or ended) already: nothing more to send
        delivery = existing  # recorded, but its first message may not have gone: send it again
    _queue(services, delivery, attempt=delivery.tries + 1, delay=0)
    log.info(
        "callback %s of batch %s queued for %s",
        delivery.webhook_id, batch.batch_id, safe_url(delivery.url),
    )  # fmt: skip


def deliver(services: Services, message: CallbackMessage) -> str:
    """One attempt of a delivery (or one hop toward it); what happened, for the log."""
    delivery = services.ledger.outbox.get_callback_delivery(message.batch_id, message.delivery)
    if delivery is None:
        return "missing"
    return _not_now(services, delivery, message) or _attempt(services, delivery)


def _not_now(services: Services, delivery: CallbackDelivery, message: CallbackMessage) -> str:
    """Why this message makes no attempt (and what it did instead); "" when it makes one."""
    if delivery.state != DeliveryState.PENDING or message.round != delivery.round:
        return "stale"  # ended, or restarted by redeliver (which sent its own message)
    now = services.now()
    if message.attempt == delivery.tries and now - _last_at(delivery) >= ATTEMPT_LEASE_SECONDS:
        # This message's attempt was made and recorded long ago, yet the delivery still waits:
        # the worker died before queueing the next one. Queue it now.
        _queue_next(services, delivery, now)
        return "requeued"
    if message.attempt != delivery.tries + 1:
        return "duplicate"
    if delivery.next_attempt_at is not None and now < delivery.next_attempt_at:
        _queue(services, delivery, attempt=message.attempt, delay=delivery.next_attempt_at - now)
        return "hop"
    return ""


def _attempt(services: Services, delivery: CallbackDelivery) -> str:
    """Claim the attempt, make it, record it; then end the delivery or queue the next one."""
    ledger, now = services.ledger, services.now()
    owner = uuid.uuid4().hex
    if not ledger.outbox.claim_callback_attempt(
        delivery, owner=owner, now=now, lease_seconds=ATTEMPT_LEASE_SECONDS
    ):
        return "taken"
    if services.callbacks is None:
        raise CallbacksNotConfigured(CallbacksNotConfigured.__doc__)
    result = services.callbacks.attempt(
        delivery.url, delivery.body.encode(), message_id=delivery.webhook_id
    )
    at = services.now()
    attempt = CallbackAttempt(
        at=at, status=result.status, latency_ms=result.latency_ms, round=delivery.round
    )
    outcome = after_attempt(
        result.status,
        attempt=delivery.tries + 1,
        schedule=services.settings.callback_schedule,
        now=at,
    )
    state = DeliveryState(outcome.state)
    if not ledger.outbox.record_callback_attempt(
        delivery,
        attempt,
        owner=owner,
        state=state,
        next_attempt_at=outcome.next_attempt_at,
        reason=outcome.reason,
    ):
        return "lease-lost"
    where = safe_url(delivery.url)
    number = f"attempt {delivery.tries + 1} (round {delivery.round})"
    if state == DeliveryState.DELIVERED:
        services.metrics.count("CallbacksDelivered")
        log.info(
            "callback of batch %s delivered: %s to %s, %s",
            delivery.batch_id, delivery.webhook_id, where, number,
        )  # fmt: skip
    elif state == DeliveryState.FAILED:
        services.metrics.count("CallbacksFailed")
        log.error(
            "callback of batch %s not delivered: %s to %s: %s (%s); after a fix: "
            "voucher-distributor redeliver %s",
            delivery.batch_id, delivery.webhook_id, where, outcome.reason, result.detail,
            delivery.batch_id,
        )  # fmt: skip
    else:
        log.warning(
            "callback of batch %s: %s to %s failed (%s), %s; next at %s",
            delivery.batch_id, delivery.webhook_id, where, result.detail, number,
            iso_utc(outcome.next_attempt_at or at),
        )  # fmt: skip
        _queue(
            services,
            delivery,
            attempt=delivery.tries + 2,
            delay=hop_delay(outcome.next_attempt_at or at, at),
        )
    update_summary(services, delivery.batch_id)
    return state.value


def redeliver(
    ledger: Ledger,
    queues: Queues,
    queue_url: str,
    batch_id: str,
    *,
    now: int,
    include_all: bool = False,
) -> list[CallbackDelivery]:
    """Send the batch's failed deliveries again (``include_all``: every one) with a fresh
    attempt budget and the same ``webhook-id``; the deliveries restarted. (Operators' command:
    the ledger and queue it is given, no Services; the first attempt rewrites the summary.)"""
    states = {DeliveryState.FAILED}
    if include_all:
        states |= {DeliveryState.DELIVERED, DeliveryState.PENDING}
    restarted = []
    for delivery in ledger.outbox.callback_deliveries(batch_id):
        if delivery.state not in states:
            continue
        again = ledger.outbox.restart_callback_delivery(delivery, now=now, states=states)
        if again is not None:
            queues.send(queue_url, _message(again, attempt=1))
            restarted.append(again)
    return restarted


def deliveries_view(deliveries: list[CallbackDelivery]) -> list[dict[str, Any]]:
    """The deliveries as JSON for people (status, summary.json, the HTTP API): no body, no
    query string of the URL (receivers put tokens there)."""
    return [
        {
            "webhookId": d.webhook_id,
            "event": d.event,
            "url": safe_url(d.url),
            "state": d.state.value,
            "attempts": [
                {"at": iso_utc(a.at), "status": a.status, "latencyMs": a.latency_ms}
                | ({"round": a.round} if a.round else {})
                for a in d.attempts
            ],
            "nextAttemptAt": (
                iso_utc(d.next_attempt_at)
                if d.state == DeliveryState.PENDING and d.next_attempt_at is not None
                else None
            ),
            **({"reason": d.reason} if d.reason and d.state == DeliveryState.FAILED else {}),
        }
        for d in deliveries
    ]


def deliveries_counts(deliveries: list[CallbackDelivery]) -> dict[str, int]:
    """How many deliveries are in each state (``local run``'s line)."""
    counts = {state.value: 0 for state in DeliveryState}
    for d in deliveries:
        counts[d.state.value] += 1
    return counts


def update_summary(services: Services, batch_id: str) -> None:
    """Rewrite the batch's summary.json with the deliveries as they are now, if the summary
    exists (the report writes it; an event before the report, e.g. awaiting approval, finds
    none and the report includes it). Written only over the version read, so a summary the
    report or another attempt wrote meanwhile is never replaced by an older one."""
    batch = services.ledger.batches.get_batch(batch_id)
    if batch is None:
        return
    for _ in range(3):
        found = services.storage.read_json_versioned(batch.summary_key)
        if found is None:
            return
        summary, etag = found
        if summary.get("batchId") != batch_id:
            return  # another batch's summary under the same key
        summary["callbacks"] = deliveries_view(services.ledger.outbox.callback_deliveries(batch_id))
        try:
            if services.storage.put_json_if_unchanged(batch.summary_key, summary, etag):
                return
        except ClientError:
            log.warning("summary of batch %s: callbacks not written", batch_id, exc_info=True)
            return
    log.warning("summary of batch %s changed under every try; callbacks not written", batch_id)


def _message(delivery: CallbackDelivery, *, attempt: int) -> dict[str, Any]:
    return CallbackMessage(
        batch_id=delivery.batch_id, delivery=delivery.slug, round=delivery.round, attempt=attempt
    ).model_dump(by_alias=True)


def _queue(services: Services, delivery: CallbackDelivery, *, attempt: int, delay: int) -> None:
    services.queues.send(
        services.settings.callback_queue_url,
        _message(delivery, attempt=attempt),
        delay_seconds=delay,
    )


def _queue_next(services: Services, delivery: CallbackDelivery, now: int) -> None:
    due = delivery.next_attempt_at or now
    _queue(services, delivery, attempt=delivery.tries + 1, delay=hop_delay(due, now))


def _last_at(delivery: CallbackDelivery) -> int:
    mine = [a.at for a in delivery.attempts if a.round == delivery.round]
    return max(mine) if mine else delivery.created_at
