"""``voucher-distributor local run``: a CSV or an HR request through the whole local pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from voucher_distributor_cli.arguments import HelpFormatter, seconds

if TYPE_CHECKING:
    from voucher_distributor_cli.local.run import RunResult

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
            "and apiClientSecret (a local API client with every scope), callbackSigningSecret "
            "and certiverseUrl. Then `aws --endpoint-url …`, curl and every voucher-distributor "
            "operator command (--endpoint-url URL --stack NAME) work against it. Locally, "
            "callbacks may go to http:// loopback receivers."
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
    from voucher_distributor_cli.local.run import LocalRunError, run_files  # noqa: PLC0415
    from voucher_distributor_cli.local.runner import RunTimeoutError  # noqa: PLC0415
    from voucher_distributor_cli.local.runner.stack import StackError  # noqa: PLC0415

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
        )
    except (LocalRunError, RunTimeoutError, StackError) as exc:
        print(f"voucher-distributor: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    for result in results:
        _show_outcome(result, sys.stderr)
    for result in results:
        print(json.dumps(result.final_line(), ensure_ascii=False), flush=True)
    return max(exit_code(result) for result in results)


def _run_up(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415

    from voucher_distributor_cli.local.run import LocalRunError  # noqa: PLC0415
    from voucher_distributor_cli.local.runner.stack import StackError  # noqa: PLC0415
    from voucher_distributor_cli.local.up import LocalStackUp, serve_until_interrupted  # noqa: PLC0415

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop cleanly when a supervisor says so
    args.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            args.log.open("w", encoding="utf-8") as log_stream,
            LocalStackUp(
                certiverse_url=args.certiverse_url,
                certiverse_token=os.environ.get("CERTIVERSE_TOKEN"),
                partner=args.partner or "",
                program=args.program or "",
                parameters=dict(args.parameter_overrides),
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
            serve_until_interrupted(up)
    except (LocalRunError, StackError, OSError) as exc:
        print(f"voucher-distributor: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    except KeyboardInterrupt:
        pass
    print("local stack stopped", file=sys.stderr)
    return EXIT_DONE


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


def _show_outcome(result: RunResult, out: TextIO, *, limit: int = 25) -> None:
    """The rows that got no code, with why: what a person checks first. A reason shared by
    every row of a (partner, program) is said once, at the top."""
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
    whole, single = _group_refusals(result.rows)
    for (partner, program), (status, reason, count) in whole.items():
        rows = "the only row" if count == 1 else f"all {count:,} rows"
        print(f"  {rows} for {partner!r} / {program!r}: {status}, {reason}", file=out)
    for row in single[:limit]:
        line = f" (line {row['line']})" if row.get("line") else ""
        print(f"  row {row['row']:>6}{line}  {row['status']:<8}  {row['reason']}", file=out)
    if len(single) > limit:
        print(f"  … and {len(single) - limit:,} more in {result.results_csv}", file=out)
    if result.results_csv:
        print(f"results: {result.results_csv}", file=out)


def _group_refusals(
    rows: list[dict[str, str]],
) -> tuple[dict[tuple[str, str], tuple[str, str, int]], list[dict[str, str]]]:
    """(partner, program) -> (status, reason, rows) where every row of the pair got no code for
    the same reason (said once); and the other rows without a code, one by one."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row.get("partner", ""), row.get("program", "")), []).append(row)
    whole: dict[tuple[str, str], tuple[str, str, int]] = {}
    for pair, members in groups.items():
        answers = {(row.get("status", ""), row.get("reason", "")) for row in members}
        if len(members) > 1 and len(answers) == 1:
            ((status, reason),) = answers
            if status not in GOT_A_CODE:
                whole[pair] = (status, reason, len(members))
    single = [
        row
        for row in rows
        if row.get("status") not in GOT_A_CODE
        and (row.get("partner", ""), row.get("program", "")) not in whole
    ]
    return whole, single
