"""`lookup_reads_per_call`: DynamoDB read calls of `voucher CODE` on a ledger of N assignments.

The template's stack in the local emulation, filled with N assigned rows (and a holding for the
people looked up), then `voucher CODE` as the operator command runs it (`find_voucher` on the
stack's `Target`) for a few codes; every DynamoDB read call it makes is counted. The goal is a
number that does not grow with the table (≤ 3: the `by-code` index, the batch, the holding),
where a scan would make one call per 1 MB page of the table.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import boto3

from bench.aws_calls import counting_dynamodb_writes
from voucher_distributor.adapters.ledger import Claim, Ledger
from voucher_distributor.models.ledger import AssignmentRecord, BatchRecord, BatchStatus
from voucher_distributor_cli.local.runner import MotoStack
from voucher_distributor_cli.ops.target import Target
from voucher_distributor_cli.ops.voucher import find_voucher

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
READS = ("GetItem", "BatchGetItem", "Query", "Scan")
BATCH_ROWS = 10_000  # rows per batch, as a table fills over many batches
LOOKUPS = 5


@dataclass
class LookupReads:
    assignments: int
    lookups: int
    #: Read calls of one `voucher CODE`, the largest over the look-ups.
    reads_per_call: int
    by_operation: dict[str, int]
    fill_s: float


def _row(batch: str, row: int) -> AssignmentRecord:
    return AssignmentRecord(
        batch_id=batch, row_number=row, email=f"p{row}@{batch}.example", partner_name="Acme Corp",
        program_name="Spring Certification Drive", chunk_no=row // 100, status="assigned",
        voucher_code=f"C-{batch}-{row:06d}", purchase_code=f"VP-{batch}-{row // 100}",
        expires_utc="2027-01-01T00:00:00Z",
    )  # fmt: skip


def measure(assignments: int, *, seed: int = 1) -> LookupReads:
    rng = random.Random(seed)  # noqa: S311 - which codes to look up, not a secret
    with MotoStack(TEMPLATE) as stack:
        dynamodb = boto3.resource(
            "dynamodb", endpoint_url=stack.endpoint_url, region_name=stack.region,
            aws_access_key_id="testing", aws_secret_access_key="testing",  # noqa: S106
        )  # fmt: skip
        ledger = Ledger(stack.resource("LedgerTable").ref, dynamodb=dynamodb)
        started = time.perf_counter()
        batches = [f"f-{n:04d}" for n in range((assignments + BATCH_ROWS - 1) // BATCH_ROWS)]
        for index, batch in enumerate(batches):
            ledger.batches.create_batch(
                BatchRecord(
                    batch_id=batch, kind="csv", source=f"s3://b/incoming/{batch}.csv",
                    results_csv_key=f"results/{batch}.results.csv",
                    summary_key=f"results/{batch}.summary.json", created_at=1_000,
                    status=BatchStatus.DONE,
                )
            )  # fmt: skip
            first = index * BATCH_ROWS + 1
            last = min((index + 1) * BATCH_ROWS, assignments)
            ledger.assignments.put_assignments(_row(batch, r) for r in range(first, last + 1))
        picked = [
            _row(batches[(r - 1) // BATCH_ROWS], r)
            for r in rng.sample(range(1, assignments + 1), LOOKUPS)
        ]
        ledger.holdings.claim_holdings(
            [
                Claim(a.email, a.partner_name, a.program_name, a.batch_id, a.row_number)
                for a in picked
            ],
            now=5,
        )
        fill_s = time.perf_counter() - started
        target = Target.local(stack.endpoint_url, stack_name=stack.stack_name)
        worst = 0
        total: dict[str, int] = {}
        for assignment in picked:
            with counting_dynamodb_writes() as counter:
                record = find_voucher(target, assignment.voucher_code)
            if record is None or record["holder"] != assignment.email:
                raise RuntimeError(f"voucher {assignment.voucher_code} was not found as written")
            reads = {op: counter.calls[f"dynamodb.{op}"] for op in READS}
            worst = max(worst, sum(reads.values()))
            for op, n in reads.items():
                total[op] = total.get(op, 0) + n
        return LookupReads(assignments, len(picked), worst, total, round(fill_s, 1))


if __name__ == "__main__":  # a look at one size: python -m bench.lookup_reads 100000
    import sys

    print(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000))
