"""Local runner: the SAM template's resources in a loopback moto server, its handlers in-process.

``MotoStack`` creates the template's queues, buckets, tables and secrets in moto;
``LocalLambdas`` imports each function's handler and delivers its SQS events the way the
Lambda event-source mapping does. Together they run the pipeline with no AWS account.
"""

from voucher_distributor_cli.local.runner.lambdas import (
    EventSource,
    InvocationFailure,
    LambdaContext,
    LocalLambdas,
    PumpReport,
    RunTimeoutError,
    sqs_record,
)
from voucher_distributor_cli.local.runner.stack import (
    DUMMY_CREDENTIALS,
    MotoStack,
    PhysicalResource,
    QueueCounts,
    StackError,
    stack_queue_summary,
)
from voucher_distributor_cli.local.runner.template import (
    FunctionSpec,
    Resolver,
    SamTemplate,
    SqsEventSpec,
    TemplateError,
    UnresolvedReferenceError,
    load_yaml,
)

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
    "Resolver",
    "RunTimeoutError",
    "SamTemplate",
    "SqsEventSpec",
    "StackError",
    "TemplateError",
    "UnresolvedReferenceError",
    "load_yaml",
    "sqs_record",
    "stack_queue_summary",
]
