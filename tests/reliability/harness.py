"""Fault-injection harness: many small seeded batches through the whole local pipeline (moto +
the Certiverse sandbox + the real handlers), with faults injected at real seams, and the
invariants checked after every run.

Seams:

* **wire** — a botocore hook on ``boto3.DEFAULT_SESSION`` (the session every handler's clients
  come from) raises on the Nth call of one kind, *before* it is sent (the write never lands) or
  *after* its answer arrived (the write landed, the process died before the next step). This is
  the handler process dying at a step boundary: around the lease, the purchase record, the chunk
  files, the outcome files, the assignments, the chunk's end and its count in the batch, the
  queue sends, the report's objects, and the holdings: a person's claim, a reissue's claim,
  a claim given back (deleted, or restored to the voucher a reissue replaced), the existing
  rows' file.
* **throttle** — DynamoDB answers ``ProvisionedThroughputExceededException`` at a rate (after
  the SDK's own retries), on any DynamoDB call.
* **lambda** — an invocation that did its work but is reported as timed out (Lambda stopped it
  after its side effects; its messages come back).
* **sqs** — deliveries duplicated, with a delay so they arrive out of order.
* **race** — a second purchase worker runs the same chunk concurrently (conditional-write race).
* **end-race** — a second worker checks the codes of a chunk a poll message is about to end, so
  two workers end one chunk; **slow-poll** — a poll invocation left with a second after its
  first message, so the rest are sent again (issue 23).
* **sandbox** — Certiverse 500/503/429, latency, dropped connections, a purchase committed but
  its reply lost, slow generation, generation beyond the deadline, failed generation, codes
  listed after the status says Complete, the token revoked mid-batch.

A share of the seeds (``MULTI_SHARE``) sends several inputs holding the same people on purpose:
the same CSV uploaded twice at once (two versions of one key) and/or a copy under another key;
HR requests sent together with half their people in common; or the same people again once the
first batch ended, a few rows asking for a reissue. Faults apply across all of them. People are
otherwise unique to their seed, so runs never share anyone.

Approval (issue 11): the stack's ``ApprovalThreshold`` is 10, so a batch buying more waits in
AWAITING_APPROVAL (about 15% of runs); each seed also draws what the harness does about it —
approve at once, reject at once, nobody decides (the timeout, 5.4 s here, rejects it), or a
decision made from another thread just as the timeout falls due (the two race for the one
conditional write) — and, for such runs, a wire fault on the approval path. A decided batch must
have exactly one decision, carried out: approved and bought once, or rejected with nothing
bought, its planned rows ``rejected`` and its claims given back.

E-mail (issue 21): the stack mails every assigned code (the local SES: moto's, its token
bucket, the mailbox simulator's events). Each seed draws one e-mail fault (from a generator of
its own, so the other draws stay as they were): the process dying just before or just after
the SES call (``ses-send``) or before its record (``email-record``) — the crash window that
leaves a row ``unknown`` —, SES throttling (the bucket at 1/s, from empty), e-mail
messages redelivered, SES's events delivered twice, or sending paused for a second. Its
invariants: nobody got a code that is not theirs, every assigned row ends in a final state or
``unknown``, and no row got a second e-mail (the rows left ``unknown`` are counted:
``email:unknown-window``).

The message's timing (issue 22), from a generator of its own again: about a quarter of runs
send their first inputs with a ``sendAt`` two seconds ahead and have the schedule's message
delivered twice (the batch must fire once: every row mailed once, the batch ``fired``); about
another quarter race a reminder against a resend ``--to`` once the batches ended (one row's
code set 2.9 days from expiry; the sync and the address correction at the same moment): the
reminder goes at most once, to whoever held the code at its claim, and a second sync sends
none.

A run ends when every batch of it is DONE or FAILED and every queue is drained; a chunk left
behind (a message in a DLQ, a batch that never ends) is a violation like a voucher bought twice.
Besides each batch's own invariants, across the run's batches: nobody holds two codes for one
(partner, program) unless a reissue was asked, every existing row shows a code its person was
given, and Certiverse sold exactly one voucher per (person, program) given one plus one per
reissue given.
"""

from __future__ import annotations

import contextlib
import csv
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
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.ledger.deliveries import parse_delivery_id
from voucher_distributor.domain.batches import find_marker
from voucher_distributor.domain.email_states import SETTLED
from voucher_distributor.models.email import EmailState
from voucher_distributor.models.ledger import BatchStatus, ChunkState
from voucher_distributor_cli.local.results import RunResult
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.local.runner.handlers import LambdaContext
from voucher_distributor_cli.ops.target import OpsError
from voucher_distributor_cli.sandbox import FaultSettings, SandboxConfig, SandboxServer

from ..invariants import (
    batch_purchases,
    consistency_violations,
    holdings_violations,
    iter_holdings,
)

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
    # A batch nobody decides is rejected by itself after 5.4 s (looked at every second).
    "APPROVAL_TIMEOUT_HOURS": "0.0015",
    # A pre-flight outage sends the input back for a second, then two (deployed 30 s, 2 min, ...).
    "INGEST_RETRY_DELAYS": "1,2",
}
#: A batch buying more than this waits for approval (the stack's ApprovalThreshold); the daily
#: limit is off (one stack serves every run of the day) and so is MaxRecipientsPerBatch.
APPROVAL_THRESHOLD = 10
PARAMETERS = {
    "ApprovalThreshold": str(APPROVAL_THRESHOLD),
    "DailyVoucherLimit": "0",
    "MaxRecipientsPerBatch": "0",
    # EXAMPLE enforces the assigned e-mail (issue 13): accepted, as a team assigning in the portal.
    "AcceptPortalAssignment": "true",
}
APPROVAL_ACTIONS = ("approve", "reject", "timeout", "race")
RUN_TIMEOUT_S = 60.0
#: And this much more per row: a run of a thousand rows mails a thousand codes, each with its
#: SES events, through one in-process runner (on a busy 2-core machine, ~60 ms a row in all).
#: The limit is for liveness (a batch that never ends), not a speed target.
RUN_SECONDS_PER_ROW = 0.1


def run_timeout_s(scenario: Scenario) -> float:
    return RUN_TIMEOUT_S + RUN_SECONDS_PER_ROW * sum(len(u.rows) for u in scenario.inputs)


class SimulatedCrash(RuntimeError):
    """The handler process died here (raised from a wire hook)."""


# ---------------------------------------------------------------------- wire seams

#: name -> (service, operation or operations, predicate on the API parameters)
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


def _key_pk(params: dict[str, Any], field: str = "Key") -> str:
    key = params.get(field)
    return str(_plain(key.get("pk", ""))) if isinstance(key, dict) else ""


def _transact(params: dict[str, Any], kind: str) -> bool:
    return any(kind in item for item in params.get("TransactItems") or [])


def _email_item(entry: dict[str, Any]) -> bool:
    """A transaction's entry on an e-mail delivery item (``sk = E#…``)."""
    body = next(iter(entry.values()), {})
    key = (body.get("Item") or body.get("Key") or {}) if isinstance(body, dict) else {}
    return str(_plain(key.get("sk", ""))).startswith("E#")


def _holding_claims(params: dict[str, Any]) -> bool:
    """The holdings' claim transaction (puts), not an e-mail slice's claims."""
    items = params.get("TransactItems") or []
    return _transact(params, "Put") and not any(_email_item(i) for i in items)


def _email_record(params: dict[str, Any]) -> bool:
    """The record of a send: one row's update, or a slice's updates in one transaction."""
    if "TransactItems" in params:
        return any(
            "message_id = :m" in str((i.get("Update") or {}).get("UpdateExpression", ""))
            for i in params["TransactItems"]
        )
    return "message_id = :m" in str(params.get("UpdateExpression", ""))


WIRE_SEAMS: dict[str, tuple[str, str | tuple[str, ...], WireMatch]] = {
    # ingest
    "batch-create": ("dynamodb", "PutItem", lambda p: _item_sk(p) == "BATCH"),
    "chunk-file": ("s3", "PutObject", _key("/chunks/")),
    "chunk-record": ("dynamodb", "PutItem", lambda p: _item_sk(p).startswith("C#")),
    "rejected-file": ("s3", "PutObject", _key("rejected.jsonl")),
    # the plan: one update, or with the day's voucher count one transaction
    "batch-update": (
        "dynamodb",
        ("UpdateItem", "TransactWriteItems"),
        lambda p: "#chunk_count" in str(p),
    ),
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
    # holdings (one person, one voucher per program, across batches)
    # claims: 100 conditional puts to a transaction (a reissue's own put or update)
    "claim": ("dynamodb", "TransactWriteItems", _holding_claims),
    "claim-one": ("dynamodb", "PutItem", lambda p: _key_pk(p, "Item").startswith("H#")),
    "reissue-claim": ("dynamodb", "UpdateItem", _update("list_append")),
    # giving claims back: 100 conditional deletes to a transaction (a reissue's restore)
    "release": ("dynamodb", "TransactWriteItems", lambda p: _transact(p, "Delete")),
    "release-restore": ("dynamodb", "UpdateItem", _update("SET batch_id = :old_batch")),
    "existing-file": ("s3", "PutObject", _key("existing.jsonl")),
}


#: Seams of the approval path, drawn (apart, so other seeds keep their draws) for runs with a
#: batch over the threshold.
APPROVAL_WIRE_SEAMS: dict[str, tuple[str, str | tuple[str, ...], WireMatch]] = {
    "await-approval": (
        "dynamodb",
        "UpdateItem",
        lambda p: _status_set(p) == "AWAITING_APPROVAL",
    ),
    "approval-announce": (
        "eventbridge",
        "PutEvents",
        lambda p: "Awaiting Approval" in str(p),
    ),
    "approval-check": ("sqs", "SendMessage", lambda p: '"check"' in str(p.get("MessageBody"))),
    "approval-timeout": ("dynamodb", "UpdateItem", _update("approval_decision = :d")),
    "approved-release": ("dynamodb", "TransactWriteItems", lambda p: ":planned" in str(p)),
    "approved-hand-out": ("sqs", "SendMessageBatch", _any),
    "rejected-release": ("dynamodb", "TransactWriteItems", lambda p: _transact(p, "Delete")),
    "rejected-report": ("s3", "PutObject", _key(".summary.json")),
}
#: Seams of issue 23's paths, drawn (apart, from a generator of their own) for a share of runs:
#: the ingest's lease, an outage's send-back, a failed chunk's count given back.
ISSUE23_WIRE_SEAMS: dict[str, tuple[str, str | tuple[str, ...], WireMatch]] = {
    "ingest-lease": ("dynamodb", "UpdateItem", _update("ingest_owner = :owner")),
    "preflight-send-back": ("dynamodb", "UpdateItem", _update("ingest_lease_until = :over")),
    "count-give-back": (
        "dynamodb",
        "TransactWriteItems",
        lambda p: "count_given_back" in str(p),
    ),
}
#: Issue 23's delivery-time faults: Certiverse down when the run starts (the ingest retried
#: after an outage), and a second ingest of the same input at the same moment.
ISSUE23_KINDS = ("ingest-outage", "double-ingest")
#: How long the sandbox answers 503 at the start of an "ingest-outage" run: past the client's
#: own retries (six attempts), so the first delivery sends the input back.
INGEST_OUTAGE_S = 5.0
#: The e-mail's crash window: the process dies around the SES call or before its record.
EMAIL_WIRE_SEAMS: dict[str, tuple[str, str | tuple[str, ...], WireMatch]] = {
    "ses-send": ("sesv2", "SendEmail", _any),
    # one row's record, or a slice's in one transaction (pipeline/email_slices.py)
    "email-record": ("dynamodb", ("UpdateItem", "TransactWriteItems"), _email_record),
}
#: One of these per seed (drawn apart, so other draws stay as they were).
EMAIL_FAULTS = (
    "wire:ses-send:before",
    "wire:ses-send:after",
    "wire:email-record:before",
    "email-throttle",
    "email-redelivery",
    "email-duplicate-events",
    "email-paused",
)
#: Issue 22's faults: a scheduled send's message delivered twice; a reminder racing a resend.
SCHEDULED_FIRE_TWICE = "sched-fire-twice"
REMINDER_RACES_RESEND = "reminder-races-resend"

#: The race's resend is asked this much "later", past the resend rule's 60 seconds.
RESEND_LATER_S = 120

ALL_SEAMS = {**WIRE_SEAMS, **APPROVAL_WIRE_SEAMS, **ISSUE23_WIRE_SEAMS, **EMAIL_WIRE_SEAMS}


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
    #: Inside a function's invocation (the wrapper counts them) / its process has died: a
    #: process that died makes no further call, so every later call of that invocation (an
    #: ``except`` path's clean-up, another thread's write) dies too, until it ends.
    invoking: int = 0
    dead: bool = False

    def _match(self, when: str, event_name: str, params: dict[str, Any]) -> None:
        if not self.armed:
            return
        if self.dead and self.invoking:
            raise SimulatedCrash(f"the process had died; no {event_name} (injected)")
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
            f_service, f_operations, predicate = ALL_SEAMS[fault.seam]
            if isinstance(f_operations, str):
                f_operations = (f_operations,)
            if service != f_service or operation not in f_operations or not predicate(params):
                continue
            fault.seen += 1
            if fault.seen == fault.nth:
                fault.fired += 1
                self.dead = self.invoking > 0
                raise SimulatedCrash(f"process died {when} {fault.seam} (injected)")


class WireHooks:
    """Registered once on boto3's default session; consults the current :class:`WirePlan`."""

    def __init__(self) -> None:
        self.plan = WirePlan()
        self._params: threading.local = threading.local()
        #: (key, version id) of every object written under results/, in the order written:
        #: which version of a shared results key is whose (two uploads of one key share it).
        self.results_writes: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def before(self, params: dict[str, Any], event_name: str, **_: Any) -> None:
        self._params.last = params
        self.plan._match("before", event_name, params)

    def after(self, event_name: str, parsed: Any = None, **_: Any) -> None:
        params = getattr(self._params, "last", {}) or {}
        key = str(params.get("Key", ""))
        if event_name.endswith("s3.PutObject") and key.startswith("results/"):
            version = (parsed or {}).get("VersionId") if isinstance(parsed, dict) else None
            with self._lock:
                self.results_writes.append((key, str(version or "")))
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
    # Issue 23: two workers ending one chunk (a second worker checks the codes of a chunk a
    # poll message is about to end), and a slow poll (an invocation left with little time:
    # its messages after the first are sent again, not handled).
    "end-race",
    "slow-poll",
)


#: The share of seeds whose run sends several inputs (the same people on purpose).
MULTI_SHARE = 0.35
MULTI_KINDS = ("duplicate-uploads", "overlapping-requests", "re-upload")


@dataclass
class Upload:
    """One input of a run: a CSV upload or an HR request."""

    rows: list[dict[str, str]]
    via: str  # "csv" | "request"
    name: str  # the CSV's file name under incoming/reliability/, or the request's requestId
    expected_rejected: set[int] = field(default_factory=set)
    program: str | None = None  # the request's programName
    metadata: dict[str, str] = field(default_factory=dict)  # the upload's object metadata
    wave: int = 0  # 0: sent at the start; 1: sent once every batch of wave 0 ended

    def asks_reissue(self, number: int) -> bool:
        """Does row ``number`` (1-based) ask for a new voucher?"""
        if self.metadata.get("reissue") == "true":
            return True
        return 0 < number <= len(self.rows) and self.rows[number - 1].get("reissue") == "yes"


@dataclass
class Scenario:
    seed: int
    rows: list[dict[str, str]]
    via: str  # "csv" | "request"
    faults: list[str]  # kinds, with details for wire faults ("wire:<seam>:<when>:<nth>")
    expected_rejected: set[int]
    program: str | None = None  # the request's programName
    params: dict[str, Any] = field(default_factory=dict)
    multi: str = ""  # one of MULTI_KINDS when the run sends more inputs than the first
    more: list[Upload] = field(default_factory=list)  # the inputs after the first
    #: What the harness does about a batch awaiting approval (one of APPROVAL_ACTIONS).
    approval: str = "approve"

    @property
    def kinds(self) -> list[str]:
        return [f.split(":", 1)[0] for f in self.faults]

    @property
    def inputs(self) -> list[Upload]:
        """Every input of the run, the first one first."""
        first = Upload(
            rows=self.rows,
            via=self.via,
            name=f"run-{self.seed}.csv" if self.via == "csv" else f"rel-{self.seed}",
            expected_rejected=self.expected_rejected,
            program=self.program,
        )
        return [first, *self.more]


def make_scenario(seed: int) -> Scenario:
    """A small batch and one to three faults, all drawn from ``seed``; for a share of seeds,
    more inputs holding the same people (drawn last, so the first input stays as it was)."""
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
        domain = _domain(program)
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
    scenario = Scenario(
        seed=seed,
        rows=rows,
        via=via,
        faults=faults,
        expected_rejected=expected_rejected,
        program=programs[0] if via == "request" else None,
        params=params,
    )
    if not big and rng.random() < MULTI_SHARE:
        scenario.multi = rng.choice(MULTI_KINDS)
        scenario.more = _more_inputs(rng, scenario)
    # Drawn from a generator of their own: every other draw of a seed stays as it was.
    approval_rng = random.Random(seed * 1_000_003 + 11)
    scenario.approval = approval_rng.choice(APPROVAL_ACTIONS)
    over = any(len(_people(u.rows)) > APPROVAL_THRESHOLD for u in scenario.inputs)
    if over and approval_rng.random() < 0.5:
        seam = approval_rng.choice(sorted(APPROVAL_WIRE_SEAMS))
        when = approval_rng.choice(["before", "after"])
        scenario.faults.append(f"wire:{seam}:{when}:1")
    # Issue 23's seams, from a generator of their own too.
    issue23_rng = random.Random(seed * 2_000_003 + 23)
    for kind in ISSUE23_KINDS:
        if issue23_rng.random() < 0.2:
            scenario.faults.append(kind)
    if issue23_rng.random() < 0.2:
        seam = issue23_rng.choice(sorted(ISSUE23_WIRE_SEAMS))
        when = issue23_rng.choice(["before", "after"])
        scenario.faults.append(f"wire:{seam}:{when}:1")
    email_rng = random.Random(seed * 7_919 + 23)
    email_fault = email_rng.choice(EMAIL_FAULTS)
    scenario.faults.append(f"{email_fault}:1" if email_fault.startswith("wire:") else email_fault)
    timing_rng = random.Random(seed * 4_001 + 22)
    draw = timing_rng.random()
    if draw < 0.25:
        scenario.faults.append(SCHEDULED_FIRE_TWICE)
    elif draw < 0.5:
        scenario.faults.append(REMINDER_RACES_RESEND)
    return scenario


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _domain(program: str) -> str:
    return "example.com" if program == EXAMPLE else "acme.example"


def _people(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The valid rows, each (person, program) once."""
    seen: set[tuple[str, str]] = set()
    people = []
    for row in rows:
        key = (row["email"], row["program_name"])
        if "@" in row["email"] and key not in seen:
            seen.add(key)
            people.append(dict(row))
    return people


def _more_inputs(rng: random.Random, scenario: Scenario) -> list[Upload]:
    """The inputs sent besides the first: the same people, on purpose."""
    first = scenario.inputs[0]
    seed, people = scenario.seed, _people(scenario.rows)
    if scenario.multi == "duplicate-uploads":
        if first.via == "request":  # the same list sent again under another requestId
            return [dataclasses.replace(first, name=f"rel-{seed}-dup")]
        # the same file uploaded again at once (a second version of its key), and/or a copy
        shape = rng.choice(("same-key", "copy", "both"))
        more = [] if shape == "copy" else [dataclasses.replace(first)]
        if shape != "same-key":
            more.append(dataclasses.replace(first, name=f"run-{seed}-copy.csv"))
        return more
    if scenario.multi == "overlapping-requests":
        # Requests sent together, each with half its people in common with the one before.
        program = first.program or people[0]["program_name"]
        base = [p for p in people if p["program_name"] == program]
        a = _overlapping(rng, seed, "a", program, base)
        if first.via == "request":
            return [a]
        return [a, _overlapping(rng, seed, "b", program, a.rows)]
    # re-upload: the same people once the first batch ended, a few asking for a new voucher
    again = [{**p, "reissue": ""} for p in people]
    metadata: dict[str, str] = {}
    if rng.random() < 0.5:
        for row in rng.sample(again, rng.randint(1, min(2, len(again)))):
            row["reissue"] = "yes"
    elif first.via == "csv" and rng.random() < 0.2:
        metadata["reissue"] = "true"  # the whole file, by object metadata
    if first.via == "request":
        name = f"rel-{seed}-again"
    else:
        name = first.name if rng.random() < 0.5 else f"run-{seed}-again.csv"
    return [Upload(again, first.via, name, program=first.program, metadata=metadata, wave=1)]


def _overlapping(
    rng: random.Random, seed: int, tag: str, program: str, people: list[dict[str, str]]
) -> Upload:
    common = people[: max(1, len(people) // 2)]
    fresh = [
        {"email": f"s{seed}.{tag}{n}@{_domain(program)}", "first_name": f"N{n}",
         "last_name": tag, "program_name": program}
        for n in range(max(1, len(people) - len(common)))
    ]  # fmt: skip
    rows = [dict(r) for r in common + fresh]
    rng.shuffle(rows)
    return Upload(rows, "request", f"rel-{seed}-{tag}", program=program)


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
    if "slow-generation" in kinds or {"end-race", "slow-poll"} & kinds:
        # (the two poll seams need polls: codes that come after the purchase's own check)
        settings["generation_delay_s"] = 1.2
    if "late-codes" in kinds:
        settings["complete_before_codes_s"] = 0.8
    if "deadline" in kinds:
        settings["generation_delay_s"] = DEADLINE_S + 30
    if "generation-failure" in kinds:
        settings["generation_failure_rate"] = 1.0
    if "ingest-outage" in kinds:
        settings["outage_s"] = INGEST_OUTAGE_S
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
    multi: str = ""
    inputs: int = 1
    statuses: list[str] = field(default_factory=list)  # one per batch, in submission order


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
        #: batch -> what the harness's approve/reject got: "approved", "rejected", "lost"
        #: (the timeout or another decision came first) or "asked" (a racing thread is on it).
        self._decisions: dict[str, str] = {}
        self._approval_threads: list[threading.Thread] = []
        self._rejected: set[str] = set()  # the run's batches rejected at approval
        self._armed_timeouts: Counter[str] = Counter()
        self._scenario: Scenario | None = None
        self._fired: Counter[str] = Counter()
        self._rng = random.Random()
        self._step = 0

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
            parameters=PARAMETERS,
            email=True,
        ).start()
        lambdas = self.pipeline.lambdas
        assert lambdas is not None
        original_invoke = lambdas._invoke
        original_deliver = lambdas._deliver

        def invoke_inner(function_id: str, event: Any) -> tuple[Any, float]:
            scenario = self._scenario
            if (
                function_id == "PollFunction"
                and scenario is not None
                and "slow-poll" in scenario.kinds
                and self.hooks.plan.armed
            ):
                # A slow poll: the invocation has a second left after its first message, so
                # the others are sent again (hits: invocations slowed, and messages deferred).
                self._fired["slow-poll"] += 1
                deferred = len(event.get("Records", [])) - 1
                if deferred > 0:
                    self._fired["slow-poll-deferred"] += deferred
                with mock.patch.object(
                    LambdaContext, "get_remaining_time_in_millis", return_value=1_000
                ):
                    result, elapsed = original_invoke(function_id, event)
            else:
                result, elapsed = original_invoke(function_id, event)
            if self._armed_timeouts[function_id] > 0:
                self._armed_timeouts[function_id] -= 1
                self._fired["lambda-timeout"] += 1
                # Lambda stopped it after its side effects: the messages come back.
                elapsed = float(lambdas.functions[function_id].timeout_s + 1)
            return result, elapsed

        def invoke(function_id: str, event: Any) -> tuple[Any, float]:
            plan = self.hooks.plan
            plan.invoking += 1
            try:
                return invoke_inner(function_id, event)
            finally:
                plan.invoking -= 1
                if not plan.invoking:
                    plan.dead = False  # the next invocation is a new process

        def deliver(source: Any, messages: list[dict[str, Any]]) -> Any:
            self._before_delivery(source, messages)
            return original_deliver(source, messages)

        lambdas._invoke = invoke  # type: ignore[method-assign]
        lambdas._deliver = deliver  # type: ignore[method-assign]
        (feed,) = [f for f in lambdas._feeds if f.function_id == "EmailEventsFunction"]
        original_drain = feed.drain

        def drain() -> list[dict[str, Any]]:
            events = original_drain()
            scenario = self._scenario
            if scenario is not None and "email-duplicate-events" in scenario.kinds and events:
                # SES's events delivered twice (EventBridge is at least once), out of order.
                self._fired["email-duplicate-events"] += len(events)
                return events + list(reversed(events))
            return events

        feed.drain = drain  # SES's events, as the local runner feeds them
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

        def again(kind: str, message: dict[str, Any]) -> None:
            """A second delivery of the same body, later: duplicated and out of order."""
            self._fired[kind] += 1
            sqs.send_message(
                QueueUrl=source.queue_url,
                MessageBody=message["Body"],
                DelaySeconds=self._rng.randint(0, 1),
            )

        if "sqs-duplicates" in kinds and source.function_id != "IngestCsvFunction":
            for message in messages:
                if self._rng.random() < 0.5:
                    again("sqs-duplicates", message)
        ingests = {"IngestCsvFunction", "IngestRequestFunction"}
        if "double-ingest" in kinds and source.function_id in ingests:
            for message in messages:
                an_input = source.function_id == "IngestRequestFunction" or (
                    '"Records"' in message["Body"]  # not the s3:TestEvent
                )
                if an_input and self._fired["two-ingests"] < 1:
                    self._fired["two-ingests"] += 1
                    self._ingest_twice(source.function_id, message["Body"])
        if SCHEDULED_FIRE_TWICE in kinds and source.function_id == "SendEmailsFunction":
            for message in messages:
                if '"fireAt"' in message["Body"]:
                    again(SCHEDULED_FIRE_TWICE, message)
        if "email-redelivery" in kinds and source.function_id == "SendEmailsFunction":
            for message in messages:
                again("email-redelivery", message)
        if "race" in kinds and source.function_id == "PurchaseFunction":
            for message in messages:
                if self._fired["race"] < 2:
                    self._fired["race"] += 1
                    self._race(json.loads(message["Body"]))
        if "end-race" in kinds and source.function_id == "PollFunction":
            for message in messages:
                if self._fired["end-race"] < 2 and self._end_race(json.loads(message["Body"])):
                    self._fired["end-race"] += 1
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

    def _ingest_twice(self, function_id: str, body: str) -> None:
        """A second delivery of the same input ingests it at the same moment (a repeat POST
        queues a request again; an upload can be delivered twice)."""
        from voucher_distributor.models.messages import DistributionRequest
        from voucher_distributor.pipeline.ingest import IngestBusy, ingest
        from voucher_distributor.pipeline.sources import request_ingest, upload_request

        services = self._ingest_services(function_id)

        def second() -> None:
            try:
                if function_id == "IngestRequestFunction":
                    request = request_ingest(
                        services, DistributionRequest.model_validate_json(body), sender="twice"
                    )
                else:
                    notification = json.loads(body)
                    s3 = notification["Records"][0]["s3"]
                    got = upload_request(
                        services, unquote_plus(s3["object"]["key"]), s3["object"].get("versionId"),
                        sender="twice",
                    )  # fmt: skip
                    if got is None:  # the object is gone (never here)
                        return
                    request = got
                outcome = ingest(services, dataclasses.replace(request, final_attempt=False))
                # Came after the first had planned it (a repeat), or planned it itself first.
                self._fired[
                    "two-ingests-second-was-a-repeat"
                    if outcome.duplicate
                    else "two-ingests-second-planned"
                ] += 1
            except IngestBusy:
                self._fired["two-ingests-one-waited"] += 1
            except Exception:  # whatever else ends it is a delivery dying
                self._fired["two-ingests-second-died"] += 1

        thread = threading.Thread(target=second, daemon=True)
        self._race_threads.append(thread)
        thread.start()

    def _ingest_services(self, function_id: str) -> Any:
        """The ingest function's services, built here on the stack's clients (the function's
        own may not be built yet when its first message is about to be delivered)."""
        from voucher_distributor.adapters.certiverse import CertiverseClient, StaticToken
        from voucher_distributor.adapters.events import Events
        from voucher_distributor.adapters.queues import Queues
        from voucher_distributor.adapters.storage import Storage
        from voucher_distributor.pipeline.context import Services
        from voucher_distributor.settings import Settings

        assert self.pipeline is not None
        assert self.pipeline.lambdas is not None
        stack = self.pipeline.stack
        settings = Settings.from_environ(self.pipeline.lambdas.environment(function_id))
        return Services(
            settings=settings,
            ledger=self.ledger,
            storage=Storage(settings.inbox_bucket, s3=stack.client("s3")),
            queues=Queues(sqs=stack.client("sqs")),
            events=Events(settings.event_bus_name, events=stack.client("events")),
            certiverse=CertiverseClient(settings.certiverse_base_url, StaticToken(TOKEN)),
        )

    def _end_race(self, body: dict[str, Any]) -> bool:
        """A second worker that read the chunk PURCHASED checks its codes at the same moment as
        the poll message's worker: both may end it (issue 23's two workers ending one chunk)."""
        from voucher_distributor.pipeline.poll import check_codes

        runtime = sys.modules.get("voucher_distributor.runtime")
        if runtime is None or runtime.services.cache_info().currsize == 0:
            return False
        services = runtime.services()
        chunk = services.ledger.chunks.get_chunk(body["batchId"], int(body["chunkNo"]))
        if chunk is None or chunk.state != ChunkState.PURCHASED:
            return False

        def worker() -> None:
            with contextlib.suppress(Exception):
                check_codes(services, chunk)

        thread = threading.Thread(target=worker, daemon=True)
        self._race_threads.append(thread)
        thread.start()
        return True

    # -------------------------------------------------------------- a run

    def run(self, scenario: Scenario) -> RunRecord:
        assert self.pipeline is not None
        started = time.monotonic()
        self._scenario = scenario
        self._fired = Counter()
        self._armed_timeouts = Counter()
        self._decisions = {}
        self._step = 0
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
        with self.hooks._lock:
            self.hooks.results_writes.clear()
        self.sandbox.set_token(TOKEN)
        self.sandbox.set_faults(sandbox_faults(scenario))
        self.sandbox.clear_request_log()
        mails_before = len(self.pipeline.ses.sent)
        unpause = self._arm_email_faults(scenario)
        violations: list[str] = []
        inputs = scenario.inputs
        batch_ids: list[str] = []
        statuses: dict[str, str] = {}
        try:
            # Every input of a wave is sent at once, then pumped until each of its batches ended.
            for wave in sorted({u.wave for u in inputs}):
                ids = [self._submit(scenario, u) for u in inputs if u.wave == wave]
                batch_ids += ids
                statuses.update(self._pump(scenario, ids))
                if any(statuses[b] not in {"done", "failed"} for b in ids):
                    break
        except Exception as exc:  # the harness reports, never stops
            violations.append(f"the run did not end: {type(exc).__name__}: {exc}")
        finally:
            plan.armed = False
            for thread in self._race_threads + self._approval_threads:
                thread.join(timeout=30)
            self._race_threads.clear()
            self._approval_threads.clear()
            self.sandbox.set_faults(FaultSettings())
            self.sandbox.set_token(TOKEN)
            unpause()
        try:
            # What a run leaves once its batches end (a thousand rows' SES events, duplicated
            # by the fault, and the results refreshes they ask for) drains at the run's pace:
            # on a slower 2-core machine seed 131's took over 80 s at half of it.
            self._drain(30 + RUN_SECONDS_PER_ROW * sum(len(u.rows) for u in inputs))
        except Exception as exc:
            violations.append(f"queues did not drain: {exc}")
            self._purge()  # counted once, here: the next run starts clean, not in this backlog
        violations += self._dead_letters()
        fired = Counter(self._fired)
        for fault in plan.faults:
            if fault.fired:
                fired[f"wire:{fault.seam}:{fault.when}"] += fault.fired
        if plan.throttled:
            fired["throttle"] += plan.throttled
        fired.update(self._sandbox_faults_seen(scenario, batch_ids))
        fired.update(self._issue23_paths_reached(batch_ids))
        ended = len(batch_ids) == len(inputs) and all(
            statuses.get(b) in {"done", "failed"} for b in batch_ids
        )
        if not ended:
            left = [statuses.get(b, "not sent") for b in batch_ids]
            limit = run_timeout_s(scenario)
            violations.append(f"the batches did not end within {limit:g}s ({left})")
        counts: Counter[str] = Counter()
        chunks = sum(len(list(self.ledger.chunks.iter_chunks(b))) for b in batch_ids)
        if ended:
            results = self._results(batch_ids)
            for result in results:
                counts.update(result.summary.get("counts") or {})
            violations += self._check(scenario, results, fired)
            violations += self._check_emails(batch_ids, mails_before, fired)
            violations += self._check_schedules(scenario, batch_ids, fired)
            if REMINDER_RACES_RESEND in scenario.kinds:
                violations += self._reminder_race(scenario, batch_ids, fired)
        final = [statuses.get(b, "timeout") for b in batch_ids]
        status = "timeout" if not ended else ("failed" if "failed" in final else "done")
        return RunRecord(
            seed=scenario.seed,
            via=scenario.via,
            rows=sum(len(u.rows) for u in inputs),
            chunks=chunks,
            faults=scenario.faults,
            fired=fired,
            status=status,
            counts=dict(counts),
            violations=violations,
            seconds=time.monotonic() - started,
            multi=scenario.multi,
            inputs=len(inputs),
            statuses=final,
        )

    def _issue23_paths_reached(self, batch_ids: list[str]) -> Counter[str]:
        """How often the run went down issue 23's paths: an ingest sent back by an outage
        (and read again), a failed chunk's count given back."""
        seen: Counter[str] = Counter()
        for batch_id in batch_ids:
            batch = self.ledger.batches.get_batch(batch_id)
            if batch is not None and batch.preflight_attempt is not None:
                seen["ingest-retried-after-outage"] += batch.preflight_attempt
            for chunk in self.ledger.chunks.iter_chunks(batch_id):
                if chunk.count_given_back is not None:
                    seen["count-given-back"] += 1
        return seen

    def _arm_email_faults(self, scenario: Scenario) -> Callable[[], None]:
        """Throttling (the local SES's bucket at 1/s, from empty) or a pause (a second); what
        undoes it."""
        assert self.pipeline is not None
        ses = self.pipeline.ses
        bucket = ses._bucket
        assert bucket is not None
        rate = bucket.rate
        if "email-throttle" in scenario.kinds:
            # 1/s from empty, now: the sends of one slice come faster than that on any machine.
            bucket.rate, bucket.tokens, bucket.at = 1.0, 0.0, ses.clock()
        if "email-paused" in scenario.kinds:
            ses.paused = True

            def resume() -> None:  # a second after the first send it refused (20 s at most)
                deadline = time.monotonic() + 20
                while ses.paused and ses.refused == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1.0)
                ses.paused = False

            threading.Thread(target=resume, daemon=True).start()

        def undo() -> None:
            if "email-throttle" in scenario.kinds:
                self._fired["email-throttle"] += ses.throttled
                bucket.rate = rate
            if "email-paused" in scenario.kinds:
                self._fired["email-paused"] += ses.refused
            ses.paused = False
            ses.throttled = ses.refused = 0

        return undo

    def _check_emails(
        self, batch_ids: list[str], mails_before: int, fired: Counter[str]
    ) -> list[str]:
        """Nobody got a code that is not theirs; every assigned row of a batch that mails is in
        a final state or ``unknown``; no row got a second e-mail."""
        assert self.pipeline is not None
        problems: list[str] = []
        ledger = self.ledger
        mails = self.pipeline.ses.sent[mails_before:]
        per_row: Counter[tuple[str, int]] = Counter()
        for mail in mails:
            tag = mail.tags.get("delivery-id", "")
            ids = parse_delivery_id(tag)
            if ids is None or ids[0] not in batch_ids:
                problems.append(f"an e-mail with no delivery id of this run ({tag!r})")
                continue
            batch_id, row, _ = ids
            key = (batch_id, row)
            per_row[key] += 1
            record = ledger.assignments.get_assignments([key]).get(key)
            body = message_from_bytes(mail.raw, policy=email_policy).get_body(("plain",))
            text = body.get_content() if body is not None else ""  # type: ignore[attr-defined]
            if record is None or record.email != mail.to[0] or record.voucher_code not in text:
                problems.append(f"row {row} of {batch_id}: an e-mail to someone else's code")
        problems += [
            f"row {row} of {b}: {n} e-mails (a second one)"
            for (b, row), n in per_row.items()
            if n > 1
        ]
        for batch_id in batch_ids:
            batch = ledger.batches.get_batch(batch_id)
            if not self.pipeline.mails(batch):
                continue
            emails = {d.row_number: d for d in ledger.deliveries.for_batch(batch_id)}
            for record in ledger.assignments.iter_assignments(batch_id):
                if record.status != "assigned" or not record.voucher_code:
                    continue
                delivery = emails.get(record.row_number)
                if delivery is None or delivery.state not in SETTLED:
                    state = delivery.state.value if delivery else "no e-mail"
                    problems.append(f"row {record.row_number} of {batch_id}: e-mail {state}")
                elif delivery.state == EmailState.UNKNOWN:
                    fired["email:unknown-window"] += 1
        fired["email:sent"] += len(mails)
        return problems

    def _check_schedules(
        self, scenario: Scenario, batch_ids: list[str], fired: Counter[str]
    ) -> list[str]:
        """A batch with a sendAt that mails has fired exactly once (its state ``fired``, by the
        schedule or at its first chunk when already due), and no schedule of it is left."""
        if SCHEDULED_FIRE_TWICE not in scenario.kinds:
            return []
        assert self.pipeline is not None
        problems = []
        left = {
            s["Name"]
            for s in self.pipeline.stack.client("scheduler").list_schedules().get("Schedules", [])
        }
        for batch_id in batch_ids:
            batch = self.ledger.batches.get_batch(batch_id)
            if batch is None or batch.send_at is None:
                continue
            fired["sched:send-at"] += 1
            if batch.send_state not in {None, "fired"}:
                problems.append(f"{batch_id}: scheduled send {batch.send_state}, never fired")
            if batch.send_schedule and batch.send_schedule in left:
                problems.append(f"{batch_id}: its schedule {batch.send_schedule} is left")
        return problems

    def _reminder_race(
        self, scenario: Scenario, batch_ids: list[str], fired: Counter[str]
    ) -> list[str]:
        """One mailed row's code 2.9 days from expiry; the sync (its reminder) and a resend
        ``--to`` at the same moment, then a second sync. The reminder goes once, to whoever
        held the code when it was claimed."""
        from voucher_distributor.adapters.ses import Ses
        from voucher_distributor.models.resend import ResendSelection
        from voucher_distributor.pipeline.redemption import sync_redemptions
        from voucher_distributor.pipeline.reminders import REMINDABLE
        from voucher_distributor.pipeline.resend import ask_resends

        assert self.pipeline is not None
        ledger = self.ledger
        picked = None
        for batch_id in batch_ids:
            emails = {d.row_number: d for d in ledger.deliveries.for_batch(batch_id)}
            for record in ledger.assignments.iter_assignments(batch_id):
                delivery = emails.get(record.row_number)
                if record.voucher_code and delivery is not None and delivery.state in REMINDABLE:
                    picked = record
                    break
            if picked is not None:
                break
        if picked is None:
            return []
        fired[REMINDER_RACES_RESEND] += 1
        old = picked.email
        new = f"moved.{scenario.seed}.{old}"
        expires = (datetime.now(UTC) + timedelta(days=2.9)).isoformat()
        self.sandbox.update_vouchers([picked.voucher_code], {"expirationDateUtc": expires})
        services = self._ingest_services("SyncFunction")
        services.ses = Ses(
            sesv2=self.pipeline.stack.client("sesv2"),
            configuration_set=services.settings.ses_configuration_set,
        )
        sqs = self.pipeline.stack.client("sqs")
        queue = self.pipeline.queue_url("EmailQueue")
        mails_before = len(self.pipeline.ses.sent)
        barrier = threading.Barrier(2)
        errors: list[str] = []

        def sync() -> None:
            barrier.wait()
            try:
                sync_redemptions(services)
            except Exception as exc:
                errors.append(f"the sync raised {type(exc).__name__}: {exc}")

        def resend() -> None:
            barrier.wait()
            try:
                ask_resends(
                    ledger,
                    lambda body: sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body)),
                    picked.batch_id,
                    ResendSelection(row=picked.row_number, to=new),
                    by="reliability", now=int(time.time()) + RESEND_LATER_S, email_enabled=True,
                )  # fmt: skip
            except Exception as exc:
                errors.append(f"the resend raised {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=f, daemon=True) for f in (sync, resend)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        with self._routed():
            self.pipeline.lambdas.run_until_idle(60)  # type: ignore[union-attr]
        sync_redemptions(services)  # a second sync: nothing more
        with self._routed():
            self.pipeline.lambdas.run_until_idle(60)  # type: ignore[union-attr]
        problems = list(errors)
        tag = f"{picked.batch_id}.{picked.row_number}.r3."
        reminders = [
            m for m in self.pipeline.ses.sent[mails_before:]
            if m.tags.get("delivery-id", "").startswith(tag)
        ]  # fmt: skip
        if len(reminders) > 1:
            problems.append(f"row {picked.row_number} of {picked.batch_id}: "
                            f"{len(reminders)} reminders")  # fmt: skip
        from voucher_distributor.adapters.ledger.table import holding_pk, holding_sk

        got = ledger.table.table.get_item(
            Key={"pk": holding_pk(new), "sk": holding_sk(picked.partner_name, picked.program_name)}
        ).get("Item")
        moves = (got or {}).get("moves") or []
        # The resend was asked "2 minutes later" (past the 60-second rule): its real moment.
        moved_at = int(moves[-1]["at"]) - RESEND_LATER_S if moves else None
        item = ledger.deliveries.get(picked.batch_id, picked.row_number, 3)
        for mail in reminders:
            to = mail.to[0]
            fired[f"reminder-to-{'new' if to == new else 'old'}"] += 1
            if to not in {old, new}:
                problems.append(f"a reminder to {to}, who never held the code")
            if to == old and item is not None and moved_at and (item.claimed_at or 0) > moved_at:
                problems.append("a reminder claimed for the old address after the code moved")
        if not reminders:
            fired["reminder-none"] += 1
        return problems

    def _results(self, batch_ids: list[str]) -> list[RunResult]:
        """Each batch's own results, in submission order (two uploads of one key write their
        results to one key: each batch's versions are picked out of what was written)."""
        assert self.pipeline is not None
        batches = {b: self.ledger.batches.get_batch(b) for b in batch_ids}
        keys = Counter(b.summary_key for b in batches.values() if b is not None)
        results = []
        for batch_id in batch_ids:
            batch = batches[batch_id]
            if batch is not None and keys[batch.summary_key] > 1:
                results.append(self._versioned_result(batch_id, batch.summary_key,
                                                      batch.results_csv_key))  # fmt: skip
            else:
                results.append(self.pipeline.result(batch_id))
        return results

    def _versioned_result(self, batch_id: str, summary_key: str, csv_key: str) -> RunResult:
        """The batch's last summary version, and the results CSV version written before it
        (a report writes the CSV, then the summary; reports run one at a time)."""
        assert self.pipeline is not None
        s3 = self.pipeline.stack.client("s3")
        bucket = self.pipeline.bucket

        def body(key: str, version: str) -> bytes:
            got = s3.get_object(Bucket=bucket, Key=key, VersionId=version)
            return bytes(got["Body"].read())

        with self.hooks._lock:
            writes = list(self.hooks.results_writes)
        summary: dict[str, Any] | None = None
        csv_version = ""
        last_csv = ""
        for key, version in writes:
            if key == csv_key:
                last_csv = version
            elif key == summary_key:
                document = json.loads(body(key, version))
                if document.get("batchId") == batch_id:
                    summary, csv_version = document, last_csv
        if summary is None:
            raise RuntimeError(f"no summary of {batch_id} was written to {summary_key}")
        rows: list[dict[str, str]] = []
        if (summary.get("results") or {}).get("csv") and csv_version:
            text = body(csv_key, csv_version).decode("utf-8-sig")
            rows = list(csv.DictReader(io.StringIO(text)))
        return RunResult(batch_id, summary, None, None, rows)

    def _reconcile_flagged(
        self, problems: list[str], result: RunResult, fired: Counter[str]
    ) -> list[str]:
        """A purchase made just before the token was revoked cannot be looked up any more: the
        chunk fails naming its marker for ``reconcile``. Counted apart, not as a violation —
        only when that is exactly what happened."""
        if not fired["token-revoked"]:
            return problems
        chunks = list(self.ledger.chunks.iter_chunks(result.batch_id))
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

    def _sandbox_faults_seen(self, scenario: Scenario, batch_ids: list[str]) -> Counter[str]:
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
        purchases = self.sandbox.purchases()
        bought = sum(len(batch_purchases(purchases, b)) for b in batch_ids)
        for kind in ("slow-generation", "late-codes", "deadline", "generation-failure"):
            if kind in kinds and bought:
                seen[kind] += bought
        return seen

    def _submit(self, scenario: Scenario, upload: Upload) -> str:
        assert self.pipeline is not None
        send_at = (
            {"sendAt": _iso(int(time.time()) + 2)}
            if SCHEDULED_FIRE_TWICE in scenario.kinds and upload.wave == 0
            else {}
        )
        if upload.via == "request":
            batch_id = self.pipeline.submit_request(
                {
                    "requestId": upload.name,
                    "programName": upload.program,
                    **send_at,
                    "recipients": [
                        {"email": r["email"], "firstName": r["first_name"],
                         **({"reissue": True} if r.get("reissue") == "yes" else {})}
                        for r in upload.rows
                    ],
                }
            )  # fmt: skip
            assert batch_id is not None
            return batch_id
        path = self.workdir / f"run-{scenario.seed}.csv"
        columns = ["email", "first_name", "last_name", "program_name"]
        if any("reissue" in r for r in upload.rows):
            columns.append("reissue")
        lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in upload.rows]
        path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
        try:
            key = f"incoming/reliability/{upload.name}"
            metadata = {**upload.metadata, **({"send-at": send_at["sendAt"]} if send_at else {})}
            return self.pipeline.submit_csv(path, key=key, metadata=metadata)
        finally:
            path.unlink()

    def _pump(self, scenario: Scenario, batch_ids: list[str]) -> dict[str, str]:
        """Deliver events until every one of these batches is DONE or FAILED (or time is up)."""
        assert self.pipeline is not None
        assert self.pipeline.lambdas is not None
        lambdas = self.pipeline.lambdas
        deadline = time.monotonic() + run_timeout_s(scenario)
        revoke_at = scenario.params.get("revoke_at_step", 0)
        if "token-revoked" not in scenario.kinds:
            revoke_at = None
        statuses = dict.fromkeys(batch_ids, "timeout")
        while time.monotonic() < deadline:
            for batch_id in batch_ids:
                batch = self.ledger.batches.get_batch(batch_id)
                ended = batch is not None and batch.status in {BatchStatus.DONE, BatchStatus.FAILED}
                # A scheduled send still to fire: its e-mails are part of the run.
                if ended and batch is not None and batch.send_state != "scheduled":
                    statuses[batch_id] = batch.status.value.lower()
                elif batch is not None and batch.status == BatchStatus.AWAITING_APPROVAL:
                    self._act_on_approval(scenario, batch)
            if all(s != "timeout" for s in statuses.values()):
                return statuses
            if revoke_at is not None and self._step == revoke_at:
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
            self._step += 1
            if not report.delivered:
                time.sleep(0.05)
        return statuses

    def _act_on_approval(self, scenario: Scenario, batch: Any) -> None:
        """Approve, reject, leave to the timeout, or decide from another thread just as the
        timeout falls due — once per batch."""
        if batch.batch_id in self._decisions or scenario.approval == "timeout":
            return
        decision = "approved" if scenario.approval == "approve" else "rejected"
        if scenario.approval == "race":
            decision = "approved" if scenario.seed % 2 else "rejected"
            self._decisions[batch.batch_id] = "asked"
            due = (batch.approval_deadline or 0) - time.time() - self._rng.uniform(-0.5, 0.5)

            def racer() -> None:
                time.sleep(max(0.0, due))
                self._decide(batch.batch_id, decision)

            thread = threading.Thread(target=racer, daemon=True)
            self._approval_threads.append(thread)
            thread.start()
            return
        self._decide(batch.batch_id, decision)

    def _decide(self, batch_id: str, decision: str) -> None:
        assert self.pipeline is not None
        try:
            self.pipeline.decide(batch_id, decision, "harness" if decision == "rejected" else None)
        except OpsError:
            self._decisions[batch_id] = "lost"
        else:
            self._decisions[batch_id] = decision
            self._fired[f"approval-{decision}"] += 1

    @contextlib.contextmanager
    def _routed(self) -> Iterator[None]:
        assert self.pipeline is not None
        with self.pipeline._logs_routed():
            yield

    def _drain(self, timeout_s: float = 30) -> None:
        """Deliver what is left (late duplicates, polls) so the next run starts clean."""
        assert self.pipeline is not None
        self.pipeline.run_until_idle(timeout_s=timeout_s)

    def _purge(self) -> None:
        """Empty every queue of the stack (what a run that did not drain left behind)."""
        assert self.pipeline is not None
        stack = self.pipeline.stack
        for url in stack.queues().values():
            stack.client("sqs").purge_queue(QueueUrl=url)

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

    def _check(
        self, scenario: Scenario, results: list[RunResult], fired: Counter[str]
    ) -> list[str]:
        """Each batch's invariants, then those across every batch of the run."""
        inputs = scenario.inputs
        problems: list[str] = []
        # A batch rejected at approval never bought for its people: another batch's rows that
        # counted on it (their person was held by it) fail, for retry-failed, naming it.
        self._rejected = {
            r.batch_id
            for r in results
            if (r.summary.get("approval") or {}).get("decision") == "rejected"
        }
        for upload, result in zip(inputs, results, strict=True):
            found = self._check_batch(scenario, upload, result, fired)
            problems += [f"[{upload.name}] {p}" for p in found] if len(inputs) > 1 else found
        problems += holdings_violations(results)
        problems += self._check_people(scenario, results)
        return problems

    def _check_batch(
        self, scenario: Scenario, upload: Upload, result: RunResult, fired: Counter[str]
    ) -> list[str]:
        assert self.pipeline is not None
        problems = consistency_violations(
            self.ledger,
            self.sandbox,
            result,
            whole_sandbox=False,
            input_rows=len(upload.rows),
        )
        legit_failure = set(scenario.kinds) & FAILING_FAULTS
        problems = self._reconcile_flagged(problems, result, fired)
        batch = self.ledger.batches.get_batch(result.batch_id)
        rejected_whole = False
        if batch is not None and batch.approval_reason is not None:
            problems += self._check_approval(scenario, batch, result, fired)
            rejected_whole = batch.approval_decision == "rejected"
        if result.summary.get("status") == "failed":
            if "token-revoked" not in legit_failure:
                problems.append(f"the batch failed without cause: {result.summary.get('error')}")
            return problems
        for row in result.rows:
            number = int(row["row"])
            if number in upload.expected_rejected and row["status"] != "rejected":
                problems.append(f"row {number} should be rejected, is {row['status']}")
            not_bought = rejected_whole and row["reason"].startswith("not bought")
            rejected = number not in upload.expected_rejected and row["status"] == "rejected"
            if rejected and not not_bought:
                problems.append(f"row {number} rejected: {row['reason']}")
            # Also a row whose person another batch row was buying, when that row failed.
            waited_on_rejected = any(b in row["reason"] for b in self._rejected)
            if row["status"] == "failed" and not legit_failure and not waited_on_rejected:
                problems.append(f"row {number} failed without a failing fault: {row['reason']}")
            if row["status"] == "existing" and upload.asks_reissue(number):
                problems.append(f"row {number} asked for a reissue but is existing")
        codes = [r["voucher_code"] for r in result.rows if r["status"] == "assigned"]
        again = self._given_codes.intersection(codes)
        if again:
            problems.append(f"{len(again)} code(s) already given in an earlier batch or run")
        self._given_codes.update(codes)
        bought = batch_purchases(self.sandbox.purchases(), result.batch_id)
        if (
            fired
            and not bought
            and not legit_failure
            and any(
                r["status"] not in {"rejected", "existing"}
                and not any(b in r["reason"] for b in self._rejected)
                for r in result.rows
            )
        ):
            problems.append("rows were accepted but nothing was bought")
        return problems

    def _check_approval(
        self, scenario: Scenario, batch: Any, result: RunResult, fired: Counter[str]
    ) -> list[str]:
        """A batch that waited: one decision, carried out as recorded."""
        problems: list[str] = []
        decision, by = batch.approval_decision, batch.approval_by
        asked = self._decisions.get(batch.batch_id)
        fired["approval-waited"] += 1
        fired[f"approval-{decision}-by-{'timeout' if by == 'timeout' else 'person'}"] += 1
        if decision not in {"approved", "rejected"}:
            return [f"the batch waited for approval and ended undecided ({decision!r})"]
        if asked in {"approved", "rejected"} and (asked != decision or by == "timeout"):
            problems.append(f"the harness's '{asked}' was accepted but the batch is {decision}")
        if scenario.approval == "timeout" and by != "timeout":
            problems.append(f"nobody decided, yet the batch was {decision} by {by}")
        if asked == "lost" and by != "timeout":
            problems.append("a decision was refused though nothing else had decided")
        summary = result.summary
        if (summary.get("approval") or {}).get("decision") != decision:
            problems.append("the summary's approval does not say the batch's decision")
        bought = batch_purchases(self.sandbox.purchases(), batch.batch_id)
        if decision == "rejected":
            if bought:
                problems.append(f"a rejected batch bought {len(bought)} purchase(s)")
            if summary.get("status") != "rejected":
                problems.append(f"a rejected batch's summary says {summary.get('status')!r}")
            if [r for r in result.rows if r["status"] == "assigned"]:
                problems.append("a rejected batch assigned codes")
            held = [h for h in iter_holdings(self.ledger) if h.batch_id == batch.batch_id]
            if held:
                problems.append(f"a rejected batch still holds {len(held)} claim(s)")
        elif summary.get("status") == "rejected":
            problems.append("an approved batch's summary says rejected")
        return problems

    def _check_people(self, scenario: Scenario, results: list[RunResult]) -> list[str]:
        """Across the run's batches: every existing row shows a code its person was given in
        this run, and Certiverse sold one voucher per (person, program) given one, plus one per
        reissue asked and given — nothing bought twice for a person."""
        problems: list[str] = []
        given: dict[tuple[str, str], set[str]] = {}
        reissued = 0
        for result in results:
            for row in result.rows:
                if row["status"] == "assigned":
                    key = (row["email"].casefold(), row["program"])
                    given.setdefault(key, set()).add(row["voucher_code"])
                    reissued += row["reason"].startswith("reissued")
        for result in results:
            for row in result.rows:
                key = (row["email"].casefold(), row["program"])
                if row["status"] == "existing" and row["voucher_code"] not in given.get(key, ()):
                    problems.append(
                        f"existing row {row['row']} of {result.batch_id} shows a code its person "
                        "was not given in this run"
                    )
        purchases = self.sandbox.purchases()
        sold = 0
        for result in results:
            mine = batch_purchases(purchases, result.batch_id)
            for chunk in self.ledger.chunks.iter_chunks(result.batch_id):
                if chunk.state == ChunkState.FAILED:
                    continue  # bought, but its codes never came: nobody got one
                marked = [
                    p for p in mine if find_marker(p.notes, result.batch_id, chunk.chunk_no, None)
                ]
                sold += sum(p.quantity for p in marked)
        expected = len(given) + reissued
        if sold != expected:
            problems.append(
                f"Certiverse sold {sold} voucher(s) for the run's people; {len(given)} "
                f"(person, program) pair(s) were given one and {reissued} reissue(s): {expected}"
            )
        return problems


def record_json(record: RunRecord) -> str:
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    fields["fired"] = dict(record.fired)
    return json.dumps(fields, default=str)
