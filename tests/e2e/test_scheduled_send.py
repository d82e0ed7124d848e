"""The message's timing: a batch's ``sendAt`` (EventBridge Scheduler's one-time schedule, fired
by the local runner on the local clock), ``send-now``, ``cancel-send``, and the holder's
reminders before a code expires (the redemption sync, ``ReminderDays``)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import SPRING, World, people
from voucher_distributor.models.email import EmailState
from voucher_distributor.models.ledger import BatchStatus
from voucher_distributor_cli.ops.deliveries import format_deliveries, list_deliveries
from voucher_distributor_cli.ops.sends import change_scheduled_send
from voucher_distributor_cli.ops.status import batch_status, format_status
from voucher_distributor_cli.ops.target import OpsError, Target
from voucher_distributor_cli.ops.voucher import find_voucher, format_voucher

SIM = "simulator.amazonses.com"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedules(world: World) -> list[str]:
    got = world.pipeline.stack.client("scheduler").list_schedules()
    return [s["Name"] for s in got.get("Schedules", [])]


def _assigned_and_reported(world: World, batch_id: str, *, schedule: bool) -> None:
    """Deliver events until the batch is reported (its codes assigned) and, with
    ``schedule``, its e-mails' schedule made; the e-mails themselves wait."""
    lambdas = world.pipeline.lambdas
    assert lambdas is not None

    def ready() -> bool:
        batch = world.pipeline.ledger.batches.get_batch(batch_id)
        done = batch is not None and batch.status == BatchStatus.DONE
        return done and (not schedule or bool(batch and batch.send_schedule))

    lambdas.run_until(ready, timeout_s=120)


def _target(world: World) -> Target:
    return Target.local(world.pipeline.stack.endpoint_url)


def test_a_send_at_two_seconds_ahead_sends_at_that_time_and_not_before(make_world) -> None:
    world = make_world(email=True)
    send_at = int(time.time()) + 2
    path = world.csv_file(people(3))
    batch_id = world.pipeline.submit_csv(path, metadata={"send-at": _iso(send_at)})
    lambdas = world.pipeline.lambdas
    assert lambdas is not None
    # Until its time: codes bought and assigned, rows scheduled, nothing mailed.
    lambdas.run_until(
        lambda: (
            world.pipeline.ledger.batches.get_batch(batch_id) is not None
            and len(world.pipeline.ledger.assignments.get_assignments(
                (batch_id, r) for r in (1, 2, 3))) == 3
        ) or time.time() >= send_at,
        timeout_s=60,
    )  # fmt: skip
    while time.time() < send_at - 0.3:
        lambdas.pump_once()
        assert world.pipeline.ses.sent == [], "mailed before its sendAt"
        time.sleep(0.05)
    batch = world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert batch.send_state == "fired"
    assert batch.send_fired_by == "schedule"
    sent = world.pipeline.ses.sent
    assert sorted(m.to[0] for m in sent) == [f"person{n}@acme.example" for n in (1, 2, 3)]
    assert all(m.at >= send_at for m in sent), [m.at - send_at for m in sent]
    assert all(m.at < send_at + 10 for m in sent)
    status = batch_status(_target(world), batch_id)
    assert status["sendAt"] == _iso(send_at)
    assert status["send"]["state"] == "fired"
    assert f"send at  {_iso(send_at)}" in format_status(status)
    assert _schedules(world) == []  # deleted after completion
    result = world.pipeline.result(batch_id, world.tmp / "out")
    assert {r["email_status"] for r in result.rows} == {"delivered"}


def test_cancel_send_leaves_the_rows_not_sent(make_world) -> None:
    world = make_world(email=True)
    send_at = int(time.time()) + 3_600
    batch_id = world.pipeline.submit_request(
        {"requestId": "later-1", "programName": SPRING, "sendAt": _iso(send_at),
         "recipients": [{"email": f"p{n}@acme.example"} for n in range(4)]}
    )  # fmt: skip
    assert batch_id is not None
    _assigned_and_reported(world, batch_id, schedule=True)
    assert len(_schedules(world)) == 1
    target = _target(world)
    view = list_deliveries(target, batch_id)
    assert view["counts"] == {"scheduled": 4}
    status = batch_status(target, batch_id)
    assert status["send"]["state"] == "scheduled"
    assert "scheduled: the e-mails wait" in format_status(status)

    changed = change_scheduled_send(target, batch_id, action="cancel-send")
    assert changed.batch.send_state == "cancelled"
    assert changed.schedule_deleted
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert world.pipeline.ses.sent == []
    assert _schedules(world) == []
    deliveries = list(world.pipeline.ledger.deliveries.for_batch(batch_id))
    assert [d.state for d in deliveries] == [EmailState.NOT_SENT] * 4
    assert all("cancelled by" in d.reason for d in deliveries)
    status = batch_status(target, batch_id)
    assert status["send"]["changed"]["action"] == "cancel-send"
    assert status["send"]["changed"]["by"]
    assert "cancelled: the rows are not-sent (cancel-send by" in format_status(status)
    # Nothing pending any more: both refused, clearly.
    for action in ("cancel-send", "send-now"):
        with pytest.raises(OpsError, match="nothing pending"):
            change_scheduled_send(target, batch_id, action=action)
    # The schedule's message arriving anyway (deleted too late): nothing is sent.
    _fire(world, batch_id, send_at)
    world.pipeline.run_until_idle(timeout_s=30)
    assert world.pipeline.ses.sent == []


def _fire(world: World, batch_id: str, send_at: int) -> None:
    world.pipeline.stack.client("sqs").send_message(
        QueueUrl=world.pipeline.queue_url("EmailQueue"),
        MessageBody=json.dumps({"batchId": batch_id, "fireAt": send_at}),
    )


def test_send_now_sends_at_once_and_a_second_fire_sends_nothing(make_world) -> None:
    world = make_world(email=True)
    send_at = int(time.time()) + 86_400
    batch_id = world.pipeline.submit_csv(
        world.csv_file(people(3)), metadata={"send-at": _iso(send_at)}
    )
    _assigned_and_reported(world, batch_id, schedule=True)
    assert world.pipeline.ses.sent == []
    target = _target(world)
    changed = change_scheduled_send(target, batch_id, action="send-now")
    assert changed.chunks_queued == 1
    batch = world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert batch.send_state == "fired"
    assert batch.send_changed == "send-now"
    assert len(world.pipeline.ses.sent) == 3
    assert _schedules(world) == []
    # The schedule's message twice anyway: the batch fired already, nobody is mailed again.
    _fire(world, batch_id, send_at)
    _fire(world, batch_id, send_at)
    world.pipeline.run_until_idle(timeout_s=30)
    assert len(world.pipeline.ses.sent) == 3
    with pytest.raises(OpsError, match="already went"):
        change_scheduled_send(target, batch_id, action="send-now")


def test_a_send_at_in_the_past_too_far_or_unreadable_is_refused(make_world) -> None:
    world = make_world(email=True)
    now = time.time()
    cases = {
        "past": _iso(now - 3_600),
        "far": _iso(now + 400 * 86_400),
        "unreadable": "next tuesday",
    }
    for name, value in cases.items():
        batch_id = world.pipeline.submit_csv(
            world.csv_file(people(1), name=f"{name}.csv"), metadata={"send-at": value}
        )
        batch = world.pipeline.run_until_done(batch_id, timeout_s=60)
        assert batch.status == BatchStatus.FAILED
        assert batch.input_rejected
        assert batch.error is not None
        assert "sendAt" in batch.error, batch.error
        assert "send-at" in batch.error
    # An HR request with no offset: refused at the door with the field named.
    refusal = world.refused_at_the_door(
        {"requestId": "bad-time", "programName": SPRING, "sendAt": "2030-01-01T09:00:00",
         "recipients": [{"email": "x@acme.example"}]}
    )  # fmt: skip
    assert any(p["field"] == "sendAt" for p in refusal["problems"]), refusal
    assert world.pipeline.ses.sent == []


# ---------------------------------------------------------------------- reminders


def _in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def test_a_code_three_days_from_expiry_gets_one_reminder_and_a_used_one_none(make_world) -> None:
    world = make_world(email=True)
    rows = people(3)
    rows.append({"email": f"bounce@{SIM}", "program_name": SPRING})
    batch_id = world.pipeline.submit_csv(world.csv_file(rows))
    world.pipeline.run_until_done(batch_id, timeout_s=120)
    codes = {
        a.email: a.voucher_code
        for a in world.pipeline.ledger.assignments.iter_assignments(batch_id)
    }
    first_mails = len(world.pipeline.ses.sent)
    assert first_mails == 4
    soon = _in_days(2.9)
    world.sandbox.update_vouchers(
        [codes["person1@acme.example"], codes["person2@acme.example"], codes[f"bounce@{SIM}"]],
        {"expirationDateUtc": soon},
    )
    world.sandbox.update_vouchers([codes["person2@acme.example"]], {"isUsed": True})
    outcomes = [world.pipeline.sync(), world.pipeline.sync()]
    world.pipeline.run_until_idle(timeout_s=30)  # SES's events for the reminder
    assert [o["remindersSent"] for o in outcomes] == [1, 0]
    reminders = world.pipeline.ses.sent[first_mails:]
    assert [m.to[0] for m in reminders] == ["person1@acme.example"]
    text = reminders[0].raw.decode("utf-8", "replace")
    assert "Reminder" in text
    assert codes["person1@acme.example"] in text
    assert reminders[0].tags["delivery-id"] == f"{batch_id}.1.r3.1"
    (record,) = list(world.pipeline.ledger.deliveries.reminders_for_batch(batch_id))
    assert (record.row_number, record.reminder_days) == (1, 3)
    assert record.state == EmailState.DELIVERED
    # The row's first e-mail is untouched; the reminder shows in deliveries and the record.
    target = _target(world)
    view = list_deliveries(target, batch_id)
    assert view["counts"] == {"delivered": 3, "bounced": 1}
    assert [(r["row"], r["daysBefore"], r["state"]) for r in view["reminders"]] == [
        (1, 3, "delivered")
    ]
    assert "reminder 3 days before expiry: delivered" in format_deliveries(view)
    found = find_voucher(target, codes["person1@acme.example"])
    assert found is not None
    assert [(r["daysBefore"], r["status"]) for r in found["reminders"]] == [(3, "delivered")]
    assert "reminder  3 days before expiry: delivered" in format_voucher(
        found, codes["person1@acme.example"]
    )
    used = find_voucher(target, codes["person2@acme.example"])
    assert used is not None
    assert used["reminders"] == []
