"""Reporter: writes a finished batch's results and summary, then announces them; and carries
out the decision on a batch that waited for approval (or rejects it at its deadline)."""

from __future__ import annotations

from voucher_distributor.models.messages import ReportMessage
from voucher_distributor.pipeline.approval import APPROVAL_CHECK, check_approval
from voucher_distributor.pipeline.email import EMAIL_REFRESH
from voucher_distributor.pipeline.report import refresh_results, report_batch
from voucher_distributor.pipeline.undeliverable import UNDELIVERABLE_CHECK, announce_undeliverable
from voucher_distributor.runtime import logger, services, sqs_handler
from voucher_distributor.sqs_batch import SqsRecord


def record_handler(record: SqsRecord) -> None:
    message = ReportMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    if message.check == APPROVAL_CHECK:
        logger.info("approval: %s", check_approval(services(), message.batch_id))
        return
    if message.check == UNDELIVERABLE_CHECK:
        logger.info("undeliverable: %s", announce_undeliverable(services(), message.batch_id))
        return
    if message.check == EMAIL_REFRESH:
        logger.info("results refresh: %s", refresh_results(services(), message.batch_id))
        return
    logger.info("report: %s", report_batch(services(), message.batch_id))


handler = sqs_handler(record_handler)
