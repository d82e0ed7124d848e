"""E-mail sender: the e-mails of one assigned chunk (or the rest of one) per message, paced to
the SES send rate, each claimed before its SESv2 call and recorded after it."""

from __future__ import annotations

import json

from voucher_distributor.models.messages import EmailMessage, SendFireMessage
from voucher_distributor.models.resend import ResendMessage
from voucher_distributor.pipeline.email import send_chunk_emails
from voucher_distributor.pipeline.resend import send_resend
from voucher_distributor.pipeline.scheduled_send import fire
from voucher_distributor.runtime import logger, services, sqs_handler
from voucher_distributor.sqs_batch import SqsRecord


def record_handler(record: SqsRecord) -> None:
    body = json.loads(record.body)
    if "fireAt" in body:  # a batch's scheduled send is due (its EventBridge Scheduler schedule)
        due = SendFireMessage.model_validate(body)
        logger.set_correlation_id(due.batch_id)
        logger.info("scheduled send: %s", fire(services(), due.batch_id, due.fire_at))
        return
    if "resendRow" in body:  # one row's code again (`resend`)
        resend = ResendMessage.model_validate_json(record.body)
        logger.set_correlation_id(resend.batch_id)
        logger.info("resend of row %d: %s", resend.resend_row, send_resend(services(), resend))
        return
    message = EmailMessage.model_validate_json(record.body)
    logger.set_correlation_id(message.batch_id)
    run = send_chunk_emails(
        services(), message.batch_id, message.chunk_no, from_row=message.from_row
    )
    logger.info("e-mails of chunk %05d: %s %s", message.chunk_no, run.outcome, dict(run.counts))


handler = sqs_handler(record_handler)
