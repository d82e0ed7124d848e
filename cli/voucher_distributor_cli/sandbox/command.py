"""``voucher-distributor sandbox``: the Certiverse-compatible sandbox API on its own."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from voucher_distributor_cli.arguments import HelpFormatter, rate, seconds
from voucher_distributor_cli.sandbox import (
    CatalogError,
    FaultSettings,
    SandboxConfig,
    SandboxServer,
    load_catalog,
)

DEFAULT_SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the sandbox's documented dev token
TOKEN_ENV = "CERTIVERSE_TOKEN"  # noqa: S105 - a variable name, not a secret


def add_sandbox_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        formatter_class=HelpFormatter,
        help="run the Certiverse-compatible sandbox API on its own",
        description=(
            "Serve the Certiverse Voucher Partner API locally from a data file of partners and "
            "programs, with optional fault injection. Control endpoints: GET /_sandbox/health, "
            "GET /_sandbox/state, PUT /_sandbox/faults, PUT /_sandbox/token."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8080, help="port, 0 = any")
    parser.add_argument(
        "--data", type=Path, metavar="FILE", help="catalogue JSON (default: sample)"
    )
    parser.add_argument(
        "--token",
        help=f"accepted bearer token (default: ${TOKEN_ENV} if set, else {DEFAULT_SANDBOX_TOKEN})",
    )
    parser.add_argument("--page-size", type=int, default=100, help="items per page")
    parser.add_argument(
        "--generation-delay",
        type=seconds,
        default=2.0,
        metavar="S",
        help="seconds until a purchase's vouchers exist",
    )
    parser.add_argument(
        "--next-link",
        choices=("relative", "absolute"),
        default="absolute",
        help="nextLink style",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed for codes and fault decisions, for a run that repeats exactly "
        "(default: none, drawn afresh each start)",
    )
    parser.add_argument("--latency", type=seconds, default=0.0, metavar="S", help="delay per call")
    parser.add_argument(
        "--error-rate",
        type=rate,
        default=0.0,
        metavar="R",
        help="share of API calls answered 500/503/429 (split equally)",
    )
    parser.add_argument(
        "--drop-rate", type=rate, default=0.0, metavar="R", help="share of calls dropped"
    )
    parser.add_argument(
        "--generation-failure-rate",
        type=rate,
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
