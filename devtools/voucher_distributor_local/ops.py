"""Operating a stack: ``voucher-distributor status|find|redrive|reconcile``.

A :class:`Target` is the stack's resources and clients: a deployed stack found by name through
CloudFormation (``--stack NAME``), or the local runner's emulation (``--endpoint-url`` of its moto
server, resource names derived from template.yaml the way the runner makes them). Every command
only reads, except ``redrive``, which moves messages from dead-letter queues back to their sources.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from voucher_distributor.adapters.certiverse import (
    CertiverseClient,
    StaticToken,
)
from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.domain.outcomes import tally_chunks
from voucher_distributor.models.certiverse import PartnerVoucherPurchaseModel
from voucher_distributor.models.ledger import BatchRecord, ChunkRecord, ChunkState

_MARKER = re.compile(r"\[vd:(?P<batch>[a-z0-9-]+):(?P<chunk>\d{5})\]")
LOCAL_STACK_NAME = "voucher-distributor-local"
_SQS_MAX_BATCH = 10


class OpsError(RuntimeError):
    """The command cannot run as asked (an unknown stack, batch or queue)."""


@dataclass
class Target:
    """One stack's ledger table and queues, and how to reach them."""

    table_name: str
    #: Logical id -> queue URL, for every queue of the stack.
    queues: dict[str, str]
    #: Dead-letter queue logical id -> the source queue it collects from.
    redrives: dict[str, str]
    session_kwargs: dict[str, Any] = field(default_factory=dict)
    #: The functions' environment (Certiverse URL and token secret) when known.
    function_env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return boto3.client(service, **self.session_kwargs)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.table_name, dynamodb=boto3.resource("dynamodb", **self.session_kwargs))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def deployed(cls, stack_name: str, *, region: str | None = None) -> Target:
        """A stack deployed with ``sam deploy``: its resources from CloudFormation."""
        kwargs = {"region_name": region} if region else {}
        cfn = boto3.client("cloudformation", **kwargs)
        physical: dict[str, str] = {}
        types: dict[str, str] = {}
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
            for resource in page["StackResourceSummaries"]:
                physical[resource["LogicalResourceId"]] = resource.get("PhysicalResourceId", "")
                types[resource["LogicalResourceId"]] = resource["ResourceType"]
        queues = {lid: url for lid, url in physical.items() if types[lid] == "AWS::SQS::Queue"}
        env: dict[str, str] = {}
        if "PurchaseFunction" in physical:
            config = boto3.client("lambda", **kwargs).get_function_configuration(
                FunctionName=physical["PurchaseFunction"]
            )
            env = dict((config.get("Environment") or {}).get("Variables") or {})
        return cls(
            table_name=physical["LedgerTable"],
            queues=queues,
            redrives=_redrives_from_queues(boto3.client("sqs", **kwargs), queues),
            session_kwargs=kwargs,
            function_env=env,
        )

    @classmethod
    def local(cls, endpoint_url: str, *, stack_name: str = LOCAL_STACK_NAME) -> Target:
        """The local runner's moto server: names are ``<stack>-<LogicalId>`` (runner/stack.py)."""
        kwargs: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        sqs = boto3.client("sqs", **kwargs)
        prefix = f"{stack_name}-"
        queues = {
            url.rsplit("/", 1)[1][len(prefix) :]: url
            for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
        }
        table = f"{prefix}LedgerTable"
        if table not in boto3.client("dynamodb", **kwargs).list_tables()["TableNames"]:
            raise OpsError(f"no table {table} at {endpoint_url}: is the local stack running?")
        return cls(table, queues, _redrives_from_queues(sqs, queues), kwargs)

    # ------------------------------------------------------------------ Certiverse

    def certiverse(self, base_url: str | None = None, token: str | None = None) -> CertiverseClient:
        """The Certiverse client the functions use: their URL and secret unless given."""
        url = base_url or self.function_env.get("CERTIVERSE_BASE_URL")
        if not url:
            raise OpsError("no Certiverse URL: pass --certiverse-url")
        if token is None:
            secret = self.function_env.get("CERTIVERSE_TOKEN_SECRET_ARN")
            if not secret:
                raise OpsError("no Certiverse token: set CERTIVERSE_TOKEN")
            token = self.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]
        return CertiverseClient(url, StaticToken(str(token).strip()))


def _redrives_from_queues(sqs: Any, queues: Mapping[str, str]) -> dict[str, str]:
    by_arn = {}
    redrive_of = {}
    for logical_id, url in queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
        )["Attributes"]
        by_arn[attributes["QueueArn"]] = logical_id
        if attributes.get("RedrivePolicy"):
            redrive_of[logical_id] = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    return {by_arn[dlq_arn]: source for source, dlq_arn in redrive_of.items() if dlq_arn in by_arn}


# ---------------------------------------------------------------------- status


def batch_status(target: Target, batch_id: str, *, now: float | None = None) -> dict[str, Any]:
    """The batch, its counts and each chunk's state, with ages in seconds."""
    now_s = int(time.time() if now is None else now)
    batch = target.ledger.get_batch(batch_id)
    if batch is None:
        raise OpsError(f"no batch {batch_id} in {target.table_name}")
    chunks = list(target.ledger.iter_chunks(batch_id))
    tally = tally_chunks(chunks)
    return {
        "batchId": batch.batch_id,
        "status": batch.status.value,
        "source": batch.source,
        "ageSeconds": now_s - batch.created_at,
        "finishedAfterSeconds": (
            batch.finished_at - batch.created_at if batch.finished_at else None
        ),
        "counts": {
            "rows": batch.rows_total,
            "rejected": batch.rows_rejected,
            "assigned": tally.assigned,
            "failed": tally.failed,
            "chunks": batch.chunk_count,
            "chunksFinished": tally.chunks_finished,
            "purchasesCreated": tally.purchases_created,
            "purchasesAdopted": tally.purchases_adopted,
        },
        "chunkStates": dict(Counter(c.state.value for c in chunks)),
        "chunks": [_chunk_view(c, now_s) for c in chunks],
        "results": {"csv": batch.results_csv_key, "summary": batch.summary_key},
        **({"error": batch.error} if batch.error else {}),
    }


def _chunk_view(chunk: ChunkRecord, now_s: int) -> dict[str, Any]:
    return {
        "chunk": chunk.chunk_no,
        "state": chunk.state.value,
        "partner": chunk.partner_name,
        "program": chunk.program_name,
        "quantity": chunk.quantity,
        "purchaseCode": chunk.purchase_code,
        "adopted": chunk.adopted,
        "purchaseAttempts": chunk.purchase_attempts,
        "pollAttempts": chunk.poll_attempts,
        "sincePurchaseSeconds": now_s - chunk.purchased_at if chunk.purchased_at else None,
        **({"reason": chunk.failure_reason} if chunk.failure_reason else {}),
    }


def format_status(view: Mapping[str, Any]) -> str:
    counts = view["counts"]
    lines = [
        f"batch {view['batchId']}  {view['status']}  age {_age(view['ageSeconds'])}"
        + (
            f"  (took {_age(view['finishedAfterSeconds'])})" if view["finishedAfterSeconds"] else ""
        ),
        f"  source   {view['source']}",
        f"  rows     {counts['rows']:,}: {counts['assigned']:,} assigned, "
        f"{counts['rejected']:,} rejected, {counts['failed']:,} failed",
        f"  chunks   {counts['chunksFinished']}/{counts['chunks']} finished "
        + ", ".join(f"{n} {s}" for s, n in sorted(view["chunkStates"].items())),
        f"  results  {view['results']['csv']}",
    ]
    if view.get("error"):
        lines.append(f"  error    {view['error']}")
    lines.append(
        f"  {'chunk':>5}  {'state':<11} {'qty':>5}  {'purchase':<14} {'tries':>5} {'polls':>5}  "
        "since purchase  program"
    )
    for c in view["chunks"]:
        since = _age(c["sincePurchaseSeconds"]) if c["sincePurchaseSeconds"] is not None else "-"
        lines.append(
            f"  {c['chunk']:>5}  {c['state']:<11} {c['quantity']:>5}  "
            f"{(c['purchaseCode'] or '-'):<14} {c['purchaseAttempts']:>5} {c['pollAttempts']:>5}  "
            f"{since:>14}  {c['program']}" + (f"  ({c['reason']})" if c.get("reason") else "")
        )
    return "\n".join(lines)


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# ---------------------------------------------------------------------- find


def find_recipient(target: Target, email: str) -> list[dict[str, Any]]:
    """Every assignment record for this e-mail, across batches (the by-email index)."""
    wanted = email.strip()
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for candidate in dict.fromkeys([wanted, wanted.lower()]):
        for record in target.ledger.assignments_for_email(candidate):
            seen[(record.batch_id, record.row_number)] = {
                "batchId": record.batch_id,
                "row": record.row_number,
                "email": record.email,
                "status": record.status,
                "voucherCode": record.voucher_code,
                "purchaseCode": record.purchase_code,
                "partner": record.partner_name,
                "program": record.program_name,
                "expiresUtc": record.expires_utc,
                **({"reason": record.reason} if record.reason else {}),
            }
    return sorted(seen.values(), key=lambda r: (r["batchId"], r["row"]))


# ---------------------------------------------------------------------- redrive


@dataclass
class RedriveReport:
    dead_letter_queue: str
    source_queue: str
    found: int
    moved: int
    sample: list[str]

    def line(self, *, dry_run: bool) -> str:
        verb = "would move" if dry_run else "moved"
        count = self.found if dry_run else self.moved
        return f"{self.dead_letter_queue} -> {self.source_queue}: {verb} {count} message(s)"


def redrive(
    target: Target,
    *,
    queue: str | None = None,
    dry_run: bool = False,
    limit: int | None = None,
) -> list[RedriveReport]:
    """Move messages from dead-letter queues back to their source queues.

    A dry run counts and samples without moving (messages it looked at become visible again at
    once). ``queue`` names a DLQ or its source queue by logical id; default: every DLQ.
    """
    pairs = target.redrives
    if queue is not None:
        pairs = {dlq: src for dlq, src in pairs.items() if queue in {dlq, src}}
        if not pairs:
            known = ", ".join(sorted(target.redrives))
            raise OpsError(f"no dead-letter queue {queue!r}; known: {known}")
    sqs = target.client("sqs")
    reports = []
    for dlq, source in sorted(pairs.items()):
        reports.append(_move(sqs, target, dlq, source, dry_run=dry_run, limit=limit))
    return reports


def _move(
    sqs: Any, target: Target, dlq: str, source: str, *, dry_run: bool, limit: int | None
) -> RedriveReport:
    dlq_url, source_url = target.queues[dlq], target.queues[source]
    found = moved = 0
    sample: list[str] = []
    looked: list[str] = []
    while limit is None or found < limit:
        want = _SQS_MAX_BATCH if limit is None else min(_SQS_MAX_BATCH, limit - found)
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=want,
            VisibilityTimeout=30,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        found += len(messages)
        sample.extend(m["Body"][:200] for m in messages[: max(0, 3 - len(sample))])
        if dry_run:
            looked.extend(m["ReceiptHandle"] for m in messages)
            continue
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        ok = {e["Id"] for e in sent.get("Successful", [])}
        done = [m for i, m in enumerate(messages) if str(i) in ok]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        moved += len(done)
        if len(done) < len(messages):
            break  # the rest stay in the DLQ and reappear after the visibility timeout
    for chunk in _chunks(looked, _SQS_MAX_BATCH):  # a dry run leaves the DLQ as it was
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(chunk)
            ],
        )
    return RedriveReport(dlq, source, found, moved, sample)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------- reconcile


@dataclass
class Reconciliation:
    """What the ledger and Certiverse disagree on; empty lists mean they agree."""

    chunks: int = 0
    purchases_seen: int = 0
    unknown_purchases: list[dict[str, Any]] = field(default_factory=list)
    chunks_without_purchase: list[dict[str, Any]] = field(default_factory=list)
    count_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.unknown_purchases or self.chunks_without_purchase or self.count_mismatches)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "chunks": self.chunks,
            "purchasesSeen": self.purchases_seen,
            "unknownPurchases": self.unknown_purchases,
            "chunksWithoutPurchase": self.chunks_without_purchase,
            "countMismatches": self.count_mismatches,
        }


_BOUGHT = {ChunkState.PURCHASED, ChunkState.ASSIGNED}


def iter_all_chunks(target: Target) -> Iterator[ChunkRecord]:
    """Every chunk of every batch (a filtered scan: an operator's read, not the pipeline's)."""
    return target.ledger.iter_all_chunks()


def reconcile(  # noqa: PLR0912 - one branch per kind of disagreement
    target: Target,
    certiverse: CertiverseClient,
    *,
    batch_id: str | None = None,
    now: float | None = None,
    stale_after_s: int = 3600,
) -> Reconciliation:
    """Compare our chunks with Certiverse's purchases and vouchers.

    * a purchase carrying our marker that no chunk records (a duplicate buy, or a chunk whose
      state write was lost and never adopted it);
    * a chunk recorded as bought whose purchase Certiverse does not have, or one that has waited
      longer than ``stale_after_s`` without a purchase;
    * a purchase whose quantity, or whose listed vouchers (for assigned chunks), or whose
      assignments in the ledger differ from the chunk's quantity.
    """
    now_s = int(time.time() if now is None else now)
    chunks = [c for c in iter_all_chunks(target) if batch_id is None or c.batch_id == batch_id]
    report = Reconciliation(chunks=len(chunks))
    ours = {(c.batch_id, c.chunk_no): c for c in chunks}
    by_code = {c.purchase_code: c for c in chunks if c.purchase_code}
    batches = {c.batch_id for c in chunks}
    purchases: dict[str, PartnerVoucherPurchaseModel] = {}
    for partner, program in sorted({(c.partner_name, c.program_name) for c in chunks}):
        for purchase in certiverse.iter_pair_purchases(partner_name=partner, program_name=program):
            purchases[purchase.voucher_purchase_code] = purchase
    report.purchases_seen = len(purchases)
    for code, purchase in sorted(purchases.items()):
        for match in _MARKER.finditer(purchase.notes or ""):
            key = (match.group("batch"), int(match.group("chunk")))
            if batch_id is not None and key[0] != batch_id:
                continue
            chunk = ours.get(key)
            if code not in by_code:
                report.unknown_purchases.append(
                    {
                        "purchaseCode": code,
                        "batchId": key[0],
                        "chunk": key[1],
                        "quantity": purchase.quantity,
                        "status": str(purchase.status),
                        "chunkState": chunk.state.value if chunk else None,
                        "chunkPurchaseCode": chunk.purchase_code if chunk else None,
                    }
                )
    assigned_rows = _assigned_rows_by_chunk(target, batches)
    created: dict[str, int] = {}
    for chunk in chunks:
        where = {"batchId": chunk.batch_id, "chunk": chunk.chunk_no}
        if chunk.purchase_code is None:
            waited = now_s - _created_at(target, chunk.batch_id, created)
            if chunk.state in _BOUGHT or (
                chunk.state in {ChunkState.PENDING, ChunkState.PURCHASING}
                and waited > stale_after_s
            ):
                report.chunks_without_purchase.append(
                    {**where, "state": chunk.state.value, "waitedSeconds": waited}
                )
            continue
        found = purchases.get(chunk.purchase_code)
        if found is None:
            report.chunks_without_purchase.append(
                {
                    **where,
                    "state": chunk.state.value,
                    "purchaseCode": chunk.purchase_code,
                    "problem": "Certiverse has no purchase with this code",
                }
            )
            continue
        purchase = found
        if purchase.quantity != chunk.quantity:
            report.count_mismatches.append(
                {
                    **where,
                    "purchaseCode": chunk.purchase_code,
                    "what": "purchase quantity",
                    "ledger": chunk.quantity,
                    "certiverse": purchase.quantity,
                }
            )
        if chunk.state == ChunkState.ASSIGNED:
            vouchers = sum(1 for _ in certiverse.iter_vouchers(purchase_code=chunk.purchase_code))
            if vouchers != chunk.quantity:
                report.count_mismatches.append(
                    {
                        **where,
                        "purchaseCode": chunk.purchase_code,
                        "what": "vouchers listed",
                        "ledger": chunk.quantity,
                        "certiverse": vouchers,
                    }
                )
            rows = assigned_rows.get((chunk.batch_id, chunk.chunk_no), 0)
            if rows != chunk.quantity:
                report.count_mismatches.append(
                    {
                        **where,
                        "purchaseCode": chunk.purchase_code,
                        "what": "rows assigned",
                        "ledger": rows,
                        "certiverse": chunk.quantity,
                    }
                )
    return report


def _assigned_rows_by_chunk(target: Target, batches: Iterable[str]) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for batch in batches:
        for record in target.ledger.iter_assignments(batch):
            if record.status == "assigned":
                counts[(batch, record.chunk_no)] += 1
    return counts


def _created_at(target: Target, batch_id: str, cache: dict[str, int]) -> int:
    if batch_id not in cache:
        batch: BatchRecord | None = target.ledger.get_batch(batch_id)
        cache[batch_id] = batch.created_at if batch else 0
    return cache[batch_id]


def format_reconciliation(report: Reconciliation) -> str:
    lines = [
        f"{report.chunks} chunk(s) in the ledger, {report.purchases_seen} purchase(s) at "
        "Certiverse for their partner/program pairs"
    ]
    sections = (
        ("purchases we do not know", report.unknown_purchases),
        ("chunks without a purchase", report.chunks_without_purchase),
        ("count mismatches", report.count_mismatches),
    )
    for title, items in sections:
        lines.append(f"{title}: {len(items) or 'none'}")
        lines.extend(f"  {json.dumps(item, default=str)}" for item in items)
    return "\n".join(lines)


# ---------------------------------------------------------------------- command line


def add_ops_arguments(subparsers: Any) -> None:
    """Register ``status``, ``find``, ``redrive`` and ``reconcile`` (cli.py's ``_add_ops``)."""
    import argparse  # noqa: PLC0415

    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group(required=True)
    group.add_argument("--stack", metavar="NAME", help="a deployed stack (sam deploy) by name")
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="the local runner's AWS emulation (the moto URL `local run` prints)",
    )
    where.add_argument("--region", help="AWS region of --stack (default: your AWS config)")
    where.add_argument("--json", action="store_true", help="print JSON instead of text")

    status = subparsers.add_parser(
        "status", parents=[where], help="a batch's state: per-chunk state, counts, ages"
    )
    status.add_argument("batch_id", metavar="BATCH")
    status.set_defaults(handler=_run_status)

    find = subparsers.add_parser(
        "find", parents=[where], help="every voucher one person was given, across batches"
    )
    find.add_argument("email", metavar="EMAIL")
    find.set_defaults(handler=_run_find)

    move = subparsers.add_parser(
        "redrive",
        parents=[where],
        help="move dead-letter messages back to their source queue (after a fix)",
    )
    move.add_argument("--queue", help="one DLQ or its source queue, by logical id (default: all)")
    move.add_argument("--dry-run", action="store_true", help="count and show, move nothing")
    move.add_argument("--max", type=int, dest="limit", help="move at most this many per queue")
    move.set_defaults(handler=_run_redrive)

    check = subparsers.add_parser(
        "reconcile",
        parents=[where],
        help="compare the ledger with Certiverse's purchases and vouchers",
    )
    check.add_argument("--batch", dest="batch_id", help="only this batch's chunks")
    check.add_argument(
        "--certiverse-url", help="API base URL (default: the deployed functions' setting)"
    )
    check.add_argument(
        "--stale-after",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="report chunks still unbought after this long (default 3600)",
    )
    check.set_defaults(handler=_run_reconcile)


def _target(args: Any) -> Target:
    if args.stack:
        return Target.deployed(args.stack, region=args.region)
    return Target.local(args.endpoint_url)


def _emit(args: Any, document: Any, text: str) -> None:
    print(json.dumps(document, default=str, indent=2) if args.json else text, flush=True)


def _guarded(run: Any) -> Any:
    def wrapper(args: Any) -> int:
        import sys  # noqa: PLC0415

        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return int(run(args))
        except (OpsError, ClientError, BotoCoreError) as exc:
            print(f"voucher-distributor {args.command}: {exc}", file=sys.stderr)
            return 2

    return wrapper


@_guarded
def _run_status(args: Any) -> int:
    view = batch_status(_target(args), args.batch_id)
    _emit(args, view, format_status(view))
    return 0


@_guarded
def _run_find(args: Any) -> int:
    found = find_recipient(_target(args), args.email)
    text = "\n".join(
        f"{r['batchId']}  row {r['row']:>6}  {r['status']:<8}  {r['voucherCode'] or '-':<16}  "
        f"{r['purchaseCode'] or '-':<14}  {r['program']}  expires {r['expiresUtc'] or '-'}"
        + (f"  ({r['reason']})" if r.get("reason") else "")
        for r in found
    )
    _emit(args, found, text or f"no voucher recorded for {args.email}")
    return 0 if found else 1


@_guarded
def _run_redrive(args: Any) -> int:
    reports = redrive(_target(args), queue=args.queue, dry_run=args.dry_run, limit=args.limit)
    document = [
        {
            "deadLetterQueue": r.dead_letter_queue,
            "sourceQueue": r.source_queue,
            "found": r.found,
            "moved": r.moved,
            "sample": r.sample,
        }
        for r in reports
    ]
    text = "\n".join(
        r.line(dry_run=args.dry_run)
        + "".join(f"\n    {body}" for body in (r.sample if args.dry_run else []))
        for r in reports
    )
    _emit(args, document, text)
    return 0


@_guarded
def _run_reconcile(args: Any) -> int:
    target = _target(args)
    token = os.environ.get("CERTIVERSE_TOKEN") or None
    client = target.certiverse(args.certiverse_url, token)
    report = reconcile(target, client, batch_id=args.batch_id, stale_after_s=args.stale_after)
    _emit(args, report.as_dict(), format_reconciliation(report))
    return 0 if report.clean else 1
