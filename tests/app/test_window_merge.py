"""The real main window end to end: demo, every method, cancel, save, compare with the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from app_helpers import load_demo, load_for_method, merge, save, wait_idle
from safetensors.numpy import load_file

from core.checkpoints import open_checkpoint
from core.cli import main as cli_main
from core.methods import REGISTRY
from merger_app.qt_dialogs import SaveOptions
from merger_app.qt_main_window import STALE_RESULT


def tensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a file or folder checkpoint, by name."""
    with open_checkpoint(path) as ckpt:
        files = ckpt.files
    out: dict[str, np.ndarray] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


@pytest.mark.slow
def test_demo_opens_ready_to_merge_with_task_arithmetic(window, qtbot, demo):
    load_demo(window, qtbot, demo)
    rows = window.models.model.rows()
    assert window.method.spec().name == "task_arithmetic"
    assert [r.role for r in rows].count("base") == 1
    assert rows[0].path == str(demo.base) and rows[0].role == "base"
    assert {r.path for r in rows} == {
        str(demo.base),
        str(demo.models["0-4"]),
        str(demo.models["5-9"]),
    }  # the recipe's models only
    recent = [a.toolTip() for a in window.actions.recent_menu.actions()]
    assert str(demo.seeds[0]) in recent and str(demo.models["even"]) in recent
    assert window.merge_button.isEnabled()
    assert window.hint.text() == "Ready to merge."


@pytest.mark.slow
def test_demo_lambda_stays_with_task_arithmetic(window, qtbot, demo):
    """The demo recipe's lambda 0.7 scales task vectors; weight matching's lambda (where
    between A and the aligned B) starts at its own default, as `merger run` uses it."""
    load_demo(window, qtbot, demo)
    form = window.method.form
    assert form.values()["lambda"] == 0.7
    window.method.set_method("weight_matching")
    wm_default = next(
        p.default for p in REGISTRY.get("weight_matching").params if p.name == "lambda"
    )
    assert form.values()["lambda"] == wm_default
    form.set_values({"lambda": 0.9})
    window.method.set_method("task_arithmetic")
    assert form.values()["lambda"] == 0.7
    window.method.set_method("weight_matching")
    assert form.values()["lambda"] == 0.9


@pytest.mark.parametrize("method", REGISTRY.names())
def test_every_method_merges_from_the_window(window, qtbot, tiny, method):
    load_for_method(window, tiny, method)
    result = merge(window, qtbot)
    assert result is not None, window.last_error and window.last_error.text()
    reference = tensors(window.models.model.rows()[0].path)
    merged = tensors(result.out)
    assert merged.keys() == reference.keys()
    assert all(merged[k].shape == reference[k].shape for k in reference)
    assert window.save_button.isEnabled() and not window.saved


def test_saved_file_equals_the_clis_output_for_the_exported_recipe(window, qtbot, tiny, tmp_path):
    load_for_method(window, tiny, "ties")
    window.method.form.set_values({"lambda": 0.8, "trim": "model"})
    table = window.models.model
    density = table.index(1, 3)  # columns: name, role, weight, density, ...
    assert table.headerData(3, qtbot_orientation(), 0) == "Density"
    assert table.setData(density, 0.4)
    assert merge(window, qtbot) is not None
    saved = save(window, qtbot, SaveOptions(tmp_path / "gui.safetensors"))
    assert saved == [tmp_path / "gui.safetensors"] and window.saved
    assert window.hint.text().startswith("Saved to ") and "gui.safetensors" in window.hint.text()
    assert window.export_recipe(tmp_path / "recipe.yaml")
    assert (
        cli_main(
            [
                "run",
                str(tmp_path / "recipe.yaml"),
                "-o",
                str(tmp_path / "cli.safetensors"),
                "--quiet",
            ]
        )
        == 0
    )
    gui, cli = tensors(tmp_path / "gui.safetensors"), tensors(tmp_path / "cli.safetensors")
    assert gui.keys() == cli.keys()
    for name in cli:
        np.testing.assert_array_equal(gui[name], cli[name], err_msg=name)
    base = tensors(tiny.base)
    assert any(not np.array_equal(gui[k], base[k]) for k in base)  # it did merge something
    with open_checkpoint(tmp_path / "gui.safetensors") as ckpt:
        assert "ties" in ckpt.metadata.get("merger_recipe", "")
        assert "trim: model" in ckpt.metadata.get("merger_recipe", "")


def test_save_as_sharded_float16_folder(window, qtbot, tiny, tmp_path):
    load_for_method(window, tiny, "task_arithmetic")
    result = merge(window, qtbot)
    out = tmp_path / "merged-folder"
    files = save(window, qtbot, SaveOptions(out, dtype="float16", shard_size=6_000))
    assert len(files) > 1 and all(f.parent == out for f in files)
    assert (out / "model.safetensors.index.json").exists()
    saved, merged = tensors(out), tensors(result.out)
    assert saved.keys() == merged.keys()
    for name in merged:
        assert saved[name].dtype == np.float16
        np.testing.assert_array_equal(saved[name], merged[name].astype(np.float16))


@pytest.mark.parametrize("which", ["recipe input", "model in the window"])
def test_save_never_replaces_an_input_model_even_when_allowed(window, qtbot, tiny, which):
    """Saving over an input (after the user said Yes to "Replace?") is refused, and the input
    keeps its bytes: the merge's own inputs, and any other model listed in the window."""
    load_for_method(window, tiny, "task_arithmetic")
    assert merge(window, qtbot) is not None
    rows = window.models.model.rows()
    if which == "model in the window":  # listed after the merge, so not in its recipe
        target = tiny.seeds[0]
        rows.append(type(rows[0])(path=str(target), name=target.stem))
        window.models.model.set_rows(rows)
    else:
        target = tiny.base
    before = target.read_bytes()
    assert window.save_to(SaveOptions(target), overwrite=True)
    wait_idle(window, qtbot)
    assert not window.saved
    assert window.last_error is not None and "one of the input models" in window.last_error.text()
    assert target.read_bytes() == before


def test_save_is_off_while_the_window_shows_other_models_or_settings(window, qtbot, tiny):
    """Save writes the last merge, so only while the window still shows what was merged:
    any change turns it off and says why; undoing the change turns it back on."""
    load_for_method(window, tiny, "task_arithmetic")  # base + three fine-tunes
    assert merge(window, qtbot) is not None
    form, table = window.method.form, window.models.model

    def stale() -> bool:
        off = not window.save_button.isEnabled() and not window.actions.save.isEnabled()
        return off and window.save_button.toolTip() == STALE_RESULT

    assert not stale() and window.save_button.isEnabled()
    merged_lambda = form.values()["lambda"]
    form.set_values({"lambda": 0.4})
    assert stale() and window.hint.text() == STALE_RESULT
    form.set_values({"lambda": merged_lambda})
    assert not stale() and window.save_button.isEnabled()
    window.method.set_method("ties")
    assert stale()
    window.method.set_method("task_arithmetic")  # its values come back: the merge's
    assert not stale()
    assert table.setData(table.index(1, 1), "base")  # another model is the base
    assert stale()
    assert table.setData(table.index(0, 1), "base")
    assert not stale()
    window.models.view.selectRow(3)
    window.models.remove_button.click()
    assert stale() and window.hint.text() == STALE_RESULT


def test_a_later_blocked_or_failed_merge_leaves_save_off(window, qtbot, tiny, tmp_path):
    """The trial: merge, add a model that does not fit (blocked) or one the merge refuses
    (a NaN weight): Save must not offer the earlier models' merge."""
    from app_helpers import nan_copy, save_tiny

    load_for_method(window, tiny, "task_arithmetic")
    assert merge(window, qtbot) is not None
    odd = save_tiny(
        tmp_path / "odd.safetensors", {"layers.0.weight": np.zeros((16, 64), np.float32)}
    )
    assert not window.add_models([odd])
    assert not window.merge_button.isEnabled()  # blocked: odd.safetensors does not fit
    assert not window.save_button.isEnabled()
    assert window.save_button.toolTip() == STALE_RESULT
    window.models.view.selectRow(len(window.models.model.rows()) - 1)
    window.models.remove_button.click()
    assert window.save_button.isEnabled()  # the merged models again

    assert not window.add_models([nan_copy(tiny.models["a"], tmp_path / "bad.safetensors")])
    assert merge(window, qtbot) is None
    window.last_error.close()
    assert window.hint.text().startswith("⚠ The last merge with these settings failed")
    assert not window.save_button.isEnabled() and not window.actions.save.isEnabled()
    assert window.save_button.toolTip() == STALE_RESULT


def test_closing_with_an_outdated_merge_offers_only_to_discard_it(window, qtbot, tiny):
    """Save is off for a merge the window no longer shows, so the close question is
    whether to discard it; Cancel keeps the window (and the merge) open."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    load_for_method(window, tiny, "linear")
    assert merge(window, qtbot) is not None
    window.method.form.set_values({"normalize": False})
    seen = []

    def answer() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, answer)  # not shown yet
            return
        seen.append(box.standardButtons())
        box.button(QMessageBox.StandardButton.Cancel).click()

    QTimer.singleShot(0, answer)
    del window.ask_unsaved  # the window's own question, not the fixture's answer
    window.close()
    buttons = QMessageBox.StandardButton
    assert seen == [buttons.Discard | buttons.Cancel]
    assert window.isVisible() and window.result is not None
    window.ask_unsaved = lambda: "discard"


def qtbot_orientation():
    from PySide6.QtCore import Qt

    return Qt.Orientation.Horizontal


def test_an_opened_recipe_merges_as_merger_run_does(window, qtbot, tiny, tmp_path):
    """Top-level values of per-model parameters (as `merger merge --save-recipe` writes
    them) and the compute dtype reach the window's merge and its exported recipe."""
    import torch

    from core.recipe import Recipe

    first, second = list(tiny.models.values())[:2]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "merge_method: ties\n"
        f"base_model: {tiny.base}\n"
        f"models:\n  - model: {first}\n  - model: {second}\n"
        "    parameters: {weight: 0.5}\n"
        "parameters: {weight: 0.3, density: 0.6, lambda: 1.0}\n"
        "dtype: bfloat16\n"
    )
    assert window.open_recipe(recipe)
    rows = window.models.model.rows()
    assert [r.values.get("weight") for r in rows[1:]] == [0.3, 0.5]
    assert [r.values.get("density") for r in rows[1:]] == [0.6, 0.6]
    result = merge(window, qtbot)
    assert result is not None, window.last_error and window.last_error.text()
    assert cli_main(["run", str(recipe), "-o", str(tmp_path / "cli.safetensors"), "--quiet"]) == 0
    with open_checkpoint(result.out) as a, open_checkpoint(tmp_path / "cli.safetensors") as b:
        gui, cli = a.state_dict(), b.state_dict()
    assert gui.keys() == cli.keys()
    assert all(cli[k].dtype == torch.bfloat16 and torch.equal(gui[k], cli[k]) for k in cli)
    assert window.export_recipe(tmp_path / "exported.yaml")
    assert Recipe.load(tmp_path / "exported.yaml").dtype == "bfloat16"


def test_an_exported_recipe_names_its_data_by_absolute_path(window, tiny, tmp_path, monkeypatch):
    """Typed relative to the folder the app started in, the data file must still be found
    when the recipe runs from elsewhere (models are absolute already)."""
    import shutil

    from core.recipe import Recipe

    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny.data, tmp_path / "d.npz")
    load_for_method(window, tiny, "activation_matching")
    window.method.data_combo.setCurrentText("d.npz")
    assert window.export_recipe(tmp_path / "deeper.yaml")
    assert Recipe.load(tmp_path / "deeper.yaml").data == str(tmp_path / "d.npz")


def test_lambdas_ends_are_named_for_re_basin_where_lambda_is_set_and_in_the_result(
    window, qtbot, tiny
):
    """The GUI trial: λ = 1 ('align only') was not named as B aligned to A anywhere."""
    load_for_method(window, tiny, "weight_matching")
    note = window.method.form.note("lambda")
    assert note is not None
    qtbot.waitUntil(note.isVisible, timeout=2000)  # a layout shows new fields queued
    assert note.text() == "0 = A, 1 = B aligned to A"
    editor = window.method.form.editor("lambda")
    assert note.geometry().left() >= editor.geometry().right()  # beside the field
    window.method.form.set_values({"lambda": 1.0})
    assert merge(window, qtbot) is not None
    assert window.hint.text().startswith("Merged (λ = 1: B aligned to A). Save the result")
    log = window.jobs.log.toPlainText()
    assert "Merged with Git Re-Basin: weight matching (λ = 1: B aligned to A) in " in log

    load_for_method(window, tiny, "task_arithmetic")  # λ scales task vectors: no ends
    assert window.method.form.note("lambda") is None
    assert merge(window, qtbot) is not None
    assert window.hint.text().startswith("Merged. Save the result")
    assert "λ" not in window.jobs.log.toPlainText().splitlines()[-2]
