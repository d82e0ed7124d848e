"""Local runner: template.yaml's stack in a loopback moto server, its handlers in-process.

``MotoStack`` runs the SAM transform and creates the result in moto's CloudFormation (plus what
moto leaves out: see :mod:`.stack`); ``LocalLambdas`` imports each function's handler and
delivers its SQS events the way the Lambda event-source mapping does. Together they run the
pipeline with no AWS account.
"""

from voucher_distributor_cli.local.runner.events import (
    EventSource,
    InvocationFailure,
    PumpReport,
    scheduled_event,
    sqs_record,
)
from voucher_distributor_cli.local.runner.handlers import LambdaContext
from voucher_distributor_cli.local.runner.lambdas import LocalLambdas, RunTimeoutError
from voucher_distributor_cli.local.runner.specs import (
    FunctionSpec,
    PhysicalResource,
    QueueCounts,
    ScheduleSpec,
    SqsEventSpec,
    StackError,
)
from voucher_distributor_cli.local.runner.stack import MotoStack, stack_queue_summary
from voucher_distributor_cli.local.runner.template import DUMMY_CREDENTIALS, SamTemplate

__all__ = [
    "DUMMY_CREDENTIALS",
    "EventSource",
    "FunctionSpec",
    "InvocationFailure",
    "LambdaContext",
    "LocalLambdas",
    "MotoStack",
    "PhysicalResource",
    "PumpReport",
    "QueueCounts",
    "RunTimeoutError",
    "SamTemplate",
    "ScheduleSpec",
    "SqsEventSpec",
    "StackError",
    "scheduled_event",
    "sqs_record",
    "stack_queue_summary",
]
