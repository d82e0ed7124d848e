"""Dry runs, issuance limits and approvals (issue 11), end to end through the local runner."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from voucher_distributor_cli.local.run import RunResult

from .conftest import CLOUD, PARTNER, SPRING, World, people
from .test_holdings import finish, statuses


def _purchases(result: RunResult) -> list[tuple[str, str, int]]:
    return sorted((p["partner"], p["program"], p["quantity"]) for p in result.summary["purchases"])


def _holdings(world: World) -> set[tuple[str, str, str, int]]:
    return {
        (h.email, h.program_name, h.batch_id, h.row_number)
        for h in world.pipeline.ledger.iter_holdings()
    }


def _listen(world: World) -> str:
    """A queue that receives every event the stack publishes."""
    stack = world.pipeline.stack
    sqs, events = stack.client("sqs"), stack.client("events")
    listener = sqs.create_queue(QueueName="event-listener")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=listener, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="all", EventPattern=json.dumps({"source": ["voucher-distributor"]}))
    events.put_targets(Rule="all", Targets=[{"Id": "listener", "Arn": arn}])
    return listener


def _events(world: World, listener: str) -> list[dict[str, Any]]:
    sqs = world.pipeline.stack.client("sqs")
    got: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=listener, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        got.extend(json.loads(m["Body"]) for m in messages)
        for m in messages:
            sqs.delete_message(QueueUrl=listener, ReceiptHandle=m["ReceiptHandle"])
    return got


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
    listener = _listen(world)

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
    rows = {(row["email"], row["program"]): row for row in dry.rows}
    assert rows["person1@acme.example", SPRING]["status"] == "existing"
    assert rows["person1@acme.example", SPRING]["voucher_code"]  # the code they hold, shown
    assert "reissued as asked" in rows["person2@acme.example", SPRING]["reason"]
    assert dry.summary["results"]["csv"].endswith("big.dry-run.results.csv")
    (event,) = [e for e in _events(world, listener) if e["detail"]["batchId"] == dry.batch_id]
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
