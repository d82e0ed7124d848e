"""Every code reaches its recipient: the voucher e-mail through the local pipeline (moto's SES,
its send-rate limit and the mailbox simulator's events played by the local runner)."""

from __future__ import annotations

import json
import re
from collections import Counter
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import boto3

from tests.e2e.conftest import SPRING, World, people
from voucher_distributor.adapters.ledger.deliveries import SliceClaim
from voucher_distributor.models.email import EmailState
from voucher_distributor_cli.local.runner.local_ses import SentMail
from voucher_distributor_cli.ops.find import find_recipient
from voucher_distributor_cli.ops.status import batch_status, format_status
from voucher_distributor_cli.ops.target import Target
from voucher_distributor_cli.ops.voucher import find_voucher, format_voucher

SIM = "simulator.amazonses.com"


def _message(mail: SentMail) -> EmailMessage:
    parsed = message_from_bytes(mail.raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _texts(mail: SentMail) -> tuple[str, str]:
    message = _message(mail)
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    crlf = "\r\n"
    return text.get_content().replace(crlf, "\n"), html.get_content().replace(crlf, "\n")


def _run(world: World, path, **kwargs):
    batch = world.pipeline.submit_csv(path, **kwargs)
    world.pipeline.run_until_done(batch, timeout_s=300)
    return world.pipeline.result(batch, world.tmp / "out")


def test_each_assigned_row_gets_exactly_one_email_with_its_own_code(make_world) -> None:
    world = make_world(email=True)
    rows = people(1_100)
    rows[10:10] = [{"email": "not-an-address", "program_name": SPRING}]
    result = _run(world, world.csv_file(rows))
    assigned = {r["email"]: r for r in result.rows if r["status"] == "assigned"}
    assert len(assigned) == 1_100
    assert len(result.summary["purchases"]) == 2  # two chunks
    sent = world.pipeline.ses.sent
    assert len(sent) == 1_100
    assert Counter(m.to[0] for m in sent) == Counter(assigned.keys())  # one each, nobody else
    codes = {r["voucher_code"] for r in assigned.values()}
    for mail in sent:
        text, html = _texts(mail)
        mine = assigned[mail.to[0]]["voucher_code"]
        in_text = set(re.findall(r"SPR\d\d-[A-Z0-9]+", text)) & codes
        assert in_text == {mine}, mail.to[0]
        assert mine in html
        assert mail.tags["delivery-id"].startswith(result.batch_id + ".")
        assert mail.configuration_set
    # Every row's state in the results and the deliveries file; the rejected row got none.
    states = Counter(r["email_status"] for r in result.rows)
    assert states == {"delivered": 1_100, "not-sent": 1}
    assert result.summary["emails"] == {"delivered": 1_100, "not-sent": 1}
    assert result.final_line()["emails"] == {"delivered": 1_100, "not-sent": 1}
    assert result.deliveries_csv is not None
    history = result.deliveries_csv.read_text(encoding="utf-8-sig").splitlines()
    assert history[0].startswith("row,to,voucher_code,attempt,at_utc,email_status")
    assert sum(1 for line in history if ",delivered,Delivery," in line) == 1_100
    assert len(list((world.tmp / "mail").glob("*.eml"))) == 1_100
    # The same list again: everyone already holds a code, nobody is mailed again.
    again = _run(world, world.csv_file(rows, name="again.csv"))
    assert Counter(r["status"] for r in again.rows) == {"existing": 1_100, "rejected": 1}
    assert {r["email_status"] for r in again.rows} == {"not-sent"}
    assert len(world.pipeline.ses.sent) == 1_100


def test_simulator_addresses_end_in_their_states_and_names_stay_data(make_world) -> None:
    world = make_world(email=True)
    rows = [
        {"email": f"success@{SIM}", "first_name": "{{ 7*7 }}", "last_name": "<script>x</script>"},
        {"email": f"bounce@{SIM}", "first_name": "Bo"},
        {"email": f"complaint@{SIM}", "first_name": "Co"},
        {"email": f"suppressionlist@{SIM}", "first_name": "Su"},
        {"email": f"ooto@{SIM}", "first_name": "Oo"},
        {"email": "plain@acme.example", "first_name": "Pl"},
    ]
    for row in rows:
        row["program_name"] = SPRING
    result = _run(world, world.csv_file(rows))
    got = {r["email"]: r["email_status"] for r in result.rows}
    assert got == {
        f"success@{SIM}": "delivered",
        f"bounce@{SIM}": "bounced",
        f"complaint@{SIM}": "complained",
        f"suppressionlist@{SIM}": "suppressed",
        f"ooto@{SIM}": "delivered",
        "plain@acme.example": "delivered",
    }
    bounced = world.pipeline.ledger.deliveries.get(result.batch_id, 2)
    assert bounced is not None
    assert "550 5.1.1" in bounced.reason  # SES's diagnostic is kept
    (hostile,) = [m for m in world.pipeline.ses.sent if m.to[0] == f"success@{SIM}"]
    text, html = _texts(hostile)
    assert "Hello {{ 7*7 }}," in text
    assert "49" not in text
    assert "<script>" not in html
    assert "{{ 7*7 }}" in html
    assert result.final_line()["emails"] == {
        "delivered": 3, "bounced": 1, "complained": 1, "suppressed": 1,
    }  # fmt: skip
    # The operator's views: the batch's status, the code's record, a person's codes.
    target = Target.local(world.pipeline.stack.endpoint_url)
    status = batch_status(target, result.batch_id)
    assert status["emails"]["bounced"] == 1
    assert "1 bounced" in format_status(status)
    bounce_row = next(r for r in result.rows if r["email"] == f"bounce@{SIM}")
    record = find_voucher(target, bounce_row["voucher_code"])
    assert record is not None
    assert record["emailDelivery"]["status"] == "bounced"
    assert record["emailDelivery"]["attempts"] == 1
    assert record["emailDelivery"]["sentAt"]
    assert "e-mail    bounced at" in format_voucher(record, bounce_row["voucher_code"])
    (found,) = find_recipient(target, f"complaint@{SIM}")
    assert found["emailDelivery"]["status"] == "complained"


def test_an_opted_out_input_and_a_dry_run_send_nothing(make_world) -> None:
    world = make_world(email=True)
    out = _run(world, world.csv_file(people(3)), metadata={"send-email": "false"})
    assert Counter(r["status"] for r in out.rows) == {"assigned": 3}
    assert {r["email_status"] for r in out.rows} == {"not-sent"}
    assert "emails" not in out.summary
    dry = _run(
        world, world.csv_file(people(2, start=10), name="dry.csv"), metadata={"mode": "dry-run"}
    )
    assert {r["email_status"] for r in dry.rows} == {"not-sent"}
    request = {
        "requestId": "no-mail-1",
        "partnerName": "Acme Corp",
        "programName": SPRING,
        "sendEmail": False,
        "recipients": [{"email": "hr-person@acme.example"}],
    }
    batch = world.pipeline.submit_request(request)
    assert batch is not None
    world.pipeline.run_until_done(batch, timeout_s=120)
    assert world.pipeline.result(batch).rows[0]["email_status"] == "not-sent"
    assert world.pipeline.ses.sent == []


def test_a_claimed_row_is_never_sent_again_and_a_redelivery_sends_nothing(make_world) -> None:
    world = make_world(email=True)
    path = world.csv_file(people(4))
    result_batch = world.pipeline.submit_csv(path, key="incoming/crash.csv")
    # A worker claimed row 2 and died before recording its SES call (the crash window).
    world.pipeline.ledger.deliveries.claim(
        result_batch, 2, to_address="person2@acme.example", voucher_code="?", now=0
    )
    world.pipeline.run_until_done(result_batch, timeout_s=120)
    result = world.pipeline.result(result_batch)
    got = {r["row"]: r["email_status"] for r in result.rows}
    assert got == {"1": "delivered", "2": "unknown", "3": "delivered", "4": "delivered"}
    assert sorted(m.to[0] for m in world.pipeline.ses.sent) == [
        "person1@acme.example", "person3@acme.example", "person4@acme.example",
    ]  # fmt: skip
    # The chunk's e-mail message delivered again: every row is claimed or mailed, nothing goes.
    world.pipeline.stack.client("sqs").send_message(
        QueueUrl=world.pipeline.queue_url("EmailQueue"),
        MessageBody=json.dumps({"batchId": result_batch, "chunkNo": 0, "fromRow": 0}),
    )
    world.pipeline.run_until_idle(timeout_s=60)
    assert len(world.pipeline.ses.sent) == 3
    unknown = world.pipeline.ledger.deliveries.get(result_batch, 2)
    assert unknown is not None
    assert unknown.state == EmailState.UNKNOWN
    # Had the crashed call reached SES, its Send event (carrying the delivery id) resolves it.
    send_event = world.pipeline.ses.events_of(
        SentMail("m-crashed", "x", ("person2@acme.example",),
                 {"delivery-id": unknown.delivery_id}, "voucher-distributor-dev", b"", 0.0)
    )[0]  # fmt: skip
    assert world.pipeline.lambdas is not None
    world.pipeline.lambdas.invoke("EmailEventsFunction", send_event)
    resolved = world.pipeline.ledger.deliveries.get(result_batch, 2)
    assert resolved is not None
    assert resolved.state == EmailState.SENT
    assert len(world.pipeline.ses.sent) == 3  # resolved, not re-sent


class CrashOnSend:
    """The sending process dies at its ``nth`` SESv2 call (before it goes out), once."""

    def __init__(self, nth: int) -> None:
        self.nth, self.calls, self.fired = nth, 0, 0

    def __call__(self, **_: object) -> None:
        self.calls += 1
        if self.calls == self.nth and not self.fired:
            self.fired += 1
            raise ConnectionError("the sending worker died in the middle of its slice")


def test_an_error_mid_slice_leaves_its_row_unknown_and_the_rest_go_once(make_world) -> None:
    crash = CrashOnSend(3)
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build.sesv2.SendEmail", crash)
    try:
        world = make_world(email=True)
        batch = world.pipeline.submit_csv(world.csv_file(people(6)), key="incoming/mid.csv")
        world.pipeline.run_until_done(batch, timeout_s=120)
    finally:
        boto3.DEFAULT_SESSION.events.unregister("before-parameter-build.sesv2.SendEmail", crash)
    assert crash.fired == 1
    # The slice (all six rows) was claimed before its first call; the error hit the third
    # call: row 3 stays unknown (its call might have gone out), rows 4-6 were given back and
    # went on the message's redelivery, rows 1-2 were recorded and not sent again.
    sent = Counter(m.to[0] for m in world.pipeline.ses.sent)
    assert sent == Counter(f"person{n}@acme.example" for n in (1, 2, 4, 5, 6))
    states = {r["row"]: r["email_status"] for r in world.pipeline.result(batch).rows}
    assert states == {
        "1": "delivered", "2": "delivered", "3": "unknown",
        "4": "delivered", "5": "delivered", "6": "delivered",
    }  # fmt: skip


def test_a_slice_claimed_by_a_killed_worker_is_never_resent(make_world) -> None:
    world = make_world(email=True)
    batch = world.pipeline.submit_csv(world.csv_file(people(6)), key="incoming/killed.csv")
    # A worker claimed a slice (rows 3-6) and was killed before any of its calls: no code of
    # ours ran after the claim, so the rows stay claimed.
    claimed = world.pipeline.ledger.deliveries.claim_slice(
        [SliceClaim(batch, n, f"person{n}@acme.example", "?") for n in range(3, 7)], now=0
    )
    assert len(claimed) == 4
    world.pipeline.run_until_done(batch, timeout_s=120)
    states = {r["row"]: r["email_status"] for r in world.pipeline.result(batch).rows}
    assert states == {
        "1": "delivered", "2": "delivered",
        "3": "unknown", "4": "unknown", "5": "unknown", "6": "unknown",
    }  # fmt: skip
    world.pipeline.stack.client("sqs").send_message(
        QueueUrl=world.pipeline.queue_url("EmailQueue"),
        MessageBody=json.dumps({"batchId": batch, "chunkNo": 0, "fromRow": 0}),
    )
    world.pipeline.run_until_idle(timeout_s=60)
    assert sorted(m.to[0] for m in world.pipeline.ses.sent) == [
        "person1@acme.example", "person2@acme.example",
    ]  # fmt: skip


def test_throttling_waits_and_loses_nothing(make_world) -> None:
    # The stack believes it may send 40/s; the local SES takes 8/s and answers the rest
    # TooManyRequestsException: those e-mails go later, none lost, none twice.
    world = make_world(email=True, ses_rate=8, parameters={"MaxSendRate": "80"})
    result = _run(world, world.csv_file(people(30)))
    assert world.pipeline.ses.throttled > 0
    assert Counter(m.to[0] for m in world.pipeline.ses.sent) == Counter(
        r["email"] for r in result.rows
    )
    assert {r["email_status"] for r in result.rows} == {"delivered"}


def test_a_reissue_says_it_replaces_the_old_code(make_world) -> None:
    world = make_world(email=True)
    first = _run(world, world.csv_file(people(2)))
    old = {r["email"]: r["voucher_code"] for r in first.rows}
    rows = [{**row, "reissue": "yes"} for row in people(2)]
    second = _run(world, world.csv_file(rows, name="reissue.csv"))
    assert {r["status"] for r in second.rows} == {"assigned"}
    later = world.pipeline.ses.sent[2:]
    assert sorted(m.to[0] for m in later) == sorted(old)
    for mail in later:
        text, html = _texts(mail)
        new = next(r["voucher_code"] for r in second.rows if r["email"] == mail.to[0])
        assert f"replaces your previous code\n{old[mail.to[0]]}" in text
        assert new in text
        assert old[mail.to[0]] in html
        assert _message(mail)["Subject"].startswith("Your new exam voucher")


def test_a_batch_awaiting_approval_mails_only_once_approved(make_world) -> None:
    world = make_world(email=True, parameters={"ApprovalThreshold": "2"})
    batch = world.pipeline.submit_csv(world.csv_file(people(3)))
    world.pipeline.run_until_done(batch, timeout_s=120, stop_when_waiting=True)
    assert world.pipeline.ses.sent == []
    world.pipeline.decide(batch, "approved")
    world.pipeline.run_until_done(batch, timeout_s=120)
    assert len(world.pipeline.ses.sent) == 3
    rows = world.pipeline.result(batch).rows
    assert {r["email_status"] for r in rows} == {"delivered"}


def test_a_paused_account_holds_the_emails_and_a_refusal_fails_its_row(make_world) -> None:
    world = make_world(email=True)
    ses = world.pipeline.ses
    ses.paused = True
    ses.rejects = {"person2@acme.example"}
    batch = world.pipeline.submit_csv(world.csv_file(people(3)))

    def refused_a_few() -> bool:
        return ses.refused >= 3

    assert world.pipeline.lambdas is not None
    world.pipeline.lambdas.run_until(refused_a_few, timeout_s=120)
    assert ses.sent == []  # paused: nothing went, nothing was lost
    assert list(world.pipeline.ledger.deliveries.for_batch(batch)) == []  # claims given back
    ses.paused = False  # sending resumed
    world.pipeline.run_until_done(batch, timeout_s=120)
    rows = {r["email"]: r["email_status"] for r in world.pipeline.result(batch).rows}
    assert rows == {
        "person1@acme.example": "delivered",
        "person2@acme.example": "failed",
        "person3@acme.example": "delivered",
    }
    failed = world.pipeline.ledger.deliveries.get(batch, 2)
    assert failed is not None
    assert "MessageRejected" in failed.reason
