"""``voucher-distributor find EMAIL``: every voucher one person was given, across batches."""

from __future__ import annotations

from typing import Any

from voucher_distributor_cli.ops.target import Target


def find_recipient(target: Target, email: str) -> list[dict[str, Any]]:
    """Every assignment record for this e-mail, across batches (the by-email index).

    ``holds`` marks the voucher the person holds now for its (partner, program) — their holding
    points at it; an earlier one replaced by a reissue, or a failed row, holds nothing.
    """
    wanted = email.strip()
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    ledger = target.ledger
    held = {
        (h.batch_id, h.row_number)
        for candidate in dict.fromkeys([wanted, wanted.lower()])
        for h in ledger.holdings_for_email(candidate)
    }
    for candidate in dict.fromkeys([wanted, wanted.lower()]):
        for record in ledger.assignments_for_email(candidate):
            seen[(record.batch_id, record.row_number)] = {
                "batchId": record.batch_id,
                "row": record.row_number,
                "email": record.email,
                "status": record.status,
                "voucherCode": record.voucher_code,
                "purchaseCode": record.purchase_code,
                "partner": record.partner_name,
                "program": record.program_name,
                "expiresUtc": record.expires_utc,
                "holds": (record.batch_id, record.row_number) in held
                and record.status == "assigned",
                **({"reason": record.reason} if record.reason else {}),
            }
    return sorted(seen.values(), key=lambda r: (r["batchId"], r["row"]))


def format_found(found: list[dict[str, Any]], email: str) -> str:
    text = "\n".join(
        f"{'*' if r.get('holds') else ' '} {r['batchId']}  row {r['row']:>6}  {r['status']:<8}  "
        f"{r['voucherCode'] or '-':<16}  "
        f"{r['purchaseCode'] or '-':<14}  {r['program']}  expires {r['expiresUtc'] or '-'}"
        + (f"  ({r['reason']})" if r.get("reason") else "")
        for r in found
    )
    if not text:
        return f"no voucher recorded for {email}"
    return text + "\n(* the voucher held now for its program)"
