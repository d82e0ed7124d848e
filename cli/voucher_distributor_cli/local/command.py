"""``voucher-distributor local run``: a CSV or an HR request through the whole local pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from voucher_distributor_cli.arguments import HelpFormatter, seconds

if TYPE_CHECKING:
    from voucher_distributor_cli.local.results import RunResult

#: Exit codes of ``local run`` (several inputs: the highest).
EXIT_DONE = 0  # every row that could get a code has one (assigned, or existing: held already)
EXIT_COULD_NOT_RUN = 1  # a file missing, no token, the timeout: the run itself did not finish
EXIT_USAGE = 2  # the command line is wrong (argparse)
EXIT_NOTHING_TO_DO = 3  # the input was refused, or no row got a code: the sender fixes the input
EXIT_FAILED = 4  # rows failed (the system could not): fix the cause, then retry-failed
GOT_A_CODE = frozenset({"assigned", "existing", "would-assign"})

EXIT_CODES_HELP = """\
exit codes:
  0  done: every row that could get a code has one (assigned, or existing: the person
     already held one); rejected rows may remain, each with its reason
  1  the run did not finish (a file missing, CERTIVERSE_TOKEN unset, --timeout reached)
  2  the command line is wrong
  3  nothing to do: an input was refused whole (a request that is not valid, a CSV that
     cannot be read) or no row got a code (every row rejected)
  4  rows failed (Certiverse unreachable, a 401, a purchase that failed): fix the cause,
     then `voucher-distributor retry-failed BATCH`
with several inputs, the highest code of any of them."""


def add_local_commands(subparsers: Any) -> None:
    local = subparsers.add_parser(
        "local",
        help="run the pipeline on this machine (AWS emulated, Certiverse sandboxed)",
        formatter_class=HelpFormatter,
    )
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    run = local_commands.add_parser(
        "run",
        formatter_class=HelpFormatter,
        epilog=EXIT_CODES_HELP,
        help="run a recipient CSV (or an HR request .json) through the whole local pipeline",
        description=(
            "Creates the stack of template.yaml in an embedded AWS emulation (moto on loopback), "
            "uploads each FILE under incoming/ (a .json file is sent as an HR request instead), "
            "delivers the events to the handlers until its batch ends (with --together: sends "
            "them all, then runs them side by side), copies the results to --out and prints one "
            "JSON line per FILE summarising its batch. One stack for all: a person in two files "
            "gets one voucher, the second file's row is 'existing'. Certiverse is the built-in "
            "sandbox unless --certiverse-url names a compatible server (token: CERTIVERSE_TOKEN)."
        ),
    )
    run.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="recipient CSVs or request JSONs, run in order through one local stack",
    )
    run.add_argument(
        "--together",
        action="store_true",
        help="send every FILE at once (as lists arriving in the same second would be)",
    )
    run.add_argument(
        "--partner",
        help="partner for rows (and requests) that name none; `voucher-distributor programs` "
        "lists what each partner can buy (default: the stack default, none locally)",
    )
    run.add_argument(
        "--program",
        help="program for rows (and requests) that name none (default: none, such rows are "
        "rejected)",
    )
    run.add_argument(
        "--certiverse-url",
        help="a Certiverse-compatible API base URL (https://HOST/api, or the host alone); the "
        "token comes from CERTIVERSE_TOKEN; purchases there are real (default: the built-in "
        "sandbox on loopback)",
    )
    run.add_argument(
        "--seed",
        type=int,
        help="the built-in sandbox's seed, for the same codes on every run (default: none, "
        "codes differ from run to run)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="go through ingest and the whole pre-flight (holdings included) and report what "
        "would happen: rows 'would-assign', the purchases that would be made; nothing is bought "
        "or claimed (results named *.dry-run.results.csv)",
    )
    run.add_argument(
        "--no-email",
        action="store_true",
        help="mail nobody: each input opts out (object metadata send-email: false, a request's "
        '"sendEmail": false); rows show email_status not-sent. Without it the local stack '
        "mails every assigned code from a local sender (moto's SES; each message an .eml file "
        "under OUT/mail/) unless --parameter-overrides SenderEmail= (empty)",
    )
    run.add_argument(
        "--send-at",
        metavar="ISO8601",
        help="send the e-mails at this moment (e.g. 2027-03-01T09:00:00+01:00; in the future, "
        "at most 365 days ahead): each input carries it (object metadata send-at, a request's "
        '"sendAt"); the codes are bought and assigned at once, the rows wait as scheduled',
    )
    run.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        type=parameter_override,
        help="template parameters for the local stack, as `sam deploy` takes them (e.g. "
        "ApprovalThreshold=100 DailyVoucherLimit=500 MaxRecipientsPerBatch=1000) "
        "(default: the template's defaults)",
    )
    run.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="keep the local stack between runs: load the ledger, the bucket's results and the "
        "sandbox's sales from DIR at the start and write them there at the end, so a person "
        "sent again is 'existing' (default: none, every run starts an empty stack)",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=Path("local-results"),
        help="where the results, summaries, refusals and local-run.log are copied",
    )
    run.add_argument(
        "--timeout",
        type=seconds,
        default=900.0,
        help="give up (exit 1) after this many seconds per input",
    )
    run.set_defaults(handler=_run_local)

    up = local_commands.add_parser(
        "up",
        formatter_class=HelpFormatter,
        help="the whole stack on loopback (AWS emulation, sandbox, HTTP API) until Ctrl-C",
        description=(
            "Starts the template's stack in the embedded AWS emulation, the Certiverse sandbox "
            "(unless --certiverse-url), the HTTP API on a loopback port and the loops that "
            "deliver queue messages, and keeps them running until Ctrl-C. Prints one JSON line: "
            "endpointUrl, region, stack, bucket, requestQueueUrl, table, apiUrl, apiClientId "
            "and apiClientSecret (a local API client with every scope), callbackSigningSecret, "
            "certiverseUrl and mailDir (every voucher e-mail sent, one .eml each, beside --log; "
            "--parameter-overrides SenderEmail= sends none); on stderr, an upload (with the "
            "dummy AWS credentials moto takes) and a status command, ready to paste. Then "
            "`aws --endpoint-url …`, curl and "
            "every voucher-distributor operator command (--endpoint-url URL --stack NAME) work "
            "against it. What fails meanwhile (a Certiverse outage) is one line each on stderr, "
            "its trace in --log. Locally, callbacks may go to http:// loopback receivers."
        ),
    )
    up.add_argument("--partner", help="partner for rows and requests that name none")
    up.add_argument("--program", help="program for rows and requests that name none")
    up.add_argument(
        "--certiverse-url",
        help="a Certiverse-compatible API base URL; token from CERTIVERSE_TOKEN (default: the "
        "built-in sandbox on loopback)",
    )
    up.add_argument("--seed", type=int, help="the built-in sandbox's seed (same codes each run)")
    up.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        type=parameter_override,
        help="template parameters for the local stack (e.g. ApprovalThreshold=100)",
    )
    up.add_argument(
        "--port", type=int, default=0, help="the HTTP API's loopback port (default: a free one)"
    )
    up.add_argument(
        "--log",
        type=Path,
        default=Path("local-results/local-up.log"),
        help="where the functions' logs go",
    )
    up.set_defaults(handler=_run_up)


def parameter_override(text: str) -> tuple[str, str]:
    """``Name=Value`` (or sam's ``ParameterKey=Name,ParameterValue=Value``)."""
    if text.startswith("ParameterKey="):
        key, _, value = text.removeprefix("ParameterKey=").partition(",ParameterValue=")
    else:
        key, _, value = text.partition("=")
    if not key or "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Name=Value")
    return key.strip(), value


def _run_local(args: argparse.Namespace) -> int:
    # Imported here: the sandbox command must not pay for moto and the pipeline.
    from voucher_distributor_cli.local.run import LocalRunError  # noqa: PLC0415
    from voucher_distributor_cli.local.run_command import run_files  # noqa: PLC0415
    from voucher_distributor_cli.local.runner import RunTimeoutError  # noqa: PLC0415
    from voucher_distributor_cli.local.runner.specs import StackError  # noqa: PLC0415
    from voucher_distributor_cli.local.state import StateError  # noqa: PLC0415

    try:
        results = run_files(
            args.files,
            partner=args.partner,
            program=args.program,
            certiverse_url=args.certiverse_url,
            out_dir=args.out,
            timeout_s=args.timeout,
            show=sys.stderr,
            together=args.together,
            seed=args.seed,
            dry_run=args.dry_run,
            parameters=dict(args.parameter_overrides),
            state=args.state,
            send_email=not args.no_email,
            send_at=args.send_at,
        )
    except (LocalRunError, RunTimeoutError, StackError, StateError) as exc:
        print(f"voucher-distributor: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    for result in results:
        _show_outcome(result, sys.stderr)
    print(_stack_note(args.state), file=sys.stderr)
    for result in results:
        print(json.dumps(result.final_line(), ensure_ascii=False), flush=True)
    return max(exit_code(result) for result in results)


def _run_up(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415

    from voucher_distributor_cli.local.run import LocalRunError  # noqa: PLC0415
    from voucher_distributor_cli.local.runner.specs import StackError  # noqa: PLC0415
    from voucher_distributor_cli.local.up import (  # noqa: PLC0415
        LocalStackUp,
        ready_lines,
        serve_until_interrupted,
        terminal_and_log,
    )

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop cleanly when a supervisor says so
    args.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            args.log.open("w", encoding="utf-8") as log_stream,
            terminal_and_log(log_stream, sys.stderr, str(args.log)),
            LocalStackUp(
                certiverse_url=args.certiverse_url,
                certiverse_token=os.environ.get("CERTIVERSE_TOKEN"),
                partner=args.partner or "",
                program=args.program or "",
                parameters=dict(args.parameter_overrides),
                mail_dir=args.log.parent / "mail",
                api_port=args.port,
                seed=args.seed,
                log_stream=log_stream,
            ) as up,
        ):
            print(
                f"local stack up: API {up.endpoints()['apiUrl']}, logs in {args.log}; "
                "Ctrl-C stops it",
                file=sys.stderr,
            )
            print("\n".join(ready_lines(up.endpoints())), file=sys.stderr, flush=True)
            serve_until_interrupted(up)
    except (LocalRunError, StackError, OSError) as exc:
        print(f"voucher-distributor: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    except KeyboardInterrupt:
        pass
    print("local stack stopped", file=sys.stderr)
    return EXIT_DONE


def _stack_note(state: Path | None) -> str:
    """Whether the next run remembers this one: the duplicate guarantee across runs."""
    if state is not None:
        return (
            f"state kept in {state}: run again with --state {state} and the people of this "
            "run are 'existing', with the codes they got"
        )
    return (
        "this run's stack is gone: each `local run` starts an empty one, so a file run again "
        "gets new codes — pass --state DIR to keep it between runs, or use `local up`"
    )


def exit_code(result: RunResult) -> int:
    """Whether an input's job was done (the exit-codes table in docs/reference.md, `local run`)."""
    if result.refused:
        return EXIT_NOTHING_TO_DO
    counts = result.summary.get("counts") or {}
    if counts.get("failed", 0):
        return EXIT_FAILED
    if not any(counts.get(k, 0) for k in ("assigned", "existing", "wouldAssign")):
        return EXIT_NOTHING_TO_DO  # every row rejected, or a file that could not be read
    return EXIT_FAILED if result.summary.get("status") == "failed" else EXIT_DONE


#: Most lines of row detail ``local run`` prints per input; the rest is in the results CSV.
DETAIL_LINES = 20
#: Row numbers cited beside a reason shared by several rows.
ROWS_CITED = 5


def _show_outcome(result: RunResult, out: TextIO, *, limit: int = DETAIL_LINES) -> None:
    """The rows that got no code, with why: what a person checks first. Rows are grouped by
    their reason, each reason said once with how many rows and the first few row numbers (a
    reason every row of a (partner, program) shares: "all N rows for …"); at most ``limit``
    lines, then the results CSV. Then the notes on rows that got a code (a name matched in
    another case, a code to assign in the portal), each once."""
    if result.refused:
        print(f"{result.input}: refused — {result.summary.get('error')}", file=out)
        for problem in result.summary.get("problems", []):
            print(f"  {problem.get('field')}: {problem.get('problem')}", file=out)
        if result.refusal_copy:
            print(f"refusal: {result.refusal_copy}", file=out)
        return
    counts = result.summary.get("counts", {})
    blank = int(result.summary.get("blankLines") or 0)
    would = (
        f"dry run, nothing bought: {counts.get('wouldAssign', 0):,} would be assigned, "
        if result.summary.get("dryRun")
        else ""
    )
    print(
        f"batch {result.batch_id}: {would}{counts.get('assigned', 0):,} assigned, "
        f"{counts.get('existing', 0):,} existing, {counts.get('rejected', 0):,} rejected, "
        f"{counts.get('failed', 0):,} failed of {counts.get('rows', 0):,} rows"
        + (f"; {blank:,} blank line{'' if blank == 1 else 's'} skipped" if blank else ""),
        file=out,
    )
    if result.summary.get("error"):
        print(f"  the batch failed: {result.summary['error']}", file=out)
    lines = reason_lines(result.rows)
    for line, _ in lines[:limit]:
        print(line, file=out)
    if len(lines) > limit:
        left = lines[limit:]
        rows = sum(count for _, count in left)
        print(
            f"  … and {len(left):,} more reason{'' if len(left) == 1 else 's'} "
            f"({rows:,} row{'' if rows == 1 else 's'}) in "
            f"{result.results_csv or 'the results CSV'}",
            file=out,
        )
    if result.results_csv:
        print(f"results: {result.results_csv}", file=out)
    _show_emails(result, out)


def _show_emails(result: RunResult, out: TextIO) -> None:
    """The batch's e-mails: counts by state, the history file, and one message to open."""
    emails = result.summary.get("emails")
    if not emails or result.mail_dir is None:
        return
    mailed = {s: n for s, n in emails.items() if s != "not-sent"}
    if not mailed:
        return
    print(
        "e-mails: "
        + ", ".join(f"{n:,} {s}" for s, n in sorted(mailed.items()))
        + (f" (history: {result.deliveries_csv})" if result.deliveries_csv else ""),
        file=out,
    )
    batch_mail = sorted(result.mail_dir.glob("*.eml"))
    if batch_mail:
        print(f"  open one in a mail client: {batch_mail[0]}", file=out)


def reason_lines(rows: list[dict[str, str]]) -> list[tuple[str, int]]:
    """One line per reason, with how many rows it stands for: the rows without a code first
    (in the order their reasons first appear), then the notes on rows that got one."""
    pairs: Counter[tuple[str, str]] = Counter(
        (row.get("partner", ""), row.get("program", "")) for row in rows
    )
    lines: list[tuple[str, int]] = []
    for group in _by_reason(rows, with_code=False) + _by_reason(rows, with_code=True):
        first = group[0]
        status, reason = first.get("status", ""), first.get("reason", "")
        pair = (first.get("partner", ""), first.get("program", ""))
        if len(group) == 1:
            line = f" (line {first['line']})" if first.get("line") else ""
            lines.append((f"  row {first['row']:>6}{line}  {status:<8}  {_hinted(reason)}", 1))
            continue
        same_pair = all((r.get("partner", ""), r.get("program", "")) == pair for r in group)
        if same_pair and pairs[pair] == len(group) and status not in GOT_A_CODE:
            said = f"all {len(group):,} rows for {pair[0]!r} / {pair[1]!r}"
            lines.append((f"  {said}: {status}, {_hinted(reason)}", len(group)))
            continue
        cited = ", ".join(r.get("row", "") for r in group[:ROWS_CITED])
        more = ", …" if len(group) > ROWS_CITED else ""
        said = f"{len(group):,} rows ({cited}{more})"
        lines.append((f"  {said}: {status}, {_hinted(reason)}", len(group)))
    return lines


def _by_reason(rows: list[dict[str, str]], *, with_code: bool) -> list[list[dict[str, str]]]:
    """Rows grouped by (status, reason), in the order each group's first row comes: the rows
    without a code, or (``with_code``) the rows with a code and a note."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        status = row.get("status", "")
        if with_code != (status in GOT_A_CODE) or (with_code and status == "existing"):
            continue
        if with_code and not row.get("reason"):
            continue
        groups.setdefault((status, row.get("reason", "")), []).append(row)
    return list(groups.values())


#: The pipeline's reason for a row without a partner or program (``domain/chunking``), and
#: what ``local run`` adds to it.
_NO_TARGET = {
    "no partner": "pass --partner NAME",
    "no program": "pass --program NAME",
}


def _hinted(reason: str) -> str:
    """A reason as ``local run`` says it: a missing partner or program names the flag."""
    hints = [hint for start, hint in _NO_TARGET.items() if reason.startswith(start)]
    if reason.startswith("no partner or program"):
        hints = list(_NO_TARGET.values())
    return f"{reason} (local run: {' / '.join(hints)})" if hints else reason
