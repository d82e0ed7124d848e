"""E-mail events: SES's sending events (the configuration set's EventBridge destination) move
each row's e-mail state forward; the batch's results are rewritten at most once a minute."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voucher_distributor.pipeline.email import record_email_event
from voucher_distributor.runtime import logger, metrics, services, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:  # noqa: ARG001
    detail = event.get("detail")
    outcome = record_email_event(
        services(), detail if isinstance(detail, dict) else {}, event_id=str(event.get("id", ""))
    )
    logger.info("SES %s event: %s", event.get("detail-type", "?"), outcome)
    return {"outcome": outcome}
