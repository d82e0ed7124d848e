"""Scheduled sends: the ``send_*`` attributes of the batch item (``B#<batch>``/``BATCH``).

A batch with a ``sendAt`` is ``send_state = scheduled`` from its creation. It leaves that state
once, by a conditional write: :meth:`SendStore.fire` (the schedule's message, or a due batch's
first chunk) or :meth:`SendStore.change` (``send-now``, ``cancel-send``). Of two fires, or a fire
and a cancel at once, exactly one goes; the other finds the state moved and does nothing.
"""

from __future__ import annotations

from typing import Any

from voucher_distributor.adapters.ledger.table import (
    BATCH_SK,
    Store,
    batch_pk,
)
from voucher_distributor.domain.send_schedule import CANCEL_SEND, CANCELLED, FIRED, SCHEDULED
from voucher_distributor.models.ledger import BatchRecord


class SendStore(Store):
    """A batch's scheduled send (``ledger.sends``)."""

    def _update(self, batch_id: str, **update: Any) -> BatchRecord | None:
        got = self._updated_if(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK}, ReturnValues="ALL_NEW", **update
        )
        return None if got is None else BatchRecord.model_validate(got)

    def note_schedule(self, batch_id: str, name: str) -> bool:
        """Record the schedule made for the batch (while it is still scheduled)."""
        return (
            self._update(
                batch_id,
                UpdateExpression="SET send_schedule = :n",
                ConditionExpression="send_state = :scheduled",
                ExpressionAttributeValues={":n": name, ":scheduled": SCHEDULED},
            )
            is not None
        )

    def nothing_to_send(self, batch_id: str) -> bool:
        """A scheduled batch that ended with no code to mail: nothing pending any more."""
        return (
            self._update(
                batch_id,
                UpdateExpression="REMOVE send_state",
                ConditionExpression="send_state = :scheduled",
                ExpressionAttributeValues={":scheduled": SCHEDULED},
            )
            is not None
        )

    def fire(self, batch_id: str, *, fire_at: int, by: str, now: int) -> BatchRecord | None:
        """The send for ``fire_at`` is due: the batch after it, or None when it fired, was
        changed by hand, or was moved to another time already (a second fire does nothing)."""
        return self._update(
            batch_id,
            UpdateExpression="SET send_state = :fired, send_fired_at = :now, send_fired_by = :by",
            ConditionExpression="send_state = :scheduled AND send_at = :at",
            ExpressionAttributeValues={
                ":fired": FIRED,
                ":scheduled": SCHEDULED,
                ":at": fire_at,
                ":now": now,
                ":by": by,
            },
        )

    def change(self, batch_id: str, *, action: str, by: str, now: int) -> BatchRecord | None:
        """``send-now`` (fire it now) or ``cancel-send``, recorded with who and when; None when
        nothing is pending any more."""
        values: dict[str, Any] = {
            ":scheduled": SCHEDULED,
            ":state": CANCELLED if action == CANCEL_SEND else FIRED,
            ":action": action,
            ":by": by[:200],
            ":now": now,
        }
        fired = "" if action == CANCEL_SEND else ", send_fired_at = :now, send_fired_by = :by"
        return self._update(
            batch_id,
            UpdateExpression=(
                "SET send_state = :state, send_changed = :action, send_changed_by = :by, "
                "send_changed_at = :now" + fired
            ),
            ConditionExpression="send_state = :scheduled",
            ExpressionAttributeValues=values,
        )
