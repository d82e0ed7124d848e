"""Fault-injection harness: many small seeded batches through the whole local pipeline (moto +
the Certiverse sandbox + the real handlers), with faults injected at real seams, and the
invariants checked after every run.

Seams:

* **wire** — a botocore hook on ``boto3.DEFAULT_SESSION`` (the session every handler's clients
  come from) raises on the Nth call of one kind, *before* it is sent (the write never lands) or
  *after* its answer arrived (the write landed, the process died before the next step). This is
  the handler process dying at a step boundary: around the lease, the purchase record, the chunk
  files, the outcome files, the assignments, the chunk's end and its count in the batch, the
  queue sends, the report's objects.
* **throttle** — DynamoDB answers ``ProvisionedThroughputExceededException`` at a rate (after
  the SDK's own retries), on any DynamoDB call.
* **lambda** — an invocation that did its work but is reported as timed out (Lambda stopped it
  after its side effects; its messages come back).
* **sqs** — deliveries duplicated, with a delay so they arrive out of order.
* **race** — a second purchase worker runs the same chunk concurrently (conditional-write race).
* **sandbox** — Certiverse 500/503/429, latency, dropped connections, a purchase committed but
  its reply lost, slow generation, generation beyond the deadline, failed generation, codes
  listed after the status says Complete, the token revoked mid-batch.

A run ends when its batch is DONE or FAILED and every queue is drained; a chunk left behind (a
message in a DLQ, a batch that never ends) is a violation like a voucher bought twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.models.ledger import BatchStatus
from voucher_distributor_cli.local.run import LocalPipeline, RunResult
from voucher_distributor_cli.sandbox import FaultSettings, SandboxConfig, SandboxServer

from ..invariants import batch_purchases, consistency_violations

TOKEN = "reliability-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"
CLOUD = "Cloud Fundamentals Exam Vouchers"
EXAMPLE = "Example Corp Employee Upskilling"  # example.com addresses only
PROGRAMS = (SPRING, CLOUD, EXAMPLE)

#: Seconds instead of hours: a purchase whose codes take longer than this fails its chunk.
DEADLINE_S = 3
TUNING = {
    "INITIAL_CHECK_SECONDS": "0.2",
    "POLL_BASE_DELAY_SECONDS": "1",
    "POLL_MAX_DELAY_SECONDS": "1",
    # The protocol needs the lease to outlive the time from its renewal to the end of the POST
    # (deployed: 180 s against a 120 s function timeout). 2 s did not hold when four workers
    # shared two busy cores (seed 334 bought a chunk twice); 5 s keeps the same assumption true.
    "PURCHASE_LEASE_SECONDS": "5",
    "POLL_DEADLINE_SECONDS": str(DEADLINE_S),
    "POWERTOOLS_LOG_LEVEL": "INFO",
}
RUN_TIMEOUT_S = 60.0


class SimulatedCrash(RuntimeError):
    """The handler process died here (raised from a wire hook)."""


# ---------------------------------------------------------------------- wire seams

#: name -> (botocore event, predicate on the API parameters, when: "before" | "after")
WireMatch = Callable[[dict[str, Any]], bool]


def _update(fragment: str) -> WireMatch:
    return lambda p: fragment in str(p.get("UpdateExpression", ""))


def _key(fragment: str) -> WireMatch:
    return lambda p: fragment in str(p.get("Key", ""))


def _any(_: dict[str, Any]) -> bool:
    return True


def _plain(value: object) -> object:
    """A value as the resource layer gave it, or as the wire has it ({"S": ...})."""
    if isinstance(value, dict) and len(value) == 1 and "S" in value:
        return value["S"]
    return value


def _status_set(params: dict[str, Any]) -> object:
    """The status an ``update_batch(status=...)`` call sets, if it sets one."""
    if "#status = :status" not in str(params.get("UpdateExpression", "")):
        return None
    return _plain((params.get("ExpressionAttributeValues") or {}).get(":status"))


def _item_sk(params: dict[str, Any]) -> str:
    return str(_plain((params.get("Item") or {}).get("sk", "")))


WIRE_SEAMS: dict[str, tuple[str, str, WireMatch]] = {
    # ingest
    "batch-create": ("dynamodb", "PutItem", lambda p: _item_sk(p) == "BATCH"),
    "chunk-file": ("s3", "PutObject", _key("/chunks/")),
    "chunk-record": ("dynamodb", "PutItem", lambda p: _item_sk(p).startswith("C#")),
    "rejected-file": ("s3", "PutObject", _key("rejected.jsonl")),
    "batch-update": ("dynamodb", "UpdateItem", _update("#chunk_count")),
    "batch-planned": ("dynamodb", "UpdateItem", lambda p: _status_set(p) == "PLANNED"),
    "chunk-messages": ("sqs", "SendMessageBatch", _any),
    # purchase
    "lease": ("dynamodb", "UpdateItem", _update("lease_owner = :owner")),
    "record-purchase": ("dynamodb", "UpdateItem", _update("purchase_code = :code")),
    "poll-message": ("sqs", "SendMessage", lambda p: '"attempt"' in str(p.get("MessageBody"))),
    # assignment
    "outcomes-file": ("s3", "PutObject", _key("/outcomes/")),
    "assignments": ("dynamodb", "BatchWriteItem", _any),
    "finish-chunk": ("dynamodb", "UpdateItem", _update("assigned_count = :assigned")),
    "count-chunk": ("dynamodb", "UpdateItem", _update("ADD finished_chunks")),
    "report-request": (
        "sqs",
        "SendMessage",
        lambda p: '"chunkNo"' not in str(p.get("MessageBody")),
    ),
    # report
    "start-report": ("dynamodb", "UpdateItem", _update("#s = :reporting")),
    "results-csv": ("s3", "PutObject", _key(".results.csv")),
    "summary-json": ("s3", "PutObject", _key(".summary.json")),
    "batch-done": ("dynamodb", "UpdateItem", lambda p: _status_set(p) == "DONE"),
}


@dataclass
class WireFault:
    seam: str
    when: str  # "before" | "after"
    nth: int  # fire on the nth matching call of the run
    seen: int = 0
    fired: int = 0


@dataclass
class WirePlan:
    """What the wire hooks do during the current run (empty: nothing)."""

    faults: list[WireFault] = field(default_factory=list)
    throttle_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    armed: bool = False
    throttled: int = 0

    def _match(self, when: str, event_name: str, params: dict[str, Any]) -> None:
        if not self.armed:
            return
        _, _, rest = event_name.partition(".")
        service, _, operation = rest.partition(".")
        throttled = service == "dynamodb" and self.throttle_rate > 0
        if when == "before" and throttled and self.rng.random() < self.throttle_rate:
            self.throttled += 1
            raise ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": "Rate of requests exceeds the allowed throughput (injected)",
                    }
                },
                operation,
            )
        for fault in self.faults:
            if fault.when != when or fault.fired:
                continue
            f_service, f_operation, predicate = WIRE_SEAMS[fault.seam]
            if (service, operation) != (f_service, f_operation) or not predicate(params):
                continue
            fault.seen += 1
            if fault.seen == fault.nth:
                fault.fired += 1
                raise SimulatedCrash(f"process died {when} {fault.seam} (injected)")


class WireHooks:
    """Registered once on boto3's default session; consults the current :class:`WirePlan`."""

    def __init__(self) -> None:
        self.plan = WirePlan()
        self._params: threading.local = threading.local()

    def before(self, params: dict[str, Any], event_name: str, **_: Any) -> None:
        self._params.last = params
        self.plan._match("before", event_name, params)

    def after(self, event_name: str, **_: Any) -> None:
        params = getattr(self._params, "last", {}) or {}
        self.plan._match("after", event_name.replace("after-call", "x"), params)

    def register(self) -> None:
        boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events
        events.register("before-parameter-build", self.before, unique_id="vd-rel-before")
        events.register("after-call", self.after, unique_id="vd-rel-after")

    def unregister(self) -> None:
        if boto3.DEFAULT_SESSION is None:
            return
        events = boto3.DEFAULT_SESSION.events
        events.unregister("before-parameter-build", unique_id="vd-rel-before")
        events.unregister("after-call", unique_id="vd-rel-after")


# ---------------------------------------------------------------------- scenarios

#: Faults that legitimately fail a chunk (its rows end `failed` with the reason).
FAILING_FAULTS = frozenset({"generation-failure", "deadline", "token-revoked"})

FAULT_KINDS = (
    "wire",
    "wire",
    "wire",
    "throttle",
    "lambda-timeout",
    "sqs-duplicates",
    "race",
    "http-500",
    "http-503-429",
    "latency",
    "drop",
    "reply-lost",
    "slow-generation",
    "late-codes",
    "deadline",
    "generation-failure",
    "token-revoked",
)


@dataclass
class Scenario:
    seed: int
    rows: list[dict[str, str]]
    via: str  # "csv" | "request"
    faults: list[str]  # kinds, with details for wire faults ("wire:<seam>:<when>:<nth>")
    expected_rejected: set[int]
    program: str | None = None  # the request's programName
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [f.split(":", 1)[0] for f in self.faults]


def make_scenario(seed: int) -> Scenario:
    """A small batch and one to three faults, all drawn from ``seed``."""
    rng = random.Random(seed)
    via = "request" if rng.random() < 0.25 else "csv"
    programs = (
        [rng.choice(PROGRAMS)] if via == "request" else rng.sample(PROGRAMS, rng.randint(1, 3))
    )
    rows: list[dict[str, str]] = []
    expected_rejected: set[int] = set()
    big = via == "csv" and rng.random() < 0.02
    for program in programs:
        count = 1001 + rng.randint(0, 5) if big and program == programs[0] else rng.randint(1, 6)
        domain = "example.com" if program == EXAMPLE else "acme.example"
        for n in range(count):
            rows.append(
                {"email": f"s{seed}.p{n}.{len(rows)}@{domain}", "first_name": f"F{n}",
                 "last_name": f"L{n}", "program_name": program}
            )  # fmt: skip
    if rng.random() < 0.5:
        # A malformed address and a repeat within a program: rejected, the rest proceed.
        first = rows[0]
        rows.insert(rng.randrange(len(rows) + 1), {**first, "email": "not-an-email"})
        rows.append(dict(first))
        expected_rejected = {i + 1 for i, r in enumerate(rows) if r["email"] == "not-an-email"}
        expected_rejected.add(len(rows))
    faults: list[str] = []
    params: dict[str, Any] = {}
    for kind in rng.sample(FAULT_KINDS, rng.randint(1, 3)):
        if kind == "wire":
            seam = rng.choice(sorted(WIRE_SEAMS))
            nth = 1 if rng.random() < 0.7 else 2
            faults.append(f"wire:{seam}:{rng.choice(['before', 'after'])}:{nth}")
        elif kind not in {f.split(":", 1)[0] for f in faults}:
            faults.append(kind)
    if "token-revoked" in faults:
        params["revoke_at_step"] = rng.randint(0, 2)
    params["fault_seed"] = rng.randrange(2**31)
    return Scenario(
        seed=seed,
        rows=rows,
        via=via,
        faults=faults,
        expected_rejected=expected_rejected,
        program=programs[0] if via == "request" else None,
        params=params,
    )


def sandbox_faults(scenario: Scenario) -> FaultSettings:
    kinds = set(scenario.kinds)
    settings: dict[str, Any] = {"retry_after_s": 0}
    if "http-500" in kinds:
        settings["error_500_rate"] = 0.15
    if "http-503-429" in kinds:
        settings.update(error_503_rate=0.12, error_429_rate=0.12)
    if "latency" in kinds:
        settings["latency_s"] = 0.05
    if "drop" in kinds:
        settings["drop_rate"] = 0.1
    if "reply-lost" in kinds:
        settings.update(post_commit_fault="drop", post_commit_fault_rate=0.7)
    if "slow-generation" in kinds:
        settings["generation_delay_s"] = 1.2
    if "late-codes" in kinds:
        settings["complete_before_codes_s"] = 0.8
    if "deadline" in kinds:
        settings["generation_delay_s"] = DEADLINE_S + 30
    if "generation-failure" in kinds:
        settings["generation_failure_rate"] = 1.0
    return FaultSettings(**settings)


# ---------------------------------------------------------------------- one run


@dataclass
class RunRecord:
    seed: int
    via: str
    rows: int
    chunks: int
    faults: list[str]
    fired: Counter[str]
    status: str
    counts: dict[str, int]
    violations: list[str]
    seconds: float


class Harness:
    """One sandbox and one local stack, reused by every run (distinct inputs per run)."""

    def __init__(self, workdir: Path, *, log: io.TextIOBase | None = None) -> None:
        self.workdir = workdir
        self.log = log or open(workdir / "handlers.log", "w", encoding="utf-8")  # noqa: SIM115
        self.hooks = WireHooks()
        self.sandbox = SandboxServer(
            SandboxConfig(token=TOKEN, generation_delay_s=0.0, page_size=100, seed=5),
            host="127.0.0.1",
            port=0,
        )
        self.pipeline: LocalPipeline | None = None
        self._ledger: Ledger | None = None
        self._given_codes: set[str] = set()
        self._race_threads: list[threading.Thread] = []
        self._armed_timeouts: Counter[str] = Counter()
        self._scenario: Scenario | None = None
        self._fired: Counter[str] = Counter()
        self._rng = random.Random()

    # -------------------------------------------------------------- lifecycle

    def start(self) -> Harness:
        # The runner logs every failed invocation with its traceback: into the log, not stderr.
        runner_log = logging.getLogger("voucher_distributor_cli.local.runner")
        runner_log.propagate = False
        runner_log.handlers = [logging.StreamHandler(self.log)]
        self.hooks.register()
        self.sandbox.start()
        self.pipeline = LocalPipeline(
            certiverse_url=self.sandbox.base_url,
            certiverse_token=TOKEN,
            default_partner=PARTNER,
            log_stream=self.log,  # type: ignore[arg-type]
            tuning=TUNING,
            retry_visibility_s=1,
        ).start()
        lambdas = self.pipeline.lambdas
        assert lambdas is not None
        original_invoke = lambdas._invoke
        original_deliver = lambdas._deliver

        def invoke(function_id: str, event: Any) -> tuple[Any, float]:
            result, elapsed = original_invoke(function_id, event)
            if self._armed_timeouts[function_id] > 0:
                self._armed_timeouts[function_id] -= 1
                self._fired["lambda-timeout"] += 1
                # Lambda stopped it after its side effects: the messages come back.
                elapsed = float(lambdas.functions[function_id].timeout_s + 1)
            return result, elapsed

        def deliver(source: Any, messages: list[dict[str, Any]]) -> Any:
            self._before_delivery(source, messages)
            return original_deliver(source, messages)

        lambdas._invoke = invoke  # type: ignore[method-assign]
        lambdas._deliver = deliver  # type: ignore[method-assign]
        self._ledger = self.pipeline.ledger
        return self

    def stop(self) -> None:
        self.hooks.plan.armed = False
        for thread in self._race_threads:
            thread.join(timeout=30)
        with contextlib.suppress(Exception):
            if self.pipeline is not None:
                self.pipeline.stop()
        self.sandbox.stop()
        self.hooks.unregister()
        self.log.close()

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None
        return self._ledger

    # -------------------------------------------------------------- delivery-time faults

    def _before_delivery(self, source: Any, messages: list[dict[str, Any]]) -> None:
        scenario = self._scenario
        if scenario is None or not self.hooks.plan.armed:
            return
        kinds = set(scenario.kinds)
        assert self.pipeline is not None
        sqs = self.pipeline.stack.client("sqs")
        if "sqs-duplicates" in kinds and source.function_id != "IngestCsvFunction":
            for message in messages:
                if self._rng.random() < 0.5:
                    self._fired["sqs-duplicates"] += 1
                    # A second delivery of the same body, later: duplicated and out of order.
                    sqs.send_message(
                        QueueUrl=source.queue_url,
                        MessageBody=message["Body"],
                        DelaySeconds=self._rng.randint(0, 1),
                    )
        if "race" in kinds and source.function_id == "PurchaseFunction":
            for message in messages:
                if self._fired["race"] < 2:
                    self._fired["race"] += 1
                    self._race(json.loads(message["Body"]))
        timeouts = "lambda-timeout" in kinds and self._fired["lambda-timeout"] == 0
        if timeouts and self._rng.random() < 0.5:
            self._armed_timeouts[source.function_id] = 1

    def _race(self, body: dict[str, Any]) -> None:
        """A second worker takes the same chunk message at the same moment."""
        from voucher_distributor.pipeline.purchase import ChunkBusy, purchase_chunk

        runtime = sys.modules.get("voucher_distributor.runtime")
        if runtime is None or runtime.services.cache_info().currsize == 0:
            return
        services = runtime.services()

        def worker() -> None:
            # Whatever ends this worker (busy, a crash, a Certiverse error) is a worker dying.
            with contextlib.suppress(ChunkBusy, Exception):
                purchase_chunk(
                    services, body["batchId"], int(body["chunkNo"]), owner=f"racer-{time.time()}"
                )

        thread = threading.Thread(target=worker, daemon=True)
        self._race_threads.append(thread)
        thread.start()

    # -------------------------------------------------------------- a run

    def run(self, scenario: Scenario) -> RunRecord:
        assert self.pipeline is not None
        started = time.monotonic()
        self._scenario = scenario
        self._fired = Counter()
        self._armed_timeouts = Counter()
        self._rng = random.Random(scenario.params["fault_seed"])
        plan = WirePlan(rng=random.Random(scenario.params["fault_seed"] + 1))
        for fault in scenario.faults:
            if fault.startswith("wire:"):
                _, seam, when, nth = fault.split(":")
                plan.faults.append(WireFault(seam, when, int(nth)))
        if "throttle" in scenario.kinds:
            # Throttles that outlasted the SDK's own retries: rare, but they reach the handler.
            plan.throttle_rate = 0.02
        self.hooks.plan = plan
        self.sandbox.set_token(TOKEN)
        self.sandbox.set_faults(sandbox_faults(scenario))
        self.sandbox.clear_request_log()
        violations: list[str] = []
        batch_id = self._submit(scenario)
        status = "timeout"
        try:
            status = self._pump(scenario, batch_id)
        except Exception as exc:  # the harness reports, never stops
            violations.append(f"the run did not end: {type(exc).__name__}: {exc}")
        finally:
            plan.armed = False
            for thread in self._race_threads:
                thread.join(timeout=30)
            self._race_threads.clear()
            self.sandbox.set_faults(FaultSettings())
            self.sandbox.set_token(TOKEN)
        try:
            self._drain()
        except Exception as exc:
            violations.append(f"queues did not drain: {exc}")
        violations += self._dead_letters()
        fired = Counter(self._fired)
        for fault in plan.faults:
            if fault.fired:
                fired[f"wire:{fault.seam}:{fault.when}"] += fault.fired
        if plan.throttled:
            fired["throttle"] += plan.throttled
        fired.update(self._sandbox_faults_seen(scenario, batch_id))
        if status not in {"done", "failed"}:
            violations.append(f"the batch did not end within {RUN_TIMEOUT_S:g}s ({status})")
        counts: dict[str, int] = {}
        chunks = len(list(self.ledger.iter_chunks(batch_id)))
        if status in {"done", "failed"}:
            result = self.pipeline.result(batch_id)
            counts = dict(result.summary.get("counts") or {})
            violations += self._check(scenario, result, fired)
        return RunRecord(
            seed=scenario.seed,
            via=scenario.via,
            rows=len(scenario.rows),
            chunks=chunks,
            faults=scenario.faults,
            fired=fired,
            status=status,
            counts=counts,
            violations=violations,
            seconds=time.monotonic() - started,
        )

    def _reconcile_flagged(
        self, problems: list[str], result: RunResult, fired: Counter[str]
    ) -> list[str]:
        """A purchase made just before the token was revoked cannot be looked up any more: the
        chunk fails naming its marker for ``reconcile``. Counted apart, not as a violation —
        only when that is exactly what happened."""
        if not fired["token-revoked"]:
            return problems
        chunks = list(self.ledger.iter_chunks(result.batch_id))
        recorded = {c.purchase_code for c in chunks}
        unrecorded = [
            p
            for p in batch_purchases(self.sandbox.purchases(), result.batch_id)
            if p.voucher_purchase_code not in recorded
        ]
        failed = [c for c in chunks if c.failure_reason]
        flagged = [
            p
            for p in unrecorded
            if any("reconcile" in (c.failure_reason or "") and f"{c.chunk_no:05d}]" in p.notes
                   for c in failed)
        ]  # fmt: skip
        if not unrecorded or len(flagged) != len(unrecorded):
            return problems
        fired["flagged-for-reconcile"] += len(flagged)
        return [p for p in problems if not p.startswith("purchases at Certiverse")]

    def _sandbox_faults_seen(self, scenario: Scenario, batch_id: str) -> Counter[str]:
        """What the sandbox actually did wrong during the run."""
        seen: Counter[str] = Counter()
        for request in self.sandbox.request_log():
            if request.status is None:
                posted = request.method == "POST" and request.path.endswith("purchases")
                seen["reply-lost" if posted else "drop"] += 1
            elif request.status in {500, 503, 429, 401}:
                seen[f"http-{request.status}"] += 1
        kinds = set(scenario.kinds)
        if "latency" in kinds:
            seen["latency"] += 1
        bought = len(batch_purchases(self.sandbox.purchases(), batch_id))
        for kind in ("slow-generation", "late-codes", "deadline", "generation-failure"):
            if kind in kinds and bought:
                seen[kind] += bought
        return seen

    def _submit(self, scenario: Scenario) -> str:
        assert self.pipeline is not None
        if scenario.via == "request":
            batch_id = self.pipeline.submit_request(
                {
                    "requestId": f"rel-{scenario.seed}",
                    "programName": scenario.program,
                    "recipients": [{"email": r["email"], "firstName": r["first_name"]}
                                   for r in scenario.rows],
                }
            )  # fmt: skip
            assert batch_id is not None
            return batch_id
        path = self.workdir / f"run-{scenario.seed}.csv"
        columns = ["email", "first_name", "last_name", "program_name"]
        lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in scenario.rows]
        path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
        try:
            key = f"incoming/reliability/run-{scenario.seed}.csv"
            return self.pipeline.submit_csv(path, key=key)
        finally:
            path.unlink()

    def _pump(self, scenario: Scenario, batch_id: str) -> str:
        assert self.pipeline is not None
        assert self.pipeline.lambdas is not None
        lambdas = self.pipeline.lambdas
        deadline = time.monotonic() + RUN_TIMEOUT_S
        revoke_at = scenario.params.get("revoke_at_step", 0)
        if "token-revoked" not in scenario.kinds:
            revoke_at = None
        step = 0
        while time.monotonic() < deadline:
            batch = self.ledger.get_batch(batch_id)
            if batch is not None and batch.status in {BatchStatus.DONE, BatchStatus.FAILED}:
                return batch.status.value.lower()
            if revoke_at is not None and step == revoke_at:
                self.sandbox.set_token("rotated-elsewhere")
                self._fired["token-revoked"] += 1
            self.hooks.plan.armed = True
            try:
                with self._routed():
                    report = lambdas.pump_once()
                    for thread in self._race_threads:
                        thread.join(timeout=30)
            finally:
                self.hooks.plan.armed = False
            step += 1
            if not report.delivered:
                time.sleep(0.05)
        return "timeout"

    @contextlib.contextmanager
    def _routed(self) -> Iterator[None]:
        assert self.pipeline is not None
        with self.pipeline._logs_routed():
            yield

    def _drain(self) -> None:
        """Deliver what is left (late duplicates, polls) so the next run starts clean."""
        assert self.pipeline is not None
        self.pipeline.run_until_idle(timeout_s=30)

    def _dead_letters(self) -> list[str]:
        assert self.pipeline is not None
        stack = self.pipeline.stack
        problems = []
        for logical_id, url in stack.queues().items():
            if "DeadLetter" not in logical_id:
                continue
            if stack.queue_counts(url).total:
                problems.append(f"a message went to {logical_id} (a chunk or batch left behind)")
                stack.client("sqs").purge_queue(QueueUrl=url)
        return problems

    def _check(self, scenario: Scenario, result: RunResult, fired: Counter[str]) -> list[str]:
        assert self.pipeline is not None
        problems = consistency_violations(
            self.ledger,
            self.sandbox,
            result,
            whole_sandbox=False,
            input_rows=len(scenario.rows),
        )
        legit_failure = set(scenario.kinds) & FAILING_FAULTS
        problems = self._reconcile_flagged(problems, result, fired)
        if result.summary.get("status") == "failed":
            if "token-revoked" not in legit_failure:
                problems.append(f"the batch failed without cause: {result.summary.get('error')}")
            return problems
        for row in result.rows:
            number = int(row["row"])
            if number in scenario.expected_rejected and row["status"] != "rejected":
                problems.append(f"row {number} should be rejected, is {row['status']}")
            if number not in scenario.expected_rejected and row["status"] == "rejected":
                problems.append(f"row {number} rejected: {row['reason']}")
            if row["status"] == "failed" and not legit_failure:
                problems.append(f"row {number} failed without a failing fault: {row['reason']}")
        codes = [r["voucher_code"] for r in result.rows if r["status"] == "assigned"]
        again = self._given_codes.intersection(codes)
        if again:
            problems.append(f"{len(again)} code(s) already given in an earlier run")
        self._given_codes.update(codes)
        bought = batch_purchases(self.sandbox.purchases(), result.batch_id)
        if (
            fired
            and not bought
            and not legit_failure
            and any(r["status"] != "rejected" for r in result.rows)
        ):
            problems.append("rows were accepted but nothing was bought")
        return problems


def record_json(record: RunRecord) -> str:
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    fields["fired"] = dict(record.fired)
    return json.dumps(fields, default=str)
