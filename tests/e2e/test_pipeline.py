"""The whole pipeline through the local runner: each test checks what the sandbox recorded, the
DynamoDB ledger and the results CSV agree."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import boto3
import pytest

from voucher_distributor.models.ledger import BatchStatus, ChunkState
from voucher_distributor_cli.local.results import RunResult
from voucher_distributor_cli.sandbox import FaultSettings

from ..invariants import assert_consistent
from .conftest import CLOUD, PARTNER, SPRING, World, people

SAMPLE = Path(__file__).resolve().parents[2] / "events" / "sample-recipients.csv"
REQUEST = Path(__file__).resolve().parents[2] / "events" / "sqs-request.json"


def run_csv(world: World, path: Path, **kwargs: object) -> RunResult:
    batch_id = world.pipeline.submit_csv(path, **kwargs)  # type: ignore[arg-type]
    world.pipeline.run_until_done(batch_id, timeout_s=120)
    return world.pipeline.result(batch_id)


# ---------------------------------------------------------------------- the main paths


@pytest.mark.slow
def test_sample_csv_two_programs_several_purchases(make_world) -> None:
    # Its Example Corp rows are an enforced-assignment program: bought when the stack accepts
    # portal assignment (refused by default: tests/e2e/test_redemption.py).
    world = make_world(parameters={"AcceptPortalAssignment": "true"})
    result = run_csv(world, SAMPLE)
    assert_consistent(world, result)
    counts = result.summary["counts"]
    assert counts == {"rows": 2500, "assigned": 2486, "existing": 0, "rejected": 14, "failed": 0}
    quantities = sorted((p.program_name, p.quantity) for p in world.sandbox.purchases())
    assert quantities == [
        (CLOUD, 56), (CLOUD, 1000), ("Example Corp Employee Upskilling", 20),
        (SPRING, 410), (SPRING, 1000),
    ]  # fmt: skip
    assert all(
        p.notes.startswith("voucher-distributor sample-recipients.csv [vd:")
        for p in world.sandbox.purchases()
    )
    reasons = Counter(r["reason"].split(":")[0] for r in result.rows if r["status"] == "rejected")
    assert reasons["malformed e-mail address"] == 4
    assert reasons["duplicate"] == 4
    # unknown columns and non-ASCII names come back as they went in
    assert "Department" in result.rows[0]
    assert any(r["first_name"] == "Nguyễn" for r in result.rows)
    # formula cells are neutralised
    formula = next(r for r in result.rows if r["external_id"] == "X011")
    assert formula["first_name"].startswith("'=")
    assert formula["Department"] == "'+cmd"
    # look-up by recipient e-mail
    someone = next(r for r in result.rows if r["status"] == "assigned")
    found = world.pipeline.ledger.assignments.assignments_for_email(someone["email"])
    assert [a.voucher_code for a in found] == [someone["voucher_code"]]


def test_sqs_request_inline_recipients(make_world) -> None:
    world = make_world()
    request = json.loads(REQUEST.read_text(encoding="utf-8"))
    batch_id = world.pipeline.submit_request(request)
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    result = world.pipeline.result(batch_id)
    assert_consistent(world, result)
    assert result.summary["counts"] == {
        "rows": 26,
        "assigned": 25,
        "existing": 0,
        "rejected": 1,
        "failed": 0,
    }
    (purchase,) = world.sandbox.purchases()
    assert (purchase.program_name, purchase.quantity) == (CLOUD, 25)
    assert purchase.notes.startswith("November onboarding cohort [vd:")
    batch = world.pipeline.ledger.batches.get_batch(batch_id)
    assert batch.results_csv_key == (
        "results/requests/hr-2026-11-21-onboarding-0042/hr-2026-11-21-onboarding-0042."
        f"{batch_id[:14]}.results.csv"
    )


def test_sqs_request_with_recipients_in_s3(make_world) -> None:
    world = make_world()
    path = world.csv_file([{k: v for k, v in p.items() if k != "program_name"} for p in people(30)])
    s3 = world.pipeline.stack.client("s3")
    s3.put_object(Bucket=world.pipeline.bucket, Key="requests/cohort.csv", Body=path.read_bytes())
    batch_id = world.pipeline.submit_request(
        {"requestId": "cohort-7", "programName": SPRING,
         "recipientsS3Uri": f"s3://{world.pipeline.bucket}/requests/cohort.csv"}
    )  # fmt: skip
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    result = world.pipeline.result(batch_id)
    assert_consistent(world, result)
    assert result.summary["counts"]["assigned"] == 30


def test_object_metadata_names_partner_and_program(make_world) -> None:
    world = make_world()
    rows = [{"E-Mail": f"meta{n}@acme.example", "FirstName": "M"} for n in range(3)]
    path = world.csv_file(rows)
    result = run_csv(world, path, metadata={"program": CLOUD, "partner": "acme corp"})
    assert_consistent(world, result)
    assert {(r["partner"], r["program"]) for r in result.rows} == {(PARTNER, CLOUD)}


# ---------------------------------------------------------------------- delivered twice


@pytest.mark.slow
def test_same_upload_event_delivered_twice_buys_once(make_world) -> None:
    world = make_world()
    path = world.csv_file(people(1200))
    batch_id = world.pipeline.submit_csv(path)
    sqs = world.pipeline.stack.client("sqs")
    upload_queue = world.pipeline.queue_url("UploadQueue")
    # Copy the S3 notification before it is consumed, then deliver it again after the batch.
    notification = None
    for _ in range(20):
        got = sqs.receive_message(QueueUrl=upload_queue, MaxNumberOfMessages=10)
        for message in got.get("Messages", []):
            sqs.change_message_visibility(
                QueueUrl=upload_queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            if "ObjectCreated" in message["Body"]:
                notification = message["Body"]
        if notification:
            break
    assert notification is not None
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    first = world.pipeline.result(batch_id)
    sqs.send_message(QueueUrl=upload_queue, MessageBody=notification)
    world.pipeline.run_until_idle(timeout_s=30)
    again = world.pipeline.result(batch_id)
    assert len(world.sandbox.purchases()) == 2  # 1000 + 200, once
    assert again.rows == first.rows
    assert_consistent(world, again)


def test_same_request_sent_twice_is_one_batch(make_world) -> None:
    world = make_world()
    request = {"requestId": "twice-1", "programName": SPRING,
               "recipients": [{"email": f"t{n}@acme.example"} for n in range(5)]}  # fmt: skip
    batch_id = world.pipeline.submit_request(request)
    assert world.pipeline.submit_request(request) == batch_id
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    world.pipeline.run_until_idle(timeout_s=30)
    assert len(world.sandbox.purchases()) == 1
    assert_consistent(world, world.pipeline.result(batch_id))


# ---------------------------------------------------------------------- exactly-once under faults


def test_reply_lost_after_the_purchase_is_adopted_not_bought_again(make_world) -> None:
    world = make_world()
    world.sandbox.set_faults(FaultSettings(post_commit_fault="drop"))
    path = world.csv_file(people(40))
    batch_id = world.pipeline.submit_csv(path)
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    result = world.pipeline.result(batch_id)
    assert_consistent(world, result)
    assert len(world.sandbox.purchases()) == 1
    (chunk,) = world.pipeline.ledger.chunks.iter_chunks(batch_id)
    assert chunk.adopted
    assert result.summary["counts"]["assigned"] == 40


class FailOnce:
    """A DynamoDB fault at the wire: the first write that records a purchase never lands, as if
    the worker died right after the POST."""

    def __init__(self) -> None:
        self.fired = 0

    def __call__(self, params: dict, **_: object) -> None:
        if "purchase_code = :code" in params.get("UpdateExpression", "") and not self.fired:
            self.fired += 1
            raise ConnectionError("worker died between the POST and the state write")


def test_crash_between_post_and_state_write_adopts_the_purchase(make_world) -> None:
    fault = FailOnce()
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build.dynamodb.UpdateItem", fault)
    try:
        world = make_world()
        path = world.csv_file(people(25))
        batch_id = world.pipeline.submit_csv(path)
        world.pipeline.run_until_done(batch_id, timeout_s=90)
    finally:
        boto3.DEFAULT_SESSION.events.unregister("before-parameter-build.dynamodb.UpdateItem", fault)
    assert fault.fired == 1
    result = world.pipeline.result(batch_id)
    assert_consistent(world, result)
    assert len(world.sandbox.purchases()) == 1
    (chunk,) = world.pipeline.ledger.chunks.iter_chunks(batch_id)
    assert chunk.adopted
    assert chunk.purchase_attempts == 2
    assert result.summary["counts"]["assigned"] == 25


@pytest.mark.slow
def test_bursts_of_503_and_429_still_buy_once_per_chunk(make_world) -> None:
    world = make_world()
    world.sandbox.set_faults(
        FaultSettings(error_503_rate=0.25, error_429_rate=0.25, retry_after_s=0)
    )
    path = world.csv_file(people(1500))
    result = run_csv(world, path)
    assert_consistent(world, result)
    assert len(world.sandbox.purchases()) == 2
    assert result.summary["counts"]["assigned"] == 1500
    statuses = Counter(r.status for r in world.sandbox.request_log())
    assert statuses[503] + statuses[429] > 0


# ---------------------------------------------------------------------- polling


def test_generation_slower_than_several_polls(make_world) -> None:
    world = make_world(generation_delay_s=4.0)
    result = run_csv(world, world.csv_file(people(10)))
    assert_consistent(world, result)
    (chunk,) = world.pipeline.ledger.chunks.iter_chunks(result.batch_id)
    assert chunk.state == ChunkState.ASSIGNED
    polls = [r for r in world.sandbox.request_log() if r.path.endswith("/vouchers/purchases")]
    assert len([r for r in polls if r.method == "GET"]) >= 3


def test_codes_listed_late_are_awaited_whatever_the_status(make_world) -> None:
    world = make_world()
    world.sandbox.set_faults(FaultSettings(complete_before_codes_s=2.0))
    result = run_csv(world, world.csv_file(people(12)))
    assert_consistent(world, result)
    assert result.summary["counts"]["assigned"] == 12


def test_generation_failure_fails_the_chunk_visibly(make_world) -> None:
    world = make_world()
    world.sandbox.set_faults(FaultSettings(generation_failure_rate=1.0))
    result = run_csv(world, world.csv_file(people(8)))
    assert_consistent(world, result)
    assert result.summary["counts"] == {
        "rows": 8,
        "assigned": 0,
        "existing": 0,
        "rejected": 0,
        "failed": 8,
    }
    assert all("CheckoutFailed" in r["reason"] for r in result.rows)
    (chunk,) = world.pipeline.ledger.chunks.iter_chunks(result.batch_id)
    assert chunk.state == ChunkState.FAILED
    assert len(world.sandbox.purchases()) == 1


def test_deadline_passes_before_the_codes_exist(make_world) -> None:
    world = make_world(generation_delay_s=60, tuning={"POLL_DEADLINE_SECONDS": "2"})
    result = run_csv(world, world.csv_file(people(5)))
    assert_consistent(world, result)
    assert result.summary["counts"]["failed"] == 5
    assert all("deadline" in r["reason"] for r in result.rows)


# ---------------------------------------------------------------------- refusals


def test_priced_unknown_and_partial_names_are_rejected_without_buying(make_world) -> None:
    world = make_world()
    rows = [
        {"email": "a@acme.example", "program_name": "Professional Architect Certification"},
        {"email": "b@acme.example", "program_name": "Spring Certification"},  # partial
        {"email": "c@acme.example", "program_name": "Legacy Networking Exam 2019"},
        {"email": "d@acme.example", "program_name": "Globex Partner Pilot"},
        {"email": "e@acme.example", "program_name": SPRING, "partner_name": "Acme"},
        {"email": "f@acme.example", "program_name": SPRING, "partner_name": "Initech Training"},
    ]
    result = run_csv(world, world.csv_file(rows))
    assert_consistent(world, result)
    assert world.sandbox.purchases() == []
    reasons = [r["reason"] for r in result.rows]
    assert "only $0 programs" in reasons[0]
    assert "no Certiverse program is named exactly 'Spring Certification'" in reasons[1]
    assert "not active" in reasons[2]
    assert "not assigned" in reasons[3]
    assert "no Certiverse partner is named exactly 'Acme'" in reasons[4]
    assert "not active" in reasons[5]
    assert result.summary["counts"]["rejected"] == 6


def test_unauthorized_token_fails_fast_and_buys_nothing(make_world) -> None:
    world = make_world(pipeline_token="revoked-token")
    batch_id = world.pipeline.submit_csv(world.csv_file(people(3)))
    batch = world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert batch.status == BatchStatus.FAILED
    assert "401" in (batch.error or "")
    assert world.sandbox.purchases() == []
    result = world.pipeline.result(batch_id)
    summary = result.summary
    assert summary["status"] == "failed"
    assert "PartnerManageVouchers" in summary["error"]
    # every row failed (not rejected), saying what to fix, so retry-failed can take them
    assert [r["status"] for r in result.rows] == ["failed"] * 3
    assert all("401" in r["reason"] and "retry-failed" in r["reason"] for r in result.rows)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"name,department\r\nAda,Eng\r\n", "e-mail"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03binary", "gzip"),
    ],
)
def test_unusable_files_buy_nothing_and_say_why(make_world, content: bytes, expected: str) -> None:
    world = make_world()
    path = world.tmp / "bad.csv"
    path.write_bytes(content)
    batch_id = world.pipeline.submit_csv(path)
    batch = world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert batch.status == BatchStatus.FAILED
    summary = world.pipeline.result(batch_id).summary
    assert expected in summary["error"].lower()
    assert summary["results"]["summary"] == f"results/bad.{batch_id[:14]}.summary.json"
    assert world.sandbox.purchases() == []


def test_malformed_request_is_answered_and_dropped(make_world) -> None:
    world = make_world()
    world.pipeline.submit_request('{"recipients": "not a list"}')
    world.pipeline.run_until_idle(timeout_s=30)
    s3 = world.pipeline.stack.client("s3")
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(
            Bucket=world.pipeline.bucket, Prefix="results/requests/invalid/"
        )["Contents"]
    ]
    assert len(keys) == 1
    body = json.loads(s3.get_object(Bucket=world.pipeline.bucket, Key=keys[0])["Body"].read())
    fields = {p["field"] for p in body["problems"]}
    assert {"requestId", "recipients"} <= fields
    assert world.sandbox.purchases() == []


def test_results_never_trigger_ingest(make_world) -> None:
    world = make_world()
    result = run_csv(world, world.csv_file(people(2)))
    sqs = world.pipeline.stack.client("sqs")
    counts = world.pipeline.stack.queue_counts(world.pipeline.queue_url("UploadQueue"))
    assert counts.total == 0
    assert result.summary["results"]["csv"].startswith("results/")
    assert sqs is not None


# ---------------------------------------------------------------------- announcements


def test_completion_is_announced_on_eventbridge(make_world) -> None:
    world = make_world()
    listener = world.listen_to_events()
    result = run_csv(world, world.csv_file(people(4)))
    (event,) = world.events_heard(listener)
    assert event["detail-type"] == "Voucher Batch Completed"
    assert event["detail"]["batchId"] == result.batch_id
    assert event["detail"]["counts"]["assigned"] == 4
    assert "@" not in json.dumps(event)  # no recipient e-mails in the announcement


def test_callback_to_a_private_address_is_refused_but_the_batch_completes(make_world) -> None:
    # The deployed callback rules (a local run would let the callback reach loopback).
    world = make_world(tuning={"CALLBACK_ALLOW_LOOPBACK": "false"})
    batch_id = world.pipeline.submit_request(
        {"requestId": "cb-1", "programName": SPRING, "callbackUrl": "https://127.0.0.1/hook",
         "recipients": [{"email": "cb@acme.example"}]}
    )  # fmt: skip
    batch = world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert batch.status == BatchStatus.DONE
    log = (world.tmp / "handlers.log").read_text(encoding="utf-8")
    assert "non-public address" in log
    assert "cb@acme.example" not in log


def test_plain_http_callback_is_refused_at_the_door(make_world) -> None:
    world = make_world()
    world.pipeline.submit_request(
        {"requestId": "cb-2", "programName": SPRING, "callbackUrl": "http://hooks.example/x",
         "recipients": [{"email": "cb@acme.example"}]}
    )  # fmt: skip
    world.pipeline.run_until_idle(timeout_s=30)
    s3 = world.pipeline.stack.client("s3")
    listed = s3.list_objects_v2(Bucket=world.pipeline.bucket, Prefix="results/requests/invalid/")
    (key,) = [o["Key"] for o in listed["Contents"]]
    body = json.loads(s3.get_object(Bucket=world.pipeline.bucket, Key=key)["Body"].read())
    assert any("https" in p["problem"] for p in body["problems"])
    assert world.sandbox.purchases() == []
