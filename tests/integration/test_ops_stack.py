"""The ops commands' ``--stack NAME`` mode: a deployed stack found through CloudFormation.

The stack here is small plain CloudFormation in another region, holding what ``Target.deployed``
reads of the real one: the ledger table, the queues with their redrive policies (by the
template's logical ids) and the purchase function's environment. (The whole template, through
the SAM transform, is what test_ops.py reaches with ``--endpoint-url``.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.models.ledger import BatchRecord, ChunkRecord, ChunkState
from voucher_distributor_cli.main import main
from voucher_distributor_cli.ops import Target

STACK = "voucher-distributor-prod"
REGION = "eu-west-1"
API = "https://api.certiverse.example/api"


TEMPLATE = {
    "Resources": {
        "LedgerTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": f"{STACK}-ledger",
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
            },
        },
        "PurchaseDeadLetterQueue": {"Type": "AWS::SQS::Queue"},
        "PurchaseQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["PurchaseDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": 5,
                }
            },
        },
        "FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        },
        "PurchaseFunction": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": f"{STACK}-purchase",
                "Runtime": "python3.12",
                "Handler": "app.handler",
                "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
                "Code": {"ZipFile": "def handler(event, context):\n    return None\n"},
                "Environment": {"Variables": {"CERTIVERSE_BASE_URL": API}},
            },
        },
    }
}


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the stack is elsewhere: --region
    with mock_aws():
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName=STACK, TemplateBody=json.dumps(TEMPLATE), Capabilities=["CAPABILITY_IAM"]
        )
        yield


def test_a_deployed_stack_is_found_by_name(deployed: None) -> None:
    target = Target.deployed(STACK, region=REGION)
    assert target.table_name == f"{STACK}-ledger"
    assert set(target.queues) == {"PurchaseQueue", "PurchaseDeadLetterQueue"}
    assert target.redrives == {"PurchaseDeadLetterQueue": "PurchaseQueue"}
    assert target.function_env["CERTIVERSE_BASE_URL"] == API


def test_status_reads_the_deployed_ledger(
    deployed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(f"{STACK}-ledger", dynamodb=boto3.resource("dynamodb", region_name=REGION))
    ledger.batches.create_batch(
        BatchRecord(
            batch_id="f-1", kind="csv", source="s3://inbox/incoming/a.csv",
            results_csv_key="results/a.results.csv", summary_key="results/a.summary.json",
            created_at=1_700_000_000, chunk_count=2, rows_total=1_500,
        )
    )  # fmt: skip
    for no, quantity in ((0, 1000), (1, 500)):
        ledger.chunks.put_chunk_if_absent(
            ChunkRecord(
                batch_id="f-1", chunk_no=no, partner_name="Acme Corp", program_name="Spring",
                quantity=quantity, rows_key=f"work/f-1/chunks/{no:05d}.jsonl", first_row=2,
            )
        )  # fmt: skip
    ended = ledger.chunks.get_chunk("f-1", 0)
    assert ended is not None
    ledger.chunks.finish_chunk(ended, state=ChunkState.ASSIGNED, assigned=1000, failed=0)

    code = main(["status", "--stack", STACK, "--region", REGION, "--json", "f-1"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["counts"]["assigned"] == 1000
    assert shown["counts"]["chunksFinished"] == 1
    assert shown["chunkStates"] == {"ASSIGNED": 1, "PENDING": 1}


def test_redrive_dry_run_on_a_deployed_stack(
    deployed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    dlq = Target.deployed(STACK, region=REGION).queues["PurchaseDeadLetterQueue"]
    sqs.send_message(QueueUrl=dlq, MessageBody='{"batchId": "f-1", "chunkNo": 0}')
    code = main(["redrive", "--stack", STACK, "--region", REGION, "--dry-run"])
    assert code == 0
    assert "PurchaseDeadLetterQueue -> PurchaseQueue: would move 1 message(s)" in (
        capsys.readouterr().out
    )
    assert (
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "1"
    )  # a dry run moves nothing


def test_an_unknown_stack_is_a_clear_error(
    deployed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--stack", "no-such-stack", "--region", REGION, "f-1"])
    assert code == 2
    assert "no-such-stack" in capsys.readouterr().err
