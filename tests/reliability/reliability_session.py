"""The corpus and every front's outcome on it, built once per test session.

Test modules parametrize over `corpus_cases()` at import time, so the corpus is built at
collection (about a second) in a temporary folder that is removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from corpus import Case, build_corpus
from reliability_harness import Outcome, run_cli_inprocess, run_core, snapshot


@functools.cache
def workdir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="merger-reliability-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def corpus_cases() -> tuple[Case, ...]:
    return tuple(build_corpus(workdir() / "corpus"))


def good_model() -> Path:
    corpus_cases()
    return workdir() / "corpus" / "good.safetensors"


@functools.cache
def all_outcomes() -> dict[tuple[str, str], Outcome]:
    """Every case through core and through the CLI (in process); inputs must not change."""
    cases = corpus_cases()
    before = snapshot(workdir() / "corpus")
    results = {}
    for case in cases:
        for front, run in (("core", run_core), ("cli", run_cli_inprocess)):
            out_dir = workdir() / "out" / f"{case.id}-{front}"
            results[(case.id, front)] = run(case, good_model(), out_dir)
    after = snapshot(workdir() / "corpus")
    changed = sorted(k for k in before if after.get(k) != before[k])
    if changed:
        raise AssertionError(f"inputs changed while running the corpus: {changed}")
    return results
