"""How an operator command registers itself: its arguments declared beside its runner.

A runner in :mod:`.commands` is decorated with :func:`command`, naming the command, its
``--help`` texts and its arguments (:func:`arg`, :class:`OneOf` for a required choice between
flags). The decorator records it in :data:`REGISTERED`, in the order the modules define them,
which is the order ``--help`` lists them and argparse registers them. Every command gets the
stack options and ``--json`` from the parent parser ``add_commands`` is given; a runner does not
add its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from voucher_distributor_cli.arguments import HelpFormatter
from voucher_distributor_cli.ops.target import OpsError

Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its flags (or positional name) and keyword options."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def add_to(self, parser: Any) -> None:
        parser.add_argument(*self.flags, **self.options)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class OneOf:
    """Arguments of which exactly one must be given (argparse's mutually exclusive group)."""

    args: tuple[Arg, ...]

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        for argument in self.args:
            argument.add_to(group)


@dataclass(frozen=True)
class OpsCommand:
    name: str
    help: str
    run: Runner
    arguments: tuple[Arg | OneOf, ...] = ()
    description: str | None = None
    epilog: str | None = None

    def add_to(self, subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
        parser = subparsers.add_parser(
            self.name,
            parents=list(parents),
            formatter_class=HelpFormatter,
            help=self.help,
            description=self.description,
            epilog=self.epilog,
        )
        for argument in self.arguments:
            argument.add_to(parser)
        parser.set_defaults(handler=self.run)


#: Every operator command, in the order they are defined.
REGISTERED: list[OpsCommand] = []


def command(
    name: str,
    *,
    help: str,
    arguments: Sequence[Arg | OneOf] = (),
    description: str | None = None,
    epilog: str | None = None,
    guarded: bool = True,
) -> Callable[[Runner], Runner]:
    """Register the decorated runner as ``voucher-distributor NAME``.

    ``guarded``: an :class:`OpsError` or an AWS error exits 2 with a one-line message instead of
    a traceback (a runner with its own exit codes for errors handles them itself).
    """

    def register(run: Runner) -> Runner:
        handler = _guarded(run) if guarded else run
        REGISTERED.append(OpsCommand(name, help, handler, tuple(arguments), description, epilog))
        return run

    return register


def add_commands(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    for registered in REGISTERED:
        registered.add_to(subparsers, parents)


def emit(args: argparse.Namespace, document: Any, text: str) -> None:
    """``--json``: the document; otherwise the text."""
    print(json.dumps(document, default=str, indent=2) if args.json else text, flush=True)


def _guarded(run: Runner) -> Runner:
    """Exit status 2 with a one-line message for what an operator can fix (not a traceback)."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(run(args))
        except (OpsError, ClientError, BotoCoreError) as exc:
            print(f"voucher-distributor {args.command}: {exc}", file=sys.stderr)
            return 2

    return wrapper
