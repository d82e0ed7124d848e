"""argparse value types the command groups share, and how a hint names the command to run next."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path


def rate(text: str) -> float:
    """A probability between 0 and 1 (argparse type)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def seconds(text: str) -> float:
    """A non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


class HelpFormatter(argparse.HelpFormatter):
    """Every command's ``--help``: a description or epilog of several lines as written (one
    line is wrapped), and each option's default shown (``(default: 900.0)``) unless it has
    none worth saying (None, False, [])."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, argparse.SUPPRESS)
            or default == []
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


#: The global options that say which stack a command works on: a hint repeats those given.
TARGET_OPTIONS = ("endpoint_url", "stack", "region", "profile")


def invocation(argv0: str | None = None) -> str:
    """How this command was started, as it can be pasted again: ``voucher-distributor`` when
    that is what the shell finds on PATH, else the script's own path (``.venv/bin/…`` after
    ``make demo``), or ``python -m voucher_distributor_cli.main`` with its interpreter."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = Path(argv0).name
    if name == "voucher-distributor":
        script = Path(argv0)
    elif name in {"main.py", "__main__.py"} and Path(argv0).parent.name == __package__:
        return f"{_shown(Path(sys.executable))} -m voucher_distributor_cli.main"
    else:  # started some other way (a test, an embedding): the script beside the interpreter
        script = Path(sys.executable).parent / "voucher-distributor"
        if not script.exists():
            return "voucher-distributor"
    on_path = shutil.which("voucher-distributor")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "voucher-distributor"
    return _shown(script)


def command_hint(args: argparse.Namespace | None, *words: str) -> str:
    """A command to run next, ready to paste: the invocation, ``words`` (quoted as needed) and
    the stack options this command was given (``--endpoint-url``, ``--stack``, …)."""
    flags: list[str] = []
    for option in TARGET_OPTIONS:
        value = getattr(args, option, None) if args is not None else None
        if value:
            flags += [f"--{option.replace('_', '-')}", str(value)]
    quoted = [w if w in {"…", '"…"'} else shlex.quote(w) for w in (*words, *flags)]
    return " ".join([invocation(), *quoted])


def _shown(path: Path) -> str:
    """A path as short as it can be pasted from here: relative under the working directory."""
    try:
        relative = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(path))
    return shlex.quote(str(relative))
