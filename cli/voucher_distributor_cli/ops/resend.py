"""``voucher-distributor resend BATCH (--row N | --email ADDR | --status S) [--to NEW]``.

Mails the *same* code again through the sending function (one message per row on the e-mail
queue; a new claim on the row's e-mail, so never twice for one ask). ``--to`` corrects a
mistyped address: the holding moves to the new address, recorded with your AWS identity and
the time. Refused within 60 s of the last e-mail to the row, and for ``complained`` rows
unless ``--force``.
"""

from __future__ import annotations

import argparse
import time

from voucher_distributor.models.resend import ResendSelection
from voucher_distributor.pipeline.resend import ResendError, ResendReport, ask_resends
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.ops.approval import caller_identity
from voucher_distributor_cli.ops.target import OpsError, Target


def resend(
    target: Target, batch_id: str, selection: ResendSelection, *, now: float | None = None
) -> ResendReport:
    send = target.queue_sender("EmailQueue", missing=": deploy this version first")
    try:
        return ask_resends(
            target.ledger,
            send,
            batch_id,
            selection,
            by=caller_identity(target),
            now=int(time.time() if now is None else now),
            email_enabled=bool(target.function_env.get("SENDER_EMAIL")),
        )
    except ResendError as exc:
        raise OpsError(str(exc)) from exc


def format_resent(report: ResendReport, args: argparse.Namespace | None = None) -> str:
    lines = []
    for a in report.asked:
        moved = f" (moved from {a.moved_from})" if a.moved_from else ""
        lines.append(f"row {a.row}: the same code queued again to {a.to}{moved}")
    for row, why in report.refused:
        lines.append(f"row {row}: not resent: {why}" if row else f"not resent: {why}")
    if report.asked:
        lines.append(f"follow it with `{command_hint(args, 'deliveries', report.batch_id)}`")
    return "\n".join(lines)
