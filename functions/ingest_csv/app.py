"""Ingest of uploaded CSVs: S3 ObjectCreated notifications under incoming/ arrive via SQS."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from voucher_distributor.domain.batches import INCOMING_PREFIX
from voucher_distributor.pipeline.ingest import ingest
from voucher_distributor.pipeline.sources import upload_request
from voucher_distributor.runtime import logger, metrics, services, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
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
        request = upload_request(services(), key, s3["object"].get("versionId"))
        if request is None:
            logger.warning("the uploaded object is gone; nothing to ingest")
            continue
        logger.set_correlation_id(request.batch.batch_id)
        outcome = ingest(services(), request)
        logger.info("ingested upload", extra={"outcome": outcome.__dict__})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
