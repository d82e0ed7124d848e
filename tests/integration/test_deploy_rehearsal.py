"""A deploy rehearsal: template.yaml through the SAM transform into moto's CloudFormation.

What ``sam deploy`` would do first, on this machine: the translated template creates cleanly,
every output is a plain value, and every environment variable that names a resource names one
the stack made. A broken ``!Ref``/``!GetAtt``, a renamed resource or an output that resolves to
nothing shows up here instead of in a failed deployment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from voucher_distributor_cli.local.defaults import DEFAULT_TEMPLATE
from voucher_distributor_cli.local.runner import MotoStack

#: Environment variables that name a resource, by what they name.
NAMES = {
    "LEDGER_TABLE": "table",
    "INBOX_BUCKET": "bucket",
    "PURCHASE_QUEUE_URL": "queue",
    "POLL_QUEUE_URL": "queue",
    "REPORT_QUEUE_URL": "queue",
    "EVENT_BUS_NAME": "bus",
    "CERTIVERSE_TOKEN_SECRET_ARN": "secret",
    "CALLBACK_SECRET_ARN": "secret",
}
REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


@pytest.fixture(scope="module")
def stack() -> Iterator[MotoStack]:
    with MotoStack(DEFAULT_TEMPLATE, stack_name="voucher-distributor-rehearsal") as created:
        yield created


def test_the_translated_template_creates_completely(stack: MotoStack) -> None:
    cfn = stack.client("cloudformation")
    (described,) = cfn.describe_stacks(StackName=stack.stack_name)["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    statuses = {
        summary["LogicalResourceId"]: summary["ResourceStatus"]
        for summary in cfn.list_stack_resources(StackName=stack.stack_name)[
            "StackResourceSummaries"
        ]
    }
    assert set(statuses.values()) == {"CREATE_COMPLETE"}
    translated = stack.translated["Resources"]
    # Every translated resource exists, or is one the local stack says it does not emulate.
    for logical_id, resource in translated.items():
        # AlarmEmail, ApprovalEmail and SenderEmail are empty by default
        if resource.get("Condition") in {"HasAlarmEmail", "HasApprovalEmail", "SendsEmail"}:
            continue
        assert logical_id in stack.resources or logical_id in stack.ignored, logical_id
    assert set(stack.ignored.values()) <= {
        "AWS::SQS::QueuePolicy",
        "AWS::S3::BucketPolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::CloudWatch::Alarm",
        # The HTTP API: `local up` serves it with the same handler on loopback.
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Stage",
        "AWS::Lambda::Permission",  # and the sync's schedule; locally: run_scheduled
        # SES's configuration set and event destination (with SenderEmail): the local SES.
        "AWS::SES::ConfigurationSet",
        "AWS::SES::ConfigurationSetEventDestination",
    }
    assert {"IngestCsvFunction", "PurchaseFunction", "LedgerTable", "InboxBucket"} <= set(
        stack.resources
    )


def test_every_output_is_a_plain_string(stack: MotoStack) -> None:
    outputs = stack.outputs
    assert set(outputs) == set(stack.template.document["Outputs"])
    for name, value in outputs.items():
        assert isinstance(value, str), name
        assert value, name
        assert not REPR.search(value), f"{name} is an object's repr: {value}"
        assert "{" not in value, f"{name} holds an unresolved intrinsic: {value}"
    layer = next(r for r in stack.resources.values() if r.type == "AWS::Lambda::LayerVersion")
    assert outputs["SharedLayerArn"] == layer.ref
    assert outputs["SharedLayerArn"].startswith("arn:aws:lambda:us-east-1:123456789012:layer:")
    assert outputs["LedgerTableName"] == stack.resource("LedgerTable").ref
    assert outputs["RequestQueueUrl"] == stack.resource("RequestQueue").ref
    assert outputs["CertiverseTokenSecretArn"] == stack.resource("CertiverseTokenSecret").ref


def test_environment_variables_name_resources_that_exist(stack: MotoStack) -> None:
    dynamodb, s3, sqs = stack.client("dynamodb"), stack.client("s3"), stack.client("sqs")
    events, secrets = stack.client("events"), stack.client("secretsmanager")
    tables = set(dynamodb.list_tables()["TableNames"])
    queue_urls = set(stack.queues().values())
    exists = {
        "table": lambda value: value in tables,
        "bucket": lambda value: bool(s3.head_bucket(Bucket=value)),
        "queue": lambda value: (
            value in queue_urls
            and bool(sqs.get_queue_attributes(QueueUrl=value, AttributeNames=["QueueArn"]))
        ),
        "bus": lambda value: bool(events.describe_event_bus(Name=value)),
        "secret": lambda value: bool(secrets.describe_secret(SecretId=value)),
    }
    assert stack.functions
    for function_id, spec in stack.functions.items():
        deployed = stack.client("lambda").get_function_configuration(
            FunctionName=spec.function_name
        )
        variables = deployed["Environment"]["Variables"]
        assert {name: str(value) for name, value in variables.items()} == spec.environment
        for name, kind in NAMES.items():
            value = spec.environment[name]
            assert exists[kind](value), f"{function_id}: {name}={value} names no {kind}"
        for name, value in spec.environment.items():
            assert not REPR.search(value), f"{function_id}: {name} is an object's repr"


def test_the_ledger_table_has_its_indexes(stack: MotoStack) -> None:
    table = stack.client("dynamodb").describe_table(TableName=stack.resource("LedgerTable").ref)
    indexes = {i["IndexName"]: i for i in table["Table"]["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by-email", "by-code", "by-program", "batches-by-status",
                            "chunks-by-state"}  # fmt: skip
    for index in indexes.values():
        assert index["IndexStatus"] == "ACTIVE"
    assert indexes["batches-by-status"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert "redemption" in indexes["by-code"]["Projection"]["NonKeyAttributes"]
