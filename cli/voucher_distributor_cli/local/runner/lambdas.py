"""Run a template's Lambda handlers in-process, fed by their SQS event sources.

This stands in for two AWS pieces: the Lambda runtime (import the handler once per function with
its environment, call ``handler(event, context)``) and the SQS event-source mapping (poll the
queue, build the ``aws:sqs`` event, then delete or return messages depending on the outcome, with
``ReportBatchItemFailures`` semantics). Redrive to a DLQ after ``maxReceiveCount`` and per-message
delays are moto's job; this module just keeps polling.

Everything runs sequentially on the caller's thread, so a run is deterministic and a debugger or
``breakpoint()`` in a handler works.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from voucher_distributor_cli.local.runner.events import (
    _MAX_RECEIVE,
    EventSource,
    InvocationFailure,
    PumpReport,
    _batch_item_failures,
    _chunks,
    _visibility_changes,
    scheduled_event,
    sqs_record,
)
from voucher_distributor_cli.local.runner.handlers import (
    Handler,
    LambdaContext,
    _LoadedFunction,
    _pop_modules,
    _top_level_names,
)
from voucher_distributor_cli.local.runner.specs import FunctionSpec
from voucher_distributor_cli.local.runner.stack import MotoStack, stack_queue_summary

__all__ = ["LocalLambdas", "RunTimeoutError"]

log = logging.getLogger(__name__)


# Variables the Lambda service sets for every function; the rest of os.environ is the host's.
_REMOVED_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")


class RunTimeoutError(TimeoutError):
    """``run_until``'s condition did not become true in time."""


_FEED_EVENTS_PER_PUMP = 200


@dataclass
class _Feed:
    function_id: str
    drain: Callable[[], list[Any]]
    pending: Callable[[], int]
    attempts: int
    retries: list[tuple[Any, int]] = field(default_factory=list)


class LocalLambdas:
    """The template's functions as in-process handlers, plus their SQS event sources.

    Handlers are imported lazily (on first invocation, or by :meth:`load`): creating a stack
    and this object works even when a function's code does not exist yet.

    ``retry_visibility_s`` replaces the queue's visibility timeout for returned messages, so
    local retries take a second instead of 6 x the function timeout. ``env_overrides`` apply on
    top of every function's environment (e.g. a sandbox URL). ``only`` restricts which
    functions' event sources are polled. ``enforce_timeout`` treats a handler that ran longer
    than its Timeout as failed, as Lambda would after stopping it.
    """

    def __init__(
        self,
        stack: MotoStack,
        *,
        retry_visibility_s: int = 1,
        env_overrides: Mapping[str, str] | None = None,
        only: set[str] | frozenset[str] | None = None,
        enforce_timeout: bool = True,
        schedule_check_s: float = 0.25,
    ) -> None:
        self.stack = stack
        #: How often EventBridge Scheduler's one-time schedules are looked at for due ones.
        self.schedule_check_s = schedule_check_s
        self._next_schedule_check = 0.0
        #: Schedules fired that are not deleted after completion (fired once only).
        self._fired_schedules: set[tuple[str, str]] = set()
        self.retry_visibility_s = retry_visibility_s
        self.env_overrides = dict(env_overrides or {})
        self.enforce_timeout = enforce_timeout
        self.functions: dict[str, FunctionSpec] = dict(stack.functions)
        unknown = sorted((only or set()) - set(self.functions))
        if unknown:
            raise KeyError(f"no serverless function(s) {unknown} in the template")
        self._loaded: dict[str, _LoadedFunction] = {}
        _visibility_changes.install()
        self.event_sources: list[EventSource] = []
        for function_id, spec in self.functions.items():
            if only is not None and function_id not in only:
                continue
            for event in spec.sqs_events:
                if not event.enabled:
                    continue
                url = stack.queue_url_for_arn(event.queue)
                self.event_sources.append(EventSource(function_id, event, url, event.queue))
        self._feeds: list[_Feed] = []

    def add_feed(
        self,
        function_id: str,
        drain: Callable[[], list[Any]],
        pending: Callable[[], int],
        *,
        attempts: int = 3,
    ) -> None:
        """Invoke ``function_id`` with each event ``drain()`` gives, on every pump: an
        asynchronous source moto does not deliver (an EventBridge rule's target, fed by the
        local SES's events). A failed event is tried again on the next pumps, ``attempts`` in
        all, as EventBridge retries; ``pending()`` counts what the source still holds."""
        self._spec(function_id)
        self._feeds.append(_Feed(function_id, drain, pending, attempts))

    def feeds_pending(self) -> int:
        return sum(feed.pending() + len(feed.retries) for feed in self._feeds)

    def _pump_feeds(self) -> PumpReport:
        report = PumpReport()
        for feed in self._feeds:
            # At most a few hundred events a pump, so the queues' functions are served between.
            waiting = feed.retries + [(event, 1) for event in feed.drain()]
            batch, feed.retries = waiting[:_FEED_EVENTS_PER_PUMP], waiting[_FEED_EVENTS_PER_PUMP:]
            for event, attempt in batch:
                report.invocations += 1
                report.delivered += 1
                report.by_function[feed.function_id] = (
                    report.by_function.get(feed.function_id, 0) + 1
                )
                try:
                    self._invoke(feed.function_id, event)
                except Exception as exc:  # the event is tried again, as EventBridge retries
                    report.errors += 1
                    report.failures.append(
                        InvocationFailure(feed.function_id, (), f"{type(exc).__name__}: {exc}")
                    )
                    if attempt < feed.attempts:
                        feed.retries.append((event, attempt + 1))
        return report

    # ---------------------------------------------------------------- runtime

    def environment(self, function_id: str) -> dict[str, str]:
        """Everything a handler sees in os.environ beyond the host's own variables."""
        spec = self._spec(function_id)
        name = self.stack.function_name(function_id)
        runtime = spec.runtime or f"python{sys.version_info.major}.{sys.version_info.minor}"
        return {
            **self.stack.function_environment(function_id),
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_uri),
            "_HANDLER": spec.handler,
            # As under `sam local`: Powertools' Tracer then stays off (no X-Ray daemon here).
            "AWS_SAM_LOCAL": "true",
            **self.stack.aws_environment(),
            **self.env_overrides,
        }

    def load(self, function_id: str) -> Handler:
        """Import the function's handler (its cold start) if not done yet."""
        if function_id in self._loaded:
            return self._loaded[function_id].handler
        spec = self._spec(function_id)
        path = spec.code_uri / (spec.module_name.replace(".", "/") + ".py")
        if not path.is_file():
            raise FileNotFoundError(f"{function_id}: handler module {path} does not exist")
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        module_name = f"local_fn_{function_id}"
        private: dict[str, ModuleType] = {}
        with self._function_scope(function_id, private, stream):
            import_spec = importlib.util.spec_from_file_location(module_name, path)
            if import_spec is None or import_spec.loader is None:
                raise ImportError(f"{function_id}: cannot import {path}")
            module = importlib.util.module_from_spec(import_spec)
            sys.modules[module_name] = module
            try:
                import_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
        handler: Handler | None = getattr(module, spec.attribute, None)
        if not callable(handler):
            raise AttributeError(f"{function_id}: {path} has no callable {spec.attribute!r}")
        self._loaded[function_id] = _LoadedFunction(handler, module, private, stream)
        return handler

    def invoke(self, function_id: str, event: Any) -> Any:
        """Invoke a function directly (like ``sam local invoke``); exceptions propagate."""
        result, _ = self._invoke(function_id, event)
        return result

    def _invoke(self, function_id: str, event: Any) -> tuple[Any, float]:
        handler = self.load(function_id)
        loaded = self._loaded[function_id]
        spec = self._spec(function_id)
        name = self.stack.function_name(function_id)
        context = LambdaContext(
            function_name=name,
            invoked_function_arn=self.stack.resource(function_id).get_att("Arn"),
            memory_limit_in_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            log_stream_name=loaded.log_stream_name,
        )
        with self._function_scope(function_id, loaded.private_modules, loaded.log_stream_name):
            started = time.monotonic()
            result = handler(event, context)
            return result, time.monotonic() - started

    @contextlib.contextmanager
    def _function_scope(
        self, function_id: str, private: dict[str, ModuleType], log_stream: str
    ) -> Iterator[None]:
        """Apply a function's environment, sys.path and sibling modules; undo them after.

        Every function directory has its own ``app.py`` and may have same-named helpers; a
        function's top-level sibling modules live in ``private`` between invocations so that
        another function importing a module of the same name gets its own.
        """
        spec = self._spec(function_id)
        code_dir = str(spec.code_uri)
        env = {**self.environment(function_id), "AWS_LAMBDA_LOG_STREAM_NAME": log_stream}
        local_names = _top_level_names(spec.code_uri)
        saved_env = {key: os.environ.get(key) for key in (*env, *_REMOVED_VARS)}
        stashed = _pop_modules(local_names)
        sys.modules.update(private)
        sys.path.insert(0, code_dir)
        os.environ.update(env)
        for key in _REMOVED_VARS:
            os.environ.pop(key, None)
        try:
            yield
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            with contextlib.suppress(ValueError):
                sys.path.remove(code_dir)
            private.clear()
            private.update(_pop_modules(local_names))
            sys.modules.update(stashed)

    # ---------------------------------------------------------------- schedules

    def scheduled_functions(self) -> dict[str, float]:
        """Functions with a ``rate(...)`` schedule, and its period in seconds (not cron ones)."""
        rates: dict[str, float] = {}
        for function_id, spec in self.functions.items():
            for schedule in spec.schedules:
                rate = schedule.rate_s
                if rate is not None:
                    rates[function_id] = min(rate, rates.get(function_id, rate))
        return rates

    def run_scheduled(self, function_id: str) -> Any:
        """Invoke a scheduled function now with the event its EventBridge rule would send."""
        spec = self._spec(function_id)
        if not spec.schedules:
            raise KeyError(f"function {function_id!r} has no Schedule event in the template")
        return self.invoke(function_id, scheduled_event(spec, self.stack))

    def _spec(self, function_id: str) -> FunctionSpec:
        try:
            return self.functions[function_id]
        except KeyError:
            raise KeyError(f"no serverless function {function_id!r} in the template") from None

    # ---------------------------------------------------------------- event sources

    def pump_once(self) -> PumpReport:
        """Give each event source at most one batch of its waiting messages."""
        report = PumpReport()
        for source in self.event_sources:
            messages = self._receive(source)
            if messages:
                report.add(self._deliver(source, messages))
        if self._feeds:
            report.add(self._pump_feeds())
        self.fire_due_schedules()
        return report

    def fire_due_schedules(self, now: float | None = None) -> int:
        """EventBridge Scheduler's part: each one-time schedule (``at(...)``) whose time has come
        on the local clock delivers its input to its SQS target, then is deleted
        (``ActionAfterCompletion: DELETE``); how many fired. Looked at every
        ``schedule_check_s`` unless ``now`` is given."""
        if now is None:
            if time.monotonic() < self._next_schedule_check:
                return 0
            self._next_schedule_check = time.monotonic() + self.schedule_check_s
        from voucher_distributor.domain.send_schedule import (  # noqa: PLC0415
            parse_at_expression,
        )

        scheduler = self.stack.client("scheduler")
        moment = time.time() if now is None else now
        fired = 0
        for summary in scheduler.list_schedules().get("Schedules", []):
            name, group = summary["Name"], summary.get("GroupName") or "default"
            if (group, name) in self._fired_schedules:
                continue
            got = scheduler.get_schedule(Name=name, GroupName=group)
            at = parse_at_expression(str(got.get("ScheduleExpression", "")))
            if at is None or at > moment or got.get("State") == "DISABLED":
                continue
            target = got["Target"]
            if str(target["Arn"]).split(":")[2] == "sqs":
                self.stack.client("sqs").send_message(
                    QueueUrl=self.stack.queue_url_for_arn(target["Arn"]),
                    MessageBody=target.get("Input") or "{}",
                )
            else:
                log.error("schedule %s: target %s is not a queue; not fired", name, target["Arn"])
                continue
            fired += 1
            if got.get("ActionAfterCompletion") == "DELETE":
                scheduler.delete_schedule(Name=name, GroupName=group)
            else:
                self._fired_schedules.add((group, name))
        return fired

    def run_until(
        self,
        predicate: Callable[[], bool],
        timeout_s: float,
        idle_sleep_s: float = 0.05,
        on_progress: Callable[[PumpReport], None] | None = None,
    ) -> PumpReport:
        """Pump until ``predicate()`` holds; :class:`RunTimeoutError` after ``timeout_s``.

        ``on_progress`` is called after every pump that delivered something.
        """
        total = PumpReport()
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() >= deadline:
                holding = stack_queue_summary(self.stack)
                raise RunTimeoutError(
                    f"condition not met within {timeout_s:g}s; "
                    + (
                        f"queues still holding messages: {holding}"
                        if holding
                        else "no queue holds messages (nothing left to deliver)"
                    )
                )
            report = self.pump_once()
            total.add(report)
            if report.delivered:
                if on_progress is not None:
                    on_progress(report)
            else:
                time.sleep(idle_sleep_s)
        return total

    def run_until_idle(
        self, timeout_s: float, idle_sleep_s: float = 0.05, **kwargs: Any
    ) -> PumpReport:
        """Pump until no event-source queue holds a message (visible, in flight or delayed)."""
        urls = [source.queue_url for source in self.event_sources]
        return self.run_until(
            lambda: (
                all(self.stack.queue_counts(url).total == 0 for url in urls)
                and self.feeds_pending() == 0
            ),
            timeout_s,
            idle_sleep_s,
            **kwargs,
        )

    def _receive(self, source: EventSource) -> list[dict[str, Any]]:
        """Up to BatchSize messages, in ReceiveMessage calls of at most 10."""
        sqs = self.stack.client("sqs")
        messages: list[dict[str, Any]] = []
        while len(messages) < source.event.batch_size:
            batch = sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=min(source.event.batch_size - len(messages), _MAX_RECEIVE),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            messages.extend(batch)
            if len(batch) < _MAX_RECEIVE:
                break
        return messages

    def _deliver(self, source: EventSource, messages: list[dict[str, Any]]) -> PumpReport:
        function_id = source.function_id
        records = [sqs_record(m, source.queue_arn, self.stack.region) for m in messages]
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        _visibility_changes.forget(handles.values())
        report = PumpReport(invocations=1, delivered=len(messages), by_function={function_id: 1})
        failed: list[str]
        try:
            result, elapsed = self._invoke(function_id, {"Records": records})
        except Exception as exc:
            log.exception(
                "%s raised on a batch of %d message(s) from %s; they return to the queue",
                function_id,
                len(messages),
                source.queue_url.rsplit("/", 1)[-1],
            )
            failed, reason = list(handles), f"raised {type(exc).__name__}: {exc}"
            report.errors = 1
        else:
            timeout_s = self._spec(function_id).timeout_s
            if self.enforce_timeout and elapsed > timeout_s:
                log.error(
                    "%s ran %.1fs, over its %ds Timeout: Lambda would have stopped it; "
                    "its messages return to the queue",
                    function_id,
                    elapsed,
                    timeout_s,
                )
                failed, reason = list(handles), f"timed out after {elapsed:.1f}s"
                report.errors = 1
            elif source.event.reports_batch_item_failures:
                failed, reason = _batch_item_failures(function_id, result, handles)
            else:
                failed, reason = [], ""
        sqs = self.stack.client("sqs")
        # A failed message whose handler set its own visibility (ChangeMessageVisibility: "come
        # back in N s") keeps it, as on Lambda; only the others get the local retry visibility.
        own = {mid for mid in failed if _visibility_changes.take(handles[mid])}
        to_delete = [mid for mid in handles if mid not in failed]
        for chunk in _chunks(to_delete):
            sqs.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": handles[mid]} for i, mid in enumerate(chunk)
                ],
            )
        for chunk in _chunks([mid for mid in failed if mid not in own]):
            sqs.change_message_visibility_batch(
                QueueUrl=source.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": handles[mid],
                        "VisibilityTimeout": self.retry_visibility_s,
                    }
                    for i, mid in enumerate(chunk)
                ],
            )
        _visibility_changes.forget(handles.values())  # the runner's own resets, just made
        report.deleted = len(to_delete)
        report.returned = len(failed)
        if failed:
            report.failures.append(InvocationFailure(function_id, tuple(failed), reason))
        return report
