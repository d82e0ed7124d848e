"""A CloudFormation-like stack built from ``template.yaml`` inside a loopback moto server.

Why a server and not ``mock_aws``: handlers run unmodified and create plain ``boto3`` clients;
pointing them at a real HTTP endpoint (``AWS_ENDPOINT_URL``) is the only way to emulate AWS for
them without patching their code, and it also lets other processes (the CLI, ``aws`` with
``--endpoint-url``) look at the same state while a run is in progress.

Only the resource types the pipeline's data path needs are created (queues, queue policies,
buckets with their notifications, tables, secrets, event buses). Functions and layers get
physical values (name, ARN) so expressions that mention them resolve, but nothing is deployed;
everything else is listed in :attr:`MotoStack.ignored`.

moto keeps its state in process-global backends, so one process can run one stack at a time;
the stack resets that state when it starts and when it stops.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import socket
import string
import threading
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.server import ThreadedMotoServer

from voucher_distributor_cli.local.runner.template import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    FunctionSpec,
    Resolver,
    SamTemplate,
    TemplateError,
    TemplateResource,
    UnresolvedReferenceError,
    env_value,
)

__all__ = [
    "DUMMY_CREDENTIALS",
    "MotoStack",
    "PhysicalResource",
    "QueueCounts",
    "StackError",
    "stack_queue_summary",
]

log = logging.getLogger(__name__)

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_SESSION_TOKEN": "testing",
}


class StackError(RuntimeError):
    """The local stack could not be started or a resource could not be created."""


@dataclass(frozen=True)
class PhysicalResource:
    """What exists for one logical id: its ``Ref`` value and ``Fn::GetAtt`` attributes.

    ``created`` is False for resources that only have physical *values* (functions, layers):
    they can be referred to, but nothing was made in moto.
    """

    logical_id: str
    type: str
    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    created: bool = True

    def get_att(self, attribute: str) -> str:
        """One ``Fn::GetAtt`` attribute, with a clear error for an unsupported one."""
        try:
            return self.attributes[attribute]
        except KeyError:
            raise StackError(
                f"{self.logical_id} ({self.type}) has no attribute {attribute!r} locally; "
                f"known: {sorted(self.attributes)}"
            ) from None


@dataclass(frozen=True)
class QueueCounts:
    """``GetQueueAttributes`` message counts of one queue."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Messages the queue still holds in any state."""
        return self.visible + self.in_flight + self.delayed

    def __str__(self) -> str:
        return f"{self.visible} visible, {self.in_flight} in flight, {self.delayed} delayed"


_Creator = Callable[["MotoStack", str, dict[str, Any]], PhysicalResource]

# Resource types that get physical values without being created.
_VIRTUAL_TYPES = frozenset(
    {
        "AWS::Serverless::Function",
        "AWS::Lambda::Function",
        "AWS::Serverless::LayerVersion",
        "AWS::Lambda::LayerVersion",
    }
)


class MotoStack:
    """Starts a moto server on loopback and creates a template's resources in it.

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
        imports: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
    ) -> None:
        self.template = (
            template if isinstance(template, SamTemplate) else SamTemplate.load(template)
        )
        self.stack_name = stack_name
        self.region = DEFAULT_REGION
        self.account_id = DEFAULT_ACCOUNT_ID  # moto's default account, used in the ARNs it makes
        self.secret_values = dict(secret_values or {})
        self.resolver: Resolver = self.template.resolver(
            parameters=parameters,
            stack_name=stack_name,
            region=self.region,
            account_id=self.account_id,
            physical=self,
            imports=imports,
        )
        self.parameters = dict(self.resolver.parameters)
        self._host = host
        self._port = port
        self._quiet = quiet
        self._server: ThreadedMotoServer | None = None
        self._endpoint: str | None = None
        self._resources: dict[str, PhysicalResource] = {}
        self._ignored: dict[str, str] = {}
        self._pending_notifications: list[tuple[str, dict[str, Any]]] = []
        self._clients: dict[str, Any] = {}
        self._functions: dict[str, FunctionSpec] | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> MotoStack:
        """Start the server and create every emulated resource (dependencies first)."""
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
            self._create_all()
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _reset_moto(self) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback endpoint
            f"{self.endpoint_url}/moto-api/reset", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    # ---------------------------------------------------------------- access

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running moto server."""
        if self._endpoint is None:
            raise StackError("the stack is not started")
        return self._endpoint

    @property
    def resources(self) -> dict[str, PhysicalResource]:
        """Every resource with physical values (created ones and functions/layers)."""
        return dict(self._resources)

    @property
    def ignored(self) -> dict[str, str]:
        """Logical id → type of the resources this emulation does not create.

        Functions and layers are listed here too, though :meth:`resource` still gives their
        names and ARNs (nothing is deployed: :class:`LocalLambdas` runs their code in-process).
        """
        return dict(self._ignored)

    def resource(self, logical_id: str) -> PhysicalResource:
        """Physical info of one resource (KeyError explains ignored/unknown ids)."""
        if logical_id in self._resources:
            return self._resources[logical_id]
        if logical_id in self._ignored:
            raise KeyError(
                f"{logical_id} ({self._ignored[logical_id]}) is not emulated by the local stack"
            )
        raise KeyError(f"no resource {logical_id!r} in the template")

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
        """Env vars that make plain ``boto3.client(...)`` calls talk to this stack.

        boto3 ≥ 1.28 reads ``AWS_ENDPOINT_URL``. A process should also drop ``AWS_PROFILE``
        (a profile that does not exist locally makes boto3 fail before it sends anything).
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def resolve(self, value: Any) -> Any:
        """Evaluate a template expression against this stack's parameters and resources."""
        return self.resolver.resolve(value)

    @property
    def functions(self) -> dict[str, FunctionSpec]:
        """The template's serverless functions (Globals merged, parameters applied)."""
        if self._functions is None:
            self._functions = self.template.functions(self.resolver)
        return self._functions

    def function_name(self, logical_id: str) -> str:
        """The function's name: its FunctionName, else ``<stack>-<LogicalId>``."""
        return self.resource(logical_id).ref

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The function's ``Environment.Variables`` (Globals merged), resolved to strings."""
        try:
            spec = self.functions[logical_id]
        except KeyError:
            raise KeyError(f"no serverless function {logical_id!r} in the template") from None
        env: dict[str, str] = {}
        for name, expression in spec.environment.items():
            try:
                env[name] = env_value(self.resolve(expression))
            except UnresolvedReferenceError as exc:
                kind = self._ignored.get(exc.logical_id, "unknown")
                raise StackError(
                    f"{logical_id}: environment variable {name} refers to {exc.logical_id} "
                    f"({kind}), which the local stack does not provide"
                ) from exc
        return env

    def queue_url_for_arn(self, arn: str) -> str:
        """The URL of a stack queue given its ARN (how event sources name queues)."""
        for resource in self._resources.values():
            if resource.type == "AWS::SQS::Queue" and resource.attributes.get("Arn") == arn:
                return resource.ref
        raise KeyError(f"no queue with ARN {arn} in the local stack")

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

    # ---------------------------------------------------------------- PhysicalValues

    def ref(self, logical_id: str) -> str | None:
        """``Ref`` of a resource, for the resolver."""
        resource = self._resources.get(logical_id)
        return None if resource is None else resource.ref

    def get_att(self, logical_id: str, attribute: str) -> str | None:
        """``Fn::GetAtt`` of a resource, for the resolver."""
        resource = self._resources.get(logical_id)
        return None if resource is None else resource.get_att(attribute)

    # ---------------------------------------------------------------- creation

    def _create_all(self) -> None:
        resources = self.template.resources
        active: dict[str, TemplateResource] = {}
        for logical_id, resource in resources.items():
            if resource.condition is not None and not self.resolver.condition(resource.condition):
                log.debug("skipping %s: condition %s is false", logical_id, resource.condition)
                continue
            active[logical_id] = resource
        for logical_id, resource in active.items():
            if resource.type in _VIRTUAL_TYPES:
                self._resources[logical_id] = self._virtual(resource)
            if resource.type not in _CREATORS:
                self._ignored[logical_id] = resource.type
        emulated = {lid: res for lid, res in active.items() if res.type in _CREATORS}
        for logical_id in _creation_order(emulated):
            resource = emulated[logical_id]
            try:
                properties = self.resolve(resource.properties)
                self._resources[logical_id] = _CREATORS[resource.type](self, logical_id, properties)
            except UnresolvedReferenceError as exc:
                kind = self._ignored.get(exc.logical_id, "not in the template")
                raise StackError(
                    f"cannot create {logical_id} ({resource.type}): it refers to "
                    f"{exc.logical_id} ({kind}), which the local stack does not provide"
                ) from exc
            except (ClientError, BotoCoreError) as exc:
                raise StackError(f"cannot create {logical_id} ({resource.type}): {exc}") from exc
            log.debug("created %s (%s): %s", logical_id, resource.type, self._resources[logical_id])
        for bucket, configuration in self._pending_notifications:
            self.client("s3").put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=configuration
            )
        if self._ignored:
            log.info(
                "local stack does not emulate: %s",
                ", ".join(f"{lid} ({kind})" for lid, kind in self._ignored.items()),
            )

    def _generated_name(self, logical_id: str, max_length: int = 128) -> str:
        """A deterministic stand-in for CloudFormation's ``<stack>-<LogicalId>-<random>``."""
        return f"{self.stack_name}-{logical_id}"[:max_length]

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def _virtual(self, resource: TemplateResource) -> PhysicalResource:
        props = resource.properties
        if resource.type.endswith("Function"):
            explicit = props.get("FunctionName")
            name = self._generated_name(resource.logical_id, 64)
            if explicit is not None:
                try:  # only parameters are known this early
                    name = str(self.resolve(explicit))
                except UnresolvedReferenceError:
                    log.warning("%s: FunctionName is not resolvable early", resource.logical_id)
            arn = self._arn("lambda", f"function:{name}")
            return PhysicalResource(
                resource.logical_id, resource.type, name, {"Arn": arn}, created=False
            )
        layer = props.get("LayerName", resource.logical_id)
        try:
            layer_name = str(self.resolve(layer))
        except UnresolvedReferenceError:
            layer_name = resource.logical_id
        arn = self._arn("lambda", f"layer:{layer_name}:1")
        return PhysicalResource(resource.logical_id, resource.type, arn, {}, created=False)

    def _create_queue(self, logical_id: str, props: dict[str, Any]) -> PhysicalResource:
        fifo = env_value(props.get("FifoQueue", False)) == "true"
        name = props.get("QueueName") or self._generated_name(logical_id, 75) + (
            ".fifo" if fifo else ""
        )
        attributes: dict[str, str] = {}
        for key in (
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "DelaySeconds",
            "FifoQueue",
            "FifoThroughputLimit",
            "KmsDataKeyReusePeriodSeconds",
            "KmsMasterKeyId",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "SqsManagedSseEnabled",
            "VisibilityTimeout",
        ):
            if key in props:
                attributes[key] = env_value(props[key])
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in props:
                policy = props[key]
                if isinstance(policy, dict) and "maxReceiveCount" in policy:
                    policy = {**policy, "maxReceiveCount": int(policy["maxReceiveCount"])}
                attributes[key] = policy if isinstance(policy, str) else json.dumps(policy)
        tags = {str(tag["Key"]): str(tag["Value"]) for tag in props.get("Tags") or []}
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return PhysicalResource(
            logical_id,
            "AWS::SQS::Queue",
            url,
            {"Arn": arn, "QueueName": name, "QueueUrl": url},
        )

    def _create_queue_policy(self, logical_id: str, props: dict[str, Any]) -> PhysicalResource:
        policy = json.dumps(props.get("PolicyDocument") or {})
        for url in props.get("Queues") or []:
            try:
                self.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
            except ClientError as exc:  # a policy is not needed for moto to deliver
                log.warning("%s: queue policy not applied to %s: %s", logical_id, url, exc)
        return PhysicalResource(
            logical_id, "AWS::SQS::QueuePolicy", self._generated_name(logical_id)
        )

    def _create_bucket(self, logical_id: str, props: dict[str, Any]) -> PhysicalResource:
        name = str(props.get("BucketName") or self._generated_name(logical_id, 63).lower())
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:  # pragma: no cover - the stack always runs in us-east-1 today
            s3.create_bucket(
                Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region}
            )
        versioning = (props.get("VersioningConfiguration") or {}).get("Status")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
        notification = _notification_configuration(logical_id, props)
        if notification:
            # Applied after every resource exists: the queues it names must be there, and moto
            # sends each queue an s3:TestEvent as soon as the configuration is put.
            self._pending_notifications.append((name, notification))
        return PhysicalResource(
            logical_id,
            "AWS::S3::Bucket",
            name,
            {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
                "DualStackDomainName": f"{name}.s3.dualstack.{self.region}.amazonaws.com",
                "WebsiteURL": f"http://{name}.s3-website-{self.region}.amazonaws.com",
            },
        )

    def _create_table(self, logical_id: str, props: dict[str, Any]) -> PhysicalResource:
        name = str(props.get("TableName") or self._generated_name(logical_id, 255))
        billing = str(props.get("BillingMode", "PROVISIONED"))
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": billing,
        }
        throughput = props.get("ProvisionedThroughput")
        if billing == "PROVISIONED":
            request["ProvisionedThroughput"] = _throughput(throughput)
        gsis = []
        for index in props.get("GlobalSecondaryIndexes") or []:
            gsi = {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
            if billing == "PROVISIONED":
                gsi["ProvisionedThroughput"] = _throughput(index.get("ProvisionedThroughput"))
            gsis.append(gsi)
        if gsis:
            request["GlobalSecondaryIndexes"] = gsis
        lsis = [
            {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
            for index in props.get("LocalSecondaryIndexes") or []
        ]
        if lsis:
            request["LocalSecondaryIndexes"] = lsis
        stream = props.get("StreamSpecification")
        if stream:
            request["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream["StreamViewType"],
            }
        if props.get("Tags"):
            request["Tags"] = props["Tags"]
        dynamodb = self.client("dynamodb")
        table = dynamodb.create_table(**request)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and env_value(ttl.get("Enabled", False)) == "true":
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        pitr = props.get("PointInTimeRecoverySpecification") or {}
        if env_value(pitr.get("PointInTimeRecoveryEnabled", False)) == "true":
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        attributes = {"Arn": table["TableArn"]}
        if table.get("LatestStreamArn"):
            attributes["StreamArn"] = table["LatestStreamArn"]
        return PhysicalResource(logical_id, "AWS::DynamoDB::Table", name, attributes)

    def _create_secret(self, logical_id: str, props: dict[str, Any]) -> PhysicalResource:
        name = str(props.get("Name") or self._generated_name(logical_id, 512))
        request: dict[str, Any] = {"Name": name}
        if props.get("Description"):
            request["Description"] = str(props["Description"])
        if logical_id in self.secret_values:
            request["SecretString"] = self.secret_values[logical_id]
        elif "SecretString" in props:
            request["SecretString"] = env_value(props["SecretString"])
        elif "GenerateSecretString" in props:
            request["SecretString"] = _generate_secret_string(props["GenerateSecretString"])
        # else: like a deployed secret nobody has filled in yet, it has no value.
        arn = self.client("secretsmanager").create_secret(**request)["ARN"]
        return PhysicalResource(logical_id, "AWS::SecretsManager::Secret", arn, {"Id": arn})

    def _create_event_bus(self, logical_id: str, props: dict[str, Any]) -> PhysicalResource:
        name = str(props["Name"])
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        return PhysicalResource(
            logical_id, "AWS::Events::EventBus", name, {"Arn": arn, "Name": name}
        )


def _wake(address: tuple[str, int]) -> None:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
        pass


@functools.cache
def _boto3_session() -> boto3.session.Session:
    """One session per process: loading service models is the slow part of making a client."""
    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=DEFAULT_REGION,
    )


_CREATORS: dict[str, _Creator] = {
    "AWS::SQS::Queue": MotoStack._create_queue,
    "AWS::SQS::QueuePolicy": MotoStack._create_queue_policy,
    "AWS::S3::Bucket": MotoStack._create_bucket,
    "AWS::DynamoDB::Table": MotoStack._create_table,
    "AWS::SecretsManager::Secret": MotoStack._create_secret,
    "AWS::Events::EventBus": MotoStack._create_event_bus,
}


def _creation_order(resources: Mapping[str, TemplateResource]) -> list[str]:
    """Template order, except that every resource comes after the ones it refers to."""
    pending = {lid: resource.dependencies(resources) for lid, resource in resources.items()}
    order: list[str] = []
    while pending:
        ready = [lid for lid, deps in pending.items() if not deps - set(order)]
        if not ready:
            raise TemplateError(f"circular dependency among: {', '.join(sorted(pending))}")
        for lid in ready:
            order.append(lid)
            del pending[lid]
    return order


def _throughput(value: Any) -> dict[str, int]:
    value = value or {}
    return {
        "ReadCapacityUnits": int(value.get("ReadCapacityUnits", 5)),
        "WriteCapacityUnits": int(value.get("WriteCapacityUnits", 5)),
    }


def _notification_configuration(logical_id: str, props: dict[str, Any]) -> dict[str, Any]:
    """The S3 API form of a bucket's ``NotificationConfiguration`` (queues only)."""
    template_config = props.get("NotificationConfiguration") or {}
    unsupported = sorted(set(template_config) - {"QueueConfigurations"})
    if unsupported:
        log.warning("%s: notification types not emulated: %s", logical_id, unsupported)
    queue_configs = []
    for entry in template_config.get("QueueConfigurations") or []:
        config: dict[str, Any] = {"QueueArn": entry["Queue"], "Events": [entry["Event"]]}
        rules = ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
        if rules:
            config["Filter"] = {
                "Key": {
                    "FilterRules": [
                        {"Name": str(rule["Name"]), "Value": str(rule["Value"])} for rule in rules
                    ]
                }
            }
        queue_configs.append(config)
    return {"QueueConfigurations": queue_configs} if queue_configs else {}


def _generate_secret_string(spec: Mapping[str, Any]) -> str:
    """A random value following GenerateSecretString's options (what CloudFormation stores)."""
    alphabet = ""
    if env_value(spec.get("ExcludeLowercase", False)) != "true":
        alphabet += string.ascii_lowercase
    if env_value(spec.get("ExcludeUppercase", False)) != "true":
        alphabet += string.ascii_uppercase
    if env_value(spec.get("ExcludeNumbers", False)) != "true":
        alphabet += string.digits
    if env_value(spec.get("ExcludePunctuation", False)) != "true":
        alphabet += string.punctuation
    if env_value(spec.get("IncludeSpace", False)) == "true":
        alphabet += " "
    excluded = str(spec.get("ExcludeCharacters", ""))
    alphabet = "".join(char for char in alphabet if char not in excluded)
    if not alphabet:
        raise TemplateError("GenerateSecretString excludes every character")
    length = int(spec.get("PasswordLength", 32))
    password = "".join(secrets.choice(alphabet) for _ in range(length))
    template = spec.get("SecretStringTemplate")
    key = spec.get("GenerateStringKey")
    if template is not None and key is not None:
        document = json.loads(str(template))
        document[str(key)] = password
        return json.dumps(document)
    return password


def stack_queue_summary(stack: MotoStack, queue_urls: Iterable[str] | None = None) -> str:
    """One line per queue that still holds messages (for progress and timeout messages)."""
    names = {url: lid for lid, url in stack.queues().items()}
    lines = []
    for url in queue_urls if queue_urls is not None else names:
        counts = stack.queue_counts(url)
        if counts.total:
            lines.append(f"{names.get(url, url)}: {counts}")
    return "; ".join(lines)
