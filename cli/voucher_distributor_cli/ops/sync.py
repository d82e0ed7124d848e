"""``voucher-distributor sync``: run the redemption sync once, now, against a stack.

The same use case the scheduled ``SyncFunction`` runs (``pipeline.redemption``), in this
process, with the stack's table, bucket, event bus and settings (read from its functions'
environment) and its Certiverse (URL and token secret, or ``--certiverse-url`` and
``CERTIVERSE_TOKEN``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from voucher_distributor.adapters.events import Events
from voucher_distributor.adapters.queues import Queues
from voucher_distributor.adapters.ses import Ses
from voucher_distributor.adapters.storage import Storage
from voucher_distributor.models.ledger import ChunkRecord, ChunkState, TrackedPurchase
from voucher_distributor.pipeline.context import Services
from voucher_distributor.pipeline.redemption import SyncOutcome, sync_redemptions
from voucher_distributor.settings import Settings, SettingsError
from voucher_distributor_cli.ops.target import OpsError, Target


def sync_services(
    target: Target, *, certiverse_url: str | None = None, token: str | None = None
) -> Services:
    """The sync's services for ``target``: its adapters through this session and endpoint.

    No callback sender: an expiry notice's callback goes to the stack's callback queue (the
    outbox), and the stack's deliverer sends it. The reminders go through the stack's SES."""
    env = dict(target.function_env)
    if certiverse_url:
        env["CERTIVERSE_BASE_URL"] = certiverse_url
    try:
        settings = Settings.from_environ(env)
    except SettingsError as exc:
        raise OpsError(f"the stack's function settings cannot be read: {exc}") from exc
    return Services(
        settings=settings,
        ledger=target.ledger,
        storage=Storage(target.bucket or settings.inbox_bucket, s3=target.client("s3")),
        queues=Queues(sqs=target.client("sqs")),
        events=Events(settings.event_bus_name, events=target.client("events")),
        certiverse=target.certiverse(certiverse_url, token),
        # The holders' reminders (ReminderDays) go out through the stack's SES, as deployed.
        ses=(
            Ses(sesv2=target.client("sesv2"), configuration_set=settings.ses_configuration_set)
            if settings.email_enabled
            else None
        ),
    )


def track_existing(target: Target) -> int:
    """Follow the purchases bought before the sync existed; how many were added.

    A filtered scan of the whole table (a one-time migration, so it keeps its scan): every
    assigned chunk with a purchase
    that is neither followed nor settled yet is handed to the sync, with its rows.
    """
    ledger = target.ledger
    settled = {p.purchase_code for p in ledger.tracking.settled_purchases()}
    followed = {p.purchase_code for p in ledger.tracking.open_purchases()}
    by_batch: dict[str, list[ChunkRecord]] = defaultdict(list)
    for chunk in ledger.chunks.iter_all_chunks():
        code = chunk.purchase_code
        if chunk.state == ChunkState.ASSIGNED and code and code not in settled | followed:
            by_batch[chunk.batch_id].append(chunk)
    added = 0
    for batch_id, chunks in sorted(by_batch.items()):
        rows: dict[int, list[int]] = defaultdict(list)
        for assignment in ledger.assignments.iter_assignments(batch_id):
            rows[assignment.chunk_no].append(assignment.row_number)
        for chunk in chunks:
            added += ledger.tracking.track_purchase(
                TrackedPurchase(
                    purchase_code=chunk.purchase_code or "",
                    batch_id=batch_id,
                    chunk_no=chunk.chunk_no,
                    partner_name=chunk.partner_name,
                    program_name=chunk.program_name,
                    rows=sorted(rows[chunk.chunk_no]),
                    tracked_at=int(time.time()),
                )
            )
    return added


def run_sync(
    target: Target,
    *,
    certiverse_url: str | None = None,
    token: str | None = None,
    existing: bool = False,
) -> tuple[SyncOutcome, int]:
    """One sync run now; with ``existing``, first follow purchases bought before the sync."""
    added = track_existing(target) if existing else 0
    services = sync_services(target, certiverse_url=certiverse_url, token=token)
    try:
        return sync_redemptions(services), added
    finally:
        services.certiverse.close()


def format_sync(outcome: SyncOutcome, added: int = 0) -> str:
    lines = [f"now following {added} purchase(s) bought before the sync existed"] if added else []
    lines += [
        f"read {outcome.purchases_read} purchase(s) with unsettled codes "
        f"({outcome.codes_read:,} codes): {outcome.codes_changed:,} changed, "
        f"{outcome.purchases_settled} purchase(s) now settled (not read again)",
    ]
    notes = (
        (
            outcome.purchases_unread,
            "purchase(s) could not be read (Certiverse 5xx or unreachable): the next run "
            "reads them again",
        ),
        (outcome.purchases_waiting, "purchase(s) wait for their batch's report"),
        (
            outcome.email_mismatches,
            "code(s) assigned in Certiverse to another e-mail than their holder "
            "(`reconcile` lists them)",
        ),
        (outcome.expiring_announced, "code(s) announced as expiring"),
    )
    lines += [f"{count} {note}" for count, note in notes if count]
    for batch_id in outcome.batches_reported:
        lines.append(f"redemption report rewritten for batch {batch_id}")
    for program, counts in outcome.by_program.items():
        said = ", ".join(f"{n:,} {state}" for state, n in counts.items())
        lines.append(f"  {program}: {said}")
    return "\n".join(lines)


def sync_document(outcome: SyncOutcome, added: int = 0) -> dict[str, Any]:
    return {**outcome.as_dict(), "trackedExisting": added}
