"""The `merger` command itself: the parser and the dispatch to the subcommands.

Imported by `core.cli.main` (it pulls in torch, which takes seconds), so that a Ctrl+C
during these imports is caught there too. Each subcommand module exposes
`register(subparsers)`, which adds its parser and sets `func` to a function taking the
parsed arguments and returning an exit code. Errors meant for people (`MergerError`)
become one line on stderr and exit code 1, never a traceback; a cancel (Ctrl+C) exits
130 and leaves no output behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from core import __version__
from core.cli import cancelled, cmd_align, cmd_eval, cmd_info, cmd_merge, interrupted
from core.cli.output import error_fields, merger_error_fields, print_json
from core.errors import Cancelled, MergerError

COMMAND_MODULES = [cmd_info, cmd_merge, cmd_align, cmd_eval]


class _Parser(argparse.ArgumentParser):
    """argparse, but a malformed command line is one line too (exit 2), not a usage block."""

    json_errors = False  # set for a command line with --json (every subparser sees it)

    def error(self, message: str):  # type: ignore[override]
        if _Parser.json_errors:
            print_json({"error": error_fields("usage", message)})
        self.exit(2, f"merger: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="merger",
        description="Merge neural-network checkpoints (task arithmetic, TIES, DARE, SLERP, ...).",
    )
    parser.add_argument("--version", action="version", version=f"merger {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if getattr(args, "check", None) is not None:
        args.check(args)  # combinations argparse cannot express; exits 2 like it
    try:
        return int(args.func(args) or 0)
    except MergerError as exc:
        print(f"merger: error: {exc}", file=sys.stderr)
        _json_error(args, merger_error_fields(exc))
        return 1
    except BrokenPipeError:  # `merger ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Cancelled, KeyboardInterrupt):
        return cancelled()
    except Exception as exc:  # a bug: say so plainly, details on request
        if interrupted():  # Ctrl+C, turned into another error inside a library
            return cancelled()
        if args.debug:
            traceback.print_exc()
        print(
            f"merger: internal error: {type(exc).__name__}: {exc} "
            "(this is a bug; rerun as `merger --debug COMMAND ...` and report it)",
            file=sys.stderr,
        )
        _json_error(args, error_fields("internal error", f"{type(exc).__name__}: {exc}"))
        return 3


def _json_error(args: argparse.Namespace, fields: dict[str, str]) -> None:
    """With --json, the error also as a JSON object on stdout, where a script reads the
    result (stderr keeps the line people read)."""
    if getattr(args, "json", False):
        print_json({"error": fields})
