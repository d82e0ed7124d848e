"""template.yaml's wiring, checked against the code it deploys.

Static checks read the template as written and the functions as the SAM transform and moto's
CloudFormation make them; the policy check runs inputs through the local pipeline (the
template's stack in moto), records every AWS call each function makes, and compares them with
that function's IAM statements (its role's inline policies, as created) both ways: every call
allowed, every granted action and resource used (or listed below with the reason).
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.client
import pytest

from tests.integration.local_stack import sandboxed_pipeline
from voucher_distributor.domain import standard_webhooks as sw
from voucher_distributor.domain.batches import (
    INCOMING_PREFIX,
    RECIPIENTS_PREFIXES,
    REQUESTS_PREFIX,
    RESULTS_PREFIX,
    WORK_PREFIX,
)
from voucher_distributor.domain.email_templates import TEMPLATES_PREFIX
from voucher_distributor.models.api import Scope
from voucher_distributor.settings import Settings
from voucher_distributor_cli.local.defaults import DEFAULT_TEMPLATE
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.local.run import _forget_process_caches as forget_process_caches
from voucher_distributor_cli.local.runner import FunctionSpec, LocalLambdas, MotoStack, SamTemplate
from voucher_distributor_cli.local.up import api_gateway_event
from voucher_distributor_cli.ops.api_clients import add_client
from voucher_distributor_cli.ops.target import Target
from voucher_distributor_cli.sandbox import FaultSettings, SandboxConfig, SandboxServer

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_SOURCES = ROOT / "layers" / "common" / "voucher_distributor"
TOKEN = "template-test-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"

#: Granted but not exercised by the local scenarios, with why the grant is still needed.
NOT_EXERCISED_LOCALLY: dict[tuple[str, str], str] = {
    # A throttled or paused send gives its claim back and hands the rest of its chunk on (a
    # chunk outlasting the send budget too): tests/e2e/test_email.py throttles on purpose.
    ("SendEmailsFunction", "dynamodb:DeleteItem"): "release a claim SES surely did not send",
    ("SendEmailsFunction", "sqs:SendMessage"): "the rest of a chunk, later",
}


@pytest.fixture(scope="module")
def template() -> SamTemplate:
    return SamTemplate.load(DEFAULT_TEMPLATE)


@pytest.fixture(scope="module")
def functions() -> dict[str, FunctionSpec]:
    """The functions as the created stack holds them (their specs outlive the stack)."""
    with MotoStack(DEFAULT_TEMPLATE) as stack:
        return stack.functions


# ---------------------------------------------------------------------------- static wiring


def test_every_handler_module_exists_and_imports(functions: dict[str, FunctionSpec]) -> None:
    # In a child process: importing the handlers here would leave their Powertools objects,
    # built without the functions' environment, in this process's module cache.
    handlers = {}
    for logical_id, spec in functions.items():
        path = spec.code_uri / f"{spec.module_name}.py"
        assert path.is_file(), f"{logical_id}: {path} missing"
        handlers[logical_id] = [str(path), spec.attribute]
    probe = (
        "import importlib.util, json, sys\n"
        "for lid, (path, attr) in json.loads(sys.argv[1]).items():\n"
        "    sys.path.insert(0, path.rsplit('/', 1)[0])\n"
        "    spec = importlib.util.spec_from_file_location('fn_' + lid, path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    assert callable(getattr(module, attr, None)), lid\n"
        "    sys.path.pop(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(handlers)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert done.returncode == 0, done.stderr


def test_functions_run_python312_on_arm64_with_tracing(template: SamTemplate) -> None:
    glob = template.globals_function
    assert glob["Runtime"] == "python3.12"
    assert glob["Architectures"] == ["arm64"]
    assert glob["Tracing"] == {"Ref": "Tracing"}
    tracing = template.parameter_declarations["Tracing"]
    assert tracing["AllowedValues"] == ["Active", "PassThrough"]
    assert tracing["Default"] == "PassThrough"
    env = glob["Environment"]["Variables"]
    assert {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_LOG_LEVEL",
        "POWERTOOLS_METRICS_NAMESPACE",
    } <= set(env)


@pytest.mark.parametrize(("tracing", "disabled"), [("PassThrough", "true"), ("Active", "false")])
def test_powertools_tracer_follows_the_tracing_parameter(tracing: str, disabled: str) -> None:
    """Without X-Ray the handlers must not build Powertools' Tracer (its SDK costs ~200 ms)."""
    with MotoStack(DEFAULT_TEMPLATE, parameters={"Tracing": tracing}) as stack:
        for logical_id in stack.functions:
            env = stack.function_environment(logical_id)
            # runtime.tracing_enabled() reads it (not imported here: it builds Powertools
            # objects from this process's environment).
            assert env["POWERTOOLS_TRACE_DISABLED"] == disabled, logical_id


def test_every_setting_is_set_and_nothing_else(functions: dict[str, FunctionSpec]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    required = {name.upper() for name, f in Settings.model_fields.items() if f.is_required()}
    # Production sets these too, though they have local defaults.
    deployed = required | {
        "EVENT_BUS_NAME",
        "CERTIVERSE_TOKEN_SECRET_ARN",
        "CALLBACK_SECRET_ARN",
        "DEFAULT_PARTNER_NAME",
        "DEFAULT_PROGRAM_NAME",
        "POLL_DEADLINE_SECONDS",
    }
    for logical_id, spec in functions.items():
        names = set(spec.environment)
        assert deployed <= names, f"{logical_id}: unset {sorted(deployed - names)}"
        libraries = ("POWERTOOLS_", "PYDANTIC_")  # read by the libraries themselves
        stray = {n for n in names - fields if not n.startswith(libraries)} - {"STAGE"}
        assert not stray, f"{logical_id}: variables no code reads: {sorted(stray)}"


def test_settings_validate_with_the_deployed_environment() -> None:
    with MotoStack(DEFAULT_TEMPLATE) as stack:
        for logical_id in stack.functions:
            env = stack.function_environment(logical_id)
            settings = Settings.from_environ(env)
            assert settings.certiverse_base_url.startswith("https://")
            assert (
                settings.certiverse_token_secret_arn == stack.resource("CertiverseTokenSecret").ref
            )


def test_an_existing_token_secret_is_used_instead_of_creating_one() -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-AbCdEf"
    with MotoStack(DEFAULT_TEMPLATE, parameters={"CertiverseTokenSecretArn": arn}) as stack:
        assert "CertiverseTokenSecret" not in stack.resources
        for logical_id in stack.functions:
            assert stack.function_environment(logical_id)["CERTIVERSE_TOKEN_SECRET_ARN"] == arn


def _queue_id(expression: Any) -> str:
    assert isinstance(expression, dict), expression
    assert "Fn::GetAtt" in expression, expression
    target = expression["Fn::GetAtt"]
    logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
    assert attribute == "Arn"
    return str(logical_id)


def test_every_source_queue_has_a_dlq_that_outlives_it(
    template: SamTemplate, functions: dict[str, FunctionSpec]
) -> None:
    resources = template.resources
    queues = {lid for lid, r in resources.items() if r.type == "AWS::SQS::Queue"}
    dlqs = set()
    # An EventBridge rule's target (EmailEventsFunction) keeps its DLQ on the target.
    for resource in resources.values():
        for event in (resource.properties.get("Events") or {}).values():
            dead = (event.get("Properties") or {}).get("DeadLetterConfig")
            if event.get("Type") == "EventBridgeRule" and dead:
                dlqs.add(_queue_id(dead["Arn"]))
    for spec in functions.values():
        for event in spec.sqs_events:
            source = resources[event.queue_id]
            redrive = source.properties.get("RedrivePolicy")
            assert redrive, f"{source.logical_id} has no RedrivePolicy"
            dlq = _queue_id(redrive["deadLetterTargetArn"])
            assert dlq in queues
            assert 1 <= int(redrive["maxReceiveCount"]) <= 10
            retention = int(resources[dlq].properties["MessageRetentionPeriod"])
            assert retention > int(source.properties["MessageRetentionPeriod"])
            assert retention == 1_209_600
            dlqs.add(dlq)
    sources = {e.queue_id for s in functions.values() for e in s.sqs_events}
    assert queues == sources | dlqs, "a queue is neither consumed nor a DLQ"
    for queue in queues:
        assert resources[queue].properties.get("SqsManagedSseEnabled") is True


def test_visibility_timeouts_are_at_least_six_function_timeouts(
    template: SamTemplate, functions: dict[str, FunctionSpec]
) -> None:
    resources = template.resources
    for logical_id, spec in functions.items():
        for event in spec.sqs_events:
            queue = resources[event.queue_id]
            visibility = int(queue.properties["VisibilityTimeout"])
            assert visibility >= 6 * spec.timeout_s, (logical_id, queue.logical_id)
            assert event.reports_batch_item_failures, logical_id


def test_s3_trigger_cannot_match_results_or_work_files(template: SamTemplate) -> None:
    bucket = template.resources["InboxBucket"].properties
    configs = bucket["NotificationConfiguration"]["QueueConfigurations"]
    assert configs
    by_queue = {config["Queue"]["Fn::GetAtt"][0]: config for config in configs}
    # Template uploads go to the template check only; the CSV trigger never sees templates/.
    assert set(by_queue) == {"UploadQueue", "TemplateQueue"}
    (template_rule,) = by_queue.pop("TemplateQueue")["Filter"]["S3Key"]["Rules"]
    assert template_rule == {"Name": "prefix", "Value": TEMPLATES_PREFIX}
    for config in by_queue.values():
        rules = {r["Name"]: r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        prefix = rules.get("prefix", "")
        assert prefix == INCOMING_PREFIX
        assert not TEMPLATES_PREFIX.startswith(prefix)
        for written in (RESULTS_PREFIX, WORK_PREFIX):
            assert not written.startswith(prefix)
            assert not prefix.startswith(written)
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    prefixes = {r.get("Prefix") for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert {INCOMING_PREFIX, WORK_PREFIX, RESULTS_PREFIX} <= prefixes


def test_the_tenant_parameters_and_what_the_ingest_role_may_read(template: SamTemplate) -> None:
    """Issue 24: ApprovalBySubmitter off by default; a recipientsS3Uri is read only where it
    may point; the API's stage has a default rate and burst; the assignments route exists."""
    declared = template.parameter_declarations
    assert declared["ApprovalBySubmitter"]["Default"] == "false"
    assert declared["ApiRateLimit"]["Default"] == 20
    assert declared["ApiBurstLimit"]["Default"] == 40
    stage = template.resources["HttpApi"].properties["DefaultRouteSettings"]
    assert stage == {"ThrottlingRateLimit": {"Ref": "ApiRateLimit"},
                     "ThrottlingBurstLimit": {"Ref": "ApiBurstLimit"}}  # fmt: skip
    (reads,) = [
        st
        for policy in template.resources["IngestRequestFunction"].properties["Policies"]
        for st in policy["Statement"]
        if "s3:GetObject" in st["Action"]
    ]
    prefixes = {str(r["Fn::Sub"]).rsplit("}", 1)[-1] for r in reads["Resource"]}
    assert prefixes == {f"/{p}*" for p in RECIPIENTS_PREFIXES}
    routes = {
        e["Properties"]["Path"]
        for e in template.resources["ApiFunction"].properties["Events"].values()
    }
    assert "/v1/distributions/{batchId}/assignments" in routes
    rules = {r.get("Prefix") for r in template.resources["InboxBucket"].properties[
        "LifecycleConfiguration"]["Rules"]}  # fmt: skip
    assert REQUESTS_PREFIX in rules


def test_certiverse_concurrency_is_capped(template: SamTemplate) -> None:
    resources = template.resources
    for logical_id in ("PurchaseFunction", "PollFunction"):
        for event in resources[logical_id].properties["Events"].values():
            scaling = event["Properties"]["ScalingConfig"]
            assert scaling == {"MaximumConcurrency": {"Ref": "CertiverseMaxConcurrency"}}
    assert template.parameter_declarations["CertiverseMaxConcurrency"]["MinValue"] == 2


def test_every_function_has_a_log_group_with_retention(
    template: SamTemplate, functions: dict[str, FunctionSpec]
) -> None:
    resources = template.resources
    groups = {
        json.dumps(r.properties["LogGroupName"]): r
        for r in resources.values()
        if r.type == "AWS::Logs::LogGroup"
    }
    for logical_id in functions:
        name = resources[logical_id].properties["FunctionName"]["Fn::Sub"]
        group = groups[json.dumps({"Fn::Sub": f"/aws/lambda/{name}"})]
        assert group.properties["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def _emitted_metrics() -> set[str]:
    names = set()
    for path in [*PIPELINE_SOURCES.rglob("*.py"), *(ROOT / "functions").rglob("*.py")]:
        for first_argument in re.findall(r"metrics\.count\(([^,)]*)", path.read_text()):
            names |= set(re.findall(r"\"(\w+)\"", first_argument))
        # Per reason class: the names are returned by a helper, then counted.
        names |= set(re.findall(r"return \"(RowsRejected\w+)\"", path.read_text()))
    return names


def test_alarms_and_dashboard_use_metrics_the_code_emits(template: SamTemplate) -> None:
    emitted = _emitted_metrics()
    assert {"ChunksFailed", "CertiverseUnauthorized", "RowsReceived"} <= emitted
    resources = template.resources
    alarms = [r for r in resources.values() if r.type == "AWS::CloudWatch::Alarm"]
    custom = [a for a in alarms if "VoucherDistributor" in json.dumps(a.properties)]
    alarmed = {
        name
        for a in custom
        for name in (
            [a.properties["MetricName"]]
            if "MetricName" in a.properties
            # Metric math (the e-mail bounce and complaint rates): the metrics it reads.
            else [m["MetricStat"]["Metric"]["MetricName"] for m in a.properties["Metrics"]
                  if "MetricStat" in m]
        )
    }  # fmt: skip
    assert alarmed <= emitted
    assert {"EmailsSent", "EmailsBounced", "EmailsComplained", "EmailSendingPaused"} <= alarmed
    alarmed_queues = {
        a.properties["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in alarms
        if a.properties.get("Namespace") == "AWS/SQS"
    }
    dlqs = {lid for lid in resources if lid.endswith("DeadLetterQueue")}
    assert dlqs | {"PollQueue"} == alarmed_queues
    for alarm in alarms:
        assert alarm.properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    body = json.dumps(resources["Dashboard"].properties["DashboardBody"])
    shown = set(re.findall(r'VoucherDistributor/\$\{Stage\}\\", \\"(\w+)', body))
    assert shown
    assert shown <= emitted
    assert {"RowsReceived", "RowsRejected", "PurchasesCreated", "PurchasesAdopted"} <= shown
    assert {"PollAttempts", "VouchersAssigned", "ChunksFailed", "BatchDurationSeconds"} <= shown
    assert {"RowsRejectedInvalid", "RowsRejectedDuplicate", "RowsRejectedIneligible"} <= shown


# ---------------------------------------------------------------------------- least privilege


class CallRecorder:
    """Every AWS API call made while a function is being invoked, by function."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.calls: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        recorder = self
        invoke = LocalLambdas._invoke
        make_api_call = botocore.client.BaseClient._make_api_call

        def _invoke(lambdas: LocalLambdas, function_id: str, event: Any) -> Any:
            recorder.current = function_id
            forget_process_caches()  # each function is its own process in AWS: no shared caches
            try:
                return invoke(lambdas, function_id, event)
            finally:
                recorder.current = None

        def _make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if recorder.current is not None:
                service = client.meta.service_model.service_name
                recorder.calls[recorder.current].append((service, operation, dict(params)))
            return make_api_call(client, operation, params)

        monkeypatch.setattr(LocalLambdas, "_invoke", _invoke)
        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", _make_api_call)


def _required(
    stack: MotoStack, service: str, operation: str, p: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    """The IAM (action, resource ARN) pairs one API call needs."""
    account, region = stack.account_id, stack.region
    if service == "s3":
        obj = f"arn:aws:s3:::{p.get('Bucket')}/{p.get('Key')}"
        if operation in {"GetObject", "HeadObject"}:
            yield ("s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject"), obj
        elif operation in {
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
        }:
            yield "s3:PutObject", obj
        elif operation == "AbortMultipartUpload":
            yield "s3:AbortMultipartUpload", obj
        elif operation == "DeleteObject":
            yield "s3:DeleteObject", obj
        elif operation in {"ListObjectsV2", "ListObjects"}:  # IAM names it after the bucket
            yield "s3:ListBucket", f"arn:aws:s3:::{p.get('Bucket')}"
        elif operation == "ListObjectVersions":  # IAM names it after the bucket
            yield "s3:ListBucketVersions", f"arn:aws:s3:::{p.get('Bucket')}"
        else:
            yield f"s3:{operation}", f"arn:aws:s3:::{p.get('Bucket')}"
    elif service == "dynamodb":
        table = f"arn:aws:dynamodb:{region}:{account}:table/"
        if operation == "TransactWriteItems":
            verbs = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem"}  # fmt: skip
            for item in p["TransactItems"]:
                ((kind, body),) = item.items()
                yield f"dynamodb:{verbs[kind]}", table + body["TableName"]
        elif operation in {"BatchWriteItem", "BatchGetItem"}:
            for name in p["RequestItems"]:
                yield f"dynamodb:{operation}", table + name
        else:
            index = f"/index/{p['IndexName']}" if p.get("IndexName") else ""
            yield f"dynamodb:{operation}", table + p["TableName"] + index
    elif service == "sqs":
        arns = {url: r.attributes["Arn"] for url, r in _queues_by_url(stack).items()}
        action = "SendMessage" if operation in {"SendMessage", "SendMessageBatch"} else operation
        yield f"sqs:{action}", arns[p["QueueUrl"]]
    elif service == "secretsmanager":
        yield f"secretsmanager:{operation}", p["SecretId"]
    elif service == "events":
        for entry in p["Entries"]:
            bus = entry.get("EventBusName", "default")
            yield "events:PutEvents", f"arn:aws:events:{region}:{account}:event-bus/{bus}"
    elif service == "sns":
        yield f"sns:{operation}", p["TopicArn"]
    elif service == "sesv2" and operation == "SendEmail":
        # SES authorizes a send on the sending identity (the address, or its domain) and on
        # the configuration set it names.
        ses = f"arn:aws:ses:{region}:{account}:"
        sender = p["FromEmailAddress"]
        yield "ses:SendEmail", f"{ses}identity/{sender}"
        yield "ses:SendEmail", f"{ses}identity/{sender.rpartition('@')[2]}"
        if p.get("ConfigurationSetName"):
            yield "ses:SendEmail", f"{ses}configuration-set/{p['ConfigurationSetName']}"
    elif service == "sesv2":
        yield f"ses:{operation}", "*"
    elif service == "scheduler":
        group = p.get("GroupName") or "default"
        yield (
            f"scheduler:{operation}",
            f"arn:aws:scheduler:{region}:{account}:schedule/{group}/{p['Name']}",
        )
        if operation == "CreateSchedule":  # the role the schedule sends with is passed to it
            yield "iam:PassRole", p["Target"]["RoleArn"]
    else:
        yield f"{service}:{operation}", "*"


def _queues_by_url(stack: MotoStack) -> dict[str, Any]:
    return {r.ref: r for r in stack.resources.values() if r.type == "AWS::SQS::Queue"}


def _statements(stack: MotoStack, logical_id: str) -> list[dict[str, Any]]:
    # Explicit statements only: SAM policy templates and managed policies grant more.
    for policy in stack.template.resources[logical_id].properties["Policies"]:
        assert isinstance(policy, dict), logical_id
        assert "Statement" in policy, logical_id
    iam, role = stack.client("iam"), stack.resource(f"{logical_id}Role").ref
    statements = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # moto keeps a CloudFormation role's policy as a repr
            document = ast.literal_eval(document)
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            resources = statement["Resource"]
            statements.append(
                {
                    "Sid": statement.get("Sid"),
                    "Action": [actions] if isinstance(actions, str) else actions,
                    "Resource": [resources] if isinstance(resources, str) else resources,
                }
            )
    return statements


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


@contextlib.contextmanager
def _webhook_receiver() -> Iterator[str]:
    """A callback receiver on loopback that answers its first request 503, then 204."""
    answered: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answered.append(503 if not answered else 204)
            self.send_response(answered[-1])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()


def _scenarios(pipeline: LocalPipeline, sandbox: SandboxServer, tmp_path: Path) -> None:
    """Every path that touches AWS differently: what the policies are measured against."""
    with _webhook_receiver() as hook:
        _scenarios_with(pipeline, sandbox, tmp_path, hook)


def _scenarios_with(
    pipeline: LocalPipeline, sandbox: SandboxServer, tmp_path: Path, hook: str
) -> None:

    def csv_file(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(batch: str | None) -> None:
        assert batch is not None
        pipeline.run_until_done(batch, timeout_s=120)

    # E-mail templates (CheckTemplateFunction): a default accepted, a broken upload answered
    # by its .error.json, then fixed (the answer removed); the sender reads the accepted one.
    s3 = pipeline.stack.client("s3")

    def upload_template(files: dict[str, str]) -> None:
        for name, text in files.items():
            s3.put_object(Bucket=pipeline.bucket, Key=f"templates/default/{name}", Body=text)
        pipeline.run_until_idle(timeout_s=60)

    upload_template({
        "subject.txt": "Your voucher for {{ program }}",
        "body.txt": "Hello {{ first_name }}: {{ voucher_code }}\n",
        "body.html": "<p>Hello {{ first_name }}: {{ voucher_code }}</p>\n",
    })  # fmt: skip
    upload_template({"body.txt": "Hello {{ frist_name }}\n"})
    upload_template({"body.txt": "Hi {{ first_name }}: {{ voucher_code }}\n"})
    # Codes ready within the purchase invocation's own check: it assigns and reports.
    team = csv_file(
        "team.csv",
        "email,first_name,program_name\r\n"
        f"ann@acme.example,Ann,{SPRING}\r\nbob@acme.example,Bob,{SPRING}\r\n"
        f"not-an-email,Bad,{SPRING}\r\nbounce@simulator.amazonses.com,Bo,{SPRING}\r\n",
    )
    run(pipeline.submit_csv(team, key="incoming/team/team.csv"))
    # A scheduled send (sendAt): the first e-mail message makes the batch's one-time schedule
    # (CreateSchedule, passing SendScheduleRole); the runner fires it on the local clock, and
    # the sending function lists the chunks (Query), queues their e-mails and deletes it.
    send_at = datetime.fromtimestamp(int(time.time()) + 8, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = pipeline.submit_request({"requestId": "template-later", "partnerName": PARTNER,
        "programName": SPRING, "sendAt": send_at,
        "recipients": [{"email": "lea@acme.example"}]})  # fmt: skip
    run(later)
    # The same object announced again: ingest finds the batch and stops.
    sqs = pipeline.stack.client("sqs")
    version = s3.head_object(Bucket=pipeline.bucket, Key="incoming/team/team.csv")["VersionId"]
    notification = {"Records": [{"eventSource": "aws:s3", "s3": {
        "bucket": {"name": pipeline.bucket},
        "object": {"key": "incoming/team/team.csv", "versionId": version}}}]}  # fmt: skip
    sqs.send_message(
        QueueUrl=pipeline.queue_url("UploadQueue"), MessageBody=json.dumps(notification)
    )
    pipeline.run_until_idle(timeout_s=60)
    # Unusable file; every row rejected (no purchase, straight to the report).
    run(pipeline.submit_csv(csv_file("empty.csv", "")))
    run(pipeline.submit_csv(csv_file("bad.csv", "email\r\nnope\r\n")))
    # A file that breaks after a full chunk was planned: the planned chunk is dropped.
    # (the 'ü' makes it UTF-8; the byte 0xFC beyond the first 256 KiB read is then damage)
    filler = "".join(f"p{n}@acme.example,Plain,{SPRING}\r\n" for n in range(6_000))
    broken = tmp_path / "broken.csv"
    broken.write_bytes(
        f"email,last_name,program_name\r\na@acme.example,Müller,{SPRING}\r\n{filler}".encode()
        + b"z@x.example,\xfc\r\n"
    )
    run(pipeline.submit_csv(broken, key="incoming/team/broken.csv"))
    # Slow code generation: the purchase hands over to the poll function. New people, from a
    # CSV the request names (under requests/: no upload batch of its own).
    s3.put_object(
        Bucket=pipeline.bucket, Key="requests/hr/request.csv",
        Body=f"email,program_name\r\ncarol@acme.example,{SPRING}\r\n".encode(),
    )  # fmt: skip
    sandbox.set_faults(FaultSettings(generation_delay_s=4))
    request = {
        "requestId": "template-req-1",
        "partnerName": PARTNER,
        "programName": SPRING,
        "recipientsS3Uri": f"s3://{pipeline.bucket}/requests/hr/request.csv",
    }
    # Its callback's receiver is down for the first attempt: the deliverer retries, records
    # and rewrites the summary.
    run(pipeline.submit_request({**request, "callbackUrl": hook}))
    # Failed generation, seen by the purchase's own check, then by a poll: the chunks fail and
    # give their people's claims back.
    sandbox.set_faults(FaultSettings(generation_failure_rate=1.0))
    run(
        pipeline.submit_csv(
            csv_file("fail.csv", f"email,program_name\r\nerin@acme.example,{SPRING}\r\n")
        )
    )
    sandbox.set_faults(FaultSettings(generation_failure_rate=1.0, generation_delay_s=4))
    run(pipeline.submit_request({"requestId": "template-req-5", "partnerName": PARTNER,
        "programName": SPRING, "recipients": [{"email": "frank@acme.example"}]}))  # fmt: skip
    sandbox.set_faults(FaultSettings())
    # The same people again, one asking for a new voucher: a reissue, and existing rows whose
    # codes the report reads from the earlier batch; the same by HR request.
    run(pipeline.submit_csv(csv_file("team.csv", "email,program_name,reissue\r\n"
        f"ann@acme.example,{SPRING},yes\r\nbob@acme.example,{SPRING},\r\n"),
        key="incoming/team/team.csv"))  # fmt: skip
    run(pipeline.submit_request({"requestId": "template-req-6", "partnerName": PARTNER,
        "programName": SPRING, "recipients": [{"email": "bob@acme.example", "reissue": True},
        {"email": "ann@acme.example"}]}))  # fmt: skip
    # Certiverse down during pre-flight: the rows fail; retry-failed links the retry to them.
    sandbox.set_faults(FaultSettings(error_503_rate=1.0, retry_after_s=0))
    down = pipeline.submit_csv(
        csv_file("down.csv", f"email,program_name\r\ngina@acme.example,{SPRING}\r\n")
    )
    run(down)
    # The same by HR request: each delivery sets its own message's visibility (RetryLater).
    down_request = pipeline.submit_request({"requestId": "template-down",
        "partnerName": PARTNER, "programName": SPRING,
        "recipients": [{"email": "hal@acme.example"}]})  # fmt: skip
    run(down_request)
    sandbox.set_faults(FaultSettings())
    run(pipeline.retry_failed(down))
    # Over ApprovalThreshold: one list is approved (handed out by the report function), the
    # other rejected (its claims given back, its rows reported rejected).
    # An HR request of 5 waits until its timeout rejects it (the report function looking again
    # meanwhile).
    # The approval goes through the HTTP API.
    api = _ApiCaller(pipeline)
    # The failed request retried over the API (POST …/retry): its retry file, linked.
    status, retried = api.call("POST", f"/v1/distributions/{down_request}/retry", b"")
    assert status == 202, retried
    run(retried["batchId"])
    for name, decision in (("approve.csv", "approved"), ("reject.csv", "rejected")):
        five = "".join(f"{name[0]}{n}@acme.example,{SPRING}\r\n" for n in range(5))
        batch = pipeline.submit_csv(csv_file(name, f"email,program_name\r\n{five}"))
        assert batch is not None
        pipeline.run_until_done(batch, timeout_s=120, stop_when_waiting=True)
        if decision == "approved":
            assert api.call("POST", f"/v1/distributions/{batch}/approve", b"{}")[0] == 200
        else:
            pipeline.decide(batch, decision, "not this week")
        run(batch)
    # The rest of the API: a JSON and a CSV distribution, status, results link, holdings.
    status, accepted = api.call("POST", "/v1/distributions", json.dumps({
        "requestId": "template-api-1", "programName": SPRING,
        "recipients": [{"email": "jill@acme.example"}]}).encode())  # fmt: skip
    assert status == 202, accepted
    run(accepted["batchId"])
    status, csv_accepted = api.call(
        "POST", "/v1/distributions?program=" + SPRING.replace(" ", "+"),
        b"email\r\nkim@acme.example\r\n", content_type="text/csv",
    )  # fmt: skip
    assert status == 202, csv_accepted
    run(csv_accepted["batchId"])
    assert api.call("GET", f"/v1/distributions/{accepted['batchId']}")[0] == 200
    assert api.call("GET", f"/v1/distributions/{accepted['batchId']}/results")[0] == 200
    assert api.call("GET", "/v1/holdings?email=jill%40acme.example")[0] == 200
    # A resend over the API (rows of a batch that mailed nobody): by address, and to a corrected
    # address (the holding moves); the sending function mails each.
    unmailed = pipeline.submit_request({"requestId": "template-resend", "partnerName": PARTNER,
        "programName": SPRING, "sendEmail": False,
        "recipients": [{"email": "rae@acme.example"}, {"email": "sam@acme.exmaple"}]})  # fmt: skip
    assert unmailed is not None
    run(unmailed)
    resend = f"/v1/distributions/{unmailed}/resend"
    assert api.call("POST", resend, b'{"email": "rae@acme.example"}')[0] == 202
    assert api.call("POST", resend, b'{"row": 2, "to": "sam@acme.example"}')[0] == 202
    pipeline.run_until_idle(timeout_s=60)
    run(pipeline.submit_request({"requestId": "template-wait", "partnerName": PARTNER,
        "programName": SPRING, "callbackUrl": hook,
        "recipients": [{"email": f"t{n}@acme.example"} for n in range(5)]}))  # fmt: skip
    # A chunk whose purchase lease another worker holds: the purchase function sends the
    # message again to its own queue ("busy"), and buys once the lease is over.
    leased = pipeline.submit_csv(
        csv_file("leased.csv", f"email,program_name\r\nlee@acme.example,{SPRING}\r\n")
    )
    lambdas = pipeline.lambdas
    assert lambdas is not None
    (ingest,) = [s for s in lambdas.event_sources if s.function_id == "IngestCsvFunction"]
    while pipeline.ledger.chunks.get_chunk(leased, 0) is None:  # the ingest alone
        lambdas._deliver(ingest, lambdas._receive(ingest))
    assert pipeline.ledger.chunks.acquire_purchase_lease(
        leased, 0, owner="another-worker", now=int(time.time()), lease_seconds=2
    )
    run(leased)
    # Dry runs: by metadata, under incoming/dry-run/, and by request; nothing bought.
    dry = csv_file("dry.csv", f"email,program_name\r\nann@acme.example,{SPRING}\r\n"
        f"hank@acme.example,{SPRING}\r\n")  # fmt: skip
    run(pipeline.submit_csv(dry, metadata={"mode": "dry-run"}))
    run(pipeline.submit_csv(dry, key="incoming/dry-run/dry.csv"))
    run(pipeline.submit_request({"requestId": "template-dry", "partnerName": PARTNER,
        "programName": SPRING, "dryRun": True,
        "recipients": [{"email": "ivy@acme.example"}]}))  # fmt: skip
    run(pipeline.submit_request({**request, "requestId": "template-req-2", "callbackUrl": hook,
        "recipientsS3Uri": f"s3://{pipeline.bucket}/incoming/missing.csv"}))  # fmt: skip
    run(pipeline.submit_request({**request, "requestId": "template-req-4",
        "recipientsS3Uri": f"s3://{pipeline.bucket}/incoming/team/broken.csv"}))  # fmt: skip
    run(pipeline.submit_request({"requestId": "template-req-3", "partnerName": PARTNER,
        "programName": SPRING, "recipients": [{"email": "nope"}]}))  # fmt: skip
    pipeline.submit_request("this is not json")
    pipeline.submit_request(request)  # a repeat: the same batch, nothing new
    pipeline.run_until_idle(timeout_s=60)
    # After the hand-out, the scheduled redemption sync (run now): one purchase's codes all
    # used (it settles: moved out of the open list), another code coming up to its expiry
    # (announced, its list written under results/), each batch's report and summary rewritten.
    vouchers = sandbox.vouchers()
    assert later is not None
    lea = [a.voucher_code for a in pipeline.ledger.assignments.iter_assignments(later)]
    first = next(v.voucher_purchase_code for v in vouchers if v.voucher_code not in lea)
    sandbox.update_vouchers(
        [v.voucher_code for v in vouchers if v.voucher_purchase_code == first], {"isUsed": True}
    )
    soon = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    others = [
        v.voucher_code
        for v in vouchers
        if v.voucher_purchase_code != first and v.voucher_code not in lea
    ]
    sandbox.update_vouchers(others[:1], {"expirationDateUtc": soon})
    # A code mailed and 3 days from its expiry: the sync reminds its holder (its names from the
    # chunk's outcomes, a claim checking the holding, SES).
    three = (datetime.now(UTC) + timedelta(days=2.9)).isoformat()
    sandbox.update_vouchers(lea, {"expirationDateUtc": three})
    pipeline.sync()
    pipeline.sync()


class _ApiCaller:
    """Signed requests to the API function, as API Gateway would hand them over."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline
        target = Target.local(pipeline.stack.endpoint_url)
        self.secret = add_client(target, "template", scopes=list(Scope))["secret"]

    def call(
        self, method: str, target: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, Any]:
        signed = sw.headers(self.secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
        headers = {"content-type": content_type, "host": "api.example", **signed}
        event = api_gateway_event(method, target, headers, body, "api.example")
        assert self.pipeline.lambdas is not None
        result = self.pipeline.lambdas.invoke("ApiFunction", event)
        return int(result["statusCode"]), json.loads(result["body"])


@pytest.mark.slow
def test_each_policy_grants_exactly_the_calls_its_function_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = CallRecorder()
    recorder.install(monkeypatch)
    with sandboxed_pipeline(
        tmp_path,
        SandboxConfig(token=TOKEN, generation_delay_s=0.3, seed=5),
        PARTNER,
        # The scenario's lists of 5 wait for approval; one nobody decides ends in ~11 s.
        tuning={
            "INITIAL_CHECK_SECONDS": "2",
            "APPROVAL_TIMEOUT_HOURS": "0.003",
            "INGEST_RETRY_DELAYS": "1",
        },
        parameters={"ApprovalThreshold": "4"},
        # Every assigned code is mailed (SendEmailsFunction, EmailEventsFunction and the
        # refresh of the results); the simulator's bounce makes an event of its own.
        email=True,
        mail_dir=tmp_path / "mail",
    ) as (sandbox, pipeline):
        _scenarios(pipeline, sandbox, tmp_path)
        stack = pipeline.stack
        problems = []
        for function_id in stack.functions:
            statements = _statements(stack, function_id)
            used: set[tuple[int, str, str]] = set()
            for service, operation, params in recorder.calls[function_id]:
                for action, arn in _required(stack, service, operation, params):
                    grants = [
                        (i, a, r)
                        for i, s in enumerate(statements)
                        for a in s["Action"]
                        for r in s["Resource"]
                        if _matches(a, action) and _matches(r, arn)
                    ]
                    if not grants:
                        problems.append(f"{function_id}: {action} on {arn} is not allowed")
                    used.update(grants)
            for i, statement in enumerate(statements):
                for action in statement["Action"]:
                    if (function_id, action) in NOT_EXERCISED_LOCALLY:
                        continue
                    for resource in statement["Resource"]:
                        if (i, action, resource) not in used:
                            problems.append(
                                f"{function_id}: {statement['Sid']} grants {action} on "
                                f"{resource}, which no call used"
                            )
        assert recorder.calls.keys() == stack.functions.keys()
        assert not problems, "\n".join(problems)


#: The operators' indexes (issue 23): their keys, and what each may project (never ALL: they
#: hold what their command shows).
OPERATOR_INDEXES = {
    "by-code": (["voucher_code"], "INCLUDE"),
    "by-program": (["program_name", "voucher_code"], "INCLUDE"),
    "batches-by-status": (["status", "created_at"], "KEYS_ONLY"),
    "chunks-by-state": (["state", "pk"], "INCLUDE"),
}


def test_the_operator_look_ups_have_sparse_narrow_indexes(template: SamTemplate) -> None:
    table = template.resources["LedgerTable"].properties
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    defined = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    for name, (keys, projection) in OPERATOR_INDEXES.items():
        index = indexes[name]
        assert [k["AttributeName"] for k in index["KeySchema"]] == keys, name
        assert all(k in defined for k in keys), name
        assert index["Projection"]["ProjectionType"] == projection, name
        included = index["Projection"].get("NonKeyAttributes", [])
        # Narrow: never the recipient's names, the rows file's contents or a lease.
        assert not {"first_name", "last_name", "extra", "lease_owner", "history"} & set(included)
    # Sparse by their keys: no item but the one kind carries both (checked by the ledger's
    # tests, tests/integration/test_lookups.py); a key every item has would make a scan.
    for name, (keys, _) in OPERATOR_INDEXES.items():
        assert keys[0] not in {"pk", "sk"}, name
