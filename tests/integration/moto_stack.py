"""The template's stack in moto as the adapter-level tests reach it: boto3 keyword arguments for
its server, the ledger on its table, and Settings naming its resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.settings import Settings
from voucher_distributor_cli.local.runner import MotoStack

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def boto_kwargs(stack: MotoStack) -> dict[str, str]:
    """What a boto3 client or resource needs to talk to the stack's moto server."""
    return {
        "endpoint_url": stack.endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def stack_ledger(stack: MotoStack, **options: Any) -> Ledger:
    """The ledger on the stack's LedgerTable (``options`` go to Ledger)."""
    dynamodb = boto3.resource("dynamodb", **boto_kwargs(stack))
    return Ledger(stack.resource("LedgerTable").ref, dynamodb=dynamodb, **options)


def stack_settings(stack: MotoStack, **fields: Any) -> Settings:
    """Settings naming the stack's table, inbox bucket and stage queues, and ``fields``."""
    return Settings(
        ledger_table=stack.resource("LedgerTable").ref,
        inbox_bucket=stack.resource("InboxBucket").ref,
        purchase_queue_url=stack.resource("PurchaseQueue").ref,
        poll_queue_url=stack.resource("PollQueue").ref,
        report_queue_url=stack.resource("ReportQueue").ref,
        **fields,
    )
