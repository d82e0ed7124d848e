"""The ``voucher-distributor`` command line: local tools around the pipeline.

Subcommands are registered by small ``_add_*`` functions so that new ones (``local run``) slot in
beside ``sandbox`` without touching the others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from pydantic import ValidationError

from voucher_distributor_local.local_run import RunResult
from voucher_distributor_local.sandbox import (
    CatalogError,
    FaultSettings,
    SandboxConfig,
    SandboxServer,
    load_catalog,
)

DEFAULT_SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the sandbox's documented dev token
TOKEN_ENV = "CERTIVERSE_TOKEN"  # noqa: S105 - a variable name, not a secret

Command = Callable[[argparse.Namespace], int]


def _rate(text: str) -> float:
    """A probability between 0 and 1 (argparse type)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _add_sandbox(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run the Certiverse-compatible sandbox API on its own",
        description=(
            "Serve the Certiverse Voucher Partner API locally from a data file of partners and "
            "programs, with optional fault injection. Control endpoints: GET /_sandbox/health, "
            "GET /_sandbox/state, PUT /_sandbox/faults, PUT /_sandbox/token."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port, 0 = any (default %(default)s)"
    )
    parser.add_argument(
        "--data", type=Path, metavar="FILE", help="catalogue JSON (default: sample)"
    )
    parser.add_argument(
        "--token",
        help=f"accepted bearer token (default: ${TOKEN_ENV} if set, else {DEFAULT_SANDBOX_TOKEN})",
    )
    parser.add_argument("--page-size", type=int, default=100, help="items per page (default 100)")
    parser.add_argument(
        "--generation-delay",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="seconds until a purchase's vouchers exist (default 2.0)",
    )
    parser.add_argument(
        "--next-link",
        choices=("relative", "absolute"),
        default="absolute",
        help="nextLink style (default absolute)",
    )
    parser.add_argument("--seed", type=int, help="seed for codes and fault decisions")
    parser.add_argument("--latency", type=_seconds, default=0.0, metavar="S", help="delay per call")
    parser.add_argument(
        "--error-rate",
        type=_rate,
        default=0.0,
        metavar="R",
        help="share of API calls answered 500/503/429 (split equally)",
    )
    parser.add_argument(
        "--drop-rate", type=_rate, default=0.0, metavar="R", help="share of calls dropped"
    )
    parser.add_argument(
        "--generation-failure-rate",
        type=_rate,
        default=0.0,
        metavar="R",
        help="share of purchases ending CheckoutFailed",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    parser.set_defaults(handler=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM; exit 0 then, 2 on bad settings, 1 if the port is taken."""
    token_from_env = os.environ.get(TOKEN_ENV)
    token = args.token or token_from_env or DEFAULT_SANDBOX_TOKEN
    try:
        config = SandboxConfig(
            token=token,
            page_size=args.page_size,
            generation_delay_s=args.generation_delay,
            next_link_style=args.next_link,
            data_path=args.data,
            seed=args.seed,
        )
        catalog = load_catalog(config.data_path)
    except (ValidationError, CatalogError) as exc:
        print(f"voucher-distributor sandbox: {exc}", file=sys.stderr)
        return 2
    error_share = args.error_rate / 3
    faults = FaultSettings(
        latency_s=args.latency,
        error_500_rate=error_share,
        error_503_rate=error_share,
        error_429_rate=error_share,
        drop_rate=args.drop_rate,
        generation_failure_rate=args.generation_failure_rate,
    )
    server = SandboxServer(
        config, host=args.host, port=args.port, catalog=catalog, log_requests=not args.quiet
    )
    try:
        server.start()
    except OSError as exc:
        print(
            f"voucher-distributor sandbox: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    server.set_faults(faults)
    if args.token:
        shown = "<your --token>" if token != DEFAULT_SANDBOX_TOKEN else token
    else:
        shown = f"${TOKEN_ENV}" if token_from_env else token
    print(
        f"Certiverse sandbox at {server.base_url} - try: "
        f'curl -H "Authorization: Bearer {shown}" {server.base_url}/vouchers/programs',
        flush=True,
    )
    try:
        _wait_for_stop_signal()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM, so either ends the sandbox cleanly with status 0."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        stop.wait()  # signals only reach the main thread; a caller thread waits forever
        return

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _add_local(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = subparsers.add_parser(
        "local", help="run the pipeline on this machine (AWS emulated, Certiverse sandboxed)"
    )
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    run = local_commands.add_parser(
        "run",
        help="run a recipient CSV (or an HR request .json) through the whole local pipeline",
        description=(
            "Creates the stack of template.yaml in an embedded AWS emulation (moto on loopback), "
            "uploads FILE under incoming/ (a .json file is sent as an HR request instead), "
            "delivers the events to the handlers until the batch ends, copies the results to "
            "--out and prints one JSON line summarising the batch. Certiverse is the built-in "
            "sandbox unless --certiverse-url names a compatible server (token: CERTIVERSE_TOKEN)."
        ),
    )
    run.add_argument("file", type=Path, metavar="FILE", help="a recipient CSV or a request JSON")
    run.add_argument("--partner", help="partner for rows that name none (stack default)")
    run.add_argument("--program", help="program for rows that name none (stack default)")
    run.add_argument("--certiverse-url", help="a Certiverse-compatible API base URL (…/api)")
    run.add_argument(
        "--out", type=Path, default=Path("local-results"), help="where results are copied"
    )
    run.add_argument(
        "--timeout", type=_seconds, default=900.0, help="give up after this many seconds"
    )
    run.set_defaults(handler=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    # Imported here: the sandbox command must not pay for moto and the pipeline.
    from voucher_distributor_local.local_run import LocalRunError, run_file  # noqa: PLC0415
    from voucher_distributor_local.runner import RunTimeoutError  # noqa: PLC0415

    try:
        result = run_file(
            args.file,
            partner=args.partner,
            program=args.program,
            certiverse_url=args.certiverse_url,
            out_dir=args.out,
            timeout_s=args.timeout,
            show=sys.stderr,
        )
    except (LocalRunError, RunTimeoutError) as exc:
        print(f"voucher-distributor: {exc}", file=sys.stderr)
        return 1
    _show_outcome(result, sys.stderr)
    print(json.dumps(result.final_line(), ensure_ascii=False), flush=True)
    return 0 if result.summary.get("status") == "completed" else 1


def _show_outcome(result: RunResult, out: TextIO, *, limit: int = 25) -> None:
    """The rows that got no code, with why: what a person checks first."""
    counts = result.summary.get("counts", {})
    print(
        f"batch {result.batch_id}: {counts.get('assigned', 0):,} assigned, "
        f"{counts.get('rejected', 0):,} rejected, {counts.get('failed', 0):,} failed "
        f"of {counts.get('rows', 0):,} rows",
        file=out,
    )
    if result.summary.get("error"):
        print(f"  the batch failed: {result.summary['error']}", file=out)
    unassigned = [row for row in result.rows if row.get("status") != "assigned"]
    for row in unassigned[:limit]:
        print(f"  row {row['row']:>6}  {row['status']:<8}  {row['reason']}", file=out)
    if len(unassigned) > limit:
        print(f"  … and {len(unassigned) - limit:,} more in {result.results_csv}", file=out)
    if result.results_csv:
        print(f"results: {result.results_csv}", file=out)


def _add_ops(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``status``, ``find``, ``redrive``, ``reconcile``: against a deployed or the local stack."""
    from voucher_distributor_local.ops import add_ops_arguments  # noqa: PLC0415

    add_ops_arguments(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voucher-distributor",
        description="Local tools of the voucher distributor (the pipeline itself runs on AWS).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sandbox(subparsers)
    _add_local(subparsers)
    _add_ops(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``voucher-distributor``: returns the process exit status."""
    args = build_parser().parse_args(argv)
    command: Command = args.handler
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
