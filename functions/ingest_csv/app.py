"""Ingest of uploaded CSVs: S3 ObjectCreated notifications under incoming/ arrive via SQS."""

from __future__ import annotations

from voucher_distributor.domain.batches import INCOMING_PREFIX
from voucher_distributor.pipeline.sources import upload_request
from voucher_distributor.runtime import (
    ingest_delivery,
    logger,
    s3_notification_keys,
    services,
    sqs_handler,
)
from voucher_distributor.sqs_batch import SqsRecord


def record_handler(record: SqsRecord) -> None:
    for key, s3_record in s3_notification_keys(record):
        if not key.startswith(INCOMING_PREFIX) or not key.lower().endswith(".csv"):
            logger.warning("ignoring an object outside incoming/*.csv")
            continue
        sender = str((s3_record.get("userIdentity") or {}).get("principalId", ""))
        version = s3_record["s3"]["object"].get("versionId")
        request = upload_request(services(), key, version, sender=sender)
        if request is None:
            logger.warning("the uploaded object is gone; nothing to ingest")
            continue
        ingest_delivery(request, record, "ingested upload")


handler = sqs_handler(record_handler)
