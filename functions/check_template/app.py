"""Template check: S3 ObjectCreated notifications under templates/ arrive via SQS; each names
a template folder whose three files are checked together (accepted, or answered by
``templates/<folder>.error.json`` with the previous template kept in use)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from voucher_distributor.domain.email_templates import TEMPLATES_PREFIX
from voucher_distributor.pipeline.templates import check_template_upload
from voucher_distributor.runtime import logger, metrics, services, tracer
from voucher_distributor.sqs_batch import PartialBatchResponse, SqsRecord, process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


def record_handler(record: SqsRecord) -> None:
    notification = json.loads(record.body)
    if notification.get("Event") == "s3:TestEvent":
        logger.info("ignoring the s3:TestEvent sent when the notification was configured")
        return
    for s3_record in notification.get("Records", []):
        key = unquote_plus(s3_record["s3"]["object"]["key"])
        if not key.startswith(TEMPLATES_PREFIX):
            logger.warning("ignoring an object outside templates/")
            continue
        check = check_template_upload(services(), key)
        logger.info("template upload: %s %s", check.outcome, check.folder)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:  # noqa: ARG001
    return process_sqs_batch(event, record_handler, logger=logger)
