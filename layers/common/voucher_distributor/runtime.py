"""What every Lambda handler shares: Powertools observability and the process's services.

Built once per execution environment (cold start) and reused by every invocation.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from voucher_distributor.pipeline.context import Services, build_services
from voucher_distributor.settings import get_settings

# An invocation that counted nothing (an s3:TestEvent, a duplicate) is normal, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
tracer = Tracer()
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
    return build_services(get_settings(), PowertoolsMetricSink())
