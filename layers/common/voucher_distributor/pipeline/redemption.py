"""Redemption sync: after the hand-out, follow every code through Certiverse.

Scheduled (``RedemptionSyncMinutes``) and run on demand (``voucher-distributor sync``). Each run
reads the vouchers of every purchase that still has unsettled codes (one listing per purchase,
page after page, narrowed to unused, active codes once some are settled: ⌈unsettled codes /
page size⌉ + 1 calls each while nothing changed), records on each code's assignment
item — the code the person's holding points at — what changed (used and when, reservation,
active, expiry, the e-mail Certiverse holds), and moves a purchase whose every code is used,
expired or inactive out of the open list, so it is never read again. Then it announces the
unused codes that came within ``ExpiryNoticeDays`` of their expiry (once per code) and rewrites
``<name>.redemptions.csv`` beside the results of every batch whose codes changed.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voucher_distributor.adapters.certiverse import CertiverseServerError
from voucher_distributor.domain.redemption import (
    changed,
    count_states,
    due_expiry_notice,
    is_settled,
    redemption_csv,
    redemption_of,
)
from voucher_distributor.domain.results_csv import spreadsheet_safe
from voucher_distributor.domain.send_schedule import due_reminder
from voucher_distributor.domain.timestamps import iso_utc
from voucher_distributor.models.certiverse import PartnerVoucherModel
from voucher_distributor.models.ledger import (
    AssignmentRecord,
    BatchRecord,
    BatchStatus,
    TrackedPurchase,
)
from voucher_distributor.pipeline.callbacks import send_event_callback
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.reminders import DueReminder, send_reminders

#: The event a (partner, program)'s newly expiring unused codes are announced by.
VOUCHERS_EXPIRING = "Vouchers Expiring"
#: Where the lists of expiring codes go (the results lifecycle applies).
EXPIRING_PREFIX = "results/expiring/"


@dataclass
class SyncOutcome:
    """What one run did (logged, printed by ``voucher-distributor sync``)."""

    purchases_read: int = 0
    purchases_settled: int = 0
    purchases_waiting: int = 0  # their batch is not reported yet: read on a later run
    #: Certiverse could not list them this run (5xx or unreachable after the client's retries):
    #: read again by the next run; the others are synced regardless.
    purchases_unread: int = 0
    codes_read: int = 0
    codes_changed: int = 0
    email_mismatches: int = 0
    expiring_announced: int = 0
    #: Reminders e-mailed to holders this run (ReminderDays).
    reminders_sent: int = 0
    batches_reported: list[str] = field(default_factory=list)
    #: Counts by state per "partner / program", settled purchases included.
    by_program: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "purchasesRead": self.purchases_read,
            "purchasesSettled": self.purchases_settled,
            "purchasesWaiting": self.purchases_waiting,
            "purchasesUnread": self.purchases_unread,
            "codesRead": self.codes_read,
            "codesChanged": self.codes_changed,
            "emailMismatches": self.email_mismatches,
            "expiringAnnounced": self.expiring_announced,
            "remindersSent": self.reminders_sent,
            "batchesReported": self.batches_reported,
            "byProgram": self.by_program,
        }


@dataclass(frozen=True)
class _Expiring:
    assignment: AssignmentRecord
    expires_utc: str


@dataclass
class _Run:
    """One run's working state: the clock, what it found, what it must do at the end."""

    now: int
    moment: datetime
    notice_days: int
    outcome: SyncOutcome = field(default_factory=SyncOutcome)
    batches: dict[str, BatchRecord | None] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    expiring: dict[tuple[str, str], list[_Expiring]] = field(
        default_factory=lambda: defaultdict(list)
    )
    reminder_days: tuple[int, ...] = ()
    reminders: list[DueReminder] = field(default_factory=list)


def sync_redemptions(services: Services) -> SyncOutcome:
    """One run of the sync over every open purchase; safe to run again at any time."""
    now = services.now()
    run = _Run(now, datetime.fromtimestamp(now, UTC), services.settings.expiry_notice_days)
    run.reminder_days = services.settings.reminder_schedule
    outcome = run.outcome
    for purchase in services.ledger.tracking.open_purchases():
        if purchase.batch_id not in run.batches:
            run.batches[purchase.batch_id] = services.ledger.batches.get_batch(purchase.batch_id)
        batch = run.batches[purchase.batch_id]
        if batch is None or batch.status != BatchStatus.DONE:
            outcome.purchases_waiting += 1  # its report writes the summary the sync adds to
            continue
        try:
            _sync_purchase(services, run, purchase)
        except CertiverseServerError as exc:
            outcome.purchases_unread += 1
            log.warning("purchase %s not read this run: %s", purchase.purchase_code, exc)
    if outcome.purchases_unread:
        services.metrics.count("RedemptionPurchasesUnread", outcome.purchases_unread)
    for (partner, program), codes in sorted(run.expiring.items()):
        outcome.expiring_announced += _announce_expiring(services, partner, program, codes, now)
    outcome.reminders_sent = send_reminders(services, run.reminders)["sent"]
    for batch_id in sorted(run.touched):
        batch = run.batches.get(batch_id)
        if batch is not None:
            write_batch_redemptions(services, batch, now)
            outcome.batches_reported.append(batch_id)
    outcome.by_program = _totals_by_program(services)
    for name, counts in outcome.by_program.items():
        # One line per program: the dashboard's "redemption by program" reads these (no
        # e-mails; program names only), so no metric dimension per program is billed.
        log.info("redemption by program", extra={"program": name, "redemption": counts})
    if outcome.email_mismatches:
        services.metrics.count("RedemptionEmailMismatches", outcome.email_mismatches)
    services.metrics.count("RedemptionCodesChanged", outcome.codes_changed)
    services.metrics.count("VouchersExpiringAnnounced", outcome.expiring_announced)
    return outcome


def _sync_purchase(services: Services, run: _Run, purchase: TrackedPurchase) -> None:
    """Read one purchase's vouchers (one listing), record what changed, settle it if done."""
    outcome = run.outcome
    rows = services.ledger.assignments.get_assignments(
        (purchase.batch_id, r) for r in purchase.rows
    )
    handed = [a for a in rows.values() if a.status == "assigned" and a.voucher_code]
    vouchers = _read_vouchers(services, purchase, handed)
    outcome.purchases_read += 1
    outcome.codes_read += len(vouchers)
    states: list[str] = []
    all_known = True
    for assignment in handed:
        voucher = vouchers.get(assignment.voucher_code)
        old = assignment.redemption
        if voucher is None:
            if old is None or old.state not in _NEVER_LISTED_AGAIN:
                all_known = False  # not listed (yet): keep what we knew, read it next run
            states.append(old.state if old else "unused")
            continue
        new = redemption_of(voucher, assignment.email, run.moment)
        new.expiry_noticed_at = old.expiry_noticed_at if old else None
        new.synced_at = old.synced_at if old else None
        if changed(old, new):
            new.synced_at = run.now
            services.ledger.tracking.record_redemption(
                assignment.batch_id, assignment.row_number, new
            )
            outcome.codes_changed += 1
            run.touched.add(assignment.batch_id)
        outcome.email_mismatches += new.email_mismatch
        if due_expiry_notice(new, run.moment, run.notice_days):
            run.expiring[(purchase.partner_name, purchase.program_name)].append(
                _Expiring(assignment, new.expires_utc)
            )
        if new.state == "unused" and new.active:
            days = due_reminder(new.expires_utc, run.now, run.reminder_days)
            if days is not None:
                run.reminders.append(DueReminder(assignment, days, new.expires_utc))
        states.append(new.state)
    counts = count_states(states)
    if all_known and all(is_settled(s) for s in states):
        services.ledger.tracking.settle_purchase(
            purchase.model_copy(
                update={"counts": counts, "synced_at": run.now, "settled_at": run.now}
            )
        )
        outcome.purchases_settled += 1
    elif counts != purchase.counts:
        services.ledger.tracking.record_purchase_sync(
            purchase.model_copy(update={"counts": counts, "synced_at": run.now})
        )


#: Settled states the narrowed listing (unused and active codes) leaves out.
_NEVER_LISTED_AGAIN = frozenset({"used", "inactive"})


def _read_vouchers(
    services: Services, purchase: TrackedPurchase, handed: list[AssignmentRecord]
) -> dict[str, PartnerVoucherModel]:
    """The purchase's vouchers that may still change, keyed by code.

    While none of its codes is known used or inactive: one listing of the purchase. Once some
    are, the listing is narrowed to unused, active codes (``isUsed=false&isActive=true``): what
    is settled is not paged through again. A code we knew unsettled that the narrowed listing
    leaves out was used or deactivated since: then the whole purchase is listed once more, to
    read when and how.
    """
    code = purchase.purchase_code

    def listing(*, open_only: bool = False) -> dict[str, PartnerVoucherModel]:
        listed = services.certiverse.iter_vouchers(
            purchase_code=code,
            is_used=False if open_only else None,
            is_active=True if open_only else None,
        )
        return {v.voucher_code: v for v in listed if v.voucher_purchase_code == code}

    settled = {
        a.voucher_code
        for a in handed
        if a.redemption is not None and a.redemption.state in _NEVER_LISTED_AGAIN
    }
    if not settled:
        return listing()
    narrowed = listing(open_only=True)
    if any(a.voucher_code not in narrowed and a.voucher_code not in settled for a in handed):
        return listing()
    return narrowed


def _totals_by_program(services: Services) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    purchases = (
        services.ledger.tracking.open_purchases() + services.ledger.tracking.settled_purchases()
    )
    for purchase in purchases:
        name = f"{purchase.partner_name} / {purchase.program_name}"
        into = totals.setdefault(name, count_states([]))
        for state, number in purchase.counts.items():
            into[state] = into.get(state, 0) + number
    return dict(sorted(totals.items()))


# ----------------------------------------------------------------------------- reports


def redemptions_key(batch: BatchRecord) -> str:
    """``results/…/<name>.redemptions.csv`` beside the batch's results file."""
    key = batch.results_csv_key
    stem = key.removesuffix(".csv").removesuffix(".results")
    return f"{stem}.redemptions.csv"


def write_batch_redemptions(services: Services, batch: BatchRecord, now: int) -> dict[str, int]:
    """Rewrite the batch's redemption report and its counts in the summary; the counts."""
    body, counts = redemption_csv(services.ledger.assignments.iter_assignments(batch.batch_id))
    key = redemptions_key(batch)
    services.storage.put_bytes(key, body, content_type="text/csv; charset=utf-8")
    summary = services.storage.get_json(batch.summary_key)
    if isinstance(summary, dict):
        summary["redemptions"] = {"counts": counts, "results": key, "syncedAt": iso_utc(now)}
        services.storage.put_json(batch.summary_key, summary)
    return counts


# ----------------------------------------------------------------------------- notices


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "unnamed"


def _announce_expiring(
    services: Services, partner: str, program: str, codes: list[_Expiring], now: int
) -> int:
    """Claim each code's one notice, then announce the claimed ones; how many were announced.

    A code is claimed with a conditional write before anything is sent, so two syncs never
    announce it twice; if sending fails the claims are given back and the next run tries again.
    """
    claimed = [
        c
        for c in codes
        if services.ledger.tracking.mark_expiry_noticed(
            c.assignment.batch_id, c.assignment.row_number, now=now
        )
    ]
    if not claimed:
        return 0
    claimed.sort(key=lambda c: (c.expires_utc, c.assignment.email))
    key = f"{EXPIRING_PREFIX}{_slug(partner)}/{_slug(program)}/{iso_utc(now).replace(':', '')}.csv"
    lines = ["email,voucher_code,expires_utc,partner,program,batch_id"]
    lines += [
        ",".join(
            _csv_cell(v)
            for v in (
                c.assignment.email,
                c.assignment.voucher_code,
                c.expires_utc,
                partner,
                program,
                c.assignment.batch_id,
            )
        )
        for c in claimed
    ]
    detail: dict[str, Any] = {
        "partner": partner,
        "program": program,
        "count": len(claimed),
        "noticeDays": services.settings.expiry_notice_days,
        "earliestExpiry": claimed[0].expires_utc,
        "latestExpiry": claimed[-1].expires_utc,
        "csv": f"s3://{services.storage.bucket}/{key}",
        "byBatch": dict(_per_batch(claimed)),
    }
    try:
        body = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")
        services.storage.put_bytes(key, body, content_type="text/csv; charset=utf-8")
        # The callbacks first: recorded in the outbox under a key made of the codes, so if the
        # event cannot be published, the next sync claims the same codes and records nothing
        # twice.
        for batch_id in detail["byBatch"]:
            batch = services.ledger.batches.get_batch(batch_id)
            if batch is not None and batch.callback_url:
                mine = [c for c in claimed if c.assignment.batch_id == batch_id]
                _send_callback(
                    services,
                    batch,
                    VOUCHERS_EXPIRING,
                    {
                        **{k: v for k, v in detail.items() if k != "byBatch"},
                        "batchId": batch_id,
                        "count": len(mine),
                        # The people this batch's sender gave us, so it can remind them
                        # without reading the bucket.
                        "vouchers": [
                            {
                                "email": c.assignment.email,
                                "voucherCode": c.assignment.voucher_code,
                                "expiresUtc": c.expires_utc,
                            }
                            for c in mine
                        ],
                    },
                )
        services.events.publish(VOUCHERS_EXPIRING, detail)
    except Exception:
        for c in claimed:
            services.ledger.tracking.unmark_expiry_noticed(
                c.assignment.batch_id, c.assignment.row_number, now=now
            )
        raise
    log.info("%d code(s) of %s / %s announced as expiring", len(claimed), partner, program)
    return len(claimed)


def _per_batch(claimed: list[_Expiring]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for c in claimed:
        counts[c.assignment.batch_id] += 1
    return dict(sorted(counts.items()))


def _csv_cell(value: str) -> str:
    value = spreadsheet_safe(value)
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _send_callback(
    services: Services, batch: BatchRecord, detail_type: str, detail: dict[str, Any]
) -> None:
    """Tell the batch's ``callbackUrl`` (if any) through the durable outbox: signed, retried for
    a day, each attempt recorded. One notice per set of codes: its key is their digest."""
    codes = sorted(str(v["voucherCode"]) for v in detail.get("vouchers", []))
    key = hashlib.sha256("\n".join(codes).encode()).hexdigest()[:16]
    send_event_callback(services, batch, detail_type, detail, key=key)
