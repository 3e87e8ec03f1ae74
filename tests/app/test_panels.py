"""The models table and the method form, as the user edits them in the real window."""

from __future__ import annotations

import pytest
from app_helpers import load_for_method
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from core.methods import REGISTRY
from core.recipe import Recipe
from merger_app._recipe_build import PerTensor

H = Qt.Orientation.Horizontal


def headers(table) -> list[str]:
    return [table.headerData(c, H, Qt.ItemDataRole.DisplayRole) for c in range(table.columnCount())]


def test_rows_show_what_the_headers_say(window, tiny):
    assert not window.add_models([tiny.base, tiny.models["a"]])
    table = window.models.model
    window.method.set_method("linear")
    assert headers(table) == ["Name", "Role", "Weight", "Format", "Parameters", "Dtype", "Size"]
    row = [table.index(0, c).data() for c in range(table.columnCount())]
    # 32·64+32 + 32·32+32 + 10·32+10 = 3466 float32 parameters, 13 864 bytes
    # linear averages every listed model, so the Role column says so
    # the extension is the Format column's; left out of the name, it cannot crowd out the
    # part of the name that tells models apart when a narrow window elides it
    assert row == ["base", "input", "1", "safetensors", "3.47K", "float32", "13.9 KB"]


def test_models_that_would_share_a_name_are_told_apart(window, tiny, tmp_path):
    """Same stem in two formats: the extension stays; same file name in two folders: the
    folder is added. Names no other model shares stay short."""
    import shutil

    import torch
    from safetensors.torch import load_file

    for run in ("run1", "run2"):
        (tmp_path / run / "ckpt").mkdir(parents=True)
        shutil.copy(tiny.base, tmp_path / run / "ckpt" / "model.safetensors")
    torch.save(load_file(str(tiny.base)), tmp_path / "run1" / "base.pt")
    shutil.copy(tiny.base, tmp_path / "run1" / "base.safetensors")
    paths = [
        tmp_path / "run1" / "ckpt",
        tmp_path / "run2" / "ckpt" / "model.safetensors",
        tmp_path / "run1" / "base.pt",
        tmp_path / "run1" / "base.safetensors",
        tiny.models["a"],
    ]
    assert not window.add_models(paths)
    table = window.models.model
    names = [table.index(r, 0).data() for r in range(table.rowCount())]
    assert names == ["run1/ckpt", "run2/ckpt", "base.pt", "base.safetensors", "finetuned_a"]
    # two weight files in one folder (a Hub layout), one file name under two deep folders
    window.models.model.set_rows([])
    torch.save(load_file(str(tiny.base)), tmp_path / "run1" / "ckpt" / "pytorch_model.bin")
    for top in ("r", "s"):
        (tmp_path / top / "a").mkdir(parents=True)
        shutil.copy(tiny.base, tmp_path / top / "a" / "ck.safetensors")
    paths = [
        tmp_path / "run1" / "ckpt" / "model.safetensors",
        tmp_path / "run1" / "ckpt" / "pytorch_model.bin",
        tmp_path / "r" / "a" / "ck.safetensors",
        tmp_path / "s" / "a" / "ck.safetensors",
    ]
    assert not window.add_models(paths)
    names = [table.index(r, 0).data() for r in range(table.rowCount())]
    assert names == [
        "ckpt/model.safetensors",
        "ckpt/pytorch_model.bin",
        "r/a/ck.safetensors",
        "s/a/ck.safetensors",
    ]


def test_adding_the_same_file_twice_keeps_one_row(window, tiny):
    same = str(tiny.folder / "x" / ".." / "base.safetensors")
    window.add_models([tiny.base])
    window.add_models([same])
    assert len(window.models.model.rows()) == 1


def test_a_folder_and_the_weights_file_inside_it_are_one_model(window, tiny, tmp_path):
    import shutil

    folder = tmp_path / "hf_model"
    folder.mkdir()
    shutil.copy(tiny.base, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    window.add_models([folder])
    window.add_models([folder / "model.safetensors"])
    assert [r.name for r in window.models.model.rows()] == ["hf_model"]


def test_a_file_that_is_no_model_is_refused_with_its_name(window, tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"not a model")
    errors = window.add_models([bad])
    assert len(errors) == 1 and "notes.safetensors" in errors[0]
    assert window.models.model.rows() == []
    assert "notes.safetensors" in window.last_error.text()
    window.last_error.close()


def test_one_base_at_a_time_and_per_model_columns_follow_the_method(window, tiny):
    load_for_method(window, tiny, "ties")
    table = window.models.model
    assert headers(table)[2:4] == ["Weight", "Density"]
    assert table.setData(table.index(2, 1), "base")
    assert [r.role for r in table.rows()] == ["input", "input", "base", "input"]
    assert not table.setData(table.index(0, 1), "judge")
    assert table.setData(table.index(1, 3), 0.25)
    assert not table.setData(table.index(1, 3), 1.5)  # density must stay in [0, 1]
    assert table.rows()[1].values == {"density": 0.25}
    window.method.set_method("task_arithmetic")  # keeps the weight column, drops density
    assert headers(table)[2:4] == ["Weight", "Format"]
    recipe = window.current_recipe()
    assert recipe.base_model == table.rows()[2].path
    assert [m.parameters for m in recipe.models] == [{"weight": 1.0}] * 3


def test_move_and_remove(window, tiny):
    load_for_method(window, tiny, "linear")
    panel = window.models
    names = [r.name for r in panel.model.rows()]
    panel.view.selectRow(1)
    panel.up_button.click()
    assert [r.name for r in panel.model.rows()] == [names[1], names[0], *names[2:]]
    panel.view.selectRow(0)
    panel.remove_button.click()
    assert [r.name for r in panel.model.rows()] == [names[0], *names[2:]]


def test_a_model_read_from_one_of_several_weight_sets_says_so(window, tmp_path):
    """A training checkpoint holding `model` and `ema`: the name's tooltip says which set
    was read and what was left."""
    import torch

    sd = {"layer.weight": torch.randn(4, 3), "layer.bias": torch.randn(4)}
    path = tmp_path / "train.pt"
    torch.save({"model": sd, "ema": sd}, path)
    window.add_models([path])
    tip = window.models.model.index(0, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert tip.splitlines() == [
        str(path),
        "ℹ weights read from 'model'; also in the file, not read: 'ema'",
    ]


def test_incompatible_models_are_marked_with_the_reason(window, tiny, tmp_path):
    import numpy as np
    from app_helpers import save_tiny

    other = save_tiny(
        tmp_path / "other.safetensors", {"layers.0.weight": np.zeros((16, 64), np.float32)}
    )
    window.method.set_method("task_arithmetic")
    window.add_models([tiny.base, other])
    table = window.models.model
    problem = table.rows()[1].problem
    assert problem and "layers.0.weight" in problem
    assert not table.index(1, 0).data(Qt.ItemDataRole.DecorationRole).isNull()
    assert problem in table.index(1, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert not window.merge_button.isEnabled()
    assert "other.safetensors cannot be merged" in window.merge_button.toolTip()
    # under the table: one line per problem, each marked, by file name (not the full path)
    lines = window.models.summary.text().splitlines()
    assert len(lines) >= 2 and all(line.startswith("⚠ other.safetensors: ") for line in lines)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda w, t: None, "Add models"),
        (
            lambda w, t: (w.method.set_method("slerp"), w.add_models([t.base, *t.models.values()])),
            "at most 1 input model",
        ),
        (
            lambda w, t: (
                w.method.set_method("ties"),
                w.add_models([t.base, t.models["a"]]),
                w.models.model.setData(w.models.model.index(0, 1), "input"),
            ),
            "needs a base model",
        ),
    ],
)
def test_merge_is_disabled_with_the_reason(window, tiny, setup, reason):
    setup(window, tiny)
    assert not window.merge_button.isEnabled()
    assert reason in window.merge_button.toolTip()
    assert reason in window.hint.text()


@pytest.mark.parametrize("name", REGISTRY.names())
def test_form_is_generated_from_the_schema(window, name):
    window.method.set_method(name)
    spec = REGISTRY.get(name)
    form = window.method.form
    for p in spec.params:
        if p.per_model:
            continue
        editor = form.editor(p.name)
        kind = {"float": QDoubleSpinBox, "int": QSpinBox, "bool": QCheckBox, "choice": QComboBox}[
            p.type
        ]
        assert isinstance(editor, kind)
        assert editor.toolTip() == p.help
        if p.min is not None:
            assert editor.minimum() == p.min and editor.maximum() == p.max
    assert form.values() == {p.name: p.default for p in spec.params if not p.per_model}
    assert spec.description in window.method.description.text()


def test_reset_restores_defaults(window):
    window.method.set_method("ties")
    form = window.method.form
    form.set_values({"lambda": 2.5, "normalize": False, "rescale_mode": "inverse"})
    assert form.values()["lambda"] == 2.5
    window.method.reset_button.click()
    spec = REGISTRY.get("ties")
    assert form.values() == {p.name: p.default for p in spec.params if not p.per_model}


def test_seed_and_data_fields_appear_only_where_used(window):
    window.method.set_method("task_arithmetic")
    assert window.method.seed.isHidden() and window.method.data_combo.isHidden()
    window.method.set_method("dare_ties")
    assert not window.method.seed.isHidden()
    window.method.set_method("activation_matching")
    assert not window.method.data_combo.isHidden() and not window.method.arch_combo.isHidden()


def test_per_layer_values_become_mergekit_values_in_the_recipe(window, tiny):
    load_for_method(window, tiny, "task_arithmetic")
    editor = window.method.per_tensor
    editor.set_expanded(True)
    editor.select_param("lambda")
    editor.gradient.setText("0, 0.5, 1")
    editor.add_filter("layers.4", 0.2)
    recipe = window.current_recipe()
    assert recipe.parameters["lambda"] == [
        {"filter": "layers.4", "value": 0.2},
        {"value": [0.0, 0.5, 1.0]},
    ]
    editor.gradient.setText("0, x")
    assert editor.error_label.isVisibleTo(editor) and "numbers" in editor.error_label.text()
    assert not window.merge_button.isEnabled()


def test_open_recipe_fills_the_panels_and_export_writes_it_back(window, tiny, tmp_path):
    original = Recipe.from_dict(
        {
            "merge_method": "ties",
            "base_model": str(tiny.base),
            "models": [
                {"model": str(tiny.base)},
                {"model": str(tiny.models["a"]), "parameters": {"weight": 0.7, "density": 0.3}},
                {"model": str(tiny.models["b"]), "parameters": {"weight": 1.0, "density": 0.5}},
            ],
            "parameters": {"lambda": [0.5, 1.0], "normalize": False},
            "seed": 7,
            "out_dtype": "float16",
        }
    )
    original.save(tmp_path / "in.yaml")
    assert window.open_recipe(tmp_path / "in.yaml")
    assert window.method.spec().name == "ties"
    assert window.method.per_tensor_values() == {"lambda": PerTensor(gradient=(0.5, 1.0))}
    assert [r.role for r in window.models.model.rows()] == ["base", "input", "input"]
    assert window.export_recipe(tmp_path / "out.yaml")
    back = Recipe.load(tmp_path / "out.yaml")
    assert back.merge_method == "ties" and back.seed == 7 and back.out_dtype == "float16"
    assert back.base_model == str(tiny.base)
    assert [(m.model, dict(m.parameters)) for m in back.models] == [
        (str(tiny.models["a"]), {"weight": 0.7, "density": 0.3}),
        (str(tiny.models["b"]), {"weight": 1.0, "density": 0.5}),
    ]
    assert back.parameters["lambda"] == [0.5, 1.0] and back.parameters["normalize"] is False


def default(method: str, param: str):
    return next(p.default for p in REGISTRY.get(method).params if p.name == param)


def test_each_method_keeps_its_own_values(window):
    """lambda scales task vectors in task arithmetic but places the merge between A and
    the aligned B in weight matching: a value set for one never shows up in the other."""
    form = window.method.form
    window.method.set_method("task_arithmetic")
    form.set_values({"lambda": 0.7, "normalize": True})
    window.method.set_method("weight_matching")
    assert form.values()["lambda"] == default("weight_matching", "lambda")
    assert window.current_recipe().parameters["lambda"] == default("weight_matching", "lambda")
    form.set_values({"lambda": 0.25})
    window.method.set_method("task_arithmetic")
    assert form.values()["lambda"] == 0.7 and form.values()["normalize"] is True
    window.method.set_method("weight_matching")
    assert form.values()["lambda"] == 0.25
    window.method.set_method("ties")  # never shown before: its own defaults
    spec = REGISTRY.get("ties")
    assert form.values() == {p.name: p.default for p in spec.params if not p.per_model}
    window.method.set_method("task_arithmetic")
    window.method.reset_button.click()
    assert form.values()["lambda"] == default("task_arithmetic", "lambda")
    window.method.set_method("weight_matching")
    assert form.values()["lambda"] == 0.25  # Reset touched only the method shown


def test_per_layer_values_stay_with_their_method(window):
    editor = window.method.per_tensor
    window.method.set_method("task_arithmetic")
    editor.select_param("lambda")
    editor.gradient.setText("0, 0.5, 1")
    window.method.set_method("ties")
    assert window.method.per_tensor_values() == {}
    assert window.method.form.editor("lambda").isEnabled()  # no gradient replaces it here
    window.method.set_method("task_arithmetic")
    assert window.method.per_tensor_values() == {"lambda": PerTensor(gradient=(0.0, 0.5, 1.0))}
    assert not window.method.form.editor("lambda").isEnabled()


def test_a_recipes_values_belong_to_its_method(window, tiny, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"merge_method: task_arithmetic\nbase_model: {tiny.base}\n"
        f"models: [{{model: {tiny.models['a']}}}]\nparameters: {{lambda: 0.7}}\n"
    )
    window.method.set_method("task_arithmetic")
    window.method.form.set_values({"lambda": 0.3})  # replaced by the recipe's value
    assert window.open_recipe(recipe)
    assert window.method.form.values()["lambda"] == 0.7
    window.method.set_method("weight_matching")
    assert window.export_recipe(tmp_path / "out.yaml")
    exported = Recipe.load(tmp_path / "out.yaml")
    assert exported.merge_method == "weight_matching"
    assert exported.parameters["lambda"] == default("weight_matching", "lambda")
    window.method.set_method("task_arithmetic")
    assert window.method.form.values()["lambda"] == 0.7


def test_cells_holding_a_gradient_are_not_flattened_by_the_editor(window, tiny, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"merge_method: ties\nbase_model: {tiny.base}\n"
        f"models: [{{model: {tiny.models['a']}, parameters: {{density: [0.2, 0.5]}}}}]\n"
    )
    assert window.open_recipe(recipe)
    table = window.models.model
    row = next(i for i, r in enumerate(table.rows()) if r.path == str(tiny.models["a"]))
    col = next(c for c in range(table.columnCount()) if table.headerData(c, H) == "Density")
    index = table.index(row, col)
    assert not table.flags(index) & Qt.ItemFlag.ItemIsEditable
    assert "varies by layer" in index.data(Qt.ItemDataRole.ToolTipRole)
    entry = next(m for m in window.current_recipe().models if m.model == str(tiny.models["a"]))
    assert entry.parameters["density"] == [0.2, 0.5]


def test_role_column_reads_as_the_method_uses_the_models(window, tiny):
    assert not window.add_models([tiny.base, tiny.models["a"]])
    table = window.models.model
    window.method.set_method("ties")
    assert [table.index(r, 1).data() for r in range(2)] == ["base", "input"]
    weight = table.index(0, 2)  # the base's weight: not used by task-vector methods
    assert weight.data() == "—" and not table.flags(weight) & Qt.ItemFlag.ItemIsEditable
    window.method.set_method("weight_matching")
    assert [table.index(r, 1).data() for r in range(2)] == ["A", "B"]
    assert "B is aligned to it" in window.models.summary.text()
    assert not table.flags(table.index(0, 1)) & Qt.ItemFlag.ItemIsEditable


def test_a_gradient_disables_the_value_it_replaces(window):
    window.method.set_method("task_arithmetic")
    editor = window.method.form.editor("lambda")
    assert editor.isEnabled()
    window.method.per_tensor.select_param("lambda")
    window.method.per_tensor.gradient.setText("0, 0.5, 1")
    assert not editor.isEnabled() and "gradient" in editor.toolTip()
    window.method.per_tensor.gradient.setText("")
    assert editor.isEnabled()


def test_missing_data_file_blocks_merge(window, tiny):
    load_for_method(window, tiny, "activation_matching")
    window.method.data_combo.setCurrentText("/nonexistent/data.npz")
    assert any("does not exist" in b for b in window.blockers())
    window.method.data_combo.setCurrentText("Digits")  # the built-in set, capitalised
    assert not window.blockers() and window.current_recipe().data == "digits"


def test_an_odd_model_added_first_is_the_one_marked(window, tiny, tmp_path):
    import numpy as np
    from app_helpers import save_tiny

    odd = save_tiny(
        tmp_path / "odd.safetensors", {"layers.0.weight": np.zeros((16, 64), np.float32)}
    )
    window.method.set_method("task_arithmetic")
    window.add_models([odd, tiny.base, tiny.models["a"]])
    rows = window.models.model.rows()
    assert rows[0].role == "base" and rows[0].problem
    assert "differs from the other 2 models" in rows[0].problem
    assert not rows[1].problem and not rows[2].problem
    assert "odd.safetensors cannot be merged" in window.merge_button.toolTip()


def test_a_shard_size_left_behind_by_a_switch_to_file_is_not_used(qtbot, tmp_path):
    from merger_app.qt_dialogs import FILE_FORMAT, FOLDER_FORMAT, QtSaveDialog

    dialog = QtSaveDialog(None, tmp_path / "merged.safetensors")
    qtbot.addWidget(dialog)
    dialog.format.setCurrentText(FOLDER_FORMAT)
    dialog.shard.setText("5MB")
    dialog.format.setCurrentText(FILE_FORMAT)
    dialog.accept()
    assert dialog.options is not None and dialog.options.shard_size is None
    assert dialog.options.path.suffix == ".safetensors"


def test_the_save_dialog_refuses_an_input_and_takes_a_relative_path_in_its_folder(
    qtbot, tiny, tmp_path
):
    """An input model is refused in the dialog itself, before any 'Replace it?'; a bare
    name lands in the suggested folder, not in the app's working folder."""
    from merger_app.qt_dialogs import FOLDER_FORMAT, QtSaveDialog

    folder = tmp_path / "hf_model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(tiny.base.read_bytes())
    inputs = [str(folder), str(tiny.base)]
    dialog = QtSaveDialog(None, tmp_path / "out" / "merged.safetensors", inputs)
    qtbot.addWidget(dialog)
    for target, fmt in ((folder, FOLDER_FORMAT), (folder / "model.safetensors", None)):
        if fmt:
            dialog.format.setCurrentText(fmt)
        dialog.path.setText(str(target))
        dialog.accept()
        assert dialog.options is None and "input" in dialog.error.text(), dialog.error.text()
    dialog.path.setText("rel_out")
    dialog.accept()
    assert dialog.options is not None
    assert dialog.options.path == tmp_path / "out" / "rel_out"


def test_models_move_from_the_keyboard_and_the_buttons_take_focus(window, tiny, qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    load_for_method(window, tiny, "weight_matching")  # A and B: their order matters
    window.show()
    window.activateWindow()
    panel = window.models
    names = [r.name for r in panel.model.rows()]
    panel.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is panel.view)
    panel.view.selectRow(1)
    qtbot.keyClick(panel.view, Qt.Key.Key_Up, Qt.KeyboardModifier.AltModifier)
    assert [r.name for r in panel.model.rows()] == [names[1], names[0]]
    qtbot.keyClick(panel.view, Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier)
    assert [r.name for r in panel.model.rows()] == names
    buttons = (panel.add_button, panel.remove_button, panel.up_button, panel.down_button)
    assert all(b.focusPolicy() == Qt.FocusPolicy.StrongFocus for b in buttons)


def test_tab_goes_from_the_method_through_its_fields_before_merge(window, tiny):
    """The form is rebuilt for each method: its fields still come between the method and
    Merge in the Tab order, not after Merge."""
    load_for_method(window, tiny, "ties")
    window.show()
    order, widget = [], window.method.combo
    for _ in range(60):
        widget = widget.nextInFocusChain()
        order.append(widget)
        if widget is window.merge_button:
            break
    assert window.merge_button in order
    lam = window.method.form.editor("lambda")
    assert any(w is lam or lam.isAncestorOf(w) for w in order)  # before Merge


def test_the_output_dtype_says_a_compute_dtype_is_also_written(window, tiny):
    """With a compute dtype set, 'Same as the inputs' was not what got written."""
    from app_helpers import load_for_method

    load_for_method(window, tiny, "linear")
    m = window.method
    assert m.out_dtype.itemText(0) == "Same as the inputs"
    m.compute_dtype.setCurrentText("float64")
    assert m.out_dtype.itemText(0) == "Same as the compute dtype (float64)"
    recipe = window.current_recipe()
    assert recipe.dtype == "float64" and recipe.out_dtype is None  # out_dtype follows dtype
    m.compute_dtype.setCurrentIndex(0)
    assert m.out_dtype.itemText(0) == "Same as the inputs"


def test_export_recipe_refuses_what_merger_run_would_and_adds_yaml(window, tiny, tmp_path):
    errors = []
    window._error = lambda title, text, *rest: errors.append(text)
    assert not window.export_recipe(tmp_path / "empty.yaml")  # no models yet
    assert "needs at least 1 input model" in errors[-1] and not (tmp_path / "empty.yaml").exists()
    from app_helpers import load_for_method

    load_for_method(window, tiny, "linear")
    assert window.export_recipe(tmp_path / "named")
    assert (tmp_path / "named.yaml").exists() and not (tmp_path / "named").exists()


def test_batchnorm_reestimation_is_greyed_out_for_models_without_batchnorm(window, tmp_path):
    from safetensors.torch import save_file

    from core.architectures.factories import mlp_state, resnet20_state

    mlps, resnets = [], []
    for i in range(2):
        mlps.append(tmp_path / f"mlp{i}.safetensors")
        save_file(mlp_state([8, 6, 3], seed=i), str(mlps[-1]))
        resnets.append(tmp_path / f"bn{i}.safetensors")
        save_file(resnet20_state(norm="batchnorm", seed=i), str(resnets[-1]))
    window.method.set_method("weight_matching")
    editor = window.method.form.editor("reset_bn")
    assert not window.add_models(mlps)
    assert not editor.isEnabled() and "no BatchNorm statistics" in editor.toolTip()
    window.models.model.set_rows([])
    assert not window.add_models(resnets)
    assert editor.isEnabled() and "Re-estimate" in editor.toolTip()
    window.models.model.set_rows([])
    window.method.set_method("linear")
    assert not window.add_models(mlps)
    window.method.set_method("activation_matching")  # a new form, marked as it appears
    assert not window.method.form.editor("reset_bn").isEnabled()
