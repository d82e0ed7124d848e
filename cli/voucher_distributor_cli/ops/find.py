"""``voucher-distributor find EMAIL``: every voucher one person was given, across batches."""

from __future__ import annotations

from typing import Any

from voucher_distributor.domain.redemption import code_record
from voucher_distributor_cli.ops.target import Target


def find_recipient(target: Target, email: str) -> list[dict[str, Any]]:
    """Every assignment record for this e-mail, across batches (the by-email index).

    ``holds`` marks the voucher the person holds now for its (partner, program) — their holding
    points at it; an earlier one replaced by a reissue, or a failed row, holds nothing.
    """
    wanted = email.strip()
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    ledger = target.ledger
    holdings = {
        (h.partner_name.casefold(), h.program_name.casefold()): h
        for candidate in dict.fromkeys([wanted, wanted.lower()])
        for h in ledger.holdings.holdings_for_email(candidate)
    }
    held = {(h.batch_id, h.row_number) for h in holdings.values()}
    batches: dict[str, Any] = {}
    records = [
        record
        for candidate in dict.fromkeys([wanted, wanted.lower()])
        for record in ledger.assignments.assignments_for_email(candidate)
    ]
    emails = ledger.deliveries.get_many((r.batch_id, r.row_number) for r in records)
    for record in records:
        if record.batch_id not in batches:
            batches[record.batch_id] = ledger.batches.get_batch(record.batch_id)
        holding = holdings.get((record.partner_name.casefold(), record.program_name.casefold()))
        per_code = code_record(
            record, batches[record.batch_id], holding,
            emails.get((record.batch_id, record.row_number)),
        )  # fmt: skip
        seen[(record.batch_id, record.row_number)] = {
            **per_code,
            "batchId": record.batch_id,
            "row": record.row_number,
            "email": record.email,
            "status": record.status,
            "voucherCode": record.voucher_code,
            "purchaseCode": record.purchase_code,
            "partner": record.partner_name,
            "program": record.program_name,
            "expiresUtc": record.expires_utc,
            "holds": (record.batch_id, record.row_number) in held and record.status == "assigned",
            **({"reason": record.reason} if record.reason else {}),
        }
        if record.status != "assigned":  # no code: nothing to follow
            for name in ("state", "active", "expiresUtc"):
                seen[(record.batch_id, record.row_number)][name] = (
                    None if name != "expiresUtc" else record.expires_utc
                )
    return sorted(seen.values(), key=lambda r: (r["batchId"], r["row"]))


def format_found(found: list[dict[str, Any]], email: str) -> str:
    text = "\n".join(
        f"{'*' if r.get('holds') else ' '} {r['batchId']}  row {r['row']:>6}  {r['status']:<8}  "
        f"{r['voucherCode'] or '-':<16}  "
        f"{r['purchaseCode'] or '-':<14}  {r['program']}  expires {r['expiresUtc'] or '-'}"
        + (f"  {r['state']}" if r.get("state") else "")
        + (f" {r['usedAt']}" if r.get("usedAt") else "")
        + (f" reservation {r['reservation']['code']}" if r.get("reservation") else "")
        + ("  assigned to another e-mail in Certiverse" if r.get("emailMismatch") else "")
        + (f"  ({r['reason']})" if r.get("reason") else "")
        for r in found
    )
    if not text:
        return f"no voucher recorded for {email}"
    return text + "\n(* the voucher held now for its program)"
