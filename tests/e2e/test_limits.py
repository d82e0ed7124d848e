"""Dry runs, issuance limits and approvals (issue 11), end to end through the local runner."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from voucher_distributor.domain.timestamps import utc_day
from voucher_distributor_cli.local.results import RunResult

from ..invariants import iter_holdings
from .conftest import CLOUD, PARTNER, SPRING, World, people
from .test_holdings import finish, statuses


def _purchases(result: RunResult) -> list[tuple[str, str, int]]:
    return sorted((p["partner"], p["program"], p["quantity"]) for p in result.summary["purchases"])


def _holdings(world: World) -> set[tuple[str, str, str, int]]:
    return {
        (h.email, h.program_name, h.batch_id, h.row_number)
        for h in iter_holdings(world.pipeline.ledger)
    }


@pytest.mark.slow
def test_a_dry_run_reports_what_the_real_run_then_does_and_buys_nothing(make_world) -> None:
    world = make_world()
    (earlier,) = finish(world, [world.pipeline.submit_csv(world.csv_file(people(3), "a.csv"))])
    assert statuses(earlier) == {"assigned": 3}
    crowd = people(1205, start=1) + people(4, CLOUD, start=1)
    crowd.append({"email": "not-an-address", "program_name": SPRING})
    crowd[1]["reissue"] = "yes"  # person2 holds a Spring voucher: a new one on purpose
    path = world.csv_file(crowd, "big.csv")
    bought_before = len(world.sandbox.purchases())
    holdings_before = _holdings(world)
    listener = world.listen_to_events()

    (dry,) = finish(world, [world.pipeline.submit_csv(path, metadata={"mode": "dry-run"})])
    assert world.sandbox.purchases()[bought_before:] == []
    assert _holdings(world) == holdings_before  # nothing claimed
    assert dry.summary["dryRun"] is True
    assert dry.summary["status"] == "completed"
    assert statuses(dry) == {"would-assign": 1207, "existing": 2, "rejected": 1}
    assert dry.summary["counts"]["wouldAssign"] == 1207
    assert dry.summary["counts"]["assigned"] == 0
    assert _purchases(dry) == [(PARTNER, CLOUD, 4), (PARTNER, SPRING, 203), (PARTNER, SPRING, 1000)]
    assert all("purchaseCode" not in p for p in dry.summary["purchases"])
    assert dry.summary["wouldAwaitApproval"] is None  # under the default threshold (5,000)
    rows = {(row["email"], row["program"]): row for row in dry.rows}
    assert rows["person1@acme.example", SPRING]["status"] == "existing"
    assert rows["person1@acme.example", SPRING]["voucher_code"]  # the code they hold, shown
    assert "reissued as asked" in rows["person2@acme.example", SPRING]["reason"]
    assert dry.summary["results"]["csv"].endswith(f"big.{dry.batch_id[:14]}.dry-run.results.csv")
    (event,) = [e for e in world.events_heard(listener) if e["detail"]["batchId"] == dry.batch_id]
    assert event["detail-type"] == "Voucher Batch Dry Run Completed"
    assert event["detail"]["dryRun"] is True

    (real,) = finish(world, [world.pipeline.submit_csv(path)])
    assert real.summary["dryRun"] is False
    assert real.summary["counts"]["assigned"] == dry.summary["counts"]["wouldAssign"]
    for key in ("rows", "existing", "rejected", "failed"):
        assert real.summary["counts"][key] == dry.summary["counts"][key], key
    assert _purchases(real) == _purchases(dry)
    assert Counter(r["status"] for r in real.rows) == {
        "assigned": 1207,
        "existing": 2,
        "rejected": 1,
    }
    assert [r["row"] for r in real.rows] == [r["row"] for r in dry.rows]


def test_a_dry_run_request_is_not_the_request_itself(make_world) -> None:
    """``"dryRun": true`` with a requestId, then the same requestId for real: two batches."""
    world = make_world()
    request = {
        "requestId": "hr-dry-1",
        "partnerName": PARTNER,
        "programName": SPRING,
        "recipients": [{"email": p["email"]} for p in people(5)],
    }
    (dry,) = finish(world, [world.pipeline.submit_request({**request, "dryRun": True})])  # type: ignore[list-item]
    assert statuses(dry) == {"would-assign": 5}
    assert world.sandbox.purchases() == []
    (real,) = finish(world, [world.pipeline.submit_request(request)])  # type: ignore[list-item]
    assert real.batch_id != dry.batch_id
    assert statuses(real) == {"assigned": 5}


def _wait(world: World, batch_id: str) -> Any:
    """Run until the batch awaits approval (or ends); its record."""
    return world.pipeline.run_until_done(batch_id, timeout_s=120, stop_when_waiting=True)


LIMITS = {"ApprovalThreshold": "10", "DailyVoucherLimit": "25", "MaxRecipientsPerBatch": "40"}


def test_a_batch_over_the_threshold_waits_and_approve_lets_it_finish(make_world) -> None:
    world = make_world(parameters=LIMITS)
    listener = world.listen_to_events()
    batch_id = world.pipeline.submit_csv(world.csv_file(people(12), "twelve.csv"))
    waiting = _wait(world, batch_id)
    assert waiting.status.value == "AWAITING_APPROVAL"
    assert "over ApprovalThreshold (10)" in (waiting.approval_reason or "")
    assert world.sandbox.purchases() == []
    (event,) = [e for e in world.events_heard(listener) if e["detail-type"].endswith("Approval")]
    assert event["detail-type"] == "Voucher Batch Awaiting Approval"
    assert event["detail"]["vouchers"] == 12
    assert event["detail"]["sender"]  # the uploader's principal, as S3 names it
    assert event["detail"]["source"].endswith("/twelve.csv")
    assert event["detail"]["purchases"] == [
        {"chunk": 0, "partner": PARTNER, "program": SPRING, "quantity": 12}
    ]
    decided = world.pipeline.decide(batch_id, "approved")
    assert decided.approval_by
    assert decided.approval_by.startswith("arn:aws:")
    (result,) = finish(world, [batch_id])
    assert statuses(result) == {"assigned": 12}
    assert result.summary["approval"]["decision"] == "approved"
    assert result.summary["approval"]["by"] == decided.approval_by
    assert world.pipeline.ledger.counts.vouchers_counted(_today()) == 12


def test_reject_ends_a_waiting_batch_with_nothing_bought_and_claims_given_back(
    make_world,
) -> None:
    world = make_world(parameters=LIMITS)
    crowd = people(12)
    batch_id = world.pipeline.submit_csv(world.csv_file(crowd, "twelve.csv"))
    _wait(world, batch_id)
    world.pipeline.decide(batch_id, "rejected", "wrong list")
    (result,) = finish(world, [batch_id])
    assert world.sandbox.purchases() == []
    assert statuses(result) == {"rejected": 12}
    assert result.summary["status"] == "rejected"
    assert all("wrong list" in r["reason"] for r in result.rows)
    assert not [h for h in iter_holdings(world.pipeline.ledger) if h.batch_id == batch_id]
    # the same people are free to get a voucher from a smaller list
    (again,) = finish(world, [world.pipeline.submit_csv(world.csv_file(crowd[:5], "five.csv"))])
    assert statuses(again) == {"assigned": 5}


def test_a_dry_run_says_the_real_run_would_wait_for_approval(make_world) -> None:
    world = make_world(parameters=LIMITS)
    path = world.csv_file(people(12), "twelve.csv")
    (dry,) = finish(world, [world.pipeline.submit_csv(path, metadata={"mode": "dry-run"})])
    assert dry.summary["wouldAwaitApproval"] == (
        "it would buy 12 vouchers, over ApprovalThreshold (10)"
    )
    batch = world.pipeline.ledger.batches.get_batch(dry.batch_id)
    assert batch is not None
    assert batch.approval_reason is None  # the dry run itself never waits
    assert world.sandbox.purchases() == []


def test_two_batches_at_once_cannot_together_cross_the_daily_limit(make_world) -> None:
    """25 a day; two lists of 10 and one of 8, sent together: 28 > 25, so one waits."""
    world = make_world(parameters=LIMITS)
    ids = [
        world.pipeline.submit_csv(world.csv_file(people(n, start=s), f"list{s}.csv"))
        for n, s in ((10, 1), (10, 101), (8, 201))
    ]
    records = [_wait(world, b) for b in ids]
    waiting = [r for r in records if r.status.value == "AWAITING_APPROVAL"]
    assert len(waiting) == 1
    assert "would cross DailyVoucherLimit (25)" in (waiting[0].approval_reason or "")
    bought = sum(p.quantity for p in world.sandbox.purchases())
    assert bought <= 25
    assert world.pipeline.ledger.counts.vouchers_counted(_today()) == bought
    world.pipeline.decide(waiting[0].batch_id, "approved")  # an approval may cross the limit
    finish(world, ids)
    assert sum(p.quantity for p in world.sandbox.purchases()) == 28
    assert world.pipeline.ledger.counts.vouchers_counted(_today()) == 28


def test_the_timeout_rejects_a_forgotten_batch(make_world) -> None:
    world = make_world(parameters=LIMITS, tuning={"APPROVAL_TIMEOUT_HOURS": "0.001"})
    batch_id = world.pipeline.submit_csv(world.csv_file(people(12), "twelve.csv"))
    (result,) = finish(world, [batch_id])  # nobody decides: rejected by itself in ~4 s
    assert world.sandbox.purchases() == []
    assert statuses(result) == {"rejected": 12}
    assert result.summary["approval"]["by"] == "timeout"
    assert "ApprovalTimeoutHours" in result.rows[0]["reason"]
    batch = world.pipeline.ledger.batches.get_batch(batch_id)
    assert batch is not None
    assert batch.approval_decision == "rejected"


def test_an_input_over_max_recipients_is_refused_whole(make_world) -> None:
    world = make_world(parameters=LIMITS)
    batch_id = world.pipeline.submit_csv(world.csv_file(people(95), "big.csv"))
    world.pipeline.run_until_done(batch_id, timeout_s=120)
    result = world.pipeline.result(batch_id)
    assert result.summary["status"] == "rejected"  # the sender splits it (issue 25)
    assert "95 rows, over MaxRecipientsPerBatch (40)" in result.summary["error"]
    assert "split it into 3 inputs" in result.summary["error"]
    assert world.sandbox.purchases() == []
    assert not list(iter_holdings(world.pipeline.ledger))


def _today() -> str:
    return utc_day(time.time())


def test_a_failed_chunk_gives_its_vouchers_back_to_the_day_it_was_counted_on(
    make_world,
) -> None:
    """Issue 23 item 4: a failed chunk bought nothing, so today's count does not keep it."""
    from voucher_distributor_cli.sandbox import FaultSettings

    world = make_world(parameters={"DailyVoucherLimit": "5"})
    world.sandbox.set_faults(FaultSettings(generation_failure_rate=1.0))
    (failed,) = finish(world, [world.pipeline.submit_csv(world.csv_file(people(4)))])
    assert statuses(failed) == {"failed": 4}
    assert world.pipeline.ledger.counts.vouchers_counted(_today()) == 0
    # So the day's room is whole again: 5 more are bought without waiting for approval.
    world.sandbox.set_faults(FaultSettings())
    (again,) = finish(world, [world.pipeline.submit_csv(world.csv_file(people(5), "b.csv"))])
    assert statuses(again) == {"assigned": 5}
    assert world.pipeline.ledger.counts.vouchers_counted(_today()) == 5
