"""What every Lambda handler shares: Powertools observability and the process's services.

Built once per execution environment (cold start) and reused by every invocation. Import cost is
cold-start latency, so this module does only what every invocation needs:

- X-Ray is optional. With ``POWERTOOLS_TRACE_DISABLED=true`` (or under ``sam local``, where
  Powertools disables it too) ``tracer`` is a no-op stand-in and the X-Ray SDK (~200 ms of
  imports and patching) is never imported; otherwise it is Powertools' ``Tracer``. The template
  sets the variable from its ``Tracing`` parameter (``PassThrough``, the default: disabled).
- Partial-batch responses come from :mod:`voucher_distributor.sqs_batch`, not Powertools' batch
  utility (which imports asyncio and every event data class).
- The services (boto3 clients, the Certiverse client, settings) are built on first use.
- :func:`sqs_handler` is an SQS-fed function's Lambda handler around its record handler;
  :func:`s3_notification_keys` reads the S3 event notifications two of them receive.
- :func:`ingest_delivery` is the two ingest handlers' common tail (an upload, a request).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from voucher_distributor.sqs_batch import PartialBatchResponse, SqsRecord, process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from voucher_distributor.pipeline.context import Services
    from voucher_distributor.pipeline.ingest_types import IngestRequest

F = TypeVar("F", bound=Callable[..., Any])

# An invocation that counted nothing (an s3:TestEvent, a duplicate) is normal, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

_TRUTHY = frozenset({"1", "true", "yes", "on", "y", "t"})


def tracing_enabled(environ: dict[str, str] | None = None) -> bool:
    """False when ``POWERTOOLS_TRACE_DISABLED`` is truthy or the code runs under ``sam local``."""
    env = os.environ if environ is None else environ
    if env.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in _TRUTHY:
        return False
    return env.get("AWS_SAM_LOCAL", "").strip().lower() not in _TRUTHY


class NoTracer:
    """The parts of Powertools' Tracer the handlers use, doing nothing (tracing off)."""

    disabled = True

    def capture_lambda_handler(self, handler: F | None = None, **_: Any) -> Any:
        if handler is None:
            return lambda fn: fn
        return handler

    def capture_method(self, method: F | None = None, **_: Any) -> Any:
        if method is None:
            return lambda fn: fn
        return method

    def put_annotation(self, key: str, value: Any) -> None:
        """Nothing to annotate without a trace."""

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        """Nothing to record without a trace."""


def _make_tracer() -> Any:
    if not tracing_enabled():
        return NoTracer()
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - imports and patches X-Ray

    return Tracer()


logger = Logger()
tracer = _make_tracer()
metrics = Metrics()
# The library logs through the standard logging module; give it Powertools' JSON format and the
# correlation id, so one batch reads as one story across functions.
copy_config_to_registered_loggers(source_logger=logger, include={"voucher_distributor"})
logging.getLogger("voucher_distributor").setLevel(logger.log_level)


class PowertoolsMetricSink:
    def count(self, name: str, value: float = 1, *, unit: str = "Count") -> None:
        metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)


@lru_cache(maxsize=1)
def services() -> Services:
    from voucher_distributor.pipeline.context import build_services  # noqa: PLC0415
    from voucher_distributor.settings import get_settings  # noqa: PLC0415

    return build_services(get_settings(), PowertoolsMetricSink())


def sqs_handler(
    record_handler: Callable[[SqsRecord], None],
) -> Callable[[dict[str, Any], LambdaContext], PartialBatchResponse]:
    """The Lambda handler of a function fed by SQS: Powertools' logging context, trace and
    metrics around the partial-batch loop calling ``record_handler`` for each record."""

    def handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:  # noqa: ARG001
        return process_sqs_batch(event, record_handler, logger=logger)

    # As the decorators ``@logger.inject_lambda_context``, ``@tracer.capture_lambda_handler``
    # and ``@metrics.log_metrics``, in that order.
    observed: Callable[[dict[str, Any], LambdaContext], PartialBatchResponse] = (
        logger.inject_lambda_context(tracer.capture_lambda_handler(metrics.log_metrics(handler)))
    )
    return observed


def s3_notification_keys(record: SqsRecord) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects an S3 event notification delivered by SQS names: each one's key (decoded)
    and its S3 record. The ``s3:TestEvent`` S3 sends when the notification is configured names
    none (logged and skipped)."""
    notification = json.loads(record.body)
    if notification.get("Event") == "s3:TestEvent":
        logger.info("ignoring the s3:TestEvent sent when the notification was configured")
        return
    for s3_record in notification.get("Records", []):
        yield unquote_plus(s3_record["s3"]["object"]["key"]), s3_record


def ingest_delivery(request: IngestRequest, record: SqsRecord, done: str) -> None:
    """Ingest one input delivered by an SQS record, and log ``done`` with the outcome.

    The batch id is the correlation id from here on; the queue's last allowed delivery
    (``MAX_INGEST_ATTEMPTS``) fails what a Certiverse outage left instead of sending it back,
    and an earlier one sets its own message's visibility to the next wait
    (``pipeline.ingest.ingest_delivery``).
    """
    from voucher_distributor.pipeline import ingest  # noqa: PLC0415

    logger.set_correlation_id(request.batch.batch_id)
    outcome = ingest.ingest_delivery(
        services(),
        request,
        attempt=record.approximate_receive_count,
        message_id=record.message_id,
        queue_url=record.queue_url,
        receipt_handle=record.receipt_handle,
    )
    logger.info(done, extra={"outcome": outcome.__dict__})
