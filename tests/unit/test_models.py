"""Parsing the API's shapes: extra fields kept, nullable fields optional, statuses tolerant."""

import logging
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.models.certiverse import (
    Page,
    PartnerVoucherModel,
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
    PartnerVoucherPurchaseModel,
    PurchaseStatus,
)

PURCHASE = {
    "amountPaid": 0,
    "id": "1c0c7c9e",
    "isArchived": False,
    "notes": "Q2 batch",
    "partnerName": "Acme Corp",
    "programName": "Spring Certification Drive",
    "purchaseDateUtc": "2026-11-21T10:00:00Z",
    "purchasedByFirstName": "Certiverse",
    "purchasedByLastName": "API",
    "quantity": 50,
    "quantityRemaining": 50,
    "quantityUsed": 0,
    "status": "VoucherCreation",
    "voucherPurchaseCode": "VP-1234ABCD",
}

VOUCHER = {
    "assignedDateUtc": "2026-11-21T10:00:00Z",
    "expirationDateUtc": "2027-11-21T10:00:00Z",
    "id": "v-1",
    "isActive": True,
    "isUsed": True,
    "recipientEmail": "ada@example.com",
    "reservationCode": "R-1",
    "reservationStatus": "Booked",
    "storeExamCode": "CF-101",
    "usedBy": {
        "clientCandidateId": "c-1",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "personId": "p-9",
        "usedDateUtc": "2026-12-01T09:00:00Z",
    },
    "voucherCode": "CF-ABCDEF1234",
    "voucherPurchaseCode": "VP-1234ABCD",
}
NULLABLE_VOUCHER_FIELDS = [
    "assignedDateUtc",
    "recipientEmail",
    "reservationCode",
    "reservationStatus",
    "storeExamCode",
    "usedBy",
]

KNOWN_KEYS = set(PURCHASE) | set(VOUCHER) | {"data", "nextLink"}
extra_keys = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd")), min_size=1, max_size=20
).filter(lambda k: k not in KNOWN_KEYS)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
extras = st.dictionaries(extra_keys, json_values, max_size=5)


@given(extra=extras)
def test_purchase_tolerates_any_extra_fields(extra):
    parsed = PartnerVoucherPurchaseModel.model_validate({**PURCHASE, **extra})
    assert parsed.voucher_purchase_code == "VP-1234ABCD"
    assert parsed.amount_paid == Decimal(0)
    assert parsed.model_extra == extra


@given(
    extra=extras, dropped=st.sets(st.sampled_from(NULLABLE_VOUCHER_FIELDS)), as_null=st.booleans()
)
def test_voucher_parses_with_nullable_fields_missing_or_null(extra, dropped, as_null):
    body = {**VOUCHER, **extra}
    for key in dropped:
        if as_null:
            body[key] = None
        else:
            del body[key]
    parsed = PartnerVoucherModel.model_validate(body)
    assert parsed.voucher_code == "CF-ABCDEF1234"
    for key in dropped:
        snake = {"assignedDateUtc": "assigned_date_utc", "recipientEmail": "recipient_email",
                 "reservationCode": "reservation_code", "reservationStatus": "reservation_status",
                 "storeExamCode": "store_exam_code", "usedBy": "used_by"}[key]  # fmt: skip
        assert getattr(parsed, snake) is None


@given(status=st.text(min_size=1, max_size=30))
def test_unknown_purchase_status_is_kept_never_rejected(status):
    parsed = PartnerVoucherPurchaseModel.model_validate({**PURCHASE, "status": status})
    known = {s.value.casefold(): s.value for s in PurchaseStatus}
    assert parsed.status == known.get(status.strip().casefold(), status)


def test_known_status_is_normalised_and_unknown_is_logged(caplog):
    assert (
        PartnerVoucherPurchaseModel.model_validate({**PURCHASE, "status": "complete"}).status
        == "Complete"
    )
    with caplog.at_level(logging.WARNING):
        parsed = PartnerVoucherPurchaseModel.model_validate({**PURCHASE, "status": "Refunded"})
    assert parsed.status == "Refunded"
    assert not parsed.has_failed
    assert "Refunded" in caplog.text


def test_failed_statuses():
    for status in ("CheckoutCancelled", "CheckoutExpired", "CheckoutFailed"):
        assert PartnerVoucherPurchaseModel.model_validate({**PURCHASE, "status": status}).has_failed
    for status in ("CheckoutInProgress", "VoucherCreation", "Complete"):
        assert not PartnerVoucherPurchaseModel.model_validate(
            {**PURCHASE, "status": status}
        ).has_failed


def test_money_is_decimal_not_float():
    parsed = PartnerVoucherPurchaseModel.model_validate({**PURCHASE, "amountPaid": "0.10"})
    assert parsed.amount_paid == Decimal("0.10")
    program = PartnerVoucherProgramModel.model_validate(
        {
            "id": "x", "name": "X", "expirationPeriodInDays": 30, "isActive": True,
            "isArchived": False, "isInactive": False,
            "partners": {"partnerCostPerVoucher": 0.1}, "storeExams": [
                {"code": "A", "id": "1", "name": "A", "price": "199.99"}],
        }
    )  # fmt: skip
    assert program.partners.partner_cost_per_voucher == Decimal("0.1")
    assert program.store_exams[0].price == Decimal("199.99")


def test_page_without_next_link_and_round_trip():
    page = Page[PartnerVoucherPartnerModel].model_validate(
        {"data": [{"id": "1", "isActive": True, "isArchived": False, "name": "Acme", "users": []}]}
    )
    assert page.next_link is None
    assert page.data[0].status == "Active"
    wire = page.to_wire()
    assert "nextLink" not in wire
    assert wire["data"][0]["isActive"] is True


def test_partner_status_precedence():
    archived = PartnerVoucherPartnerModel(id="1", name="A", is_active=True, is_archived=True)
    inactive = PartnerVoucherPartnerModel(id="2", name="B", is_active=False, is_archived=False)
    assert archived.status == "Archived"
    assert inactive.status == "Inactive"
