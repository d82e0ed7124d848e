"""The ``voucher-distributor`` command: operate a stack, run the pipeline locally, a sandbox.

Each command group registers its own subcommands (``ops``, ``local``, ``sandbox``); this module
only puts them under one parser, with the stack options (``--stack``, ``--endpoint-url``,
``--region``, ``--profile``) taken once here and again after any ops subcommand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from voucher_distributor_cli.local.command import add_local_commands
from voucher_distributor_cli.ops import COMMANDS as OPS_COMMANDS
from voucher_distributor_cli.ops import add_ops_arguments, add_stack_options
from voucher_distributor_cli.ops.api_clients import add_api_client_command
from voucher_distributor_cli.sandbox.command import add_sandbox_command

Command = Callable[[argparse.Namespace], int]

#: (heading, commands) of the grouped ``--help``, in the order an operator meets them.
GROUPS = (
    ("operate a deployed or local stack", OPS_COMMANDS),
    ("HTTP API clients", ("api-client",)),
    ("run the pipeline locally", ("local run", "local up")),
    ("Certiverse sandbox", ("sandbox",)),
)


def _grouped_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> str:
    """The ``commands:`` section of ``--help``, one heading per group."""
    helps = {action.dest: action.help or "" for action in subparsers._choices_actions}
    helps["local run"] = "a recipient CSV or an HR request through the whole local pipeline"
    helps["local up"] = "the whole stack on loopback (AWS, sandbox, HTTP API) until Ctrl-C"
    lines = []
    width = max(len(name) for _, names in GROUPS for name in names)
    for heading, names in GROUPS:
        lines.append(f"{heading}:")
        lines.extend(f"  {name:<{width}}  {helps.get(name, '')}" for name in names)
        lines.append("")
    lines.append("`voucher-distributor COMMAND --help` for a command's options.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voucher-distributor",
        description=(
            "Operate the voucher distributor's stack (deployed or local), run the pipeline\n"
            "on this machine, or serve the Certiverse sandbox."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_options(parser, suppress_defaults=False)
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    add_ops_arguments(subparsers)
    add_api_client_command(subparsers)
    add_local_commands(subparsers)
    add_sandbox_command(subparsers)
    parser.epilog = _grouped_commands(subparsers)
    # The grouped list in the epilog replaces the flat one argparse would print.
    subparsers.help = "one of the commands below"
    subparsers._choices_actions.clear()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``voucher-distributor``: returns the process exit status."""
    args = build_parser().parse_args(argv)
    command: Command = args.handler
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
