import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain.assignment import AssignmentError, assign_codes
from voucher_distributor.models.certiverse import PartnerVoucherModel


def voucher(code: str) -> PartnerVoucherModel:
    return PartnerVoucherModel.model_validate(
        {"expirationDateUtc": "2027-01-01T00:00:00Z", "id": code, "isActive": True,
         "isUsed": False, "voucherCode": code, "voucherPurchaseCode": "VP-1"}
    )  # fmt: skip


@given(codes=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40, unique=True),
       data=st.data())  # fmt: skip
def test_same_pairs_whatever_order_the_api_lists_codes(codes, data):
    rows = list(range(len(codes)))
    shuffled = data.draw(st.permutations(codes))
    first = [(r, v.voucher_code) for r, v in assign_codes(rows, [voucher(c) for c in codes])]
    again = [(r, v.voucher_code) for r, v in assign_codes(rows, [voucher(c) for c in shuffled])]
    assert first == again
    assert len({c for _, c in first}) == len(rows)


def test_duplicate_or_missing_codes_are_refused():
    with pytest.raises(AssignmentError, match="more than once"):
        assign_codes([1, 2], [voucher("A"), voucher("A")])
    with pytest.raises(AssignmentError, match="1 codes for 2"):
        assign_codes([1, 2], [voucher("A")])
