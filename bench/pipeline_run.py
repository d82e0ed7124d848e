"""One batch through the real local pipeline (moto + in-process handlers + sandbox), measured.

What is recorded: wall time from the upload to the batch being DONE, every Certiverse call (the
sandbox's request log), and every DynamoDB item write, counted at the wire: each botocore
DynamoDB call the process makes is inspected before it is sent (PutItem, UpdateItem, DeleteItem
count 1; BatchWriteItem and TransactWriteItems count each item they carry).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.aws_calls import WriteCounter, counting_dynamodb_writes
from bench.local_stack import TOKEN, sandbox_server, start
from bench.workload import write_csv
from voucher_distributor_cli.sandbox.store import RequestRecord

MAX_PURCHASE = 1000

# ---------------------------------------------------------------------- Certiverse calls


@dataclass
class ApiCalls:
    """The sandbox's request log sorted into what the floor counts and what it does not."""

    posts: int = 0
    preflight: int = 0
    voucher_pages: int = 0  # the one listing of each purchase that found all its codes
    polls: int = 0  # status checks by purchase code, and listings made before the codes were ready
    other: int = 0  # anything else (e.g. reconciliation searches by partner/program)

    @property
    def non_poll(self) -> int:
        return self.posts + self.preflight + self.voucher_pages + self.other


def classify(log: list[RequestRecord]) -> ApiCalls:
    calls = ApiCalls()
    listings: dict[str, list[int]] = {}  # purchase code -> page count of each listing, in order
    for record in log:
        path = urlsplit(record.path).path.rstrip("/")
        query = {k.casefold(): v for k, v in record.query.items()}
        if record.method == "POST" and path.endswith("/vouchers/purchases"):
            calls.posts += 1
        elif path.endswith(("/vouchers/partners", "/vouchers/programs")):
            calls.preflight += 1
        elif path.endswith("/vouchers/purchases") and "purchasecode" in query:
            calls.polls += 1
        elif path.endswith("/vouchers") and "purchasecode" in query:
            pages = listings.setdefault(query["purchasecode"], [])
            if query.get("page", "1") == "1" or not pages:
                pages.append(1)
            else:
                pages[-1] += 1
        else:
            calls.other += 1
    for pages in listings.values():
        calls.voucher_pages += pages[-1]
        calls.polls += sum(pages[:-1])
    return calls


def floor_calls(recipients_per_target: dict[str, int], page_size: int, lookups: int) -> int:
    """ceil(n/1000) POSTs and ceil(n/page size) voucher pages per target, plus the look-ups."""
    total = lookups
    for n in recipients_per_target.values():
        total += math.ceil(n / MAX_PURCHASE) + math.ceil(n / page_size)
    return total


# ---------------------------------------------------------------------- one run


@dataclass
class RunStats:
    rows: int
    wall_s: float
    assigned: int
    status: str
    calls: ApiCalls
    log: list[RequestRecord]
    purchases: list[dict[str, Any]]
    dynamodb_writes: WriteCounter


def run_batch(
    rows: int,
    *,
    generation_delay_s: float,
    page_size: int = 100,
    timeout_s: float = 1800,
    workdir: Path | None = None,
) -> RunStats:
    """Upload a ``rows``-recipient CSV and run the local pipeline until the batch is done."""
    with contextlib.ExitStack() as stack:
        tmp = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        csv_path = write_csv(tmp / f"recipients-{rows}.csv", rows)
        sandbox, pipeline = start(
            stack, tmp, generation_delay_s=generation_delay_s, page_size=page_size
        )
        sandbox.clear_request_log()
        with counting_dynamodb_writes() as writes:
            started = time.perf_counter()
            batch_id = pipeline.submit_csv(csv_path)
            batch = pipeline.run_until_done(batch_id, timeout_s=timeout_s)
            wall = time.perf_counter() - started
        log = sandbox.request_log()
        purchases = [
            {
                "code": p.voucher_purchase_code,
                "partnerName": p.partner_name,
                "programName": p.program_name,
                "quantity": p.quantity,
                "notes": p.notes,
            }
            for p in sandbox.purchases()
        ]
        return RunStats(
            rows=rows,
            wall_s=wall,
            assigned=batch.rows_assigned,
            status=batch.status.value,
            calls=classify(log),
            log=log,
            purchases=purchases,
            dynamodb_writes=writes,
        )


# ---------------------------------------------------------------------- the sandbox alone


def replay(stats: RunStats, *, page_size: int = 100) -> float:
    """Seconds a fresh sandbox needs to serve the run's Certiverse calls from a plain client.

    The same requests in the same order over one keep-alive connection: POSTs re-create the
    run's purchases (same partner, program, quantity, notes) and later requests that named a
    purchase code name the replayed purchase's code instead. Generation delay is zero.
    """
    import httpx  # noqa: PLC0415

    with (
        sandbox_server(generation_delay_s=0, page_size=page_size) as sandbox,
        httpx.Client(
            base_url=sandbox.root_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client,
    ):
        bodies = iter(stats.purchases)
        codes: dict[str, str] = {}
        started = time.perf_counter()
        for record in stats.log:
            path = urlsplit(record.path).path
            if record.method == "POST":
                body = next(bodies)
                got = client.post(
                    path,
                    json={k: body[k] for k in ("notes", "partnerName", "programName", "quantity")},
                )
                codes[body["code"]] = got.json()["voucherPurchaseCode"]
                continue
            query = {
                k: (codes.get(v, v) if k.casefold() == "purchasecode" else v)
                for k, v in record.query.items()
            }
            client.request(record.method, path, params=query)
        return time.perf_counter() - started
