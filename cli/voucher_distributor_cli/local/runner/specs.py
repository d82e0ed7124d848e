"""What the runner reads off a created local stack: its resources (``PhysicalResource``), a queue's
counts, each function's SQS event-source mappings and schedules (``FunctionSpec``), and
``StackError``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """The template cannot be transformed, or the local stack could not be created."""


@dataclass(frozen=True)
class PhysicalResource:
    """What exists for one logical id: its ``Ref`` value and ``Fn::GetAtt`` attributes."""

    logical_id: str
    type: str
    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def get_att(self, attribute: str) -> str:
        """One ``Fn::GetAtt`` attribute, with a clear error for an unknown one."""
        try:
            return self.attributes[attribute]
        except KeyError:
            raise StackError(
                f"{self.logical_id} ({self.type}) has no attribute {attribute!r} locally; "
                f"known: {sorted(self.attributes)}"
            ) from None


@dataclass(frozen=True)
class QueueCounts:
    """``GetQueueAttributes`` message counts of one queue."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Messages the queue still holds in any state."""
        return self.visible + self.in_flight + self.delayed

    def __str__(self) -> str:
        return f"{self.visible} visible, {self.in_flight} in flight, {self.delayed} delayed"


@dataclass(frozen=True)
class SqsEventSpec:
    """A function's SQS event-source mapping, as the created stack holds it."""

    name: str
    queue: str  # the queue's ARN
    queue_id: str  # the queue's logical id
    batch_size: int = 10
    function_response_types: tuple[str, ...] = ()
    maximum_batching_window_s: int = 0
    enabled: bool = True

    @property
    def reports_batch_item_failures(self) -> bool:
        """Whether a ``batchItemFailures`` response is honoured (else it is ignored)."""
        return "ReportBatchItemFailures" in self.function_response_types


@dataclass(frozen=True)
class ScheduleSpec:
    """A function's EventBridge schedule (a SAM ``Schedule``/``ScheduleV2`` event), as created."""

    rule_name: str
    expression: str  # rate(6 hours), cron(...)

    @property
    def rate_s(self) -> float | None:
        """Seconds between runs of a ``rate(...)`` expression; None for ``cron(...)``."""
        return schedule_rate_seconds(self.expression)


_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_rate_seconds(expression: str) -> float | None:
    """``rate(360 minutes)`` → 21600.0; None for anything that is not a rate."""
    text = expression.strip()
    if not (text.startswith("rate(") and text.endswith(")")):
        return None
    value, _, unit = text[5:-1].strip().partition(" ")
    seconds = _RATE_UNITS.get(unit.strip().rstrip("s"))
    try:
        return float(value) * seconds if seconds is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class FunctionSpec:
    """A function as deployed: its configuration from the stack, its code from this machine."""

    logical_id: str
    code_uri: Path
    handler: str
    runtime: str | None
    timeout_s: int
    memory_mb: int
    function_name: str
    environment: dict[str, str] = field(default_factory=dict)
    sqs_events: tuple[SqsEventSpec, ...] = ()
    #: EventBridge schedules that invoke it (``LocalLambdas.run_scheduled`` runs one).
    schedules: tuple[ScheduleSpec, ...] = ()

    @property
    def module_name(self) -> str:
        """The handler's module, e.g. ``app`` for ``app.handler``."""
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        """The handler's function name, e.g. ``handler`` for ``app.handler``."""
        return self.handler.rpartition(".")[2]
