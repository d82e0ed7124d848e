"""What the redemption sync stands on: the sandbox's control endpoints for after the hand-out
(over HTTP), the ledger's tracking and notice writes (moto), the local runner's schedules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import SANDBOX_TOKEN
from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.models.ledger import AssignmentRecord, RedemptionRecord, TrackedPurchase
from voucher_distributor_cli.local.runner import LocalLambdas, MotoStack
from voucher_distributor_cli.local.runner.specs import schedule_rate_seconds
from voucher_distributor_cli.sandbox import SandboxServer

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, timeout=5.0) as client:
        yield client


def _bought(api: httpx.Client, quantity: int) -> list[dict[str, Any]]:
    purchase = api.post(
        "/vouchers/purchases",
        json={"notes": "n", "partnerName": "Acme Corp",
              "programName": "Spring Certification Drive", "quantity": quantity},
    ).json()  # fmt: skip
    code = purchase["voucherPurchaseCode"]
    for _ in range(200):
        found = api.get("/vouchers", params={"purchaseCode": code, "page": "1"}).json()["data"]
        if found:
            break
        time.sleep(0.02)
    return _all(api, {"purchaseCode": code})


def _all(api: httpx.Client, params: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = api.get("/vouchers", params=params).json()
    items += page["data"]
    while page.get("nextLink"):
        page = api.get(httpx.URL(str(api.base_url)).join(page["nextLink"])).json()
        items += page["data"]
    return items


def test_the_sandbox_marks_codes_used_reserved_inactive_and_moves_expiry(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    codes = [v["voucherCode"] for v in _bought(api, 4)]
    control = httpx.Client(base_url=sandbox.root_url, timeout=5.0)
    answer = control.put(
        "/_sandbox/vouchers", json={"voucherCodes": [codes[0], "NOPE"], "set": {"isUsed": True}}
    )
    assert answer.json() == {"updated": 1, "notFound": ["NOPE"]}
    control.put(
        "/_sandbox/vouchers",
        json={"voucherCodes": [codes[1]],
              "set": {"reservationCode": "R-1", "reservationStatus": "Scheduled"}},
    )  # fmt: skip
    control.put("/_sandbox/vouchers", json={"voucherCodes": [codes[2]], "set": {"isActive": False}})
    control.put(
        "/_sandbox/vouchers",
        json={"voucherCodes": [codes[3]], "set": {"recipientEmail": "ann@acme.example"}},
    )
    used = _all(api, {"isUsed": "true"})
    assert [v["voucherCode"] for v in used] == [codes[0]]
    assert used[0]["usedBy"]["usedDateUtc"]  # recorded now when not given
    assert [v["voucherCode"] for v in _all(api, {"reservationCode": "R-1"})] == [codes[1]]
    assert [v["voucherCode"] for v in _all(api, {"isActive": "false"})] == [codes[2]]
    assert [v["voucherCode"] for v in _all(api, {"recipientEmail": "ann@acme.example"})] == [
        codes[3]
    ]

    before = {v["voucherCode"]: v["expirationDateUtc"] for v in _all(api, {"isActive": "true"})}
    moved = control.put("/_sandbox/expiry", json={"shiftDays": -10, "voucherCodes": [codes[3]]})
    assert moved.json() == {"moved": 1}
    after = {v["voucherCode"]: v["expirationDateUtc"] for v in _all(api, {"isActive": "true"})}
    shift = datetime.fromisoformat(
        before[codes[3]].replace("Z", "+00:00")
    ) - datetime.fromisoformat(after[codes[3]].replace("Z", "+00:00"))
    assert shift == timedelta(days=10)
    assert after[codes[1]] == before[codes[1]]

    bad = control.put("/_sandbox/vouchers", json={"voucherCodes": codes[:1]})
    assert bad.status_code in {400, 422}
    assert control.put("/_sandbox/expiry", json={"shiftDays": "soon"}).status_code in {400, 422}
    wrong = control.put(
        "/_sandbox/vouchers", json={"voucherCodes": codes[:1], "set": {"isActive": "maybe"}}
    )
    assert wrong.status_code in {400, 422}


def _assignment(row: int, code: str) -> AssignmentRecord:
    return AssignmentRecord(
        batch_id="f-1", row_number=row, email=f"p{row}@acme.example", partner_name="Acme Corp",
        program_name="Spring", chunk_no=0, status="assigned", voucher_code=code,
        purchase_code="VP-1", expires_utc="2027-01-01T00:00:00Z",
    )  # fmt: skip


def test_tracked_purchases_open_then_settled(ledger: Ledger) -> None:
    tracked = TrackedPurchase(
        purchase_code="VP-1", batch_id="f-1", chunk_no=0, partner_name="Acme Corp",
        program_name="Spring", rows=[1, 2], tracked_at=100,
    )  # fmt: skip
    assert ledger.tracking.track_purchase(tracked) is True
    assert ledger.tracking.track_purchase(tracked) is False  # a replayed chunk end: once
    assert [p.purchase_code for p in ledger.tracking.open_purchases()] == ["VP-1"]
    ledger.tracking.record_purchase_sync(
        tracked.model_copy(update={"counts": {"used": 1}, "synced_at": 5})
    )
    assert ledger.tracking.open_purchases()[0].counts == {"used": 1}
    ledger.tracking.settle_purchase(
        tracked.model_copy(update={"counts": {"used": 2}, "settled_at": 9})
    )
    assert ledger.tracking.open_purchases() == []
    (settled,) = ledger.tracking.settled_purchases()
    assert (settled.counts, settled.settled_at, settled.rows) == ({"used": 2}, 9, [1, 2])


def test_a_codes_record_and_its_one_expiry_notice(ledger: Ledger) -> None:
    ledger.assignments.put_assignments([_assignment(1, "SPR-1"), _assignment(2, "SPR-2")])
    record = RedemptionRecord(state="unused", expires_utc="2027-01-01T00:00:00Z", synced_at=7)
    ledger.tracking.record_redemption("f-1", 1, record)
    assert ledger.tracking.mark_expiry_noticed("f-1", 1, now=50) is True
    assert ledger.tracking.mark_expiry_noticed("f-1", 1, now=60) is False  # announced once
    # A later change of the record keeps the notice's mark.
    ledger.tracking.record_redemption("f-1", 1, record.model_copy(update={"state": "used"}))
    got = ledger.assignments.get_assignments([("f-1", 1)])[("f-1", 1)].redemption
    assert got is not None
    assert (got.state, got.expiry_noticed_at, got.synced_at) == ("used", 50, 7)
    # A notice that could not be sent is given back, and only by the run that took it.
    ledger.tracking.unmark_expiry_noticed("f-1", 1, now=60)
    assert ledger.tracking.mark_expiry_noticed("f-1", 1, now=70) is False
    ledger.tracking.unmark_expiry_noticed("f-1", 1, now=50)
    assert ledger.tracking.mark_expiry_noticed("f-1", 1, now=70) is True

    found = ledger.assignments.find_voucher_code("SPR-2")
    assert found is not None
    assert (found.row_number, found.redemption) == (2, None)
    assert ledger.assignments.find_voucher_code("SPR-404") is None
    assert [a.voucher_code for a in ledger.assignments.iter_program_assignments("Spring")] == [
        "SPR-1",
        "SPR-2",
    ]


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(360 minutes)", 21600.0), ("rate(1 minute)", 60.0), ("rate(2 hours)", 7200.0),
     ("rate(1 day)", 86400.0), ("cron(0 12 * * ? *)", None), ("rate(soon minutes)", None)],
)  # fmt: skip
def test_schedule_rates(expression: str, seconds: float | None) -> None:
    assert schedule_rate_seconds(expression) == seconds


def test_the_local_runner_knows_scheduled_functions_and_runs_one_on_demand() -> None:
    with MotoStack(TEMPLATE, parameters={"RedemptionSyncMinutes": "15"}) as stack:
        lambdas = LocalLambdas(stack)
        assert lambdas.scheduled_functions() == {"SyncFunction": 900.0}
        (schedule,) = stack.functions["SyncFunction"].schedules
        assert schedule.expression == "rate(15 minutes)"
        with pytest.raises(KeyError, match="no Schedule event"):
            lambdas.run_scheduled("ReportFunction")
        seen: list[dict[str, Any]] = []
        lambdas.invoke = lambda function_id, event: seen.append(event)  # type: ignore[method-assign]
        lambdas.run_scheduled("SyncFunction")
        (event,) = seen
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["resources"] == [
            f"arn:aws:events:{stack.region}:{stack.account_id}:rule/{schedule.rule_name}"
        ]
        assert datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
