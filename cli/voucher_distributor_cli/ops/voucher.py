"""``voucher-distributor voucher CODE``: one code's record — who holds it, where it came from,
and what Certiverse says of it since (the redemption sync's last look)."""

from __future__ import annotations

from typing import Any

from voucher_distributor.domain.redemption import code_record
from voucher_distributor_cli.ops.target import Target

__all__ = ["code_record", "find_voucher", "format_voucher"]


def find_voucher(target: Target, code: str) -> dict[str, Any] | None:
    """The code's record, or None when the ledger never handed it out.

    Three reads whatever the table's size: the ``by-code`` index, the batch, the holding.
    """
    ledger = target.ledger
    assignment = ledger.assignments.find_voucher_code(code.strip())
    if assignment is None:
        return None
    # The batch and the code's e-mail in one read.
    # The stack's ReminderDays name the reminder items: read with the batch, one request.
    days = tuple(
        int(d) for d in target.function_env.get("REMINDER_DAYS", "14,3").split(",") if d.strip()
    )
    batch, email, reminders = ledger.deliveries.get_record_items(
        assignment.batch_id, assignment.row_number, days
    )
    holding = ledger.holdings.get_holding(
        assignment.email, assignment.partner_name, assignment.program_name
    )
    return code_record(assignment, batch, holding, email, reminders)


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
        _email_line(record["emailDelivery"]),
    ]
    for reminder in record.get("reminders", []):
        lines.append(
            f"reminder  {reminder['daysBefore']} days before expiry: {reminder['status']} at "
            f"{reminder['lastAt']}" + (f" ({reminder['reason']})" if reminder.get("reason") else "")
        )
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


def _email_line(email: dict[str, Any]) -> str:
    """The publish summary: the e-mail's state, SES calls made, and when."""
    if not email["attempts"] and email["status"] == "not-sent":
        return "e-mail    not-sent"
    calls = f"{email['attempts']} attempt{'' if email['attempts'] == 1 else 's'}"
    sent = f", sent {email['sentAt']}" if email.get("sentAt") else ""
    why = f" ({email['reason']})" if email.get("reason") else ""
    return f"e-mail    {email['status']} at {email['lastAt']}; {calls}{sent}{why}"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")
