"""Every bad input of the reliability corpus, through the real window: a dialog that names
the file, nothing written, and a window that keeps working (issue 8, item 1, GUI front)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from app_helpers import load_for_method, merge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from corpus import build_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gui-corpus")
    return root, build_corpus(root / "corpus")


def _try_checkpoint(window, qtbot, case, good: Path) -> str | None:
    """The error the window shows for this file (None if it merged fine)."""
    window.models.model.set_rows([])
    window.method.set_method("linear")
    errors = window.add_models([case.path])
    if errors:
        return errors[0]
    window.add_models([good])
    if not window.merge_button.isEnabled():
        return window.merge_button.toolTip() or window.hint.text()
    result = merge(window, qtbot)
    if result is None:
        return window.last_error.text() if window.last_error else "failed without a dialog"
    return None


def _try_recipe(window, qtbot, case) -> str | None:
    if not window.open_recipe(case.path):
        return window.last_error.text()
    arch = window.current_recipe().arch
    if arch and ".py:" in arch:  # the window asks first; the user (below) says no
        return None if window.merge() else f"declined to run {arch}"
    if not window.merge_button.isEnabled():
        return window.merge_button.toolTip() or window.hint.text()
    result = merge(window, qtbot)
    if result is None:
        return window.last_error.text() if window.last_error else "failed without a dialog"
    return None


def test_every_bad_input_gets_a_dialog_and_the_window_survives(
    window, qtbot, corpus, tiny, monkeypatch
):
    import merger_app.qt_main_window as main_window

    monkeypatch.setattr(main_window, "ask_run_code", lambda parent, arch: False)
    root, cases = corpus
    good = root / "corpus" / "good.safetensors"
    wrong = []
    for case in cases:
        window.last_error = None
        if case.kind == "checkpoint":
            message = _try_checkpoint(window, qtbot, case, good)
        else:
            message = _try_recipe(window, qtbot, case)
        if case.expect == "error":
            if message is None:
                wrong.append(f"{case.id}: accepted")
            elif case.kind == "checkpoint" and case.path.name not in message:
                wrong.append(f"{case.id}: message does not name the file: {message[:120]}")
        if case.marker is not None and case.marker.exists():
            wrong.append(f"{case.id}: its code payload ran")
        if window.last_error is not None:
            window.last_error.close()
    assert not wrong, "\n".join(wrong)
    # and the window still merges good models afterwards
    load_for_method(window, tiny, "task_arithmetic")
    assert merge(window, qtbot) is not None
