"""``template.yaml`` as a CloudFormation stack inside a loopback moto server.

The SAM transform is AWS's own (``samtranslator``); moto's CloudFormation creates the result,
resolving every intrinsic, condition and parameter, and makes the queues, buckets, tables,
roles and policies, log groups, topic, dashboard, functions (their configuration) and event-source
mappings. What this module still does, because moto's CloudFormation does not:

* **Function code**: ``CodeUri`` becomes a placeholder for the transform and an inline stub in
  moto; :class:`FunctionSpec` keeps the local directory. Layers are not attached (the library is
  importable in-process).
* **Event-source mappings** are created disabled (moto would run the functions in Docker);
  :class:`~.lambdas.LocalLambdas` delivers their messages in-process.
* **Secrets** (moto has no ``AWS::SecretsManager::Secret``): created first, from a prelude stack
  that resolves their properties, with ``GenerateSecretString`` or ``secret_values``; the stack
  then names them by ARN.
* **Refs moto answers with a Python object** (layer versions, event buses): spelled out.
* **Bucket versioning, S3 → SQS notifications, a table's TTL**: ignored by moto's
  CloudFormation, applied once the stack exists.
* **Not emulated**: queue, bucket and topic policies, alarms, SES's configuration set and its
  event destination (``local_ses`` plays SES's events), the HTTP API (``local up`` serves
  it on loopback) and Lambda permissions (API Gateway's or a schedule's right to invoke a
  function; the runner invokes it in-process); see :attr:`MotoStack.ignored`.

What this module needs resolved travels through the create as an SSM parameter holding JSON
(an "echo", which keeps the resource's Condition), so moto evaluates it like anything else.
moto's state is process-global: one stack per process, reset when it starts and stops.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.server import ThreadedMotoServer

from voucher_distributor_cli.local.runner.specs import (
    FunctionSpec,
    PhysicalResource,
    QueueCounts,
    ScheduleSpec,
    SqsEventSpec,
    StackError,
)
from voucher_distributor_cli.local.runner.template import (
    DEFAULT_REGION,
    DUMMY_CREDENTIALS,
    SamTemplate,
    _boto3_session,
)

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account: the ARNs it makes use it
_EMPTY_ZIP = "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="  # base64 of a zip archive with no entries
_LAYER_ARN = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:layer:${Name}:1"
_FUNCTION = "AWS::Lambda::Function"
_MAPPING = "AWS::Lambda::EventSourceMapping"
_SECRET = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type
_POLICIES = ("AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy")
#: The HTTP API is served by ``local up``'s loopback server (the same handler), not by moto; a
#: Lambda permission (API Gateway's or a schedule's right to invoke a function) neither: locally
#: the runner invokes the function in-process (``LocalLambdas.invoke``, ``run_scheduled``).
_HTTP_API = ("AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", "AWS::Lambda::Permission")
#: SES's configuration set and its event destination: moto's CloudFormation has neither, and
#: moto's SES publishes no events; locally the runner's SES (``local_ses``) records each send and
#: plays SES's events to the events function itself. The set's ``Ref`` is its name.
_SES = ("AWS::SES::ConfigurationSet", "AWS::SES::ConfigurationSetEventDestination")
_NOT_EMULATED = frozenset({*_POLICIES, *_HTTP_API, *_SES, "AWS::CloudWatch::Alarm"})
#: Properties moto's CloudFormation ignores that the pipeline relies on, applied here.
_FOLLOW_UP = {
    "AWS::S3::Bucket": ("VersioningConfiguration", "NotificationConfiguration"),
    "AWS::DynamoDB::Table": ("TimeToLiveSpecification",),
}


class MotoStack:
    """Starts a moto server on loopback and creates a SAM template's stack in it.

    Usage::

        with MotoStack("template.yaml", parameters={"Stage": "dev"}) as stack:
            url = stack.resource("RequestQueue").ref
            env = stack.function_environment("PurchaseFunction")
    """

    _lock = threading.Lock()
    _running: MotoStack | None = None

    def __init__(
        self,
        template: SamTemplate | str | Path,
        *,
        parameters: Mapping[str, Any] | None = None,
        stack_name: str = "voucher-distributor-local",
        secret_values: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
    ) -> None:
        self.template = (
            template if isinstance(template, SamTemplate) else SamTemplate.load(template)
        )
        self.stack_name = stack_name
        self.region = DEFAULT_REGION
        self.account_id = DEFAULT_ACCOUNT_ID
        self.parameters = {name: _text(value) for name, value in (parameters or {}).items()}
        unknown = sorted(set(self.parameters) - set(self.template.parameter_declarations))
        if unknown:  # CloudFormation refuses these; moto ignores them
            raise StackError(f"parameters not in the template: {', '.join(unknown)}")
        self.secret_values = dict(secret_values or {})
        self.translated = self.template.translate(self.parameters)
        self._host = host
        self._port = port
        self._quiet = quiet
        self._server: ThreadedMotoServer | None = None
        self._endpoint: str | None = None
        self._resources: dict[str, PhysicalResource] = {}
        self._ignored: dict[str, str] = {}
        #: The stack's ``Outputs``, resolved (once started).
        self.outputs: dict[str, str] = {}
        #: Every function of the stack: configuration, environment, SQS event sources.
        self.functions: dict[str, FunctionSpec] = {}
        self._clients: dict[str, Any] = {}

    def start(self) -> MotoStack:
        """Start the server and create the stack (then what moto leaves to us)."""
        with MotoStack._lock:
            if MotoStack._running is not None:
                raise StackError(
                    "another MotoStack is running in this process; moto's state is "
                    "process-global, so stop it first"
                )
            MotoStack._running = self
        try:
            if self._quiet:
                # werkzeug logs every request at INFO to stderr: noise around handler logs.
                logging.getLogger("werkzeug").setLevel(logging.WARNING)
            self._server = ThreadedMotoServer(
                ip_address=self._host, port=self._port, verbose=not self._quiet
            )
            self._server.start()
            host, port = self._server.get_host_and_port()
            self._endpoint = f"http://{host}:{port}"
            self._reset_moto()
            self._create()
        except (ClientError, BotoCoreError) as exc:
            self.stop()
            raise StackError(f"cannot create the local stack {self.stack_name}: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Reset moto's state and stop the server; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            try:
                self._reset_moto()
            except OSError:  # pragma: no cover - the server is going away anyway
                log.debug("moto reset at stop failed", exc_info=True)
            # socketserver notices a shutdown request only between polls (every 0.5 s): a
            # throwaway connection wakes it at once, which keeps stack teardown fast.
            waker = threading.Timer(0.01, _wake, args=(server.get_host_and_port(),))
            waker.start()
            server.stop()
            waker.join()
        self._clients.clear()
        with MotoStack._lock:
            if MotoStack._running is self:
                MotoStack._running = None

    def __enter__(self) -> MotoStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _reset_moto(self) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback endpoint
            f"{self.endpoint_url}/moto-api/reset", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running moto server."""
        if self._endpoint is None:
            raise StackError("the stack is not started")
        return self._endpoint

    @property
    def resources(self) -> dict[str, PhysicalResource]:
        """Every resource the stack created (moto's and this module's)."""
        return dict(self._resources)

    @property
    def ignored(self) -> dict[str, str]:
        """Logical id → type of the resources the local stack does not emulate."""
        return dict(self._ignored)

    def resource(self, logical_id: str) -> PhysicalResource:
        """Physical info of one resource (KeyError explains ignored/unknown ids)."""
        if logical_id in self._resources:
            return self._resources[logical_id]
        if logical_id in self._ignored:
            raise KeyError(
                f"{logical_id} ({self._ignored[logical_id]}) is not emulated by the local stack"
            )
        raise KeyError(f"no resource {logical_id!r} in the stack")

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at the moto server (cached per service)."""
        if service not in self._clients:
            self._clients[service] = _boto3_session().client(
                service,
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=Config(retries={"max_attempts": 2, "mode": "standard"}),
            )
        return self._clients[service]

    def aws_environment(self) -> dict[str, str]:
        """Env vars that make plain ``boto3.client(...)`` calls talk to this stack (boto3 ≥ 1.28
        reads ``AWS_ENDPOINT_URL``; drop ``AWS_PROFILE``: an unknown profile fails first)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def function_name(self, logical_id: str) -> str:
        """The function's name in the stack."""
        return self.resource(logical_id).ref

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The function's ``Environment.Variables`` as the stack resolved them."""
        try:
            return dict(self.functions[logical_id].environment)
        except KeyError:
            raise KeyError(f"no function {logical_id!r} in the stack") from None

    def queue_url_for_arn(self, arn: str) -> str:
        """The URL of a stack queue given its ARN (how event sources name queues)."""
        return self.resource(self._queue_id(arn)).ref

    def queues(self) -> dict[str, str]:
        """Logical id → URL of every queue of the stack."""
        return {
            logical_id: resource.ref
            for logical_id, resource in self._resources.items()
            if resource.type == "AWS::SQS::Queue"
        }

    def queue_counts(self, queue_url: str) -> QueueCounts:
        """Visible / in-flight / delayed message counts of one queue."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return QueueCounts(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def _queue_id(self, arn: str) -> str:
        for logical_id, resource in self._resources.items():
            if resource.type == "AWS::SQS::Queue" and resource.attributes.get("Arn") == arn:
                return logical_id
        raise KeyError(f"no queue with ARN {arn} in the local stack")

    def _create(self) -> None:
        secrets = self._create_secrets()
        self._resources.update(secrets)
        stack = self._create_stack(self.stack_name, self._for_moto(self.translated, secrets))
        cfn = self.client("cloudformation")
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=self.stack_name):
            for summary in page["StackResourceSummaries"]:
                lid, kind = summary["LogicalResourceId"], summary["ResourceType"]
                written = self.translated["Resources"].get(lid, {}).get("Type")
                if kind == written and summary.get("PhysicalResourceId"):
                    self._resources[lid] = self._physical(lid, kind, summary["PhysicalResourceId"])
        for lid, properties in self._echoes(self.stack_name).items():
            kind = self.translated["Resources"][lid]["Type"]
            if kind in _NOT_EMULATED:
                self._ignored[lid] = kind
            elif "PhysicalId" in properties:
                self._resources[lid] = self._physical(lid, kind, str(properties["PhysicalId"]))
            else:
                self._follow_up(lid, properties)
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        self.functions = self._read_functions()
        if self._ignored:
            log.info(
                "local stack does not emulate: %s",
                ", ".join(f"{k} ({v})" for k, v in self._ignored.items()),
            )

    def _create_stack(self, name: str, template: Mapping[str, Any]) -> dict[str, Any]:
        cfn = self.client("cloudformation")
        cfn.create_stack(
            StackName=name,
            # moto reads a body as YAML (pure Python: ~0.25 s here) before JSON; a leading tab,
            # which JSON allows and YAML rejects at once, skips that attempt.
            TemplateBody="\t" + json.dumps(template, separators=(",", ":")),
            Parameters=[
                {"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()
            ],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise StackError(f"{name}: {stack['StackStatus']} {stack.get('StackStatusReason')}")
        return dict(stack)

    def _create_secrets(self) -> dict[str, PhysicalResource]:
        """The secrets, before the stack (a prelude stack resolves their properties): the stack
        then names them by ARN in environments, policies and outputs from the start."""
        written = {k: r for k, r in self.translated["Resources"].items() if r["Type"] == _SECRET}
        if not written:
            return {}
        prelude = f"{self.stack_name}-secrets"
        template = {k: v for k, v in self.translated.items() if k in {"Parameters", "Conditions"}}
        template["Resources"] = {
            lid: self._echo(prelude, lid, resource, resource.get("Properties") or {})
            for lid, resource in written.items()
        }
        self._create_stack(prelude, template)
        created = {lid: self._create_secret(lid, p) for lid, p in self._echoes(prelude).items()}
        self.client("cloudformation").delete_stack(StackName=prelude)
        return created

    def _for_moto(
        self, translated: Mapping[str, Any], secrets: Mapping[str, PhysicalResource]
    ) -> dict[str, Any]:
        """The translated template with what moto cannot create replaced (module docstring)."""
        template = copy.deepcopy(dict(translated))
        resources: dict[str, Any] = template["Resources"]
        refs: dict[str, Any] = {lid: secret.ref for lid, secret in secrets.items()}
        for lid, resource in list(resources.items()):
            kind, props = resource["Type"], resource.setdefault("Properties", {})
            if kind == _FUNCTION:
                props["Code"] = {"ZipFile": "# runs in-process: voucher_distributor_cli.local"}
                props.pop("Layers", None)
            elif kind == _SECRET:
                del resources[lid]  # created above, or its Condition is false
            elif kind == _MAPPING:
                props["Enabled"] = False
            elif kind in {"AWS::Events::EventBus", "AWS::SES::ConfigurationSet"}:
                # A bus: moto's Ref is a Python object; a configuration set: not created here.
                refs[lid] = props["Name"]
            elif kind == "AWS::Lambda::LayerVersion":
                props["Content"] = {"ZipFile": _EMPTY_ZIP}
                refs[lid] = {"Fn::Sub": [_LAYER_ARN, {"Name": props["LayerName"]}]}
            if kind in _NOT_EMULATED:
                resources[lid] = self._echo(self.stack_name, lid, resource, {})
            elif kind in _FOLLOW_UP or (lid in refs and kind != _SECRET):
                wanted = {k: props[k] for k in _FOLLOW_UP.get(kind, ()) if k in props}
                wanted = {"PhysicalId": refs[lid]} if lid in refs else wanted
                resources[f"{lid}LocalEcho"] = self._echo(self.stack_name, lid, resource, wanted)
        return dict(_replace_refs(template, refs))

    @staticmethod
    def _echo(stack: str, lid: str, resource: Mapping[str, Any], value: Any) -> dict[str, Any]:
        """An SSM parameter ``/<stack>/local/<lid>`` holding ``value`` as moto resolves it."""
        name, text = f"/{stack}/local/{lid}", {"Fn::ToJsonString": value} if value else "{}"
        condition = {"Condition": resource["Condition"]} if "Condition" in resource else {}
        props = {"Name": name, "Type": "String", "Value": text}
        return {"Type": "AWS::SSM::Parameter", "Properties": props, **condition}

    def _echoes(self, stack: str) -> dict[str, dict[str, Any]]:
        """Logical id → resolved value of every echo of ``stack`` whose Condition held."""
        found: dict[str, dict[str, Any]] = {}
        pages = self.client("ssm").get_paginator("get_parameters_by_path")
        for page in pages.paginate(Path=f"/{stack}/local"):
            for parameter in page["Parameters"]:
                found[parameter["Name"].rsplit("/", 1)[1]] = json.loads(parameter["Value"])
        return found

    def _physical(self, lid: str, kind: str, ref: str) -> PhysicalResource:
        arn = f"{self.region}:{self.account_id}"
        attributes: dict[str, str] = {}
        if kind == "AWS::SQS::Queue":  # moto's URLs and ARNs both end <account>/<name>
            name = ref.rsplit("/", 1)[1]
            attributes = {"Arn": f"arn:aws:sqs:{arn}:{name}", "QueueName": name, "QueueUrl": ref}
        elif kind == "AWS::DynamoDB::Table":
            table = self.client("dynamodb").describe_table(TableName=ref)["Table"]
            attributes = {"Arn": table["TableArn"]}
            if table.get("LatestStreamArn"):
                attributes["StreamArn"] = table["LatestStreamArn"]
        elif kind == "AWS::S3::Bucket":
            attributes = {"Arn": f"arn:aws:s3:::{ref}", "DomainName": f"{ref}.s3.amazonaws.com"}
        elif kind == _FUNCTION:
            attributes = {"Arn": f"arn:aws:lambda:{arn}:function:{ref}"}
        elif kind == "AWS::Events::EventBus":
            attributes = {"Arn": f"arn:aws:events:{arn}:event-bus/{ref}", "Name": ref}
        elif kind == "AWS::IAM::Role":
            attributes = {"Arn": f"arn:aws:iam::{self.account_id}:role/{ref}"}
        return PhysicalResource(lid, kind, ref, attributes)

    def _create_secret(self, lid: str, props: Mapping[str, Any]) -> PhysicalResource:
        request: dict[str, Any] = {"Name": str(props.get("Name") or f"{self.stack_name}-{lid}")}
        if props.get("Description"):
            request["Description"] = str(props["Description"])
        value = self.secret_values.get(lid, props.get("SecretString"))
        if value is None and "GenerateSecretString" in props:
            value = self._generated_secret(props["GenerateSecretString"])
        if value is not None:  # else, like a deployed secret nobody has filled in, no value
            request["SecretString"] = str(value)
        arn = self.client("secretsmanager").create_secret(**request)["ARN"]
        return PhysicalResource(lid, _SECRET, arn, {"Id": arn})

    def _generated_secret(self, spec: Mapping[str, Any]) -> str:
        """What CloudFormation stores for ``GenerateSecretString`` (moto makes the password)."""
        options = dict(spec)  # the rest are GetRandomPassword's own options
        template, key = (
            options.pop("SecretStringTemplate", None),
            options.pop("GenerateStringKey", None),
        )
        answer = self.client("secretsmanager").get_random_password(**options)
        password = str(answer["RandomPassword"])
        if template is None or key is None:
            return password
        return json.dumps({**json.loads(str(template)), str(key): password})

    def _follow_up(self, lid: str, props: Mapping[str, Any]) -> None:
        """Apply the properties moto's CloudFormation ignored (``_FOLLOW_UP``)."""
        name = self.resource(lid).ref
        if "VersioningConfiguration" in props:
            versioning = {"Status": props["VersioningConfiguration"]["Status"]}
            self.client("s3").put_bucket_versioning(Bucket=name, VersioningConfiguration=versioning)
        queues = (props.get("NotificationConfiguration") or {}).get("QueueConfigurations") or []
        if queues:  # moto sends each queue an s3:TestEvent as soon as this is put
            self.client("s3").put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration={
                    "QueueConfigurations": [_queue_notification(q) for q in queues]
                },
            )
        ttl = props.get("TimeToLiveSpecification") or {}
        if _text(ttl.get("Enabled", False)) == "true":
            self.client("dynamodb").update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )

    def _read_functions(self) -> dict[str, FunctionSpec]:
        """Every function's configuration and SQS event sources, from moto's Lambda."""
        lam = self.client("lambda")
        by_name = {r.ref: lid for lid, r in self._resources.items() if r.type == _FUNCTION}
        events: dict[str, list[SqsEventSpec]] = {lid: [] for lid in by_name.values()}
        written = self.translated["Resources"]
        by_uuid = {r.ref: lid for lid, r in self._resources.items() if r.type == _MAPPING}
        for esm in lam.list_event_source_mappings()["EventSourceMappings"]:
            lid = by_uuid[esm["UUID"]]
            function_id = by_name[esm["FunctionArn"].rsplit(":", 1)[1]]
            events[function_id].append(
                SqsEventSpec(
                    name=lid,
                    queue=esm["EventSourceArn"],
                    queue_id=self._queue_id(esm["EventSourceArn"]),
                    batch_size=int(esm.get("BatchSize", 10)),
                    function_response_types=tuple(esm.get("FunctionResponseTypes") or ()),
                    maximum_batching_window_s=int(esm.get("MaximumBatchingWindowInSeconds") or 0),
                    enabled=written[lid]["Properties"].get("Enabled", True) is not False,
                )
            )
        schedules = self._read_schedules(by_name)
        specs: dict[str, FunctionSpec] = {}
        for page in lam.get_paginator("list_functions").paginate():
            for config in page["Functions"]:
                lid = by_name[config["FunctionName"]]
                variables = (config.get("Environment") or {}).get("Variables") or {}
                env = {name: _text(value) for name, value in variables.items()}
                specs[lid] = FunctionSpec(
                    logical_id=lid,
                    code_uri=self.template.code_path(
                        self.translated["Resources"][lid]["Properties"]["Code"]
                    ),
                    handler=config["Handler"],
                    runtime=config.get("Runtime"),
                    timeout_s=int(config["Timeout"]),
                    memory_mb=int(config["MemorySize"]),
                    function_name=config["FunctionName"],
                    environment=env,
                    sqs_events=tuple(events[lid]),
                    schedules=tuple(schedules.get(lid, ())),
                )
        return {lid: specs[lid] for lid in self.translated["Resources"] if lid in specs}

    def _read_schedules(self, by_name: Mapping[str, str]) -> dict[str, list[ScheduleSpec]]:
        """Each function's scheduled EventBridge rules, from the created stack's rules."""
        events = self.client("events")
        found: dict[str, list[ScheduleSpec]] = {}
        for resource in self._resources.values():
            if resource.type != "AWS::Events::Rule":
                continue
            rule = events.describe_rule(Name=resource.ref)
            expression = rule.get("ScheduleExpression")
            if not expression:
                continue
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                function_id = by_name.get(str(target["Arn"]).rsplit(":", 1)[-1])
                if function_id is not None:
                    found.setdefault(function_id, []).append(ScheduleSpec(rule["Name"], expression))
        return found


def _replace_refs(value: Any, replacements: Mapping[str, Any]) -> Any:
    """``value`` with every ``{"Ref": id}`` of a key of ``replacements`` replaced."""
    if isinstance(value, list):
        return [_replace_refs(item, replacements) for item in value]
    if isinstance(value, dict):
        if len(value) == 1 and value.get("Ref") in replacements:
            return replacements[value["Ref"]]
        return {key: _replace_refs(item, replacements) for key, item in value.items()}
    return value


def _queue_notification(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A template ``QueueConfigurations`` entry in the S3 API's shape."""
    config: dict[str, Any] = {"QueueArn": entry["Queue"], "Events": [entry["Event"]]}
    rules = ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
    if rules:
        config["Filter"] = {
            "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
        }
    return config


def _text(value: Any) -> str:
    """A parameter or environment value as CloudFormation and Lambda hold it: a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def _wake(address: tuple[str, int]) -> None:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
        pass


def stack_queue_summary(stack: MotoStack, queue_urls: Iterable[str] | None = None) -> str:
    """One line per queue that still holds messages (for progress and timeout messages)."""
    names = {url: lid for lid, url in stack.queues().items()}
    lines = []
    for url in queue_urls if queue_urls is not None else names:
        counts = stack.queue_counts(url)
        if counts.total:
            lines.append(f"{names.get(url, url)}: {counts}")
    return "; ".join(lines)
