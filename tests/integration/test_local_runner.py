"""The local runner: the moto stack built from a template through the SAM transform, and the
Lambda/SQS event-source emulation, against a small fixture template and the real one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from voucher_distributor_cli.local.runner import (
    LocalLambdas,
    MotoStack,
    PhysicalResource,
    RunTimeoutError,
    StackError,
)

FIXTURE = Path(__file__).parent / "fixtures" / "runner" / "template.yaml"
REAL_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture
def stack() -> Iterator[MotoStack]:
    with MotoStack(FIXTURE, secret_values={"TokenSecret": "tok-123"}) as running:
        yield running


@pytest.fixture
def lambdas(stack: MotoStack) -> LocalLambdas:
    return LocalLambdas(stack, retry_visibility_s=0)


def _drain(stack: MotoStack, logical_id: str) -> list[dict[str, Any]]:
    """Every message currently visible on a stack queue (deleted as read)."""
    sqs = stack.client("sqs")
    url = stack.resource(logical_id).ref
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", []):
        messages.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def _forwarded(stack: MotoStack) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in _drain(stack, "OutQueue")]


def _discard_test_event(stack: MotoStack) -> None:
    """Drop the s3:TestEvent the bucket notification put on InQueue when the stack started."""
    bodies = [json.loads(m["Body"]) for m in _drain(stack, "InQueue")]
    assert [body.get("Event") for body in bodies] == ["s3:TestEvent"]


# ------------------------------------------------------------------------ template


def test_parameters_reach_the_stack() -> None:
    with MotoStack(FIXTURE, parameters={"Stage": "prod", "InVisibilitySeconds": 45}) as prod:
        assert prod.function_environment("BoomFunction")["MODE"] == "strict"
        assert "ProdOnlyQueue" in prod.resources  # its Condition holds now
        attributes = prod.client("sqs").get_queue_attributes(
            QueueUrl=prod.resource("InQueue").ref, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        assert attributes["VisibilityTimeout"] == "45"
    with pytest.raises(StackError, match="Nope"):
        MotoStack(FIXTURE, parameters={"Nope": "x"})


def test_functions_merge_globals_and_parse_sqs_events(stack: MotoStack) -> None:
    functions = stack.functions
    assert set(functions) == {"ForwardFunction", "PartialFunction", "BoomFunction"}
    forward, partial = functions["ForwardFunction"], functions["PartialFunction"]
    assert forward.code_uri == FIXTURE.parent / "handlers" / "forward"
    assert (forward.module_name, forward.attribute) == ("app", "handler")
    assert (forward.timeout_s, forward.memory_mb) == (10, 256)  # Timeout from a parameter
    assert (partial.timeout_s, partial.memory_mb) == (5, 128)
    assert forward.environment["WHICH"] == "forward"  # the function's value wins
    assert forward.environment["STAGE"] == "test"
    (event,) = partial.sqs_events
    assert event.queue == stack.resource("PartialQueue").get_att("Arn")
    assert event.queue_id == "PartialQueue"
    assert (event.batch_size, event.maximum_batching_window_s) == (10, 1)
    assert event.reports_batch_item_failures
    assert not functions["BoomFunction"].sqs_events[0].reports_batch_item_failures


# ------------------------------------------------------------------------ stack


def test_stack_creates_resources_from_the_template(stack: MotoStack) -> None:
    sqs, dynamodb = stack.client("sqs"), stack.client("dynamodb")

    in_queue = stack.resource("InQueue")
    dlq = stack.resource("InDeadLetterQueue")
    attributes = sqs.get_queue_attributes(QueueUrl=in_queue.ref, AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["VisibilityTimeout"] == "30"
    assert attributes["MessageRetentionPeriod"] == "3600"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq.get_att("Arn"),
        "maxReceiveCount": 3,
    }
    assert attributes["QueueArn"] == in_queue.get_att("Arn")
    assert in_queue.get_att("QueueUrl") == in_queue.ref
    out = stack.resource("OutQueue")
    assert out.get_att("QueueName") == "runner-out-test"  # QueueName from !Join

    table = stack.resource("Table")
    description = dynamodb.describe_table(TableName=table.ref)["Table"]
    assert description["TableArn"] == table.get_att("Arn")
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (gsi,) = description["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "by-email"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["email", "pk"]
    assert table.get_att("StreamArn") == description["LatestStreamArn"]
    ttl = dynamodb.describe_time_to_live(TableName=table.ref)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")

    bucket = stack.resource("Bucket")
    assert bucket.ref == "runner-inbox-123456789012-us-east-1-test"
    assert bucket.get_att("Arn") == f"arn:aws:s3:::{bucket.ref}"
    assert stack.client("s3").get_bucket_versioning(Bucket=bucket.ref)["Status"] == "Enabled"

    secrets = stack.client("secretsmanager")
    token = stack.resource("TokenSecret")
    assert token.ref.startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:runner/")
    assert secrets.get_secret_value(SecretId=token.ref)["SecretString"] == "tok-123"
    signing = secrets.get_secret_value(SecretId=stack.resource("SigningSecret").ref)
    assert len(signing["SecretString"]) == 24
    assert signing["SecretString"].isalnum()

    bus = stack.resource("Bus")
    assert bus.ref == "runner-bus-test"
    assert stack.client("events").describe_event_bus(Name=bus.ref)["Arn"] == bus.get_att("Arn")

    assert "ProdOnlyQueue" not in stack.resources  # its Condition is false
    assert stack.ignored["Alarm"] == "AWS::CloudWatch::Alarm"
    assert stack.ignored["InQueuePolicy"] == "AWS::SQS::QueuePolicy"
    with pytest.raises(KeyError, match="not emulated"):
        stack.resource("Alarm")
    function = stack.resource("ForwardFunction")  # its configuration exists; its code runs here
    assert isinstance(function, PhysicalResource)
    assert function.get_att("Arn").endswith(f":function:{function.ref}")
    assert stack.client("lambda").get_function(FunctionName=function.ref)
    assert stack.outputs == {"InQueueUrl": stack.resource("InQueue").ref}


def test_function_environment_is_resolved(stack: MotoStack) -> None:
    env = stack.function_environment("ForwardFunction")
    assert env == {
        "STAGE": "test",
        "WHICH": "forward",
        "GREETING": "hello, us-east-1",
        "NAMESPACE": "Runner/test",
        "TABLE_NAME": stack.resource("Table").ref,
        "TABLE_ARN": stack.resource("Table").get_att("Arn"),
        "BUCKET_NAME": stack.resource("Bucket").ref,
        "OUT_QUEUE_URL": stack.resource("OutQueue").ref,
        "OUT_QUEUE_NAME": "runner-out-test",
        "TOKEN_SECRET_ARN": stack.resource("TokenSecret").ref,
        "SIGNING_SECRET_ARN": stack.resource("SigningSecret").ref,
        "MODE": "relaxed",
        "EVENT_BUS": "runner-bus-test",
    }
    assert stack.function_environment("PartialFunction")["WHICH"] == "partial"
    assert stack.function_environment("BoomFunction")["WHICH"] == "global"
    aws = stack.aws_environment()
    assert aws["AWS_ENDPOINT_URL"] == stack.endpoint_url
    assert aws["AWS_DEFAULT_REGION"] == "us-east-1"


def test_one_stack_per_process(stack: MotoStack) -> None:
    with pytest.raises(StackError, match="another MotoStack"):
        MotoStack(FIXTURE).start()


def test_s3_notifications_come_from_the_template(stack: MotoStack) -> None:
    s3 = stack.client("s3")
    bucket = stack.resource("Bucket").ref
    s3.put_object(Bucket=bucket, Key="results/a b.csv", Body=b"email\n")  # other prefix
    s3.put_object(Bucket=bucket, Key="incoming/notes.txt", Body=b"x")  # other suffix
    s3.put_object(Bucket=bucket, Key="incoming/team a/list+1.csv", Body=b"email\n")

    bodies = [json.loads(m["Body"]) for m in _drain(stack, "InQueue")]

    assert bodies[0]["Event"] == "s3:TestEvent"
    assert bodies[0]["Bucket"] == bucket
    records = [record for body in bodies[1:] for record in body["Records"]]
    assert len(records) == 1
    assert records[0]["eventName"].startswith("ObjectCreated:")
    assert records[0]["s3"]["bucket"]["name"] == bucket
    key = records[0]["s3"]["object"]["key"]
    # quote_plus-encoded: a space becomes "+", a "+" becomes "%2B". moto also encodes "/" as
    # "%2F" (S3 leaves it): handlers must unquote_plus the whole key, never split it first.
    assert "team+a" in key
    assert "%2B1.csv" in key
    assert unquote_plus(key) == "incoming/team a/list+1.csv"


# ------------------------------------------------------------------------ lambdas


def test_events_are_delivered_in_the_lambda_shape(stack: MotoStack, lambdas: LocalLambdas) -> None:
    _discard_test_event(stack)
    sqs = stack.client("sqs")
    in_url = stack.resource("InQueue").ref
    sqs.send_message(
        QueueUrl=in_url,
        MessageBody="with-attributes",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "demo"},
            "count": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    for index in range(6):
        sqs.send_message(QueueUrl=in_url, MessageBody=f"plain-{index}")

    report = lambdas.pump_once()

    assert (report.invocations, report.delivered, report.deleted) == (1, 5, 5)  # BatchSize 5
    first = _forwarded(stack)
    assert {item["batch_size"] for item in first} == {5}
    assert lambdas.run_until_idle(timeout_s=5).delivered == 2
    forwarded = first + _forwarded(stack)
    assert sorted(item["record"]["body"] for item in forwarded) == sorted(
        ["with-attributes"] + [f"plain-{i}" for i in range(6)]
    )
    assert {(item["which"], item["helper"]) for item in forwarded} == {("forward", "forward")}

    record = next(i["record"] for i in forwarded if i["record"]["body"] == "with-attributes")
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfMessageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.resource("InQueue").get_att("Arn")
    assert record["awsRegion"] == "us-east-1"
    assert {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    } <= set(record["attributes"])
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "demo",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["messageAttributes"]["count"]["dataType"] == "Number"
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
    plain = next(i["record"] for i in forwarded if i["record"]["body"] == "plain-0")
    assert plain["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in plain


def test_environment_applies_at_import_and_is_restored(lambdas: LocalLambdas) -> None:
    assert "WHICH" not in os.environ
    before_endpoint = os.environ.get("AWS_ENDPOINT_URL")

    forward = lambdas.invoke("ForwardFunction", {"describe": True})
    partial = lambdas.invoke("PartialFunction", {"describe": True})
    forward_again = lambdas.invoke("ForwardFunction", {"describe": True})

    # Both handlers are app.py with a sibling helper.py: each got its own modules.
    assert (forward["helper"], partial["helper"]) == ("forward", "partial")
    assert forward_again["helper"] == "forward"
    assert forward["which_at_import"] == forward["which_now"] == "forward"
    assert partial["which_now"] == "partial"
    assert "WHICH" not in os.environ
    assert os.environ.get("AWS_ENDPOINT_URL") == before_endpoint

    name = lambdas.stack.function_name("ForwardFunction")
    assert forward["function_name"] == forward["lambda_name"] == name
    assert forward["function_version"] == "$LATEST"
    assert forward["invoked_function_arn"].endswith(f":function:{name}")
    assert forward["memory_limit_in_mb"] == 256
    assert forward["log_group_name"] == f"/aws/lambda/{name}"
    assert 9_000 < forward["remaining_ms"] <= 10_000
    assert forward["aws_request_id"] != forward_again["aws_request_id"]


def test_partial_batch_failure_redelivers_only_the_failed_records(
    stack: MotoStack,
) -> None:
    lambdas = LocalLambdas(stack, retry_visibility_s=0, only={"PartialFunction"})
    sqs = stack.client("sqs")
    url = stack.resource("PartialQueue").ref
    for body in ("ok-1", "fail-1", "ok-2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    dlq = stack.resource("PartialDeadLetterQueue").ref

    report = lambdas.run_until(lambda: stack.queue_counts(dlq).visible == 1, timeout_s=10)

    assert report.by_function == {"PartialFunction": 2}
    assert (report.delivered, report.deleted, report.returned) == (4, 2, 2)
    assert [f.reason for f in report.failures] == ["batchItemFailures"] * 2
    items = stack.client("dynamodb").scan(TableName=stack.resource("Table").ref)["Items"]
    deliveries = sorted((item["pk"]["S"], item["sk"]["S"]) for item in items)
    assert deliveries == [  # ok-* once; fail-1 until maxReceiveCount (2), then the DLQ
        ("delivery#fail-1", "1"),
        ("delivery#fail-1", "2"),
        ("delivery#ok-1", "1"),
        ("delivery#ok-2", "1"),
    ]
    assert [m["Body"] for m in _drain(stack, "PartialDeadLetterQueue")] == ["fail-1"]
    assert stack.queue_counts(url).total == 0


def test_raising_handler_is_logged_retried_and_dead_lettered(
    stack: MotoStack, caplog: pytest.LogCaptureFixture
) -> None:
    _discard_test_event(stack)
    lambdas = LocalLambdas(stack)  # the default 1 s retry visibility
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.resource("BoomQueue").ref, MessageBody="explode")
    dlq = stack.resource("BoomDeadLetterQueue").ref

    report = lambdas.run_until(lambda: stack.queue_counts(dlq).visible == 1, timeout_s=10)

    assert report.by_function == {"BoomFunction": 2}  # maxReceiveCount 2
    assert (report.errors, report.deleted, report.returned) == (2, 0, 2)
    assert "RuntimeError: boom on 1 record(s)" in report.failures[0].reason
    assert "BoomFunction raised" in caplog.text
    assert "boom on 1 record(s)" in caplog.text  # the traceback is logged
    assert [m["Body"] for m in _drain(stack, "BoomDeadLetterQueue")] == ["explode"]


def test_message_delays_are_honoured(stack: MotoStack, lambdas: LocalLambdas) -> None:
    _discard_test_event(stack)
    sqs = stack.client("sqs")
    url = stack.resource("InQueue").ref
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="now")
    started = time.monotonic()

    lambdas.pump_once()
    assert [item["record"]["body"] for item in _forwarded(stack)] == ["now"]
    assert stack.queue_counts(url).delayed == 1

    seen: list[str] = []
    lambdas.run_until(
        lambda: bool(seen.extend(i["record"]["body"] for i in _forwarded(stack)) or seen),
        timeout_s=5,
    )
    assert seen == ["later"]
    assert time.monotonic() - started >= 0.9


def test_run_until_timeout_names_the_queues_holding_messages(stack: MotoStack) -> None:
    lambdas = LocalLambdas(stack, only={"PartialFunction"})
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.resource("OutQueue").ref, MessageBody="x", DelaySeconds=30)

    with pytest.raises(RunTimeoutError) as error:
        lambdas.run_until(lambda: False, timeout_s=0.3)

    message = str(error.value)
    assert "OutQueue: 0 visible, 0 in flight, 1 delayed" in message
    assert "InQueue: 1 visible" in message  # the S3 test event: ForwardFunction is not polled
    assert "PartialQueue" not in message


def test_invalid_batch_item_identifier_fails_the_whole_batch(stack: MotoStack) -> None:
    lambdas = LocalLambdas(stack, only={"PartialFunction"})
    url = stack.resource("PartialQueue").ref
    stack.client("sqs").send_message(QueueUrl=url, MessageBody="bad-id")
    stack.client("sqs").send_message(QueueUrl=url, MessageBody="ok-1")

    report = lambdas.pump_once()

    assert (report.delivered, report.deleted, report.returned) == (2, 0, 2)
    assert "invalid batchItemFailures" in report.failures[0].reason


# ------------------------------------------------------------------------ the real template


def test_the_real_template_builds_without_its_function_code() -> None:
    with MotoStack(REAL_TEMPLATE) as real:
        lambdas = LocalLambdas(real)  # nothing imported: the functions may not exist yet

        queues = real.queues()
        assert {
            "UploadQueue",
            "UploadDeadLetterQueue",
            "RequestQueue",
            "RequestDeadLetterQueue",
            "PurchaseQueue",
            "PurchaseDeadLetterQueue",
            "PollQueue",
            "PollDeadLetterQueue",
            "ReportQueue",
            "ReportDeadLetterQueue",
        } <= set(queues)
        sqs = real.client("sqs")
        purchase = sqs.get_queue_attributes(
            QueueUrl=queues["PurchaseQueue"], AttributeNames=["All"]
        )["Attributes"]
        assert json.loads(purchase["RedrivePolicy"])["deadLetterTargetArn"] == real.resource(
            "PurchaseDeadLetterQueue"
        ).get_att("Arn")
        table = real.resource("LedgerTable").ref
        assert real.client("dynamodb").describe_table(TableName=table)["Table"]["TableStatus"]
        bucket = real.resource("InboxBucket").ref
        assert real.client("s3").head_bucket(Bucket=bucket)

        sources = {source.function_id: source for source in lambdas.event_sources}
        # Every function is fed by a queue, but the HTTP API's (served by `local up`), the
        # sync, which runs on its schedule, and the e-mail events (an EventBridge rule's
        # target: fed by the local SES through LocalLambdas.add_feed).
        assert set(sources) == set(real.functions) - {
            "ApiFunction", "SyncFunction", "EmailEventsFunction",
        }  # fmt: skip
        assert lambdas.scheduled_functions() == {"SyncFunction": 21_600.0}
        assert sources["IngestCsvFunction"].queue_url == queues["UploadQueue"]
        # Uploads under templates/ reach the template check as the S3 notification sends them.
        assert sources["CheckTemplateFunction"].queue_url == queues["TemplateQueue"]
        for function_id in real.functions:
            env = real.function_environment(function_id)
            assert env["LEDGER_TABLE"] == table
            assert env["INBOX_BUCKET"] == bucket  # the fixed !Sub name matches the bucket
            assert env["PURCHASE_QUEUE_URL"] == queues["PurchaseQueue"]


def test_a_handler_that_sets_its_own_message_visibility_keeps_it(stack: MotoStack) -> None:
    """Issue 23 item 1: a failed message whose handler called ChangeMessageVisibility comes
    back when the handler said (3 s), not at the runner's short retry (0 s here), as on Lambda;
    the other failed messages still get the runner's retry."""
    lambdas = LocalLambdas(stack, retry_visibility_s=0, only={"PartialFunction"})
    sqs = stack.client("sqs")
    url = stack.resource("PartialQueue").ref
    sqs.send_message(QueueUrl=url, MessageBody="later-1")
    sqs.send_message(QueueUrl=url, MessageBody="fail-2")
    first = lambdas.pump_once()
    assert (first.delivered, first.returned) == (2, 2)
    again = lambdas.pump_once()
    assert again.delivered == 1  # fail-2 only: later-1 is invisible for 3 s
    time.sleep(3.2)
    assert lambdas.pump_once().delivered == 1  # later-1 is back (fail-2 went to the DLQ)
    items = stack.client("dynamodb").scan(TableName=stack.resource("Table").ref)["Items"]
    assert sorted(i["pk"]["S"] for i in items if "later" in i["pk"]["S"]) == [
        "delivery#later-1",
        "delivery#later-1",
    ]
