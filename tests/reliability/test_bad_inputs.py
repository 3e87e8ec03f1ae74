"""Every bad input gets a clean, specific error from core and from the CLI (issue 8.1).

Clean means: a `MergerError` (CLI: exit 1, exactly one `merger: error:` line on stderr, no
traceback) whose message names the file and, where relevant, the tensor or the key; no
code payload ran; no file was left in the output folder. Cases marked "either" may also
succeed (an odd but valid file). Known bugs in others' files are strict xfails.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from corpus_files import PAYLOADS
from known_bugs import known
from reliability_harness import judge_cli
from reliability_session import corpus_cases

from core.errors import MergerError
from core.merge import run_merge
from core.recipe import ModelEntry, Recipe

REPO = Path(__file__).resolve().parents[2]


def _params(front: str):
    for case in corpus_cases():
        reason = known(case.id, front)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(case.id, id=case.id, marks=marks)


@pytest.mark.parametrize("case_id", list(_params("core")))
def test_core_gives_a_clean_error(outcomes, case_id):
    outcome = outcomes[(case_id, "core")]
    assert outcome.right, outcome.describe()


@pytest.mark.parametrize("case_id", list(_params("cli")))
def test_cli_gives_one_clean_line(outcomes, case_id):
    outcome = outcomes[(case_id, "cli")]
    assert outcome.right, outcome.describe()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_payloads_are_real(tmp_path, payload):
    """Control: an unsafe load of each payload does create its marker. Without this, the
    'payload did not run' checks could pass because the payload was broken."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(payload(marker)))  # noqa: S301 - the point of the control
    assert marker.exists()


def test_the_arch_payload_is_real(cases, tmp_path):
    """Control for the recipe `arch: evil.py` case: importing the file makes the marker."""
    case = next(c for c in cases if c.id == "recipe_arch_python_file")
    evil = case.path.parent / "evil_model.py"
    text = evil.read_text().replace(str(case.marker), str(tmp_path / "ran"))
    exec(compile(text, "evil", "exec"), {})  # noqa: S102 - the point of the control
    assert (tmp_path / "ran").exists()


def test_symlink_loop_reaches_run_merge_cleanly(cases, good, tmp_path):
    """run_merge itself (not only open_checkpoint) must refuse a symlink loop cleanly."""
    loop = next(c for c in cases if c.id == "path_loop_a.safetensors").path
    recipe = Recipe("task_arithmetic", (ModelEntry(str(loop)),), base_model=str(good))
    try:
        run_merge(recipe, tmp_path / "out.safetensors")
    except MergerError as exc:
        assert "loop_a" in str(exc)
    except RuntimeError as exc:
        pytest.xfail(f"known bug: merge._same_file_key uses Path.resolve(): {exc}")
    else:
        pytest.fail("a symlink loop was merged")
    assert list(tmp_path.iterdir()) == []


# -- the real command, in subprocesses: one case per kind of damage ------------------
SUBPROCESS_CASES = [  # one per kind; each run costs a torch import (5-15 s here)
    "payload_torch_OsSystemPayload",
    "recipe_nan_input",
    "st_dtype_list",
]


def _subprocess(case_id: str, cases, good: Path, tmp: Path) -> tuple[str, list[str], str]:
    from reliability_harness import cli_argvs

    case = next(c for c in cases if c.id == case_id)
    out_dir = tmp / case_id
    out_dir.mkdir()
    worst = ("ok", "")
    for argv in cli_argvs(case, good, out_dir / "merged.safetensors")[-1:]:  # the merge
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "core.cli", *argv],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=40,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            result = judge_cli(proc.returncode, proc.stderr)
        except subprocess.TimeoutExpired:
            if case.unblock:
                case.unblock()
            result = ("hang", "killed after 40 s")
        if result[0] != "ok":
            worst = result
    if case.marker is not None and case.marker.exists():
        case.marker.unlink()
        worst = ("payload", "the payload ran")
    left = sorted(p.name for p in out_dir.rglob("*"))
    return worst[0], left, worst[1]


@pytest.mark.slow
def test_the_real_command_on_a_sample(cases, good, tmp_path):
    """`python -m core.cli` as a user runs it: exit 1 and one line, for each kind."""
    with ThreadPoolExecutor(2) as pool:
        results = dict(
            zip(
                SUBPROCESS_CASES,
                pool.map(lambda cid: _subprocess(cid, cases, good, tmp_path), SUBPROCESS_CASES),
                strict=False,
            )
        )
    wrong = {}
    for cid, (status, left, message) in results.items():
        expected_bug = known(cid, "cli")
        fine = status == "clean" and not left
        if fine == bool(expected_bug):
            wrong[cid] = (status, left, message, "known bug now passes" if fine else "")
    assert not wrong, wrong
