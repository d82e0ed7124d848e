"""After the hand-out: what a code's Certiverse record says about it, in our words.

Pure: the redemption sync reads ``GET /api/vouchers`` and asks this module for each code's
state (``unused``, ``reserved``, ``used``, ``expired``, ``inactive``), whether its purchase is
settled (never read again), whether the code is due an expiry notice, and whether Certiverse
holds another e-mail for it than the person we gave it to.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from voucher_distributor.domain.emails import normalise_email
from voucher_distributor.domain.results_csv import spreadsheet_safe
from voucher_distributor.domain.timestamps import iso_utc, iso_z
from voucher_distributor.models.certiverse import PartnerVoucherModel
from voucher_distributor.models.email import EmailDelivery
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    HoldingRecord,
    RedemptionRecord,
)

RedemptionState = Literal["unused", "reserved", "used", "expired", "inactive"]

#: Every state, in the order reports list them.
REDEMPTION_STATES: tuple[RedemptionState, ...] = (
    "unused",
    "reserved",
    "used",
    "expired",
    "inactive",
)
#: States a code never leaves by itself: a purchase whose codes are all settled is not read again.
SETTLED_STATES = frozenset({"used", "expired", "inactive"})
#: Reservation statuses that mean the booking no longer holds the code (read case-insensitively).
_ENDED_RESERVATIONS = frozenset({"cancelled", "canceled", "expired", "noshow", "no-show"})


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else iso_z(moment)


def parse_iso(text: str) -> datetime | None:
    """``2026-11-30T06:26:05Z`` (or any ISO form) as an aware UTC datetime; None if empty."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def code_state(voucher: PartnerVoucherModel, now: datetime) -> RedemptionState:
    """Used wins (a used code's expiry no longer matters), then inactive, expired, reserved."""
    if voucher.is_used:
        return "used"
    if not voucher.is_active:
        return "inactive"
    expires = voucher.expiration_date_utc
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires <= now:
        return "expired"
    if voucher.reservation_code and (
        (voucher.reservation_status or "").strip().casefold() not in _ENDED_RESERVATIONS
    ):
        return "reserved"
    return "unused"


def redemption_of(
    voucher: PartnerVoucherModel, holder_email: str, now: datetime
) -> RedemptionRecord:
    """The code's record as Certiverse tells it now (without our bookkeeping times)."""
    certiverse_email = (voucher.recipient_email or "").strip()
    return RedemptionRecord(
        state=code_state(voucher, now),
        active=voucher.is_active,
        used_at=_iso(voucher.used_by.used_date_utc if voucher.used_by else None),
        reservation_code=voucher.reservation_code or "",
        reservation_status=voucher.reservation_status or "",
        expires_utc=_iso(voucher.expiration_date_utc),
        certiverse_email=certiverse_email,
        email_mismatch=bool(certiverse_email)
        and normalise_email(certiverse_email) != normalise_email(holder_email),
    )


def changed(old: RedemptionRecord | None, new: RedemptionRecord) -> bool:
    """Whether ``new`` tells anything ``old`` did not (bookkeeping fields aside)."""
    if old is None:
        return True
    return old.facts() != new.facts()


def is_settled(state: str) -> bool:
    return state in SETTLED_STATES


def due_expiry_notice(record: RedemptionRecord, now: datetime, notice_days: int) -> bool:
    """An unused code within ``notice_days`` of its expiry, not yet announced."""
    if notice_days <= 0 or record.state != "unused" or record.expiry_noticed_at is not None:
        return False
    expires = parse_iso(record.expires_utc)
    return expires is not None and (expires - now).total_seconds() <= notice_days * 86_400


def count_states(states: Iterable[str]) -> dict[str, int]:
    """Counts by state, every state present (0 when none)."""
    counted = Counter(states)
    return {state: counted.get(state, 0) for state in REDEMPTION_STATES}


#: The redemption report's columns (``<name>.redemptions.csv``, ``redemptions --out``).
REDEMPTION_COLUMNS = (
    "email",
    "voucher_code",
    "state",
    "used_at",
    "expires_utc",
    "reservation_code",
    "reservation_status",
    "active",
    "certiverse_email",
    "email_mismatch",
    "partner",
    "program",
    "batch_id",
    "row",
)


def redemption_row(assignment: AssignmentRecord) -> dict[str, str]:
    """One handed-out code as a report row; a code not yet synced reads ``unused``."""
    record = assignment.redemption
    return {
        "email": assignment.email,
        "voucher_code": assignment.voucher_code,
        "state": record.state if record else "unused",
        "used_at": record.used_at if record else "",
        "expires_utc": (record.expires_utc if record else "") or assignment.expires_utc,
        "reservation_code": record.reservation_code if record else "",
        "reservation_status": record.reservation_status if record else "",
        "active": ("yes" if record.active else "no") if record else "",
        "certiverse_email": record.certiverse_email if record else "",
        "email_mismatch": "yes" if record and record.email_mismatch else "",
        "partner": assignment.partner_name,
        "program": assignment.program_name,
        "batch_id": assignment.batch_id,
        "row": str(assignment.row_number),
    }


def redemption_csv(assignments: Iterable[AssignmentRecord]) -> tuple[bytes, dict[str, int]]:
    """The report (UTF-8 with BOM, spreadsheet-safe cells) and its counts by state."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REDEMPTION_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    states = []
    for assignment in assignments:
        if assignment.status != "assigned" or not assignment.voucher_code:
            continue
        row = redemption_row(assignment)
        states.append(row["state"])
        writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
    return ("\ufeff" + buffer.getvalue()).encode("utf-8"), count_states(states)


def email_summary(delivery: EmailDelivery | None) -> dict[str, Any]:
    """The code's e-mail as its record shows it (Voucherify's publish summary): the state, the
    SES calls made, the last step and when it was sent."""
    if delivery is None:
        return {"status": "not-sent", "attempts": 0, "lastAt": None, "sentAt": None}
    return {
        "status": delivery.state.value,
        "attempts": delivery.attempts,
        "lastAt": iso_utc(delivery.last_event_at),
        "sentAt": iso_utc(delivery.sent_at) if delivery.sent_at else None,
        **({"reason": delivery.reason} if delivery.reason else {}),
    }


def code_record(
    assignment: AssignmentRecord,
    batch: BatchRecord | None,
    holding: HoldingRecord | None,
    email: EmailDelivery | None = None,
    reminders: Iterable[EmailDelivery] = (),
) -> dict[str, Any]:
    """One code's record as ``voucher``, ``find`` and the holdings look-up (#9) show it.

    ``holding`` is the person's holding of the code's (partner, program): it tells whether
    the code is held now, the codes it replaced, or the reissue that replaced it.
    """
    here = (assignment.batch_id, assignment.row_number)
    holds = holding is not None and (holding.batch_id, holding.row_number) == here
    redemption = assignment.redemption
    replaced = next(
        (h for h in (holding.history if holding else []) if (h.batch_id, h.row_number) == here),
        None,
    )
    return {
        "voucherCode": assignment.voucher_code,
        "holder": assignment.email,
        "holds": holds and assignment.status == "assigned",
        "partner": assignment.partner_name,
        "program": assignment.program_name,
        "batchId": assignment.batch_id,
        "row": assignment.row_number,
        "channel": batch.kind if batch else None,
        "assignedAt": iso_utc(batch.finished_at) if batch and batch.finished_at else None,
        "purchaseCode": assignment.purchase_code,
        "expiresUtc": (redemption.expires_utc if redemption else "") or assignment.expires_utc,
        "active": redemption.active if redemption else None,
        "state": redemption.state if redemption else "unused",
        "syncedAt": iso_utc(redemption.synced_at) if redemption and redemption.synced_at else None,
        "usedAt": (redemption.used_at if redemption else "") or None,
        "reservation": (
            {"code": redemption.reservation_code, "status": redemption.reservation_status}
            if redemption and redemption.reservation_code
            else None
        ),
        "certiverseEmail": (redemption.certiverse_email if redemption else "") or None,
        "emailMismatch": bool(redemption and redemption.email_mismatch),
        "expiryNoticeAt": (
            iso_utc(redemption.expiry_noticed_at)
            if redemption and redemption.expiry_noticed_at
            else None
        ),
        "reissueHistory": [
            {
                "voucherCode": h.voucher_code,
                "batchId": h.batch_id,
                "row": h.row_number,
                "replacedAt": iso_utc(h.replaced_at),
                "replacedBy": h.replaced_by,
            }
            for h in (holding.history if holds and holding else [])
        ],
        "replacedBy": (
            {"batchId": replaced.replaced_by, "at": iso_utc(replaced.replaced_at)}
            if replaced
            else None
        ),
        "emailDelivery": email_summary(email),
        # The holder's reminders before the expiry (ReminderDays), one per N days before.
        "reminders": [
            {"daysBefore": r.reminder_days, **email_summary(r)}
            for r in sorted(reminders, key=lambda r: -(r.reminder_days or 0))
        ],
    }
