"""``voucher-distributor redeliver BATCH``: send a batch's failed callbacks again, after the
receiver is fixed, with a fresh attempt budget and the same ``webhook-id`` (receivers that got
one already drop the repeat)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from voucher_distributor.adapters.queues import Queues
from voucher_distributor.pipeline.callbacks import deliveries_view, redeliver
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.ops.target import OpsError, Target


def redeliver_callbacks(
    target: Target, batch_id: str, *, include_all: bool = False, now: float | None = None
) -> dict[str, Any]:
    """Restart the batch's failed (``include_all``: all) deliveries; what was restarted."""
    ledger = target.ledger
    if ledger.batches.get_batch(batch_id) is None:
        raise OpsError(f"no batch {batch_id} in {target.table_name}")
    deliveries = ledger.outbox.callback_deliveries(batch_id)
    if not deliveries:
        raise OpsError(
            f"batch {batch_id} has no callbacks to redeliver: its input named no callbackUrl"
        )
    queue_url = target.queues.get("CallbackQueue")
    if not queue_url:
        raise OpsError("the stack has no CallbackQueue: deploy this version first")
    restarted = redeliver(
        ledger,
        Queues(sqs=target.client("sqs")),
        queue_url,
        batch_id,
        now=int(time.time() if now is None else now),
        include_all=include_all,
    )
    return {
        "batchId": batch_id,
        "redelivered": [d.webhook_id for d in restarted],
        "callbacks": deliveries_view(ledger.outbox.callback_deliveries(batch_id)),
    }


def format_redelivered(
    view: dict[str, Any], *, include_all: bool, args: argparse.Namespace | None = None
) -> str:
    sent = view["redelivered"]
    if not sent:
        states = ", ".join(f"{c['webhookId']} {c['state']}" for c in view["callbacks"])
        hint = "" if include_all else "; --all sends delivered ones again too"
        return f"batch {view['batchId']}: no failed callback to redeliver ({states}){hint}"
    lines = [f"batch {view['batchId']}: {len(sent)} callback(s) queued again"]
    lines += [f"  {webhook_id}" for webhook_id in sent]
    lines.append(f"  follow them with `{command_hint(args, 'status', view['batchId'])}`")
    return "\n".join(lines)
