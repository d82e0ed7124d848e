"""How a delivery record is keyed and stored: the ids, the item mapping and a claim's item.

Kept apart from :mod:`deliveries` (the store that speaks DynamoDB) so the store stays small;
the keys are described there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voucher_distributor.adapters.ledger.table import batch_pk, plain
from voucher_distributor.models.email import EmailDelivery, EmailEventRecord, EmailState


def email_sk(row_number: int, reminder_days: int | None = None) -> str:
    base = f"E#{row_number:09d}"
    return base if reminder_days is None else f"{base}#R{reminder_days:03d}"


def delivery_id(
    batch_id: str, row_number: int, attempt: int, reminder_days: int | None = None
) -> str:
    """The id of one attempt; SES tag values allow letters, digits, ``-``, ``_``, ``.``, ``@``."""
    if reminder_days is not None:
        return f"{batch_id}.{row_number}.r{reminder_days}.{attempt}"
    return f"{batch_id}.{row_number}.{attempt}"


def parse_reminder_id(value: str) -> tuple[str, int, int, int] | None:
    """(batch, row, days, attempt) of a reminder's delivery id, or None."""
    parts = value.rsplit(".", 3)
    if (
        len(parts) != 4
        or not parts[0]
        or not parts[1].isdigit()
        or not parts[2].startswith("r")
        or not parts[2][1:].isdigit()
        or not parts[3].isdigit()
    ):
        return None
    return parts[0], int(parts[1]), int(parts[2][1:]), int(parts[3])


class NoLongerHeld(RuntimeError):
    """A reminder's claim found the code no longer held by the person it was for."""


def parse_delivery_id(value: str) -> tuple[str, int, int] | None:
    """(batch, row, attempt) of a delivery id, or None if it is not one of ours."""
    parts = value.rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


#: Fields stored under other names than the record's: ``voucher_code`` and ``state`` are the
#: keys of the ledger's sparse ``by-code`` and ``chunks-by-state`` indexes, which a delivery
#: item must never join (it would answer a look-up of a code, or read as a chunk).
STORED_AS = {"voucher_code": "mailed_code", "state": "email_state"}
STATE_ATTRIBUTE = STORED_AS["state"]


def record_of(item: Mapping[str, Any]) -> EmailDelivery:
    values = plain(dict(item))
    for field, stored in STORED_AS.items():
        if stored in values:
            values[field] = values.pop(stored)
    values["batch_id"] = str(values.pop("pk")).removeprefix("B#")
    row, _, reminder = str(values.pop("sk")).removeprefix("E#").partition("#R")
    values["row_number"] = int(row)
    values["reminder_days"] = int(reminder) if reminder else None
    return EmailDelivery.model_validate(values)


def item_of(delivery: EmailDelivery, version: int) -> dict[str, Any]:
    item = delivery.model_dump(mode="json", exclude={"batch_id", "row_number"})
    item = {k: v for k, v in item.items() if v not in (None, "", [])}
    for field, stored in STORED_AS.items():
        if field in item:
            item[stored] = item.pop(field)
    item["pk"] = batch_pk(delivery.batch_id)
    item["sk"] = email_sk(delivery.row_number, delivery.reminder_days)
    item["version"] = version
    return item


def event_step(event: EmailEventRecord) -> dict[str, Any]:
    return {k: v for k, v in event.model_dump(mode="json").items() if v != ""}


def adds_nothing(current: EmailDelivery, event: EmailEventRecord) -> bool:
    """SES's Send event for a row whose send we recorded ourselves: nothing new to keep."""
    return (
        event.state == EmailState.SENT
        and current.state != EmailState.UNKNOWN
        and event.delivery_id == current.delivery_id
        and any(h.source == "send" and h.delivery_id == event.delivery_id for h in current.history)
    )


#: Claims (and records) to one transaction: DynamoDB's limit of items to a TransactWriteItems.
MAX_SLICE = 100


@dataclass(frozen=True)
class SliceClaim:
    """One row's send to claim: a slice's first send, or a send :meth:`claim` makes."""

    batch_id: str
    row_number: int
    to_address: str
    voucher_code: str


def claim_item(
    claim: SliceClaim,
    *,
    now: int,
    replacing: EmailDelivery | None = None,
    reminder_days: int | None = None,
) -> tuple[EmailDelivery, dict[str, Any]]:
    """The claimed record of a row's next send (``unknown``) and its item (``reminder_days``:
    the row's N-day reminder instead)."""
    batch_id, row_number = claim.batch_id, claim.row_number
    attempt = (replacing.attempts if replacing else 0) + 1
    did = delivery_id(batch_id, row_number, attempt, reminder_days)
    step = EmailEventRecord(at=now, state=EmailState.UNKNOWN, source="claim", delivery_id=did)
    claimed = EmailDelivery(
        batch_id=batch_id,
        row_number=row_number,
        delivery_id=did,
        state=EmailState.UNKNOWN,
        attempts=attempt,
        to_address=claim.to_address,
        voucher_code=claim.voucher_code,
        claimed_at=now,
        updated_at=now,
        history=[*(replacing.history if replacing else []), step],
        reminder_days=reminder_days,
    )
    item = item_of(claimed, version=1)
    if replacing is not None:
        item["previous_state"] = replacing.state.value
    return claimed, item
