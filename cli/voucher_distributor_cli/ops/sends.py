"""``voucher-distributor send-now BATCH`` and ``cancel-send BATCH``: a scheduled send changed
before it fires.

``send-now`` sends the waiting e-mails at once; ``cancel-send`` never sends them (the rows end
``not-sent``, saying so). Either is one conditional write on the batch (who: your AWS
identity; when), so a send that fired meanwhile is refused, never sent twice; the batch's
EventBridge Scheduler schedule is deleted, and the sending function does the rest.
"""

from __future__ import annotations

import argparse
import time

from voucher_distributor.adapters.scheduler import Scheduler
from voucher_distributor.pipeline.scheduled_send import SendChanged, SendChangeRefused, change_send
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.ops.approval import caller_identity
from voucher_distributor_cli.ops.target import OpsError, Target


def change_scheduled_send(
    target: Target, batch_id: str, *, action: str, now: float | None = None
) -> SendChanged:
    send = target.queue_sender("EmailQueue", missing=": deploy this version first")
    try:
        return change_send(
            target.ledger,
            Scheduler(client=target.client("scheduler")),
            send,
            batch_id,
            action=action,
            by=caller_identity(target),
            now=int(time.time() if now is None else now),
        )
    except SendChangeRefused as exc:
        raise OpsError(str(exc)) from exc


def format_changed(changed: SendChanged, args: argparse.Namespace | None = None) -> str:
    view = changed.as_dict()
    what = (
        "its e-mails are being sent now"
        if view["action"] == "send-now"
        else "its e-mails will not be sent: the rows end not-sent"
    )
    return (
        f"batch {view['batchId']}: the send scheduled for {view['sendAt']} — {what} "
        f"({view['action']} by {view['by']} at {view['at']}); follow it with "
        f"`{command_hint(args, 'deliveries', view['batchId'])}`"
    )
