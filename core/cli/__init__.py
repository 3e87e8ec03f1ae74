"""The `merger` command: one parser, one module per group of subcommands.

This module stays light (no torch), so the console entry point `run` is in charge before
anything slow is imported. A Ctrl+C at any moment prints one line and exits 130, never a
traceback: while the modules load (torch takes seconds) the process simply exits, as
nothing has been written yet; later it cancels the running command, whose outputs are
removed. The parser and the dispatch live in `core.cli._app`; errors meant for people
become one line on stderr and exit code 1.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

CANCELLED = "merger: cancelled; nothing was written"
_state: dict[str, object] = {"told": False, "interrupted": False, "signal": signal.SIGINT}


def cancelled() -> int:
    """Say that the command was cancelled (once) and return its exit code: 128 + the
    signal's number, 130 for Ctrl+C (and a cancel without a signal), 143 for SIGTERM."""
    if not _state["told"]:
        _state["told"] = True
        print(CANCELLED, file=sys.stderr, flush=True)
    return 128 + int(_state["signal"])  # type: ignore[call-overload]


def interrupted() -> bool:
    """Did Ctrl+C arrive during this command? (A KeyboardInterrupt raised inside a C
    extension's import can come out as another exception; it is still a cancel.)"""
    return _state["interrupted"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `merger` with `argv` (default: the command line); returns the exit code."""
    _state.update(told=False, interrupted=False, signal=signal.SIGINT)
    if _only_version(argv):
        return 0
    try:
        from core.cli._app import main as run_command  # imports torch: seconds

        return run_command(argv)
    except KeyboardInterrupt:  # during the imports, or while reporting another error
        return cancelled()


def run() -> None:
    """The console entry point (`merger`, `python -m core.cli`)."""
    # While the modules load, a Ctrl+C ends the process at once: an interrupted import
    # can leave numpy or torch half-initialised, and nothing has been written yet.
    # SIGTERM (`kill`, `timeout`, a closing terminal session) is a cancel like Ctrl+C:
    # the command's partial outputs are removed on the way out.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_now)
    if _only_version(None):
        sys.exit(0)
    import core.cli._app  # noqa: F401 - loaded here, under that handler

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl+C while the first was being reported
        code = cancelled()
    # The command is over: a Ctrl+C during the interpreter's shutdown (torch takes a
    # moment to unload) must not kill the process with a signal instead of its code.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if code >= 128:
        # Cancelled: the command has removed its partial outputs. A worker thread may
        # still be inside a torch call; the interpreter's shutdown would then destroy
        # torch's thread pool under it (seen as "terminate called without an active
        # exception" and SIGABRT instead of the exit code), so leave without one.
        sys.stdout.flush()
        sys.stderr.flush()
        import os

        os._exit(code)
    sys.exit(code)


def _only_version(argv: Sequence[str] | None) -> bool:
    """`merger --version` alone: print it without loading torch (seconds); True if done.
    (The full parser answers it too, for `merger --debug --version`.)"""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["--version"]:
        return False
    from core import __version__

    print(f"merger {__version__}")
    return True


def _exit_now(signum: int, _frame: object) -> None:
    import os

    _state["signal"] = signum
    os._exit(cancelled())


def _interrupt(signum: int, _frame: object) -> None:
    _state["interrupted"] = True
    _state["signal"] = signum
    raise KeyboardInterrupt


def __getattr__(name: str):
    """`build_parser` and `COMMAND_MODULES`, imported on first use (they need torch)."""
    if name in ("build_parser", "COMMAND_MODULES"):
        from core.cli import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'core.cli' has no attribute '{name}'")
