"""Operating a stack: ``voucher-distributor status|find|voucher|retry-failed|redrive|redeliver|
reconcile``, ``sync``, ``redemptions`` and ``programs``.

Each command is a module (``status``, ``find``, ``retry``, ``redrive``, ``reconcile``,
``programs``); which stack they work on is :mod:`.target`'s job. Every command only reads,
except ``redrive``, which moves messages from dead-letter queues back to their sources, and
``retry-failed``, which uploads a new input. ``programs`` asks Certiverse, not the stack (a
stack only tells it which Certiverse, and its token).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from voucher_distributor.adapters.certiverse import (
    AmbiguousName,
    CertiverseError,
    CertiverseUnauthorized,
    CertiverseValidationError,
    NameNotFound,
    TokenUnavailable,
)
from voucher_distributor_cli.arguments import HelpFormatter
from voucher_distributor_cli.ops.approval import decide, decision_view, format_decision
from voucher_distributor_cli.ops.find import find_recipient, format_found
from voucher_distributor_cli.ops.programs import (
    Catalogue,
    CertiverseNotConfigured,
    certiverse_for,
    format_catalogue,
    read_catalogue,
)
from voucher_distributor_cli.ops.reconcile import (
    Reconciliation,
    format_reconciliation,
    iter_all_chunks,
    reconcile,
)
from voucher_distributor_cli.ops.redeliver import format_redelivered, redeliver_callbacks
from voucher_distributor_cli.ops.redemptions import redemptions_report, write_report
from voucher_distributor_cli.ops.redrive import RedriveReport, redrive
from voucher_distributor_cli.ops.retry import RetryStarted, retry_failed
from voucher_distributor_cli.ops.status import (
    batch_status,
    format_overview,
    format_status,
    stage_overview,
)
from voucher_distributor_cli.ops.sync import format_sync, run_sync, sync_document
from voucher_distributor_cli.ops.target import (
    LOCAL_STACK_NAME,
    OpsError,
    Target,
    add_stack_options,
)
from voucher_distributor_cli.ops.voucher import find_voucher, format_voucher

__all__ = [
    "COMMANDS",
    "LOCAL_STACK_NAME",
    "Catalogue",
    "OpsError",
    "Reconciliation",
    "RedriveReport",
    "RetryStarted",
    "Target",
    "add_ops_arguments",
    "add_stack_options",
    "batch_status",
    "decide",
    "find_recipient",
    "format_catalogue",
    "format_reconciliation",
    "format_status",
    "iter_all_chunks",
    "read_catalogue",
    "reconcile",
    "redeliver_callbacks",
    "redemptions_report",
    "redrive",
    "retry_failed",
    "run_sync",
]

#: The command names, for the grouped ``--help``.
COMMANDS = (
    "status",
    "find",
    "voucher",
    "approve",
    "reject",
    "retry-failed",
    "redrive",
    "redeliver",
    "reconcile",
    "sync",
    "redemptions",
    "programs",
)

PROGRAMS_EXIT_CODES = """\
exit codes:
  0  listed
  1  Certiverse could not be asked: unreachable or 5xx, a 401 (the token), a URL that is not
     the API, no CERTIVERSE_TOKEN for --certiverse-url
  2  the command line is wrong, or no partner is named --partner exactly (the message
     names the ones it may have meant)"""


def add_ops_arguments(subparsers: Any) -> None:
    """Register ``status``, ``find``, ``redrive`` and ``reconcile`` (main.py's groups)."""
    where = argparse.ArgumentParser(add_help=False)
    add_stack_options(where, suppress_defaults=True)
    where.add_argument("--json", action="store_true", help="print JSON instead of text")

    status = subparsers.add_parser(
        "status",
        parents=[where],
        formatter_class=HelpFormatter,
        help="a batch's state (per-chunk state, counts, ages); without BATCH, the batches "
        "awaiting approval and today's vouchers against the daily limit",
    )
    status.add_argument(
        "batch_id",
        metavar="BATCH",
        nargs="?",
        help="the batch id, as local run's JSON line or a summary's batchId gives it "
        "(default: the stage's overview)",
    )
    status.set_defaults(handler=_run_status)

    find = subparsers.add_parser(
        "find",
        parents=[where],
        formatter_class=HelpFormatter,
        help="every voucher one person was given, across batches",
    )
    find.add_argument(
        "email", metavar="EMAIL", help="the recipient's e-mail address (any case, trimmed)"
    )
    find.set_defaults(handler=_run_find)

    voucher = subparsers.add_parser(
        "voucher",
        parents=[where],
        formatter_class=HelpFormatter,
        help="one code's record: holder, program, batch and channel, state (unused, reserved, "
        "used, expired, inactive), used at, reservation, reissue history",
    )
    voucher.add_argument("code", metavar="CODE", help="the voucher code")
    voucher.set_defaults(handler=_run_voucher)

    approve = subparsers.add_parser(
        "approve",
        parents=[where],
        formatter_class=HelpFormatter,
        help="let a batch awaiting approval buy its vouchers (your AWS identity is recorded)",
        description=(
            "A batch over ApprovalThreshold or the day's DailyVoucherLimit waits in "
            "AWAITING_APPROVAL (`status` lists them). Approving records who you are (STS "
            "caller identity) and when, and hands the batch out: its vouchers are bought and "
            "counted in today's total, past the daily limit if need be."
        ),
    )
    approve.add_argument("batch_id", metavar="BATCH", help="the waiting batch's id")
    approve.set_defaults(handler=_run_approve)

    reject = subparsers.add_parser(
        "reject",
        parents=[where],
        formatter_class=HelpFormatter,
        help="end a batch awaiting approval without buying anything",
        description=(
            "Records who you are and why; the batch buys nothing, gives back its people's "
            "claims, and is reported with its planned rows 'rejected' and your reason."
        ),
    )
    reject.add_argument("batch_id", metavar="BATCH", help="the waiting batch's id")
    reject.add_argument(
        "--reason", required=True, metavar="TEXT", help="why, as the rows and summary will say"
    )
    reject.set_defaults(handler=_run_reject)

    retry = subparsers.add_parser(
        "retry-failed",
        parents=[where],
        formatter_class=HelpFormatter,
        help="after fixing the cause, a new batch of a batch's failed rows (never bought twice)",
        description=(
            "Uploads the batch's failed rows as a new input under incoming/retries/, linked to "
            "the batch in both summaries. A person who got a voucher meanwhile comes back "
            "'existing' instead of being bought another."
        ),
    )
    retry.add_argument("batch_id", metavar="BATCH", help="the batch whose failed rows to retry")
    retry.set_defaults(handler=_run_retry_failed)

    move = subparsers.add_parser(
        "redrive",
        parents=[where],
        formatter_class=HelpFormatter,
        help="move dead-letter messages back to their source queue (after a fix)",
    )
    move.add_argument("--queue", help="one DLQ or its source queue, by logical id (default: all)")
    move.add_argument("--dry-run", action="store_true", help="count and show, move nothing")
    move.add_argument("--max", type=int, dest="limit", help="move at most this many per queue")
    move.set_defaults(handler=_run_redrive)

    again = subparsers.add_parser(
        "redeliver",
        parents=[where],
        formatter_class=HelpFormatter,
        help="send a batch's failed callbacks again (after the receiver is fixed)",
        description=(
            "A callback whose attempts ran out (or that its receiver refused) is 'failed' in "
            "`status` and raised the CallbacksFailed alarm. Once the receiver is fixed, this "
            "queues it again with a fresh attempt budget (CallbackRetrySchedule) and the same "
            "webhook-id, so a receiver that got it after all drops the repeat."
        ),
    )
    again.add_argument("batch_id", metavar="BATCH_ID", help="the batch whose callbacks to send")
    again.add_argument(
        "--all",
        action="store_true",
        dest="include_all",
        help="every callback of the batch, delivered ones too (default: the failed ones)",
    )
    again.set_defaults(handler=_run_redeliver)

    check = subparsers.add_parser(
        "reconcile",
        parents=[where],
        formatter_class=HelpFormatter,
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
        help="report chunks still unbought after this long",
    )
    check.set_defaults(handler=_run_reconcile)

    _add_redemption_commands(subparsers, where)

    programs = subparsers.add_parser(
        "programs",
        parents=[where],
        formatter_class=HelpFormatter,
        epilog=PROGRAMS_EXIT_CODES,
        help="Certiverse's programs, and whether a partner can buy each (and why not)",
        description=(
            "Lists the Certiverse programs: price, state and, for the partner, whether it can "
            "buy each through the API and why not (a price, an inactive program or partner, "
            "not assigned to it) — pre-flight's own verdict, so a 'no' is why local run would "
            "reject those rows — with what each asks of recipients (e-mail domains, an "
            "enforced assignment). Without --partner: the only partner is judged; with several, "
            "they are listed. Certiverse is the built-in sandbox unless --certiverse-url names a "
            "server (token: CERTIVERSE_TOKEN) or --stack names a deployed stack (its URL and "
            "token secret)."
        ),
    )
    programs.add_argument(
        "--partner",
        metavar="NAME",
        help="judge every program for this partner, named exactly (any case) (default: the "
        "only partner, when Certiverse has one)",
    )
    programs.add_argument(
        "--certiverse-url",
        metavar="URL",
        help="a Certiverse-compatible API base URL (https://HOST/api, or the host alone); the "
        "token comes from CERTIVERSE_TOKEN (default: the stack's setting with --stack, else the "
        "built-in sandbox on loopback)",
    )
    programs.set_defaults(handler=_run_programs)


def _add_redemption_commands(subparsers: Any, where: argparse.ArgumentParser) -> None:
    """``sync`` and ``redemptions``: after the hand-out."""
    sync = subparsers.add_parser(
        "sync",
        parents=[where],
        formatter_class=HelpFormatter,
        help="run the redemption sync once, now: what Certiverse says of every unsettled code",
        description=(
            "The scheduled SyncFunction's work (every RedemptionSyncMinutes), here and now: "
            "reads the vouchers of every purchase with unsettled codes, records used / "
            "reserved / inactive / expired on each code, rewrites the batches' "
            "<name>.redemptions.csv, announces codes within ExpiryNoticeDays of expiry (once "
            "each). Certiverse as the stack's functions reach it, unless --certiverse-url "
            "(token: CERTIVERSE_TOKEN)."
        ),
    )
    sync.add_argument(
        "--certiverse-url", help="API base URL (default: the deployed functions' setting)"
    )
    sync.add_argument(
        "--track-existing",
        action="store_true",
        help="first follow the purchases bought before the sync existed (a scan of the chunks; "
        "once, after upgrading a stack)",
    )
    sync.set_defaults(handler=_run_sync)

    report = subparsers.add_parser(
        "redemptions",
        parents=[where],
        formatter_class=HelpFormatter,
        help="a CSV of every handed-out code of a batch or a program with its state",
    )
    scope = report.add_mutually_exclusive_group(required=True)
    scope.add_argument("--batch", dest="batch_id", metavar="ID", help="one batch's codes")
    scope.add_argument("--program", metavar="NAME", help="every code of a program (exact name)")
    report.add_argument(
        "--out", required=True, metavar="FILE.csv", type=Path, help="where to write"
    )
    report.set_defaults(handler=_run_redemptions)


Command = Callable[[argparse.Namespace], int]


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    print(json.dumps(document, default=str, indent=2) if args.json else text, flush=True)


def _guarded(run: Command) -> Command:
    """Exit status 2 with a one-line message for what an operator can fix (not a traceback)."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(run(args))
        except (OpsError, ClientError, BotoCoreError) as exc:
            print(f"voucher-distributor {args.command}: {exc}", file=sys.stderr)
            return 2

    return wrapper


@_guarded
def _run_status(args: argparse.Namespace) -> int:
    target = Target.from_args(args)
    if args.batch_id is None:
        overview = stage_overview(target)
        _emit(args, overview, format_overview(overview))
        return 0
    view = batch_status(target, args.batch_id)
    _emit(args, view, format_status(view))
    return 0


@_guarded
def _run_approve(args: argparse.Namespace) -> int:
    decided = decide(Target.from_args(args), args.batch_id, decision="approved")
    _emit(args, decision_view(decided), format_decision(decided))
    return 0


@_guarded
def _run_reject(args: argparse.Namespace) -> int:
    decided = decide(Target.from_args(args), args.batch_id, decision="rejected", note=args.reason)
    _emit(args, decision_view(decided), format_decision(decided))
    return 0


@_guarded
def _run_find(args: argparse.Namespace) -> int:
    found = find_recipient(Target.from_args(args), args.email)
    _emit(args, found, format_found(found, args.email))
    return 0 if found else 1


@_guarded
def _run_voucher(args: argparse.Namespace) -> int:
    record = find_voucher(Target.from_args(args), args.code)
    _emit(args, record, format_voucher(record, args.code))
    return 0 if record else 1


@_guarded
def _run_sync(args: argparse.Namespace) -> int:
    token = os.environ.get("CERTIVERSE_TOKEN") or None
    outcome, added = run_sync(
        Target.from_args(args),
        certiverse_url=args.certiverse_url,
        token=token,
        existing=args.track_existing,
    )
    _emit(args, sync_document(outcome, added), format_sync(outcome, added))
    return 0


@_guarded
def _run_redemptions(args: argparse.Namespace) -> int:
    body, counts = redemptions_report(
        Target.from_args(args), batch_id=args.batch_id, program=args.program
    )
    write_report(body, args.out)
    total = sum(counts.values())
    said = ", ".join(f"{n:,} {state}" for state, n in counts.items())
    _emit(
        args,
        {"out": str(args.out), "codes": total, "counts": counts},
        f"{total:,} code(s) written to {args.out}: {said}",
    )
    return 0


@_guarded
def _run_retry_failed(args: argparse.Namespace) -> int:
    target = Target.from_args(args)
    if not target.bucket:
        raise OpsError("the stack has no InboxBucket")
    started = retry_failed(target.ledger, target.client("s3"), target.bucket, args.batch_id)
    _emit(
        args,
        started.as_dict(),
        f"batch {started.batch_id}: retrying {started.rows:,} failed row(s) of "
        f"{started.retry_of} (uploaded s3://{target.bucket}/{started.key}); follow it with "
        f"`voucher-distributor status {started.batch_id}`",
    )
    return 0


@_guarded
def _run_redrive(args: argparse.Namespace) -> int:
    reports = redrive(
        Target.from_args(args), queue=args.queue, dry_run=args.dry_run, limit=args.limit
    )
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
def _run_redeliver(args: argparse.Namespace) -> int:
    view = redeliver_callbacks(Target.from_args(args), args.batch_id, include_all=args.include_all)
    _emit(args, view, format_redelivered(view, include_all=args.include_all))
    return 0


def _run_programs(args: argparse.Namespace) -> int:
    """Exit 0 listed; 1 Certiverse could not be asked; 2 a wrong command line or partner."""

    def fail(code: int, message: object) -> int:
        print(f"voucher-distributor programs: {message}", file=sys.stderr)
        return code

    try:
        target = Target.from_args(args) if (args.stack or args.endpoint_url) else None
        with certiverse_for(certiverse_url=args.certiverse_url, target=target) as (client, where):
            accept = (
                target is not None
                and target.function_env.get("ACCEPT_PORTAL_ASSIGNMENT", "").lower() == "true"
            )
            catalogue = read_catalogue(client, args.partner, where, accept_portal_assignment=accept)
    except CertiverseNotConfigured as exc:
        return fail(1, exc)
    except (NameNotFound, AmbiguousName, CertiverseValidationError) as exc:
        return fail(2, exc)
    except (CertiverseUnauthorized, TokenUnavailable) as exc:
        source = "CERTIVERSE_TOKEN" if os.environ.get("CERTIVERSE_TOKEN") else "the token secret"
        return fail(1, f"{str(exc).rstrip('.')} (the token tried: {source})")
    except CertiverseError as exc:
        return fail(1, f"Certiverse could not be asked: {exc}")
    except (OpsError, ClientError, BotoCoreError) as exc:
        return fail(2, exc)
    _emit(args, catalogue.as_dict(), format_catalogue(catalogue))
    return 0


@_guarded
def _run_reconcile(args: argparse.Namespace) -> int:
    target = Target.from_args(args)
    token = os.environ.get("CERTIVERSE_TOKEN") or None
    client = target.certiverse(args.certiverse_url, token)
    report = reconcile(target, client, batch_id=args.batch_id, stale_after_s=args.stale_after)
    _emit(args, report.as_dict(), format_reconciliation(report))
    return 0 if report.clean else 1
