"""The e-mail stage's figures: send rate against SES's limit, SES calls, and cost per 100,000.

One batch through the real local pipeline with e-mail on: moto's SES behind the local SES's
token bucket (``TooManyRequestsException`` above ``MaxSendRate``), the stack's ``MaxSendRate``
set to the same rate. Locally one function runs at a time, so the stack's sending concurrency
is 1 (``EMAIL_SEND_CONCURRENCY=1``): one invocation paces itself to the whole rate, as the
deployed invocations together do.

- ``email_send_rate_ratio``: sends per second achieved (first to last accepted send) over
  ``MaxSendRate``; with ``lost``, the rows that did not end ``delivered`` (0: nothing lost to
  throttling) and ``throttled``, the calls the bucket refused.
- ``ses_calls_per_recipient``: every SESv2 ``SendEmail`` call (refused ones too) per recipient.
- ``cost_per_100k_usd``: the calls the e-mail functions (``SendEmailsFunction``,
  ``EmailEventsFunction``) made, priced at us-east-1's published prices (BENCHMARKS.md cites
  them with the date), scaled to 100,000 recipients; beside ``cost_per_100k_usd_floor``: SES's
  price plus the ledger's unavoidable writes (per recipient: the claim before the SES call,
  the record after it, and the final state from SES's event).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.local_stack import start
from bench.workload import write_csv
from voucher_distributor_cli.local.runner import LocalLambdas

#: us-east-1 prices, as published on the AWS pricing pages (read 2026-12-03; BENCHMARKS.md).
SES_PER_EMAIL = 0.10 / 1_000
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1_000_000  # on-demand write request unit
DYNAMODB_PER_READ_UNIT = 0.125 / 1_000_000  # on-demand read request unit (strongly consistent)
SQS_PER_REQUEST = 0.40 / 1_000_000  # standard queue, past the free tier
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_PER_GB_SECOND_ARM = 0.0000133334
#: The functions whose calls are the e-mail stage's cost.
EMAIL_FUNCTIONS = ("SendEmailsFunction", "EmailEventsFunction")
#: The ledger writes no e-mail can do without: claim, record, the final state.
FLOOR_WRITES_PER_RECIPIENT = 3

_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
_READS = frozenset({"GetItem", "Query", "Scan"})


@dataclass
class FunctionCalls:
    """AWS calls made inside each function's invocations (the local runner runs one at a time)."""

    calls: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    write_units: Counter[str] = field(default_factory=Counter)
    read_units: Counter[str] = field(default_factory=Counter)
    invocations: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    current: str = "-"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, service: str, operation: str, params: dict[str, Any]) -> None:
        with self.lock:
            fn = self.current
            self.calls[fn][f"{service}.{operation}"] += 1
            if service != "dynamodb":
                return
            if operation in _WRITES:
                self.write_units[fn] += 1
            elif operation == "TransactWriteItems":
                self.write_units[fn] += 2 * len(params.get("TransactItems", []))
            elif operation == "BatchWriteItem":
                self.write_units[fn] += sum(len(v) for v in params.get("RequestItems", {}).values())
            elif operation in _READS:
                self.read_units[fn] += 1
            elif operation == "BatchGetItem":
                self.read_units[fn] += sum(
                    len(v.get("Keys", [])) for v in params.get("RequestItems", {}).values()
                )


@contextlib.contextmanager
def counting_by_function(lambdas: LocalLambdas) -> Iterator[FunctionCalls]:
    """Count every botocore call, attributed to the function being invoked at the time."""
    from botocore.client import BaseClient  # noqa: PLC0415

    counted = FunctionCalls()
    original_call = BaseClient._make_api_call
    original_invoke = lambdas._invoke

    def call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        counted.count(self.meta.service_model.service_name, operation_name, api_params)
        return original_call(self, operation_name, api_params)

    def invoke(function_id: str, event: Any) -> Any:
        counted.current = function_id
        counted.invocations[function_id] += 1
        started = time.perf_counter()
        try:
            return original_invoke(function_id, event)
        finally:
            counted.seconds[function_id] += time.perf_counter() - started
            counted.current = "-"

    BaseClient._make_api_call = call
    lambdas._invoke = invoke  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        BaseClient._make_api_call = original_call
        lambdas._invoke = original_invoke  # type: ignore[method-assign]


@dataclass
class EmailBench:
    recipients: int
    max_send_rate: float
    sends: int
    send_seconds: float
    throttled: int
    lost: int
    ses_calls: int
    calls: dict[str, dict[str, int]]
    write_units: dict[str, int]
    read_units: dict[str, int]
    invocations: dict[str, int]
    memory_mb: dict[str, int]
    billed_seconds: dict[str, float]
    cost_breakdown: dict[str, float]

    @property
    def send_rate_ratio(self) -> float:
        """Sends per second of the sending function's own time over ``MaxSendRate`` (locally
        the functions take turns on one thread: the events function's turns are not the
        sender's time; deployed they run side by side)."""
        sending = self.billed_seconds["SendEmailsFunction"]
        return self.sends / sending / self.max_send_rate if sending > 0 else 0.0

    @property
    def send_rate_ratio_wall(self) -> float:
        """The same over the wall time from the first send to the last (turns included)."""
        achieved = (self.sends - 1) / self.send_seconds if self.send_seconds > 0 else 0.0
        return achieved / self.max_send_rate

    @property
    def ses_calls_per_recipient(self) -> float:
        return self.ses_calls / self.recipients

    @property
    def cost_per_100k(self) -> float:
        return sum(self.cost_breakdown.values()) * 100_000 / self.recipients

    @staticmethod
    def floor_per_100k() -> float:
        return 100_000 * (SES_PER_EMAIL + FLOOR_WRITES_PER_RECIPIENT * DYNAMODB_PER_WRITE_UNIT)


def _cost(counted: FunctionCalls, memory_mb: dict[str, int]) -> dict[str, float]:
    ses = sqs = writes = reads = requests = gb_s = 0.0
    for fn in EMAIL_FUNCTIONS:
        calls = counted.calls.get(fn, Counter())
        ses += calls["sesv2.SendEmail"] * SES_PER_EMAIL
        sqs += sum(n for op, n in calls.items() if op.startswith("sqs.")) * SQS_PER_REQUEST
        writes += counted.write_units[fn] * DYNAMODB_PER_WRITE_UNIT
        reads += counted.read_units[fn] * DYNAMODB_PER_READ_UNIT
        requests += counted.invocations[fn] * LAMBDA_PER_REQUEST
        gb_s += counted.seconds[fn] * memory_mb[fn] / 1024 * LAMBDA_PER_GB_SECOND_ARM
    # SQS: the event source's receive and delete of each message are requests too (one each
    # per message it hands the function; the local runner makes them outside the function).
    sqs += 2 * counted.invocations["SendEmailsFunction"] * SQS_PER_REQUEST
    return {
        "ses": ses,
        "dynamodb_writes": writes,
        "dynamodb_reads": reads,
        "sqs": sqs,
        "lambda_requests": requests,
        "lambda_duration": gb_s,
    }


def measure(recipients: int = 10_000, *, max_send_rate: float = 40.0) -> EmailBench:
    """Send ``recipients`` e-mails through the local pipeline at ``max_send_rate``."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-email-")))
        csv_path = write_csv(tmp / f"mail-{recipients}.csv", recipients)
        _, pipeline = start(
            stack,
            tmp,
            generation_delay_s=0,
            page_size=100,
            parameters={"MaxSendRate": f"{max_send_rate:g}"},
            tuning={"EMAIL_SEND_CONCURRENCY": "1"},
            email=True,
            ses_rate=max_send_rate,
        )
        assert pipeline.lambdas is not None
        memory = {fn: pipeline.lambdas._spec(fn).memory_mb for fn in EMAIL_FUNCTIONS}
        with counting_by_function(pipeline.lambdas) as counted:
            batch = pipeline.run_until_done(pipeline.submit_csv(csv_path), timeout_s=3600)
        if batch.rows_assigned != recipients:
            raise RuntimeError(f"the {recipients:,}-recipient run assigned {batch.rows_assigned}")
        sent = pipeline.ses.sent
        delivered = sum(
            1
            for _, state in pipeline.ledger.deliveries.states(batch.batch_id)
            if state.value == "delivered"
        )
        at = sorted(m.at for m in sent)
        ses_calls = sum(counted.calls[fn]["sesv2.SendEmail"] for fn in EMAIL_FUNCTIONS)
        return EmailBench(
            recipients=recipients,
            max_send_rate=max_send_rate,
            sends=len(sent),
            send_seconds=at[-1] - at[0] if len(at) > 1 else 0.0,
            throttled=pipeline.ses.throttled,
            lost=recipients - delivered,
            ses_calls=ses_calls,
            calls={fn: dict(counted.calls[fn]) for fn in EMAIL_FUNCTIONS},
            write_units={fn: counted.write_units[fn] for fn in EMAIL_FUNCTIONS},
            read_units={fn: counted.read_units[fn] for fn in EMAIL_FUNCTIONS},
            invocations={fn: counted.invocations[fn] for fn in EMAIL_FUNCTIONS},
            memory_mb=memory,
            billed_seconds={fn: round(counted.seconds[fn], 2) for fn in EMAIL_FUNCTIONS},
            cost_breakdown=_cost(counted, memory),
        )


if __name__ == "__main__":  # a quick look: python -m bench.email_send [RECIPIENTS] [RATE]
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    r = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
    got = measure(n, max_send_rate=r)
    print(json.dumps({
        "email_send_rate_ratio": round(got.send_rate_ratio, 3),
        "email_send_rate_ratio_wall": round(got.send_rate_ratio_wall, 3),
        "ses_calls_per_recipient": round(got.ses_calls_per_recipient, 4),
        "cost_per_100k_usd": round(got.cost_per_100k, 2),
        "cost_per_100k_usd_floor": round(got.floor_per_100k(), 2),
        **vars(got),
    }, indent=2, default=str))  # fmt: skip
