"""``voucher-distributor deliveries BATCH [--status S]``: each row's e-mail state.

Two Queries by the batch's key (its assignments ``R#`` and e-mails ``E#``), merged in row order;
never a scan. A row with a code and no e-mail item yet is ``scheduled`` when the batch mails,
else ``not-sent``; a row without a code is ``not-sent``. The holders' reminders before expiry
(``ReminderDays``) are listed after the rows, one per (row, days before).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.email import EmailState
from voucher_distributor_cli.ops.target import OpsError, Target


def list_deliveries(target: Target, batch_id: str, *, status: str | None = None) -> dict[str, Any]:
    """The batch's rows with their e-mail states (``status``: only rows in that state)."""
    states = {s.value for s in EmailState}
    if status is not None and status not in states:
        raise OpsError(f"no e-mail state {status!r}: one of {', '.join(sorted(states))}")
    ledger = target.ledger
    batch = ledger.batches.get_batch(batch_id)
    if batch is None:
        raise OpsError(f"no batch {batch_id} in {target.table_name}")
    mails = bool(target.function_env.get("SENDER_EMAIL")) and not batch.dry_run and batch.send_email
    emails = {d.row_number: d for d in ledger.deliveries.for_batch(batch_id)}
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for record in ledger.assignments.iter_assignments(batch_id):
        delivery = emails.get(record.row_number)
        if delivery is not None:
            last = delivery.history[-1] if delivery.history else None
            row: dict[str, Any] = {
                "row": record.row_number,
                "to": delivery.to_address or record.email,
                "state": delivery.state.value,
                "attempts": delivery.attempts,
                "lastEvent": last.source if last else None,
                "at": iso_utc(delivery.last_event_at),
                **({"reason": delivery.reason} if delivery.reason else {}),
            }
        else:
            assigned = record.status == "assigned" and bool(record.voucher_code)
            state = EmailState.SCHEDULED if assigned and mails else EmailState.NOT_SENT
            row = {"row": record.row_number, "to": record.email, "state": state.value,
                   "attempts": 0, "lastEvent": None, "at": None}  # fmt: skip
        counts[row["state"]] += 1
        if status is None or row["state"] == status:
            rows.append(row)
    reminders = [
        {
            "row": r.row_number,
            "daysBefore": r.reminder_days,
            "to": r.to_address,
            "state": r.state.value,
            "attempts": r.attempts,
            "at": iso_utc(r.last_event_at),
            **({"reason": r.reason} if r.reason else {}),
        }
        for r in ledger.deliveries.reminders_for_batch(batch_id)
        if status is None or r.state.value == status
    ]
    return {"batchId": batch_id, "counts": dict(counts), "rows": rows, "reminders": reminders}


def format_deliveries(view: dict[str, Any]) -> str:
    counts = ", ".join(f"{n:,} {state}" for state, n in sorted(view["counts"].items()))
    lines = [f"batch {view['batchId']}: {counts or 'no rows in the ledger'}"]
    for r in view["rows"]:
        lines.append(
            f"  row {r['row']:>6}  {r['state']:<10}  {r['to']}  attempts {r['attempts']}"
            + (f"  {r['lastEvent']} {r['at']}" if r["lastEvent"] else "")
            + (f"  ({r['reason']})" if r.get("reason") else "")
        )
    for r in view.get("reminders", []):
        lines.append(
            f"  row {r['row']:>6}  reminder {r['daysBefore']} days before expiry: {r['state']}  "
            f"{r['to']}  {r['at']}" + (f"  ({r['reason']})" if r.get("reason") else "")
        )
    return "\n".join(lines)
