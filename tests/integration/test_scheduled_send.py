"""Scheduled sends and reminders against moto: the EventBridge Scheduler adapter, the batch's
send state (fired once, changed once), and a reminder's claim checking the holding."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from moto import mock_aws

from voucher_distributor.adapters.ledger.deliveries import NoLongerHeld, parse_reminder_id
from voucher_distributor.adapters.ledger.table import holding_pk, holding_sk
from voucher_distributor.adapters.scheduler import Scheduler
from voucher_distributor.domain.send_schedule import SCHEDULED, schedule_name
from voucher_distributor.models.ledger import BatchRecord

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:email"
ROLE_ARN = "arn:aws:iam::123456789012:role/send-schedule"


@pytest.fixture
def scheduler():
    with mock_aws():
        yield Scheduler(client=boto3.client("scheduler", region_name="us-east-1"))


def test_a_one_time_schedule_is_made_once_read_and_deleted(scheduler) -> None:
    name = schedule_name("voucher-distributor-dev", "a-batch-id/with:odd chars")
    assert len(name) <= 64
    body = {"batchId": "b-1", "fireAt": 1_900_000_000}
    assert scheduler.create_one_time(
        name, at=1_900_000_000, target_arn=QUEUE_ARN, role_arn=ROLE_ARN, body=body
    )
    # The same batch again (a repeated message): no second schedule.
    assert not scheduler.create_one_time(
        name, at=1_900_000_000, target_arn=QUEUE_ARN, role_arn=ROLE_ARN, body=body
    )
    got = scheduler.get(name)
    assert got is not None
    assert (got.at, got.target_arn, got.body) == (1_900_000_000, QUEUE_ARN, body)
    raw = scheduler._client.get_schedule(Name=name)
    assert raw["ScheduleExpression"] == "at(2030-03-17T17:46:40)"
    assert raw["ActionAfterCompletion"] == "DELETE"
    assert raw["Target"]["RoleArn"] == ROLE_ARN
    assert scheduler.names("voucher-distributor-dev-send-") == [name]
    assert scheduler.delete(name)
    assert not scheduler.delete(name)  # fired (deleted after completion) or deleted already
    assert scheduler.get(name) is None


def _scheduled_batch(ledger, batch_id: str = "s-batch") -> None:
    ledger.batches.create_batch(
        BatchRecord(
            batch_id=batch_id, kind="csv", source="s3://b/k", input_name="k",
            results_csv_key="results/k.csv", summary_key="results/k.json", created_at=1,
            send_at=500, send_state=SCHEDULED,
        )
    )  # fmt: skip


def test_a_scheduled_send_fires_once_among_many(ledger) -> None:
    _scheduled_batch(ledger)
    with ThreadPoolExecutor(8) as pool:
        got = list(
            pool.map(
                lambda _: ledger.sends.fire("s-batch", fire_at=500, by="schedule", now=501),
                range(8),
            )
        )
    assert sum(1 for g in got if g is not None) == 1
    batch = ledger.batches.get_batch("s-batch")
    assert (batch.send_state, batch.send_fired_by, batch.send_fired_at) == (
        "fired",
        "schedule",
        501,
    )
    # Changed by hand after it fired: nothing pending, refused.
    assert ledger.sends.change("s-batch", action="cancel-send", by="ops", now=502) is None


def test_a_cancel_records_who_and_then_no_fire_goes(ledger) -> None:
    _scheduled_batch(ledger)
    who = "arn:aws:iam::1:user/o"
    changed = ledger.sends.change("s-batch", action="cancel-send", by=who, now=3)
    assert changed is not None
    assert (changed.send_state, changed.send_changed, changed.send_changed_by) == (
        "cancelled", "cancel-send", who,
    )  # fmt: skip
    assert ledger.sends.fire("s-batch", fire_at=500, by="schedule", now=600) is None
    # A fire for another time (a schedule that was moved) does nothing either.
    _scheduled_batch(ledger, "t-batch")
    assert ledger.sends.fire("t-batch", fire_at=499, by="schedule", now=600) is None


def _holding(ledger, email: str, row: int) -> None:
    ledger.table.table.put_item(
        Item={"pk": holding_pk(email), "sk": holding_sk("Acme", "Cloud"), "email": email,
              "partner_name": "Acme", "program_name": "Cloud", "batch_id": "r-batch",
              "row_number": row, "claimed_at": 1}
    )  # fmt: skip


def _claim_reminder(ledger, row: int = 4, days: int = 3, email: str = "ada@example.com"):
    return ledger.deliveries.claim(
        "r-batch", row, to_address=email, voucher_code="CODE-4", now=10, reminder_days=days,
        holding=(holding_pk(email), holding_sk("Acme", "Cloud")),
    )  # fmt: skip


def test_a_reminder_is_claimed_once_per_code_and_days_while_held(ledger) -> None:
    _holding(ledger, "ada@example.com", 4)
    claimed = _claim_reminder(ledger)
    assert claimed is not None
    assert parse_reminder_id(claimed.delivery_id) == ("r-batch", 4, 3, 1)
    assert _claim_reminder(ledger) is None  # the next sync: never twice
    assert _claim_reminder(ledger, days=14) is not None  # another N: its own claim
    stored = ledger.deliveries.get("r-batch", 4, 3)
    assert stored is not None
    assert stored.reminder_days == 3
    # Reminders are not the row's first e-mail.
    assert list(ledger.deliveries.for_batch("r-batch")) == []
    # nor in the results' e-mail column (the state-only read met the reminder keys at a merge)
    assert list(ledger.deliveries.states("r-batch")) == []
    assert [r.reminder_days for r in ledger.deliveries.reminders_for_row("r-batch", 4)] == [3, 14]
    ledger.deliveries.record_sent(claimed, message_id="m-1", now=11)
    assert ledger.deliveries.get("r-batch", 4, 3).state == "sent"


def test_a_reminder_to_someone_who_no_longer_holds_the_code_is_not_claimed(ledger) -> None:
    _holding(ledger, "ada@example.com", 9)  # the holding points at another row now
    with pytest.raises(NoLongerHeld):
        _claim_reminder(ledger)
    assert ledger.deliveries.get("r-batch", 4, 3) is None
    with pytest.raises(NoLongerHeld):
        _claim_reminder(ledger, email="nobody@example.com")  # no holding at all
