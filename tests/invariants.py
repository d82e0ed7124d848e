"""The invariants every run keeps ("never a voucher bought twice, never a recipient lost"),
shared by the end-to-end tests, the hostile-input catalogue and the fault-injection harness.

``consistency_violations`` returns what is wrong (empty when all holds), so the reliability
harness can count violations over thousands of runs; ``assert_consistent`` fails a test with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.ledger.holdings import holding_record
from voucher_distributor.domain.batches import find_marker, trailing_marker
from voucher_distributor.models.ledger import HoldingRecord
from voucher_distributor_cli.local.results import RunResult


def iter_holdings(ledger: Ledger) -> Iterator[HoldingRecord]:
    """Every holding in the table: a filtered scan, for tests' checks only (no command of the
    stack lists every holding: that read would grow with the table)."""
    table = ledger.table.table
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(pk, :h)",
        "ExpressionAttributeValues": {":h": "H#"},
    }
    while True:
        got = table.scan(**kwargs)
        for item in got["Items"]:
            yield holding_record(item)
        if "LastEvaluatedKey" not in got:
            return
        kwargs["ExclusiveStartKey"] = got["LastEvaluatedKey"]


class _Sandbox(Protocol):
    def purchases(self) -> list[Any]: ...
    def vouchers(self) -> list[Any]: ...


def batch_purchases(purchases: Iterable[Any], batch_id: str) -> list[Any]:
    """The sandbox purchases whose notes carry a marker of this batch."""
    return [p for p in purchases if (found := trailing_marker(p.notes)) and found[1] == batch_id]


def consistency_violations(
    ledger: Ledger,
    sandbox: _Sandbox,
    result: RunResult,
    *,
    whole_sandbox: bool = True,
    input_rows: int | None = None,
) -> list[str]:
    """Everything that disagrees between the sandbox, the DynamoDB ledger and the results.

    ``whole_sandbox``: every purchase the sandbox holds must belong to this batch (one batch per
    world); otherwise only purchases carrying this batch's marker are compared.
    ``input_rows``: when given, the results must hold exactly rows 1..input_rows.
    """
    problems: list[str] = []
    batch_id = result.batch_id
    chunks = list(ledger.chunks.iter_chunks(batch_id))
    all_purchases = sandbox.purchases()
    purchases = all_purchases if whole_sandbox else batch_purchases(all_purchases, batch_id)
    bought_codes = [p.voucher_purchase_code for p in purchases]
    # purchases created == chunks that reached Certiverse, one each
    chunk_codes = [c.purchase_code for c in chunks if c.purchase_code]
    if len(chunk_codes) != len(set(chunk_codes)):
        problems.append(f"two chunks recorded the same purchase: {chunk_codes}")
    if sorted(set(chunk_codes)) != sorted(bought_codes):
        problems.append(
            f"purchases at Certiverse {sorted(bought_codes)} != purchases in the ledger "
            f"{sorted(chunk_codes)}"
        )
    for chunk in chunks:
        marked = [p for p in purchases if find_marker(p.notes, batch_id, chunk.chunk_no, None)]
        if len(marked) > 1:
            problems.append(f"chunk {chunk.chunk_no} bought {len(marked)} times")
        if chunk.purchase_code:
            same = [p for p in purchases if p.voucher_purchase_code == chunk.purchase_code]
            if len(same) == 1 and same[0].quantity != chunk.quantity:
                problems.append(
                    f"chunk {chunk.chunk_no}: bought {same[0].quantity}, planned {chunk.quantity}"
                )
    if result.summary.get("status") == "failed" and purchases:
        problems.append("a failed (refused) batch bought something")
    dry_run = bool(result.summary.get("dryRun"))
    if dry_run and (purchases or chunk_codes):
        problems.append("a dry run bought something")
    rows = result.rows
    # every row ends assigned, existing, rejected or failed, with a reason unless assigned
    statuses = Counter(row["status"] for row in rows)
    known = (
        {"would-assign", "existing", "rejected", "failed"}
        if dry_run
        else {"assigned", "existing", "rejected", "failed"}
    )
    if not set(statuses) <= known:
        problems.append(f"unknown row statuses {sorted(statuses)}")
    if any(not row["reason"] for row in rows if row["status"] != "assigned"):
        problems.append("a row without a code has no reason")
    if dry_run and [r for r in rows if r["status"] == "would-assign" and r["voucher_code"]]:
        problems.append("a dry run's would-assign row shows a code")
    numbers = [int(r["row"]) for r in rows]
    if numbers != sorted(numbers):
        problems.append("results are not in row order")
    expected = list(range(1, input_rows + 1)) if input_rows is not None else numbers
    if (rows or result.summary.get("status") != "failed") and numbers != expected:
        missing = sorted(set(expected) - set(numbers))
        problems.append(f"results hold {len(numbers)} rows of {len(expected)}; missing {missing}")
    # no code given twice; every code belongs to the purchase named beside it
    codes = [row["voucher_code"] for row in rows if row["status"] == "assigned"]
    if len(codes) != len(set(codes)):
        problems.append("a voucher code was given twice")
    vouchers = {v.voucher_code: v.voucher_purchase_code for v in sandbox.vouchers()}
    for row in rows:
        if (
            row["status"] == "assigned"
            and vouchers.get(row["voucher_code"]) != row["purchase_code"]
        ):
            problems.append(f"row {row['row']}: code not from purchase {row['purchase_code']}")
    # no person given two codes for one program
    pairs = [(r["email"].casefold(), r["program"]) for r in rows if r["status"] == "assigned"]
    if len(pairs) != len(set(pairs)):
        problems.append("a person got two codes for one program")
    # the ledger holds one assignment per accepted row, matching the results
    # (rows that failed before any purchase, like rejected and existing ones, have none)
    ledger_rows = {a.row_number: a for a in ledger.assignments.iter_assignments(batch_id)}
    for row in rows:
        number = int(row["row"])
        record = ledger_rows.get(number)
        if row["status"] in {"rejected", "existing", "would-assign"}:
            if record is not None:
                problems.append(f"{row['status']} row {number} has a ledger assignment")
            continue
        if record is None:
            if row["status"] == "assigned":
                problems.append(f"row {number} ({row['status']}) is not in the ledger")
        elif (record.status, record.voucher_code) != (row["status"], row["voucher_code"]):
            problems.append(f"row {number}: ledger and results disagree")
        if row["status"] == "assigned":
            holding = ledger.holdings.get_holding(
                _cell(row["email"]), _cell(row["partner"]), _cell(row["program"])
            )
            if holding is None:
                problems.append(f"assigned row {number} holds no claim")
    # an existing row shows a code its person was given in an earlier (or concurrent) batch
    for row in rows:
        if row["status"] != "existing" or (dry_run and not row["voucher_code"]):
            continue  # (a dry run's person whose code is still being bought elsewhere)
        given = [
            a for a in ledger.assignments.assignments_for_email(_cell(row["email"]))
            if a.status == "assigned" and a.voucher_code == row["voucher_code"]
        ]  # fmt: skip
        if not given or given[0].program_name != row["program"] or given[0].batch_id == batch_id:
            problems.append(f"existing row {row['row']} shows a code its person was not given")
    counts = result.summary.get("counts") or {}
    for status in ("assigned", "existing", "rejected", "failed"):
        if counts.get(status, 0) != statuses.get(status, 0):
            problems.append(f"summary counts {status}={counts.get(status)} != results")
    if dry_run and counts.get("wouldAssign", 0) != statuses.get("would-assign", 0):
        problems.append("summary counts wouldAssign != results")
    if dry_run and any(h.batch_id == batch_id for h in iter_holdings(ledger)):
        problems.append("a dry run claimed a holding")
    return problems


def _cell(value: str) -> str:
    """A results cell as it was before the formula guard (a leading ')."""
    return value[1:] if value.startswith("'") and value[1:2] in {"=", "+", "-", "@"} else value


def holdings_violations(results: Iterable[RunResult]) -> list[str]:
    """Across every batch of a run: nobody holds two codes for one (partner, program) unless a
    reissue was asked, and an ``existing`` row shows the code its person holds."""
    problems: list[str] = []
    given: dict[tuple[str, str, str], list[tuple[str, dict[str, str]]]] = {}
    for result in results:
        for row in result.rows:
            if row["status"] == "assigned":
                key = (
                    row["email"].casefold(),
                    row["partner"].casefold(),
                    row["program"].casefold(),
                )
                given.setdefault(key, []).append((result.batch_id, row))
    for key, rows in given.items():
        unasked = [r for _, r in rows[1:] if not r["reason"].startswith("reissued")]
        if unasked:
            problems.append(f"{key[0]} holds {len(rows)} codes for {key[2]!r} without a reissue")
    for result in results:
        for row in result.rows:
            if row["status"] != "existing":
                continue
            key = (row["email"].casefold(), row["partner"].casefold(), row["program"].casefold())
            codes = [r["voucher_code"] for _, r in given.get(key, [])]
            if codes and row["voucher_code"] not in codes:
                problems.append(f"existing row {row['row']} of {result.batch_id}: unknown code")
    return problems


def assert_consistent(world: Any, result: RunResult, **kwargs: Any) -> None:
    """Fail the test with every invariant the run broke."""
    problems = consistency_violations(world.pipeline.ledger, world.sandbox, result, **kwargs)
    assert not problems, "\n".join(problems)
