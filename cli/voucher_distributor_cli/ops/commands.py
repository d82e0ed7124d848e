"""The operator commands: each runner declares its command line (:func:`.registry.command`).

A runner turns the parsed arguments into one call of its command's module (``status``,
``find``, ``retry``, ...) on the :class:`Target` stack, and prints the outcome as text or, with
``--json``, as JSON. The order here is the order ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from voucher_distributor.adapters.certiverse import (
    AmbiguousName,
    CertiverseError,
    CertiverseUnauthorized,
    CertiverseValidationError,
    NameNotFound,
    TokenUnavailable,
)
from voucher_distributor.models.email import EmailState
from voucher_distributor.models.resend import ResendSelection
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.ops.approval import decide, decision_view, format_decision
from voucher_distributor_cli.ops.deliveries import format_deliveries, list_deliveries
from voucher_distributor_cli.ops.email_preview import parse_row_option, preview
from voucher_distributor_cli.ops.find import find_recipient, format_found
from voucher_distributor_cli.ops.programs import (
    CertiverseNotConfigured,
    certiverse_for,
    format_catalogue,
    read_catalogue,
)
from voucher_distributor_cli.ops.reconcile import format_reconciliation, reconcile
from voucher_distributor_cli.ops.redeliver import format_redelivered, redeliver_callbacks
from voucher_distributor_cli.ops.redemptions import redemptions_report, write_report
from voucher_distributor_cli.ops.redrive import redrive
from voucher_distributor_cli.ops.registry import OneOf, arg, command, emit
from voucher_distributor_cli.ops.resend import format_resent, resend
from voucher_distributor_cli.ops.retry import retry_failed
from voucher_distributor_cli.ops.sends import change_scheduled_send, format_changed
from voucher_distributor_cli.ops.status import (
    batch_status,
    format_overview,
    format_status,
    stage_overview,
)
from voucher_distributor_cli.ops.sync import format_sync, run_sync, sync_document
from voucher_distributor_cli.ops.target import OpsError, Target
from voucher_distributor_cli.ops.voucher import find_voucher, format_voucher

Found = TypeVar("Found")

PROGRAMS_EXIT_CODES = """\
exit codes:
  0  listed
  1  Certiverse could not be asked: unreachable or 5xx, a 401 (the token), a URL that is not
     the API, no CERTIVERSE_TOKEN for --certiverse-url
  2  the command line is wrong, or no partner is named --partner exactly (the message
     names the ones it may have meant)"""

#: The positional BATCH of the commands that act on one batch awaiting approval.
WAITING_BATCH = arg("batch_id", metavar="BATCH", help="the waiting batch's id")
CERTIVERSE_URL = arg(
    "--certiverse-url", help="API base URL (default: the deployed functions' setting)"
)


@command(
    "status",
    help="a batch's state (per-chunk state, counts, ages); without BATCH, the batches "
    "awaiting approval and today's vouchers against the daily limit",
    arguments=[
        arg("batch_id", metavar="BATCH", nargs="?",
            help="the batch id, as local run's JSON line or a summary's batchId gives it "
            "(default: the stage's overview)"),
    ],
)  # fmt: skip
def _run_status(args: argparse.Namespace) -> int:
    target = Target.from_args(args)
    if args.batch_id is None:
        overview = stage_overview(target)
        emit(args, overview, format_overview(overview, args))
        return 0
    view = batch_status(target, args.batch_id)
    emit(args, view, format_status(view, args))
    return 0


@command(
    "find",
    help="every voucher one person was given, across batches",
    arguments=[
        arg("email", metavar="EMAIL", help="the recipient's e-mail address (any case, trimmed)")
    ],
)
def _run_find(args: argparse.Namespace) -> int:
    return _look_up(args, args.email, find_recipient, format_found)


@command(
    "voucher",
    help="one code's record: holder, program, batch and channel, state (unused, reserved, "
    "used, expired, inactive), used at, reservation, reissue history",
    arguments=[arg("code", metavar="CODE", help="the voucher code")],
)
def _run_voucher(args: argparse.Namespace) -> int:
    return _look_up(args, args.code, find_voucher, format_voucher)


def _look_up(
    args: argparse.Namespace,
    key: str,
    find: Callable[[Target, str], Found],
    show: Callable[[Found, str], str],
) -> int:
    """Print what ``find`` has for ``key``; exit status 1 when it has nothing."""
    found = find(Target.from_args(args), key)
    emit(args, found, show(found, key))
    return 0 if found else 1


@command(
    "approve",
    help="let a batch awaiting approval buy its vouchers (your AWS identity is recorded)",
    description=(
        "A batch over ApprovalThreshold or the day's DailyVoucherLimit waits in "
        "AWAITING_APPROVAL (`status` lists them). Approving records who you are (STS "
        "caller identity) and when, and hands the batch out: its vouchers are bought and "
        "counted in today's total, past the daily limit if need be."
    ),
    arguments=[WAITING_BATCH],
)
def _run_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approved")


@command(
    "reject",
    help="end a batch awaiting approval without buying anything",
    description=(
        "Records who you are and why; the batch buys nothing, gives back its people's "
        "claims, and is reported with its planned rows 'rejected' and your reason."
    ),
    arguments=[
        WAITING_BATCH,
        arg("--reason", required=True, metavar="TEXT",
            help="why, as the rows and summary will say"),
    ],
)  # fmt: skip
def _run_reject(args: argparse.Namespace) -> int:
    return _decide(args, "rejected", note=args.reason)


def _decide(args: argparse.Namespace, decision: str, *, note: str | None = None) -> int:
    decided = decide(Target.from_args(args), args.batch_id, decision=decision, note=note)
    emit(args, decision_view(decided), format_decision(decided, args))
    return 0


@command(
    "retry-failed",
    help="after fixing the cause, a new batch of a batch's failed rows (never bought twice)",
    description=(
        "Uploads the batch's failed rows as a new input under incoming/retries/, linked to "
        "the batch in both summaries. A person who got a voucher meanwhile comes back "
        "'existing' instead of being bought another."
    ),
    arguments=[arg("batch_id", metavar="BATCH", help="the batch whose failed rows to retry")],
)
def _run_retry_failed(args: argparse.Namespace) -> int:
    target = Target.from_args(args)
    if not target.bucket:
        raise OpsError("the stack has no InboxBucket")
    started = retry_failed(target.ledger, target.client("s3"), target.bucket, args.batch_id)
    follow = f"`{command_hint(args, 'status', started.batch_id)}`"
    if started.existing:
        text = (
            f"batch {started.retry_of} was retried already, by batch {started.batch_id}: "
            f"nothing new was uploaded. Follow it with {follow}; if rows of it fail, retry "
            f"those with `{command_hint(args, 'retry-failed', started.batch_id)}`"
        )
    else:
        text = (
            f"batch {started.batch_id}: retrying {started.rows:,} failed row(s) of "
            f"{started.retry_of} (uploaded s3://{target.bucket}/{started.key}); follow it "
            f"with {follow}"
        )
    emit(args, started.as_dict(), text)
    return 0


@command(
    "redrive",
    help="move dead-letter messages back to their source queue (after a fix)",
    arguments=[
        arg("--queue", help="one DLQ or its source queue, by logical id (default: all)"),
        arg("--dry-run", action="store_true", help="count and show, move nothing"),
        arg("--max", type=int, dest="limit", help="move at most this many per queue"),
    ],
)
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
    emit(args, document, text)
    return 0


@command(
    "redeliver",
    help="send a batch's failed callbacks again (after the receiver is fixed)",
    description=(
        "A callback whose attempts ran out (or that its receiver refused) is 'failed' in "
        "`status` and raised the CallbacksFailed alarm. Once the receiver is fixed, this "
        "queues it again with a fresh attempt budget (CallbackRetrySchedule) and the same "
        "webhook-id, so a receiver that got it after all drops the repeat."
    ),
    arguments=[
        arg("batch_id", metavar="BATCH_ID", help="the batch whose callbacks to send"),
        arg("--all", action="store_true", dest="include_all",
            help="every callback of the batch, delivered ones too (default: the failed ones)"),
    ],
)  # fmt: skip
def _run_redeliver(args: argparse.Namespace) -> int:
    view = redeliver_callbacks(Target.from_args(args), args.batch_id, include_all=args.include_all)
    emit(args, view, format_redelivered(view, include_all=args.include_all, args=args))
    return 0


@command(
    "reconcile",
    help="compare the ledger with Certiverse's purchases and vouchers",
    arguments=[
        arg("--batch", dest="batch_id", help="only this batch's chunks"),
        CERTIVERSE_URL,
        arg("--stale-after", type=int, default=3600, metavar="SECONDS",
            help="report chunks still unbought after this long"),
    ],
)  # fmt: skip
def _run_reconcile(args: argparse.Namespace) -> int:
    target = Target.from_args(args)
    token = os.environ.get("CERTIVERSE_TOKEN") or None
    client = target.certiverse(args.certiverse_url, token)
    report = reconcile(target, client, batch_id=args.batch_id, stale_after_s=args.stale_after)
    emit(args, report.as_dict(), format_reconciliation(report))
    return 0 if report.clean else 1


@command(
    "deliveries",
    help="a batch's rows with their e-mail states (sent, delivered, bounced, complained, ...)",
    description=(
        "Each row of the batch with its e-mail: the state, the address it went to, the SES "
        "calls made (attempts), the last step and when, SES's reason. Read by the batch's key "
        "(its rows and its e-mails), never a scan."
    ),
    arguments=[
        arg("batch_id", metavar="BATCH", help="the batch id"),
        arg("--status", choices=[s.value for s in EmailState], metavar="STATE",
            help="only the rows in this e-mail state (e.g. bounced)"),
    ],
)  # fmt: skip
def _run_deliveries(args: argparse.Namespace) -> int:
    view = list_deliveries(Target.from_args(args), args.batch_id, status=args.status)
    emit(args, view, format_deliveries(view))
    return 0


@command(
    "resend",
    help="mail a row's same code again (--to: to a corrected address, the holding moves)",
    description=(
        "Queues the same code's e-mail again for the rows named, through the sending function "
        "(a new claim on each row's e-mail: one e-mail per ask). --to corrects a mistyped "
        "address: the code's holding moves to the new address (the old one no longer holds "
        "it), recorded with your AWS identity and the time. Refused within 60 s of the last "
        "e-mail to the row; a 'complained' row is never mailed again without --force."
    ),
    arguments=[
        arg("batch_id", metavar="BATCH", help="the batch id"),
        OneOf((
            arg("--row", type=int, metavar="N", help="the row (as the results' row column)"),
            arg("--email", metavar="ADDR", help="the row(s) with this address"),
            arg("--status", choices=[s.value for s in EmailState], metavar="STATE",
                help="every row in this e-mail state (e.g. bounced)"),
        )),
        arg("--to", metavar="NEW_ADDRESS",
            help="mail it to this address instead, and move the holding there (one row)"),
        arg("--force", action="store_true",
            help="mail a row whose recipient complained (reported it as spam)"),
    ],
)  # fmt: skip
def _run_resend(args: argparse.Namespace) -> int:
    selection = ResendSelection(
        row=args.row, email=args.email, status=args.status, to=args.to, force=args.force
    )
    report = resend(Target.from_args(args), args.batch_id, selection)
    if not report.asked:
        raise OpsError(format_resent(report, args))
    emit(args, report.as_dict(), format_resent(report, args))
    return 0


@command(
    "email",
    help="email preview: the voucher e-mail rendered (.eml, .html, .txt) before a real run",
    description=(
        "email preview writes the voucher e-mail as preview.eml, preview.html and preview.txt "
        "in --out, for sample data or row N of a real CSV (--row FILE:N, read as the pipeline "
        "reads it). The template: a local folder (--template DIR with subject.txt, body.txt, "
        "body.html; offline), else the stack's accepted one for --partner, --program and "
        "--language, chosen as the sender chooses it (with --stack or --endpoint-url), else "
        "the shipped default. It is checked as an upload is: an unknown variable, a syntax "
        "error or a template that does not render is refused (exit 2)."
    ),
    arguments=[
        arg("action", choices=["preview"], help="what to do with the e-mail (preview)"),
        arg("--partner", metavar="NAME", help="the partner, as Certiverse names it"),
        arg("--program", metavar="NAME", help="the program, as Certiverse names it"),
        arg("--language", metavar="L",
            help="the e-mail's language (a template folder such as de); default: the row's, "
            "else the stack's DefaultLanguage"),
        arg("--template", metavar="DIR", type=Path,
            help="a local template folder (subject.txt, body.txt, body.html): no stack needed"),
        arg("--row", metavar="FILE:N", help="row N of this CSV instead of sample data"),
        arg("--out", required=True, metavar="DIR", type=Path, help="where to write the files"),
    ],
)  # fmt: skip
def _run_email(args: argparse.Namespace) -> int:
    on_stack = args.template is None and bool(args.stack or args.endpoint_url)
    shown = preview(
        out_dir=args.out,
        partner=args.partner,
        program=args.program,
        language=args.language,
        template_dir=args.template,
        row=parse_row_option(args.row) if args.row else None,
        target=Target.from_args(args) if on_stack else None,
    )
    emit(args, shown.as_dict(), shown.text())
    return 0


#: send-now and cancel-send: the command's name is the change asked of the scheduled send.
_SEND_CHANGES = {
    "send-now": (
        "send a batch's scheduled e-mails now, before their sendAt",
        "A batch with a sendAt holds its e-mails (rows scheduled) until then. send-now sends "
        "them at once: recorded on the batch with your AWS identity and the time (status "
        "shows it), its schedule deleted. Refused when nothing is pending (no sendAt, sent "
        "already, or cancelled).",
    ),
    "cancel-send": (
        "never send a batch's scheduled e-mails: its rows end not-sent",
        "A batch with a sendAt holds its e-mails until then. cancel-send cancels them: the "
        "codes stay assigned and held, the rows end e-mail state not-sent with why, recorded "
        "on the batch with your AWS identity and the time (status shows it); the schedule is "
        "deleted. resend BATCH --row N mails one later. Refused when nothing is pending.",
    ),
}


def _change_send(args: argparse.Namespace, *, action: str) -> int:
    changed = change_scheduled_send(Target.from_args(args), args.batch_id, action=action)
    emit(args, changed.as_dict(), format_changed(changed, args))
    return 0


for _action, (_help, _description) in _SEND_CHANGES.items():
    command(
        _action,
        help=_help,
        description=_description,
        arguments=[arg("batch_id", metavar="BATCH", help="the batch id")],
    )(functools.partial(_change_send, action=_action))


# ------------------------------------------------------------------ after the hand-out


@command(
    "sync",
    help="run the redemption sync once, now: what Certiverse says of every unsettled code",
    description=(
        "The scheduled SyncFunction's work (every RedemptionSyncMinutes), here and now: "
        "reads the vouchers of every purchase with unsettled codes, records used / "
        "reserved / inactive / expired on each code, rewrites the batches' "
        "<name>.redemptions.csv, announces codes within ExpiryNoticeDays of expiry (once "
        "each). Certiverse as the stack's functions reach it, unless --certiverse-url "
        "(token: CERTIVERSE_TOKEN)."
    ),
    arguments=[
        CERTIVERSE_URL,
        arg("--track-existing", action="store_true",
            help="first follow the purchases bought before the sync existed. A one-time "
            "migration that scans the whole ledger table (every item, not an index): run it "
            "once, after upgrading a stack"),
    ],
)  # fmt: skip
def _run_sync(args: argparse.Namespace) -> int:
    token = os.environ.get("CERTIVERSE_TOKEN") or None
    outcome, added = run_sync(
        Target.from_args(args),
        certiverse_url=args.certiverse_url,
        token=token,
        existing=args.track_existing,
    )
    emit(args, sync_document(outcome, added), format_sync(outcome, added))
    return 0


@command(
    "redemptions",
    help="a CSV of every handed-out code of a batch or a program with its state",
    arguments=[
        OneOf((
            arg("--batch", dest="batch_id", metavar="ID", help="one batch's codes"),
            arg("--program", metavar="NAME", help="every code of a program (exact name)"),
        )),
        arg("--out", required=True, metavar="FILE.csv", type=Path, help="where to write"),
    ],
)  # fmt: skip
def _run_redemptions(args: argparse.Namespace) -> int:
    body, counts = redemptions_report(
        Target.from_args(args), batch_id=args.batch_id, program=args.program
    )
    write_report(body, args.out)
    total = sum(counts.values())
    said = ", ".join(f"{n:,} {state}" for state, n in counts.items())
    emit(
        args,
        {"out": str(args.out), "codes": total, "counts": counts},
        f"{total:,} code(s) written to {args.out}: {said}",
    )
    return 0


@command(
    "programs",
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
    epilog=PROGRAMS_EXIT_CODES,
    arguments=[
        arg("--partner", metavar="NAME",
            help="judge every program for this partner, named exactly (any case) (default: "
            "the only partner, when Certiverse has one)"),
        arg("--certiverse-url", metavar="URL",
            help="a Certiverse-compatible API base URL (https://HOST/api, or the host alone); "
            "the token comes from CERTIVERSE_TOKEN (default: the stack's setting with --stack, "
            "else the built-in sandbox on loopback)"),
    ],
    guarded=False,
)  # fmt: skip
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
    emit(args, catalogue.as_dict(), format_catalogue(catalogue))
    return 0
