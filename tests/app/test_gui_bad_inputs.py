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


def test_a_recipe_opened_without_some_models_says_so_until_the_models_change(
    window, tiny, tmp_path
):
    """The table showed the rest and the hint said 'Ready to merge.': a merge then was not
    the recipe's, and nothing said so."""
    gone = tmp_path / "gone.safetensors"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"merge_method: linear\nmodels: [{tiny.models['a']}, {tiny.models['b']}, {gone}]\n"
    )
    window._error = lambda *args: None  # the dialog is the other channel; tested elsewhere
    assert not window.open_recipe(recipe)
    assert len(window.models.model.rows()) == 2
    hint = window.hint.text()
    assert hint.startswith("⚠ The recipe was opened without 1 of its models (gone.safetensors)")
    assert window.merge_button.isEnabled()  # the user may merge what is there, knowingly
    assert "opened without 1 of its models" in window.jobs.log.toPlainText()
    window.models.model.set_rows(window.models.model.rows()[:1])  # the user changes the models
    assert "opened without" not in window.hint.text()
