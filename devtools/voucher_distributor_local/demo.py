"""`make demo` until the pipeline lands: a guided tour of the Certiverse sandbox through the client.

It starts the sandbox on a free loopback port, finds a partner and a $0 program by exact name
(the API's name filters are partial), buys a small purchase, polls until the codes exist and
prints them. Nothing leaves this machine.
"""

from __future__ import annotations

import sys
import time

from voucher_distributor.adapters.certiverse import CertiverseClient, StaticToken
from voucher_distributor.domain.eligibility import purchase_refusal
from voucher_distributor.models.certiverse import VoucherPurchaseCreateCommand
from voucher_distributor_local.sandbox import SandboxConfig, SandboxServer

PARTNER = "Acme Corp"
PROGRAM = "Spring Certification Drive"
QUANTITY = 5


def main() -> int:
    config = SandboxConfig(token="demo-token", generation_delay_s=1.5, page_size=2)  # noqa: S106
    with (
        SandboxServer(config, host="127.0.0.1", port=0) as sandbox,
        CertiverseClient(sandbox.base_url, StaticToken(config.token)) as api,
    ):
        print(f"Certiverse sandbox listening on {sandbox.base_url}")
        near = sorted(p.name for p in api.iter_partners(partner_name="Acme"))
        print(f"partners matching 'Acme' (partial filter): {near}")
        partner = api.find_partner(PARTNER)
        program = api.find_program(PROGRAM)
        print(f"exact partner: {partner.name!r}; exact program: {program.name!r}")
        refusal = purchase_refusal(program, partner)
        if refusal:
            print(f"pre-flight refused: {refusal}", file=sys.stderr)
            return 1
        purchase = api.create_purchase(
            VoucherPurchaseCreateCommand(
                notes="voucher-distributor demo", partner_name=partner.name,
                program_name=program.name, quantity=QUANTITY,
            )
        )  # fmt: skip
        print(f"purchase {purchase.voucher_purchase_code}: {purchase.quantity} vouchers, "
              f"status {purchase.status}, paid {purchase.amount_paid}")  # fmt: skip
        started = time.monotonic()
        while True:
            codes = list(api.iter_vouchers(purchase_code=purchase.voucher_purchase_code))
            waited = time.monotonic() - started
            print(f"  polling: {len(codes)}/{QUANTITY} codes after {waited:.1f}s")
            if len(codes) == QUANTITY:
                break
            time.sleep(0.5)
        for voucher in codes:
            print(f"  {voucher.voucher_code}  expires {voucher.expiration_date_utc:%Y-%m-%d}")
        print("demo complete: the full pipeline (CSV in, results out) arrives with `local run`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
