"""The callback outbox: one delivery item per (batch, event), each attempt claimed and recorded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from voucher_distributor.adapters.ledger.table import (
    Store,
    batch_pk,
    compact,
    delivery_sk,
)
from voucher_distributor.models.ledger import CallbackAttempt, CallbackDelivery, DeliveryState


class OutboxStore(Store):
    """Deliveries live beside their batch: ``B#<batch>``/``W#<event>``."""

    def put_callback_delivery(self, delivery: CallbackDelivery) -> bool:
        """Record an event's delivery unless it is recorded already (a re-run of the step that
        announced it); False then, and the first record stands."""
        item = {
            "pk": batch_pk(delivery.batch_id),
            "sk": delivery_sk(delivery.slug),
            **delivery.model_dump(mode="json"),
        }
        return self._put_if_absent(compact(item))

    def get_callback_delivery(self, batch_id: str, slug: str) -> CallbackDelivery | None:
        item = self._get(batch_pk(batch_id), delivery_sk(slug))
        return CallbackDelivery.model_validate(item) if item else None

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
        got = self._updated_if(
            Key={"pk": batch_pk(delivery.batch_id), "sk": delivery_sk(delivery.slug)},
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
        return None if got is None else CallbackDelivery.model_validate(got)

    def _update_delivery_if(self, delivery: CallbackDelivery, **update: Any) -> bool:
        return self._update_if(
            Key={"pk": batch_pk(delivery.batch_id), "sk": delivery_sk(delivery.slug)},
            **update,
        )
