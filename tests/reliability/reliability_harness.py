"""Run one corpus case through core or the CLI and record what happened.

Each run gets its own empty output folder, so anything left in it after a failure is a
partial file. Runs happen on a daemon thread with a time limit: a reader that blocks
(e.g. on a FIFO) is reported as a hang instead of freezing the test session.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from corpus_base import Case

from core.checkpoints import open_checkpoint
from core.cli import main as cli_main
from core.errors import MergerError
from core.merge import run_merge
from core.recipe import ModelEntry, Recipe

Status = Literal["ok", "clean", "crash", "hang", "unclear"]


@dataclass
class Outcome:
    """What one front did with one case."""

    case: Case
    front: str  # "core" or "cli"
    status: Status
    message: str = ""
    leftovers: list[str] = field(default_factory=list)
    payload_ran: bool = False

    @property
    def right(self) -> bool:
        """Did the program do what the case expects (not just 'no crash')?"""
        if self.payload_ran or self.leftovers:
            return False
        if self.status == "clean":
            return all(m in self.message for m in self.case.mention)
        return self.status == "ok" and self.case.expect == "either"

    def describe(self) -> str:
        extra = f" leftovers={self.leftovers}" if self.leftovers else ""
        extra += " PAYLOAD RAN" if self.payload_ran else ""
        return f"{self.case.id} [{self.front}] {self.status}: {self.message}{extra}"


def _in_thread(fn: Callable[[], object], case: Case) -> tuple[str, object]:
    """Run fn with a time limit; returns ("done", value) / ("error", exc) / ("hang", None)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # recorded and judged by the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"case-{case.id}")
    thread.start()
    thread.join(case.time_limit)
    if thread.is_alive():
        if case.unblock is not None:
            case.unblock()
            thread.join(10)
        return "hang", None
    if "error" in box:
        return "error", box["error"]
    return "done", box.get("value")


def _leftovers(out_dir: Path, succeeded: bool) -> list[str]:
    """Files a failed run left behind; after success only hidden temporaries count."""
    found = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*"))
    if succeeded:
        return [f for f in found if any(part.startswith(".") for part in Path(f).parts)]
    return found


def _payload(case: Case) -> bool:
    if case.marker is not None and case.marker.exists():
        case.marker.unlink()
        return True
    return False


def run_core(case: Case, good: Path, out_dir: Path) -> Outcome:
    """open + read every tensor + merge (checkpoints), or load + run (recipes)."""
    out_dir.mkdir(parents=True)
    out = out_dir / "merged.safetensors"

    def work() -> None:
        if case.kind == "checkpoint":
            with open_checkpoint(case.path) as ckpt:
                ckpt.state_dict()
            # merged with itself: compatible, so the merge reaches computing and writing
            recipe = Recipe("linear", (ModelEntry(str(case.path)), ModelEntry(str(case.path))))
        else:
            recipe = Recipe.load(case.path)
        run_merge(recipe, out)

    kind, value = _in_thread(work, case)
    if kind == "hang":
        status, message = "hang", f"no answer within {case.time_limit:.0f} s"
    elif kind == "done":
        status, message = "ok", ""
    elif isinstance(value, MergerError) and "\n" not in str(value):
        status, message = "clean", str(value)
    else:
        status, message = "crash", f"{type(value).__name__}: {value}"
    return Outcome(
        case, "core", status, message, _leftovers(out_dir, status == "ok"), _payload(case)
    )


def cli_argvs(case: Case, good: Path, out: Path) -> list[list[str]]:
    """The commands a user would type for this input."""
    if case.kind == "recipe":
        return [["run", str(case.path), "-o", str(out), "--quiet"]]
    return [
        ["info", str(case.path)],
        ["merge", "--method", "linear", str(case.path), str(case.path), "-o", str(out), "--quiet"],
    ]


def judge_cli(code: int | None, stderr: str) -> tuple[Status, str]:
    """Exit 0, or exit 1 with exactly one `merger: error:` line and no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("merger: error:")]
    others = [ln for ln in lines if not ln.startswith(("merger: error:", "note:"))]
    if code == 0 and not errors:
        return "ok", ""
    if code == 1 and len(errors) == 1 and not others:
        return "clean", errors[0]
    if code == 3 or "Traceback" in stderr:
        return "crash", f"exit {code}: {stderr.strip()[-400:]}"
    return "unclear", f"exit {code}: {stderr.strip()[-400:]}"


def run_cli_inprocess(case: Case, good: Path, out_dir: Path) -> Outcome:
    """`merger ...` through `core.cli.main`, stderr captured (fast: torch is imported)."""
    out_dir.mkdir(parents=True)
    out = out_dir / "merged.safetensors"
    worst: tuple[Status, str] = ("ok", "")
    rank = {"ok": 0, "clean": 1, "unclear": 2, "crash": 3, "hang": 4}
    for argv in cli_argvs(case, good, out):
        err = io.StringIO()

        def work(argv=argv, err=err) -> int | None:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    return cli_main(argv)
                except SystemExit as exc:
                    return exc.code if isinstance(exc.code, int) else 2

        kind, value = _in_thread(work, case)
        if kind == "hang":
            result: tuple[Status, str] = ("hang", f"no answer within {case.time_limit:.0f} s")
        elif kind == "error":
            result = ("crash", f"escaped main(): {type(value).__name__}: {value}")
        else:
            result = judge_cli(value, err.getvalue())  # type: ignore[arg-type]
        if rank[result[0]] > rank[worst[0]] or (result[0] == "clean" and worst[0] == "clean"):
            worst = result
    return Outcome(
        case, "cli", worst[0], worst[1], _leftovers(out_dir, worst[0] == "ok"), _payload(case)
    )


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every regular file under root, to prove inputs stay untouched."""
    result = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = p.lstat()
                if p.is_file() and not p.is_symlink():
                    result[str(p)] = (st.st_size, st.st_mtime_ns)
    return result
