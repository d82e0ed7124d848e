"""Callback deliverer: one attempt (or one hop toward it) of a batch's callback per message."""

from __future__ import annotations

from voucher_distributor.models.messages import CallbackMessage
from voucher_distributor.pipeline.callbacks import deliver
from voucher_distributor.runtime import logger, services, sqs_handler
from voucher_distributor.sqs_batch import SqsRecord


def record_handler(record: SqsRecord) -> None:
    message = CallbackMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    logger.info("callback %s: %s", message.delivery, deliver(services(), message))


handler = sqs_handler(record_handler)
