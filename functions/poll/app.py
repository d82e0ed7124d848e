"""Poll worker: delayed continuation messages until a purchase's codes exist."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voucher_distributor.models.messages import PollMessage
from voucher_distributor.pipeline.poll import defer_poll, poll_chunk
from voucher_distributor.runtime import logger, metrics, services, tracer
from voucher_distributor.sqs_batch import PartialBatchResponse, SqsRecord, process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


def record_handler(record: SqsRecord) -> None:
    logger.set_correlation_id(None)  # a record that fails to parse is not the previous batch's
    message = PollMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    outcome = poll_chunk(
        services(), message.batch_id, message.chunk_no, message.attempt, message.token
    )
    logger.info("chunk %05d poll %d: %s", message.chunk_no, message.attempt, outcome)


#: A poll message may take a minute (1 + N Certiverse calls within their retry budget): one
#: starts only with that much of the invocation left; the rest are sent again.
TIME_FOR_ONE_MESSAGE_MS = 60_000


def defer_record(record: SqsRecord) -> None:
    defer_poll(services(), PollMessage.model_validate_json(record.body))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:
    return process_sqs_batch(
        event,
        record_handler,
        logger=logger,
        time_is_short=lambda: context.get_remaining_time_in_millis() < TIME_FOR_ONE_MESSAGE_MS,
        defer=defer_record,
    )
