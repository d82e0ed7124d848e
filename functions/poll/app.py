"""Poll worker: delayed continuation messages until a purchase's codes exist."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from voucher_distributor.models.messages import PollMessage
from voucher_distributor.pipeline.purchase import poll_chunk
from voucher_distributor.runtime import logger, metrics, services, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    message = PollMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    outcome = poll_chunk(services(), message.batch_id, message.chunk_no, message.attempt)
    logger.info("chunk %05d poll %d: %s", message.chunk_no, message.attempt, outcome)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
