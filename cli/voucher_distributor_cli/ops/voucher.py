"""``voucher-distributor voucher CODE``: one code's record — who holds it, where it came from,
and what Certiverse says of it since (the redemption sync's last look)."""

from __future__ import annotations

from typing import Any

from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.ledger import AssignmentRecord, BatchRecord, HoldingRecord
from voucher_distributor_cli.ops.target import Target


def code_record(
    assignment: AssignmentRecord, batch: BatchRecord | None, holding: HoldingRecord | None
) -> dict[str, Any]:
    """The per-code view ``voucher``, ``find`` and the holdings look-up show."""
    here = (assignment.batch_id, assignment.row_number)
    holds = holding is not None and (holding.batch_id, holding.row_number) == here
    redemption = assignment.redemption
    replaced = next(
        (h for h in (holding.history if holding else []) if (h.batch_id, h.row_number) == here),
        None,
    )
    return {
        "voucherCode": assignment.voucher_code,
        "holder": assignment.email,
        "holds": holds and assignment.status == "assigned",
        "partner": assignment.partner_name,
        "program": assignment.program_name,
        "batchId": assignment.batch_id,
        "row": assignment.row_number,
        "channel": batch.kind if batch else None,
        "assignedAt": iso_utc(batch.finished_at) if batch and batch.finished_at else None,
        "purchaseCode": assignment.purchase_code,
        "expiresUtc": (redemption.expires_utc if redemption else "") or assignment.expires_utc,
        "active": redemption.active if redemption else None,
        "state": redemption.state if redemption else "unused",
        "syncedAt": iso_utc(redemption.synced_at) if redemption and redemption.synced_at else None,
        "usedAt": (redemption.used_at if redemption else "") or None,
        "reservation": (
            {"code": redemption.reservation_code, "status": redemption.reservation_status}
            if redemption and redemption.reservation_code
            else None
        ),
        "certiverseEmail": (redemption.certiverse_email if redemption else "") or None,
        "emailMismatch": bool(redemption and redemption.email_mismatch),
        "expiryNoticeAt": (
            iso_utc(redemption.expiry_noticed_at)
            if redemption and redemption.expiry_noticed_at
            else None
        ),
        "reissueHistory": [
            {
                "voucherCode": h.voucher_code,
                "batchId": h.batch_id,
                "row": h.row_number,
                "replacedAt": iso_utc(h.replaced_at),
                "replacedBy": h.replaced_by,
            }
            for h in (holding.history if holds and holding else [])
        ],
        "replacedBy": (
            {"batchId": replaced.replaced_by, "at": iso_utc(replaced.replaced_at)}
            if replaced
            else None
        ),
    }


def find_voucher(target: Target, code: str) -> dict[str, Any] | None:
    """The code's record, or None when the ledger never handed it out (a filtered scan)."""
    ledger = target.ledger
    assignment = ledger.find_voucher_code(code.strip())
    if assignment is None:
        return None
    batch = ledger.get_batch(assignment.batch_id)
    holding = ledger.get_holding(assignment.email, assignment.partner_name, assignment.program_name)
    return code_record(assignment, batch, holding)


def format_voucher(record: dict[str, Any] | None, code: str) -> str:
    if record is None:
        return f"no voucher {code} in the ledger (it was not handed out by this stack)"
    reservation = record["reservation"]
    lines = [
        f"voucher   {record['voucherCode']}",
        f"holder    {record['holder']}" + ("" if record["holds"] else "  (no longer held)"),
        f"program   {record['partner']} / {record['program']}",
        f"batch     {record['batchId']} row {record['row']} ({record['channel'] or '?'})",
        f"assigned  {record['assignedAt'] or '-'}",
        f"expires   {record['expiresUtc'] or '-'}",
        f"active    {_yes_no(record['active'])}",
        f"state     {record['state']}" + ("" if record["syncedAt"] else "  (not synced yet)"),
        f"used at   {record['usedAt'] or '-'}",
        "reserved  "
        + (f"{reservation['code']} ({reservation['status'] or '?'})" if reservation else "-"),
    ]
    if record["certiverseEmail"]:
        flag = (
            "  ≠ holder: assigned to someone else in Certiverse" if record["emailMismatch"] else ""
        )
        lines.append(f"in Certiverse assigned to {record['certiverseEmail']}{flag}")
    if record["expiryNoticeAt"]:
        lines.append(f"announced as expiring at {record['expiryNoticeAt']}")
    for h in record["reissueHistory"]:
        lines.append(
            f"replaces  {h['voucherCode'] or '-'} (batch {h['batchId']} row {h['row']}), "
            f"reissued {h['replacedAt']}"
        )
    if record["replacedBy"]:
        lines.append(
            f"replaced by a reissue in batch {record['replacedBy']['batchId']} at "
            f"{record['replacedBy']['at']}"
        )
    return "\n".join(lines)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")
