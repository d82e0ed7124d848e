"""Ingest of uploaded CSVs: S3 ObjectCreated notifications under incoming/ arrive via SQS."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from voucher_distributor.domain.batches import INCOMING_PREFIX
from voucher_distributor.pipeline.sources import upload_request
from voucher_distributor.runtime import ingest_delivery, logger, metrics, services, tracer
from voucher_distributor.sqs_batch import PartialBatchResponse, SqsRecord, process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


def record_handler(record: SqsRecord) -> None:
    notification = json.loads(record.body)
    if notification.get("Event") == "s3:TestEvent":
        logger.info("ignoring the s3:TestEvent sent when the notification was configured")
        return
    for s3_record in notification.get("Records", []):
        s3 = s3_record["s3"]
        key = unquote_plus(s3["object"]["key"])
        if not key.startswith(INCOMING_PREFIX) or not key.lower().endswith(".csv"):
            logger.warning("ignoring an object outside incoming/*.csv")
            continue
        sender = str((s3_record.get("userIdentity") or {}).get("principalId", ""))
        request = upload_request(services(), key, s3["object"].get("versionId"), sender=sender)
        if request is None:
            logger.warning("the uploaded object is gone; nothing to ingest")
            continue
        ingest_delivery(request, record, "ingested upload")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:  # noqa: ARG001
    return process_sqs_batch(event, record_handler, logger=logger)
