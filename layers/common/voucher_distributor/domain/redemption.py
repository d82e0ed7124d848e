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
from typing import Literal

from voucher_distributor.domain.emails import normalise_email
from voucher_distributor.domain.results_csv import spreadsheet_safe
from voucher_distributor.models.certiverse import PartnerVoucherModel
from voucher_distributor.models.ledger import AssignmentRecord, RedemptionRecord

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
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
