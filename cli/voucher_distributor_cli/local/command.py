"""``voucher-distributor local run``: a CSV or an HR request through the whole local pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from voucher_distributor_cli.arguments import seconds

if TYPE_CHECKING:
    from voucher_distributor_cli.local.run import RunResult


def add_local_commands(subparsers: Any) -> None:
    local = subparsers.add_parser(
        "local", help="run the pipeline on this machine (AWS emulated, Certiverse sandboxed)"
    )
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    run = local_commands.add_parser(
        "run",
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
    run.add_argument("--partner", help="partner for rows that name none (stack default)")
    run.add_argument("--program", help="program for rows that name none (stack default)")
    run.add_argument(
        "--certiverse-url",
        help="a Certiverse-compatible API base URL (https://HOST/api, or the host alone)",
    )
    run.add_argument(
        "--out", type=Path, default=Path("local-results"), help="where results are copied"
    )
    run.add_argument(
        "--timeout", type=seconds, default=900.0, help="give up after this many seconds"
    )
    run.set_defaults(handler=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    # Imported here: the sandbox command must not pay for moto and the pipeline.
    from voucher_distributor_cli.local.run import LocalRunError, run_files  # noqa: PLC0415
    from voucher_distributor_cli.local.runner import RunTimeoutError  # noqa: PLC0415

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
        )
    except (LocalRunError, RunTimeoutError) as exc:
        print(f"voucher-distributor: {exc}", file=sys.stderr)
        return 1
    for result in results:
        _show_outcome(result, sys.stderr)
    for result in results:
        print(json.dumps(result.final_line(), ensure_ascii=False), flush=True)
    return 0 if all(r.summary.get("status") == "completed" for r in results) else 1


def _show_outcome(result: RunResult, out: TextIO, *, limit: int = 25) -> None:
    """The rows that got no code, with why: what a person checks first."""
    counts = result.summary.get("counts", {})
    print(
        f"batch {result.batch_id}: {counts.get('assigned', 0):,} assigned, "
        f"{counts.get('existing', 0):,} existing, {counts.get('rejected', 0):,} rejected, "
        f"{counts.get('failed', 0):,} failed of {counts.get('rows', 0):,} rows",
        file=out,
    )
    if result.summary.get("error"):
        print(f"  the batch failed: {result.summary['error']}", file=out)
    unassigned = [row for row in result.rows if row.get("status") not in {"assigned", "existing"}]
    for row in unassigned[:limit]:
        print(f"  row {row['row']:>6}  {row['status']:<8}  {row['reason']}", file=out)
    if len(unassigned) > limit:
        print(f"  … and {len(unassigned) - limit:,} more in {result.results_csv}", file=out)
    if result.results_csv:
        print(f"results: {result.results_csv}", file=out)
