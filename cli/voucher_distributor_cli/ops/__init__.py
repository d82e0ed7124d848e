"""Operating a stack: ``voucher-distributor status|find|voucher|retry-failed|redrive|redeliver|
reconcile``, ``sync``, ``redemptions`` and ``programs``.

Each command is a module (``status``, ``find``, ``retry``, ``redrive``, ``reconcile``,
``programs``); which stack they work on is :mod:`.target`'s job. Every command only reads,
except ``redrive``, which moves messages from dead-letter queues back to their sources, and
``retry-failed``, which uploads a new input. ``programs`` asks Certiverse, not the stack (a
stack only tells it which Certiverse, and its token).

Each command's runner in :mod:`.commands` declares its own command line (:mod:`.registry`);
this module only gives them the shared stack options and ``--json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from voucher_distributor_cli.ops import commands as _commands  # noqa: F401 - registers them
from voucher_distributor_cli.ops.approval import decide
from voucher_distributor_cli.ops.find import find_recipient
from voucher_distributor_cli.ops.programs import Catalogue, format_catalogue, read_catalogue
from voucher_distributor_cli.ops.reconcile import (
    Reconciliation,
    format_reconciliation,
    iter_all_chunks,
    reconcile,
)
from voucher_distributor_cli.ops.redeliver import redeliver_callbacks
from voucher_distributor_cli.ops.redemptions import redemptions_report
from voucher_distributor_cli.ops.redrive import RedriveReport, redrive
from voucher_distributor_cli.ops.registry import REGISTERED, add_commands
from voucher_distributor_cli.ops.retry import RetryStarted, retry_failed
from voucher_distributor_cli.ops.status import batch_status, format_status
from voucher_distributor_cli.ops.sync import run_sync
from voucher_distributor_cli.ops.target import (
    LOCAL_STACK_NAME,
    OpsError,
    Target,
    add_stack_options,
)

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
COMMANDS = tuple(registered.name for registered in REGISTERED)


def add_ops_arguments(subparsers: Any) -> None:
    """Register every operator command (main.py's groups), each with the stack options."""
    where = argparse.ArgumentParser(add_help=False)
    add_stack_options(where, suppress_defaults=True)
    where.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_commands(subparsers, [where])
