"""Resends: the operator's (or HR's) asks to mail a row's code again, and address corrections.

Key: ``pk = B#<batch>``, ``sk = S#<row:09>`` (beside the row's assignment ``R#`` and e-mail
``E#``): ``last_at`` (the last ask, for the 60-second rule) and ``asks`` (each one: when, who,
to which address, from which one when it was corrected).

An ask is one transaction: the ``S#`` item (conditional on the last ask being old enough, so of
two asks at once exactly one goes), and with a corrected address (``resend --to``) the holding
moved (the old address's ``H#`` item deleted while it still points at this row, the new one put
only if that address holds nothing of the program) and the assignment's ``email`` changed (so
``find`` and the by-email index follow the code). The new holding keeps who moved it and when.

The batch item's ``undeliverable_check_at`` marks a scheduled check of the batch's
undeliverable e-mails (``pipeline/undeliverable.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voucher_distributor.adapters.ledger.table import (
    BATCH_SK,
    Store,
    batch_pk,
    holding_pk,
    holding_sk,
    plain,
    row_sk,
)


def resend_sk(row_number: int) -> str:
    return f"S#{row_number:09d}"


class ResendConflict(RuntimeError):
    """The ask did not go: ``reason`` says which condition failed (see the subclasses)."""


class ResendTooSoon(ResendConflict):
    """The row was asked to be resent less than the interval ago."""


class HoldingChanged(ResendConflict):
    """The old address no longer holds this row's code (moved or reissued meanwhile)."""


class AddressHoldsProgram(ResendConflict):
    """The new address already holds a voucher of the program."""


@dataclass(frozen=True)
class AddressMove:
    """``resend --to``: move the row's holding (and assignment) from ``old`` to ``new``."""

    old: str
    new: str
    partner_name: str
    program_name: str


class ResendStore(Store):
    """Resend asks (``ledger.resends``)."""

    def _key(self, batch_id: str, row_number: int) -> dict[str, str]:
        return {"pk": batch_pk(batch_id), "sk": resend_sk(row_number)}

    def get(self, batch_id: str, row_number: int) -> dict[str, Any] | None:
        got = self._table.get_item(Key=self._key(batch_id, row_number), ConsistentRead=True)
        return plain(got["Item"]) if "Item" in got else None

    def take(
        self,
        batch_id: str,
        row_number: int,
        *,
        now: int,
        by: str,
        to_address: str,
        min_interval: int,
        move: AddressMove | None = None,
    ) -> None:
        """Record one ask (and the address move); raises a :class:`ResendConflict` if not."""
        ask: dict[str, Any] = {"at": now, "by": by, "to": to_address}
        if move is not None:
            ask["from"] = move.old
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": self._key(batch_id, row_number),
                    "UpdateExpression": (
                        "SET last_at = :now, asks = list_append(if_not_exists(asks, :empty), :ask)"
                    ),
                    "ConditionExpression": "attribute_not_exists(last_at) OR last_at <= :cutoff",
                    "ExpressionAttributeValues": {
                        ":now": now,
                        ":cutoff": now - min_interval,
                        ":empty": [],
                        ":ask": [ask],
                    },
                }
            }
        ]
        if move is not None:
            items += self._move_items(batch_id, row_number, move, now=now, by=by)
        failed = self._transact_if(items)
        if failed is not None:
            raise (
                ResendTooSoon,
                HoldingChanged,
                AddressHoldsProgram,
                HoldingChanged,
            )[failed](f"row {row_number} of batch {batch_id}")

    def _move_items(
        self, batch_id: str, row_number: int, move: AddressMove, *, now: int, by: str
    ) -> list[dict[str, Any]]:
        old_key = {
            "pk": holding_pk(move.old),
            "sk": holding_sk(move.partner_name, move.program_name),
        }
        got = self._table.get_item(Key=old_key, ConsistentRead=True).get("Item")
        holding = plain(dict(got)) if got else {}
        moved = {"from": move.old, "to": move.new, "at": now, "by": by}
        new_item = {
            **{k: v for k, v in holding.items() if k not in {"pk", "sk"}},
            **{"pk": holding_pk(move.new), "sk": old_key["sk"], "holder": move.new},
            "moves": [*(holding.get("moves") or []), moved],
        }
        mine = "batch_id = :batch AND row_number = :row"
        here = {":batch": batch_id, ":row": row_number}
        return [
            {
                "Delete": {
                    "TableName": self.table_name,
                    "Key": old_key,
                    "ConditionExpression": mine,
                    "ExpressionAttributeValues": here,
                }
            },
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": new_item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"pk": batch_pk(batch_id), "sk": row_sk(row_number)},
                    "UpdateExpression": (
                        "SET email = :new, address_moves = "
                        "list_append(if_not_exists(address_moves, :empty), :moved)"
                    ),
                    "ConditionExpression": "email = :old",
                    "ExpressionAttributeValues": {
                        ":new": move.new,
                        ":old": move.old,
                        ":empty": [],
                        ":moved": [moved],
                    },
                }
            },
        ]

    # ------------------------------------------------------------------ undeliverable notices

    def schedule_notice(self, batch_id: str, *, now: int) -> bool:
        """Mark the batch's undeliverable check as scheduled (on the batch item); False when
        one is already."""
        return self._mark_once(batch_pk(batch_id), BATCH_SK, "undeliverable_check_at", now)

    def clear_notice(self, batch_id: str) -> None:
        """The check ran: the next undeliverable row schedules another."""
        self._update_if(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK},
            UpdateExpression="REMOVE undeliverable_check_at",
            ConditionExpression="attribute_exists(pk)",
        )
