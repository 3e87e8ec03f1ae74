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


def qtbot_orientation():
    from PySide6.QtCore import Qt

    return Qt.Orientation.Horizontal
