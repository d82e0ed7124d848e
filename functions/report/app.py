"""Reporter: writes a finished batch's results and summary, then announces them."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from voucher_distributor.models.messages import ReportMessage
from voucher_distributor.pipeline.report import report_batch
from voucher_distributor.runtime import logger, metrics, services, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    message = ReportMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    logger.info("report: %s", report_batch(services(), message.batch_id))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
