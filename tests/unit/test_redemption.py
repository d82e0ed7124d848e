"""The redemption sync's pure rules: a code's state, settled, expiry notices, the report."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from voucher_distributor.domain.redemption import (
    REDEMPTION_COLUMNS,
    changed,
    code_state,
    count_states,
    due_expiry_notice,
    is_settled,
    redemption_csv,
    redemption_of,
)
from voucher_distributor.models.certiverse import PartnerVoucherModel
from voucher_distributor.models.ledger import AssignmentRecord

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def voucher(**wire: object) -> PartnerVoucherModel:
    return PartnerVoucherModel.model_validate(
        {
            "id": "v-1",
            "voucherCode": "SPR-ABC123",
            "voucherPurchaseCode": "VP-1",
            "isActive": True,
            "isUsed": False,
            "expirationDateUtc": (NOW + timedelta(days=200)).isoformat(),
            **wire,
        }
    )


@pytest.mark.parametrize(
    ("wire", "state"),
    [
        ({}, "unused"),
        ({"reservationCode": "R-1", "reservationStatus": "Scheduled"}, "reserved"),
        ({"reservationCode": "R-1", "reservationStatus": "Cancelled"}, "unused"),
        ({"isUsed": True, "usedBy": {"usedDateUtc": "2026-11-01T00:00:00Z"}}, "used"),
        ({"isActive": False}, "inactive"),
        ({"expirationDateUtc": (NOW - timedelta(seconds=1)).isoformat()}, "expired"),
        # A used code stays used after its expiry; an inactive one is inactive, not expired.
        ({"isUsed": True, "expirationDateUtc": "2020-01-01T00:00:00Z"}, "used"),
        ({"isActive": False, "expirationDateUtc": "2020-01-01T00:00:00Z"}, "inactive"),
    ],
)
def test_code_state(wire: dict[str, object], state: str) -> None:
    assert code_state(voucher(**wire), NOW) == state


def test_settled_states_are_the_ones_a_code_never_leaves() -> None:
    assert [s for s in ("unused", "reserved", "used", "expired", "inactive") if is_settled(s)] == [
        "used",
        "expired",
        "inactive",
    ]


def test_the_record_tells_use_reservation_expiry_and_the_certiverse_email() -> None:
    record = redemption_of(
        voucher(
            isUsed=True,
            usedBy={"usedDateUtc": "2026-11-02T10:00:00+00:00"},
            reservationCode="R-9",
            reservationStatus="Completed",
            recipientEmail="Other@Acme.example",
            expirationDateUtc="2027-06-01T00:00:00Z",
        ),
        "ann@acme.example",
        NOW,
    )
    assert record.state == "used"
    assert record.used_at == "2026-11-02T10:00:00Z"
    assert (record.reservation_code, record.reservation_status) == ("R-9", "Completed")
    assert record.expires_utc == "2027-06-01T00:00:00Z"
    assert record.certiverse_email == "Other@Acme.example"
    assert record.email_mismatch is True
    same = redemption_of(voucher(recipientEmail=" ANN@acme.example "), "ann@acme.example", NOW)
    assert same.email_mismatch is False
    nobody = redemption_of(voucher(), "ann@acme.example", NOW)
    assert (nobody.certiverse_email, nobody.email_mismatch) == ("", False)


def test_only_facts_count_as_a_change() -> None:
    old = redemption_of(voucher(), "ann@acme.example", NOW)
    same = old.model_copy(update={"synced_at": 99, "expiry_noticed_at": 42})
    assert changed(None, old)
    assert not changed(old, same)
    assert changed(old, redemption_of(voucher(isActive=False), "ann@acme.example", NOW))


def test_an_unused_code_is_due_a_notice_once_within_the_window() -> None:
    soon = redemption_of(
        voucher(expirationDateUtc=(NOW + timedelta(days=29)).isoformat()), "a@acme.example", NOW
    )
    later = redemption_of(
        voucher(expirationDateUtc=(NOW + timedelta(days=31)).isoformat()), "a@acme.example", NOW
    )
    assert due_expiry_notice(soon, NOW, 30)
    assert not due_expiry_notice(later, NOW, 30)
    assert not due_expiry_notice(soon.model_copy(update={"expiry_noticed_at": 1}), NOW, 30)
    assert not due_expiry_notice(soon, NOW, 0)  # notices off
    reserved = soon.model_copy(update={"state": "reserved"})
    assert not due_expiry_notice(reserved, NOW, 30)  # booked: nobody to remind


def test_the_report_has_one_row_per_assigned_code_and_counts_by_state() -> None:
    def row(n: int, status: str = "assigned", **redemption: object) -> AssignmentRecord:
        record = redemption_of(voucher(**redemption), f"p{n}@acme.example", NOW)
        return AssignmentRecord(
            batch_id="f-1", row_number=n, email=f"p{n}@acme.example", partner_name="Acme Corp",
            program_name="Spring", chunk_no=0, status=status,
            voucher_code=f"=CODE{n}" if status == "assigned" else "",
            expires_utc="2027-01-01T00:00:00Z", redemption=record if redemption else None,
        )  # fmt: skip

    body, counts = redemption_csv(
        [row(1, isUsed=True), row(2), row(3, "failed"), row(4, isActive=False)]
    )
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert tuple(rows[0]) == REDEMPTION_COLUMNS
    assert [r["state"] for r in rows] == ["used", "unused", "inactive"]
    assert rows[0]["voucher_code"] == "'=CODE1"  # never a formula
    assert rows[1]["expires_utc"] == "2027-01-01T00:00:00Z"  # not synced yet: the hand-out's
    assert counts == {"unused": 1, "reserved": 0, "used": 1, "expired": 0, "inactive": 1}
    assert count_states([]) == dict.fromkeys(
        ("unused", "reserved", "used", "expired", "inactive"), 0
    )
