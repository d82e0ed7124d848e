"""Which stack an ops command works on, and how to reach it: the one place that reads the
global ``--stack``, ``--endpoint-url``, ``--region`` and ``--profile`` options.

A :class:`Target` is a stack's ledger table and queues, found by name through CloudFormation:
a stack deployed with ``sam deploy``, or the local runner's stack (the same template created in
moto's CloudFormation, reached with ``--endpoint-url``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from voucher_distributor.adapters.certiverse import (
    CertiverseClient,
    RetryPolicy,
    StaticToken,
    token_from_secret,
)
from voucher_distributor.adapters.ledger import Ledger

#: The stack name ``local run`` and the local runner use (``--endpoint-url`` alone means it).
LOCAL_STACK_NAME = "voucher-distributor-local"
_LOCAL_REGION = "us-east-1"
_DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class OpsError(RuntimeError):
    """The command cannot run as asked (an unknown stack, batch or queue)."""


def add_stack_options(parser: argparse.ArgumentParser, *, suppress_defaults: bool) -> None:
    """``--stack``, ``--endpoint-url``, ``--region``, ``--profile`` on ``parser``.

    The top-level parser takes them with defaults; each ops subcommand takes them again with
    ``suppress_defaults`` so that a value given after the subcommand wins and an absent one does
    not reset what was given before it.
    """
    default: Any = argparse.SUPPRESS if suppress_defaults else None
    group = parser.add_argument_group("stack (ops commands)")
    group.add_argument(
        "--stack",
        metavar="NAME",
        default=default,
        help=f"the stack by name (default with --endpoint-url: {LOCAL_STACK_NAME})",
    )
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=default,
        help="an AWS endpoint other than AWS's own: the local stack's (`local run` prints it)",
    )
    group.add_argument(
        "--region", default=default, help="AWS region of the stack (default: your AWS config)"
    )
    group.add_argument(
        "--profile", default=default, help="AWS profile to use (default: your AWS config)"
    )


@dataclass
class Target:
    """One stack's ledger table and queues, and how to reach them."""

    table_name: str
    #: Logical id -> queue URL, for every queue of the stack.
    queues: dict[str, str]
    #: Dead-letter queue logical id -> the source queue it collects from.
    redrives: dict[str, str]
    session: boto3.session.Session = field(default_factory=boto3.session.Session)
    endpoint_url: str | None = None
    #: The functions' environment (Certiverse URL and token secret) when known.
    function_env: dict[str, str] = field(default_factory=dict)
    #: The inbox bucket (uploads, results), when the stack has one.
    bucket: str = ""

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    @property
    def ledger(self) -> Ledger:
        dynamodb = self.session.resource("dynamodb", endpoint_url=self.endpoint_url)
        return Ledger(self.table_name, dynamodb=dynamodb)

    def queue_sender(self, logical_id: str, *, missing: str = "") -> Callable[[Any], Any]:
        """What sends a message (its body as JSON) to the stack's queue ``logical_id``; without
        that queue, an :class:`OpsError` ``the stack has no <logical_id><missing>``."""
        queue = self.queues.get(logical_id)
        if not queue:
            raise OpsError(f"the stack has no {logical_id}{missing}")
        sqs = self.client("sqs")
        return lambda body: sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Target:
        """The target the global options name (``--stack`` or ``--endpoint-url`` needed)."""
        stack, endpoint = getattr(args, "stack", None), getattr(args, "endpoint_url", None)
        if not stack and not endpoint:
            raise OpsError(
                "which stack? pass --stack NAME (a deployed stack) or --endpoint-url URL "
                "(the local stack)"
            )
        return cls.deployed(
            stack or LOCAL_STACK_NAME,
            region=getattr(args, "region", None),
            profile=getattr(args, "profile", None),
            endpoint_url=endpoint,
        )

    @classmethod
    def local(cls, endpoint_url: str, *, stack_name: str = LOCAL_STACK_NAME) -> Target:
        """The local runner's stack, in the moto server at ``endpoint_url``."""
        return cls.deployed(stack_name, endpoint_url=endpoint_url)

    @classmethod
    def deployed(
        cls,
        stack_name: str,
        *,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
    ) -> Target:
        """A stack by name: its resources from CloudFormation (AWS's, or at ``endpoint_url``)."""
        local = endpoint_url is not None and profile is None
        session = boto3.session.Session(
            profile_name=profile,
            region_name=region or (_LOCAL_REGION if endpoint_url else None),
            **(_DUMMY_CREDENTIALS if local else {}),
        )
        cfn = session.client("cloudformation", endpoint_url=endpoint_url)
        physical: dict[str, str] = {}
        types: dict[str, str] = {}
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
            for resource in page["StackResourceSummaries"]:
                physical[resource["LogicalResourceId"]] = resource.get("PhysicalResourceId", "")
                types[resource["LogicalResourceId"]] = resource["ResourceType"]
        if "LedgerTable" not in physical:
            raise OpsError(f"stack {stack_name} has no LedgerTable: not a voucher-distributor?")
        queues = {lid: url for lid, url in physical.items() if types[lid] == "AWS::SQS::Queue"}
        env: dict[str, str] = {}
        # The purchase function's settings are the stack's; the API function adds its own.
        for function in ("ApiFunction", "PurchaseFunction"):
            if function in physical:
                config = session.client("lambda", endpoint_url=endpoint_url)
                found = config.get_function_configuration(FunctionName=physical[function])
                variables = (found.get("Environment") or {}).get("Variables") or {}
                env.update({name: str(value) for name, value in variables.items()})
        sqs = session.client("sqs", endpoint_url=endpoint_url)
        return cls(
            table_name=physical["LedgerTable"],
            queues=queues,
            redrives=_redrives_from_queues(sqs, queues),
            session=session,
            endpoint_url=endpoint_url,
            function_env=env,
            bucket=physical.get("InboxBucket", ""),
        )

    # ------------------------------------------------------------------ Certiverse

    def certiverse(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> CertiverseClient:
        """The Certiverse client the functions use: their URL and secret unless given."""
        url = base_url or self.function_env.get("CERTIVERSE_BASE_URL")
        if not url:
            raise OpsError("no Certiverse URL: pass --certiverse-url")
        if token is None:
            secret = self.function_env.get("CERTIVERSE_TOKEN_SECRET_ARN")
            if not secret:
                raise OpsError("no Certiverse token: set CERTIVERSE_TOKEN")
            value = self.client("secretsmanager").get_secret_value(SecretId=secret)
            token = token_from_secret(value.get("SecretString"))
            if not token:
                raise OpsError(
                    f"the Certiverse token secret {secret} is empty: put the API token in it "
                    "(docs/operations.md, First use of a deployed stack), or set CERTIVERSE_TOKEN"
                )
        return CertiverseClient(url, StaticToken(str(token).strip()), retry=retry)


def _redrives_from_queues(sqs: Any, queues: Mapping[str, str]) -> dict[str, str]:
    by_arn = {}
    redrive_of = {}
    for logical_id, url in queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
        )["Attributes"]
        by_arn[attributes["QueueArn"]] = logical_id
        if attributes.get("RedrivePolicy"):
            redrive_of[logical_id] = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    return {by_arn[dlq_arn]: source for source, dlq_arn in redrive_of.items() if dlq_arn in by_arn}
