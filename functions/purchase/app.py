"""Purchase worker: buys one chunk per message, exactly once, then checks for its codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voucher_distributor.models.messages import ChunkMessage
from voucher_distributor.pipeline.purchase import purchase_chunk
from voucher_distributor.runtime import logger, metrics, services, tracer
from voucher_distributor.sqs_batch import PartialBatchResponse, SqsRecord, process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


def record_handler(record: SqsRecord, lambda_context: LambdaContext) -> None:
    message = ChunkMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    outcome = purchase_chunk(
        services(),
        message.batch_id,
        message.chunk_no,
        owner=f"{lambda_context.aws_request_id}/{record.message_id}",
        receive_count=record.approximate_receive_count,
    )
    logger.info("chunk %05d: %s", message.chunk_no, outcome)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:
    return process_sqs_batch(event, lambda record: record_handler(record, context), logger=logger)
