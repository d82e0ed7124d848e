"""When to look again for a purchase's codes, and whether they are there."""

from __future__ import annotations

import random

from voucher_distributor.models.certiverse import PartnerVoucherPurchaseModel

#: SQS refuses per-message delays above 15 minutes.
MAX_SQS_DELAY_SECONDS = 900


def next_poll_delay(attempt: int, *, base_s: int, cap_s: int, rng: random.Random) -> int:
    """Delay before poll number ``attempt`` (1-based): exponential, jittered, ≤ 900 s.

    Jitter is "equal jitter" (half fixed, half random) so a delay never collapses to zero and
    thousands of chunks bought together do not poll in lockstep.
    """
    cap = min(cap_s, MAX_SQS_DELAY_SECONDS)
    ceiling = min(cap, base_s * 2 ** max(0, attempt - 1))
    return min(cap, int(ceiling / 2 + rng.uniform(0, ceiling / 2)))


def readiness(
    purchase: PartnerVoucherPurchaseModel, codes_listed: int, quantity: int
) -> str | None:
    """``"ready"``, ``"failed"`` or None (keep polling). The status alone never decides ready."""
    if purchase.has_failed:
        return "failed"
    if codes_listed >= quantity:
        return "ready"
    return None
