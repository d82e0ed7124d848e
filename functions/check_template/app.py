"""Template check: S3 ObjectCreated notifications under templates/ arrive via SQS; each names
a template folder whose three files are checked together (accepted, or answered by
``templates/<folder>.error.json`` with the previous template kept in use)."""

from __future__ import annotations

from voucher_distributor.domain.email_templates import TEMPLATES_PREFIX
from voucher_distributor.pipeline.templates import check_template_upload
from voucher_distributor.runtime import logger, s3_notification_keys, services, sqs_handler
from voucher_distributor.sqs_batch import SqsRecord


def record_handler(record: SqsRecord) -> None:
    for key, _ in s3_notification_keys(record):
        if not key.startswith(TEMPLATES_PREFIX):
            logger.warning("ignoring an object outside templates/")
            continue
        check = check_template_upload(services(), key)
        logger.info("template upload: %s %s", check.outcome, check.folder)


handler = sqs_handler(record_handler)
