"""Which recipient gets which code: deterministic, so a replay assigns exactly the same codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from voucher_distributor.models.certiverse import PartnerVoucherModel

RowT = TypeVar("RowT")


class AssignmentError(RuntimeError):
    """The purchase's codes do not match its recipients (duplicate codes or too few)."""


def assign_codes(
    rows: Sequence[RowT], vouchers: Sequence[PartnerVoucherModel]
) -> list[tuple[RowT, PartnerVoucherModel]]:
    """Pair rows (in their given order) with vouchers sorted by code.

    Sorting makes the pairing independent of the order the API lists codes in; a code listed
    twice would give two people one code, so it is refused.
    """
    ordered = sorted(vouchers, key=lambda v: v.voucher_code)
    codes = [v.voucher_code for v in ordered]
    if len(set(codes)) != len(codes):
        raise AssignmentError("the purchase lists a voucher code more than once")
    if len(ordered) < len(rows):
        raise AssignmentError(f"the purchase has {len(ordered)} codes for {len(rows)} recipients")
    return list(zip(rows, ordered[: len(rows)], strict=True))
