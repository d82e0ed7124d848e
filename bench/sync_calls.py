"""The redemption sync's Certiverse calls against its floor.

A batch of held codes is handed out through the real local pipeline (moto + in-process handlers
+ sandbox); then half the codes are settled in the sandbox: some purchases wholly (used,
inactive, expired), and some codes of every other purchase used. A first sync records that
(and reads each changed purchase whole, once); the figure is the next run's calls — what every
scheduled run costs while nothing changes — against the floor the issue sets:
⌈unsettled codes / page size⌉ + one per purchase that still has unsettled codes.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from bench.local_stack import start
from bench.workload import write_csv
from voucher_distributor_cli.sandbox import SandboxServer
from voucher_distributor_cli.sandbox.store import RequestRecord


@dataclass
class SyncCalls:
    codes: int
    settled: int
    purchases: int
    settled_purchases: int
    page_size: int
    calls: int  # the steady run's GET /api/vouchers pages
    first_run_calls: int  # the run that saw the changes
    other_calls: int  # anything else the steady run asked Certiverse

    @property
    def unsettled(self) -> int:
        return self.codes - self.settled

    @property
    def floor(self) -> int:
        open_purchases = self.purchases - self.settled_purchases
        return math.ceil(self.unsettled / self.page_size) + open_purchases

    @property
    def ratio(self) -> float:
        return self.calls / self.floor


def voucher_pages(log: list[RequestRecord]) -> tuple[int, int]:
    """(``GET /api/vouchers`` pages, every other call) in a request log."""
    pages = sum(
        1
        for r in log
        if r.method == "GET" and urlsplit(r.path).path.rstrip("/").endswith("/api/vouchers")
    )
    return pages, len(log) - pages


def measure(codes: int = 10_000, *, page_size: int = 100, whole_purchases: int = 3) -> SyncCalls:
    """Hand out ``codes``, settle half of them, and count a steady sync run's calls."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sync-")))
        csv_path = write_csv(tmp / f"held-{codes}.csv", codes)
        sandbox, pipeline = start(stack, tmp, generation_delay_s=0, page_size=page_size)
        batch = pipeline.run_until_done(pipeline.submit_csv(csv_path), timeout_s=1800)
        if batch.status.value != "DONE" or batch.rows_assigned != codes:
            raise RuntimeError(f"the {codes:,}-code hand-out ended {batch.status}")
        by_purchase: dict[str, list[str]] = defaultdict(list)
        for voucher in sandbox.vouchers():
            by_purchase[voucher.voucher_purchase_code].append(voucher.voucher_code)
        purchases = sorted(by_purchase)
        settled = _settle_half(sandbox, [by_purchase[p] for p in purchases], whole_purchases)
        sandbox.clear_request_log()
        pipeline.sync()
        first, _ = voucher_pages(sandbox.request_log())
        sandbox.clear_request_log()
        steady = pipeline.sync()
        calls, other = voucher_pages(sandbox.request_log())
        if steady["codesChanged"] != 0:
            raise RuntimeError(f"the steady run changed {steady['codesChanged']} code(s)")
        return SyncCalls(
            codes=codes,
            settled=settled,
            purchases=len(purchases),
            settled_purchases=whole_purchases,
            page_size=page_size,
            calls=calls,
            first_run_calls=first,
            other_calls=other,
        )


def _settle_half(sandbox: SandboxServer, purchases: list[list[str]], whole: int) -> int:
    """Settle ``whole`` purchases entirely, then used codes spread over the rest up to half."""
    total = sum(len(codes) for codes in purchases)
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    settled = 0
    for codes in purchases[:whole]:
        third = len(codes) // 3
        sandbox.update_vouchers(codes[:third], {"isUsed": True})
        sandbox.update_vouchers(codes[third : 2 * third], {"isActive": False})
        sandbox.update_vouchers(codes[2 * third :], {"expirationDateUtc": past})
        settled += len(codes)
    rest = purchases[whole:]
    remaining = total // 2 - settled
    for index, codes in enumerate(rest):
        share = remaining // (len(rest) - index)
        sandbox.update_vouchers(codes[:share], {"isUsed": True})
        settled += share
        remaining -= share
    return settled
