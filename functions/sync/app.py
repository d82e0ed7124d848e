"""Redemption sync: on its EventBridge schedule, follow the handed-out codes through Certiverse."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voucher_distributor.pipeline.redemption import sync_redemptions
from voucher_distributor.runtime import logger, metrics, services, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001
    logger.set_correlation_id(str(event.get("id") or "") or None)
    outcome = sync_redemptions(services()).as_dict()
    logger.info(
        "redemption sync", extra={"sync": {k: v for k, v in outcome.items() if k != "byProgram"}}
    )
    return outcome
