import random

from voucher_distributor.domain.polling import next_poll_delay, readiness
from voucher_distributor.models.certiverse import PartnerVoucherPurchaseModel


def purchase(status: str) -> PartnerVoucherPurchaseModel:
    return PartnerVoucherPurchaseModel.model_validate(
        {"amountPaid": 0, "id": "p", "partnerName": "A", "programName": "B",
         "purchaseDateUtc": "2026-11-21T00:00:00Z", "quantity": 3, "status": status,
         "voucherPurchaseCode": "VP-1"}
    )  # fmt: skip


def test_delays_grow_are_jittered_and_never_exceed_sqs_limit():
    rng = random.Random(3)
    previous_ceiling = 0
    for attempt in range(1, 20):
        delays = [next_poll_delay(attempt, base_s=15, cap_s=900, rng=rng) for _ in range(30)]
        ceiling = min(900, 15 * 2 ** (attempt - 1))
        assert all(ceiling / 2 - 1 <= d <= ceiling for d in delays)
        assert max(delays) <= 900
        assert ceiling >= previous_ceiling
        previous_ceiling = ceiling
    assert next_poll_delay(30, base_s=15, cap_s=5000, rng=rng) <= 900


def test_ready_needs_the_codes_not_the_status():
    assert readiness(purchase("Complete"), 2, 3) is None  # status says done, codes do not
    assert readiness(purchase("VoucherCreation"), 3, 3) == "ready"  # codes are there
    assert readiness(purchase("SomethingNew"), 3, 3) == "ready"  # unknown status: count codes
    assert readiness(purchase("CheckoutFailed"), 0, 3) == "failed"
    assert readiness(purchase("CheckoutExpired"), 3, 3) == "failed"
