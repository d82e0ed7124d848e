"""Callback deliverer: one attempt (or one hop toward it) of a batch's callback per message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voucher_distributor.models.messages import CallbackMessage
from voucher_distributor.pipeline.callbacks import deliver
from voucher_distributor.runtime import logger, metrics, services, tracer
from voucher_distributor.sqs_batch import PartialBatchResponse, SqsRecord, process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


def record_handler(record: SqsRecord) -> None:
    message = CallbackMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    logger.info("callback %s: %s", message.delivery, deliver(services(), message))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:  # noqa: ARG001
    return process_sqs_batch(event, record_handler, logger=logger)
