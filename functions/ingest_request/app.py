"""Ingest of HR requests: JSON messages on the request queue."""

from __future__ import annotations

from pydantic import ValidationError

from voucher_distributor.models.messages import ALLOW_LOOPBACK_CALLBACKS, DistributionRequest
from voucher_distributor.pipeline.distributions import API_CLIENT_ATTRIBUTE
from voucher_distributor.pipeline.requests import refuse_request
from voucher_distributor.pipeline.sources import request_ingest
from voucher_distributor.runtime import ingest_delivery, services, sqs_handler
from voucher_distributor.sqs_batch import SqsRecord


def record_handler(record: SqsRecord) -> None:
    try:
        local = services().settings.callback_allow_loopback
        request = DistributionRequest.model_validate_json(
            record.body, context={ALLOW_LOOPBACK_CALLBACKS: local}
        )
    except ValidationError as exc:
        # A malformed request never becomes valid by retrying: answer it and drop it.
        refuse_request(services(), record.message_id, record.body, exc)
        return
    ingest_request = request_ingest(
        services(),
        request,
        sender=record.attributes.get("SenderId", ""),
        api_client=record.message_attribute(API_CLIENT_ATTRIBUTE) or "",
    )
    ingest_delivery(ingest_request, record, "ingested request")


handler = sqs_handler(record_handler)
