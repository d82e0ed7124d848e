"""``voucher-distributor status [BATCH]``: a batch's state, per-chunk state, counts and ages;
without BATCH, the stage's overview: batches awaiting approval and today's vouchers against the
daily limit."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from voucher_distributor.domain.approval import approval_summary
from voucher_distributor.domain.outcomes import tally_chunks
from voucher_distributor.domain.send_schedule import send_summary
from voucher_distributor.domain.timestamps import iso_utc, utc_day
from voucher_distributor.models.ledger import BatchRecord, BatchStatus, ChunkRecord
from voucher_distributor.pipeline.callbacks import deliveries_view
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.ops.target import OpsError, Target


def batch_status(target: Target, batch_id: str, *, now: float | None = None) -> dict[str, Any]:
    """The batch, its counts and each chunk's state, with ages in seconds."""
    now_s = int(time.time() if now is None else now)
    batch = target.ledger.batches.get_batch(batch_id)
    if batch is None:
        raise OpsError(f"no batch {batch_id} in {target.table_name}")
    chunks = list(target.ledger.chunks.iter_chunks(batch_id))
    tally = tally_chunks(chunks)
    return {
        "batchId": batch.batch_id,
        # An unusable input is the sender's to fix: REJECTED, as its summary says.
        "status": "REJECTED" if batch.input_rejected else batch.status.value,
        "source": batch.source,
        # Which door it came in by and who used it (an API client, or an AWS principal).
        "channel": batch.channel or None,
        "submittedBy": batch.submitted_by or None,
        "partners": batch.partners,
        "ageSeconds": now_s - batch.created_at,
        "finishedAfterSeconds": (
            batch.finished_at - batch.created_at if batch.finished_at else None
        ),
        "counts": {
            "rows": batch.rows_total,
            "rejected": batch.rows_rejected,
            "assigned": tally.assigned,
            "existing": batch.rows_existing,
            "failed": tally.failed + batch.rows_failed_early,
            "chunks": batch.chunk_count,
            "chunksFinished": tally.chunks_finished,
            "purchasesCreated": tally.purchases_created,
            "purchasesAdopted": tally.purchases_adopted,
        },
        "chunkStates": dict(Counter(c.state.value for c in chunks)),
        # Rows mailed so far, by e-mail state (none: the batch mails nobody, or not yet).
        "emails": dict(Counter(s.value for _, s in target.ledger.deliveries.states(batch_id))),
        # A scheduled send (sendAt): when, its state, send-now / cancel-send (who, when).
        "sendAt": iso_utc(batch.send_at) if batch.send_at else None,
        **({"send": send_summary(batch)} if batch.send_at else {}),
        "chunks": [_chunk_view(c, now_s) for c in chunks],
        # Where the results are once written: none before the batch ends (a failed input
        # has a summary and no results file).
        "results": _results(target, batch),
        **({"dryRun": True} if batch.dry_run else {}),
        **({"approval": approval} if (approval := approval_summary(batch)) else {}),
        **({"error": batch.error} if batch.error else {}),
        **(
            {"callbacks": deliveries_view(target.ledger.outbox.callback_deliveries(batch_id))}
            if batch.callback_url
            else {}
        ),
    }


def _results(target: Target, batch: BatchRecord) -> dict[str, Any]:
    ended = batch.status in {BatchStatus.DONE, BatchStatus.FAILED}
    csv = ended and batch.status == BatchStatus.DONE
    if ended and target.bucket:
        csv = _exists(target, batch.results_csv_key)
    where = f"s3://{target.bucket}/" if target.bucket else ""
    return {
        "written": ended,
        "csv": f"{where}{batch.results_csv_key}" if csv else None,
        "summary": f"{where}{batch.summary_key}" if ended else None,
    }


def _exists(target: Target, key: str) -> bool:
    try:
        target.client("s3").head_object(Bucket=target.bucket, Key=key)
    except ClientError:
        return False
    return True


def stage_overview(target: Target, *, now: float | None = None) -> dict[str, Any]:
    """Batches waiting for a decision, and the vouchers counted today against the limit."""
    now_s = int(time.time() if now is None else now)
    day = utc_day(now_s)
    limit = target.function_env.get("DAILY_VOUCHER_LIMIT")
    waiting = sorted(target.ledger.batches.batches_awaiting_approval(), key=lambda b: b.created_at)
    return {
        "day": day,
        "vouchersToday": target.ledger.counts.vouchers_counted(day),
        "dailyVoucherLimit": int(limit) if limit else None,
        "awaitingApproval": [_waiting_view(b, now_s) for b in waiting],
    }


def _waiting_view(batch: BatchRecord, now_s: int) -> dict[str, Any]:
    return {
        "batchId": batch.batch_id,
        "source": batch.source,
        "sender": batch.sender or None,
        "vouchers": batch.vouchers_planned,
        "reason": batch.approval_reason,
        "waitingSeconds": now_s - batch.created_at,
        "rejectedInSeconds": max(0, (batch.approval_deadline or now_s) - now_s),
        "decision": batch.approval_decision,
    }


def format_overview(view: Mapping[str, Any], args: argparse.Namespace | None = None) -> str:
    """The overview as text; its commands as they can be pasted (``args``' stack options)."""
    limit = view["dailyVoucherLimit"]
    of = f" of DailyVoucherLimit {limit:,}" if limit else " (no daily limit)"
    lines = [f"today ({view['day']} UTC): {view['vouchersToday']:,} vouchers counted{of}"]
    waiting = view["awaitingApproval"]
    if not waiting:
        lines.append("no batch awaits approval")
    for b in waiting:
        lines.append(
            f"awaiting approval: {b['batchId']}  {b['vouchers']:,} vouchers  waiting "
            f"{_age(b['waitingSeconds'])}, rejected by itself in {_age(b['rejectedInSeconds'])}"
            + (f"  ({b['decision']}, being carried out)" if b["decision"] else "")
        )
        lines.append(f"  {b['source']}: {b['reason']}")
        lines.append(f"  {command_hint(args, 'approve', b['batchId'])}")
        reject = command_hint(args, "reject", b["batchId"], "--reason", '"…"')
        lines.append(f"  {reject}")
    return "\n".join(lines)


def _send_words(send: Mapping[str, Any]) -> str:
    changed = send.get("changed") or {}
    by_hand = f" ({changed['action']} by {changed['by']} at {changed['at']})" if changed else ""
    if send["state"] == "scheduled":
        return "scheduled: the e-mails wait (send-now BATCH, cancel-send BATCH)"
    if send["state"] == "fired":
        return f"sent from {send['firedAt']}{by_hand}"
    if send["state"] == "cancelled":
        return f"cancelled: the rows are not-sent{by_hand}"
    return "no e-mail to send (a dry run, opted out, or no code assigned)"


def _results_line(results: Mapping[str, Any]) -> str:
    if not results["written"]:
        return "  results  not written yet: they are when the batch ends"
    return f"  results  {results['csv'] or 'no results file'}; summary {results['summary']}"


def _chunk_view(chunk: ChunkRecord, now_s: int) -> dict[str, Any]:
    return {
        "chunk": chunk.chunk_no,
        "state": chunk.state.value,
        "partner": chunk.partner_name,
        "program": chunk.program_name,
        "quantity": chunk.quantity,
        "purchaseCode": chunk.purchase_code,
        "adopted": chunk.adopted,
        "purchaseAttempts": chunk.purchase_attempts,
        "pollAttempts": chunk.poll_attempts,
        "sincePurchaseSeconds": now_s - chunk.purchased_at if chunk.purchased_at else None,
        **({"reason": chunk.failure_reason} if chunk.failure_reason else {}),
    }


def format_status(view: Mapping[str, Any], args: argparse.Namespace | None = None) -> str:
    """The batch as text; its commands as they can be pasted (``args``' stack options)."""
    counts = view["counts"]
    lines = [
        f"batch {view['batchId']}  {view['status']}  age {_age(view['ageSeconds'])}"
        + (
            f"  (took {_age(view['finishedAfterSeconds'])})" if view["finishedAfterSeconds"] else ""
        ),
        f"  source   {view['source']}",
        f"  sent     {view.get('channel') or 'unknown channel'} by "
        f"{view.get('submittedBy') or 'unknown'}"
        + (f"; partners {', '.join(view['partners'])}" if view.get("partners") else ""),
        f"  rows     {counts['rows']:,}: {counts['assigned']:,} assigned, "
        f"{counts['existing']:,} existing, {counts['rejected']:,} rejected, "
        f"{counts['failed']:,} failed",
        f"  chunks   {counts['chunksFinished']}/{counts['chunks']} finished "
        + ", ".join(f"{n} {s}" for s, n in sorted(view["chunkStates"].items())),
        _results_line(view["results"]),
    ]
    if view.get("emails"):
        lines.append(
            "  e-mails  " + ", ".join(f"{n:,} {s}" for s, n in sorted(view["emails"].items()))
        )
    if send := view.get("send"):
        lines.append(f"  send at  {send['sendAt']}  {_send_words(send)}")
    if view.get("dryRun"):
        lines.append("  dry run  nothing is bought; rows are reported 'would-assign'")
    if approval := view.get("approval"):
        decided = (
            f"{approval['decision']} by {approval['by']} at {approval['at']}"
            + (f": {approval['note']}" if approval.get("note") else "")
            if approval.get("decision")
            else f"waiting for approve/reject until {approval['deadline']}"
        )
        lines.append(f"  approval {approval['reason']}; {decided}")
    if view.get("error"):
        lines.append(f"  error    {view['error']}")
    for callback in view.get("callbacks", []):
        lines.extend(_callback_lines(callback, command_hint(args, "redeliver", view["batchId"])))
    lines.append(
        f"  {'chunk':>5}  {'state':<11} {'qty':>5}  {'purchase':<14} {'tries':>5} {'polls':>5}  "
        "since purchase  program"
    )
    for c in view["chunks"]:
        since = _age(c["sincePurchaseSeconds"]) if c["sincePurchaseSeconds"] is not None else "-"
        lines.append(
            f"  {c['chunk']:>5}  {c['state']:<11} {c['quantity']:>5}  "
            f"{(c['purchaseCode'] or '-'):<14} {c['purchaseAttempts']:>5} {c['pollAttempts']:>5}  "
            f"{since:>14}  {c['program']}" + (f"  ({c['reason']})" if c.get("reason") else "")
        )
    return "\n".join(lines)


def _callback_lines(callback: Mapping[str, Any], redeliver: str) -> list[str]:
    attempts = callback["attempts"]
    said = ", ".join(f"{a['status']} ({a['latencyMs']} ms)" for a in attempts) or "none yet"
    lines = [
        f"  callback {callback['event']} -> {callback['url']}: {callback['state']} "
        f"({callback['webhookId']})",
        f"           attempts: {said}",
    ]
    if callback.get("nextAttemptAt"):
        lines.append(f"           next attempt at {callback['nextAttemptAt']}")
    if callback["state"] == "failed":
        lines.append(
            f"           {callback.get('reason') or 'not delivered'}; after a fix: {redeliver}"
        )
    return lines


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
