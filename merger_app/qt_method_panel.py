"""The method panel: pick a method, see what it does and needs, set its parameters.

Everything here is generated from `core.methods.REGISTRY`: the combo lists the methods,
the form shows the global parameters (per-model ones are columns of the models table),
and the data / architecture / seed fields appear only for methods that use them.
Each method keeps its own parameter values for the session: a name such as lambda means
something else in another method, so picking a method shows its defaults the first time
and what the user left there afterwards, never a value set for another method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.errors import MergerError
from core.methods import REGISTRY
from core.methods.registry import MethodSpec
from core.recipe import DTYPES, Recipe
from merger_app._format import LAMBDA_ENDS, aligns_then_interpolates
from merger_app._recipe_build import PerTensor, split_value
from merger_app.qt_elide import QtElidingCombo
from merger_app.qt_param_form import QtParamForm, let_shrink
from merger_app.qt_per_tensor import QtPerTensorEditor

AUTO_ARCH = "Detect from the checkpoint"
SAME_DTYPE = "Same as the inputs"
AUTO_COMPUTE = "Automatic (float32, float64 for float64 models)"


def is_random(spec: MethodSpec) -> bool:
    """Does the method draw random numbers (so the seed matters)?"""
    return spec.needs.random


def needs_text(spec: MethodSpec) -> str:
    """'Needs: a base model, 1 or more input models.' in plain words."""
    n = spec.needs
    parts = []
    if n.base:
        parts.append("a base model")
    if n.max_models is None:
        parts.append(f"{n.min_models} or more input models")
    elif n.max_models == n.min_models:
        parts.append(f"exactly {n.min_models} input model" + ("s" if n.min_models > 1 else ""))
    else:
        parts.append(f"{n.min_models} to {n.max_models} input models")
    if n.data:
        parts.append("data the models run on (activations)")
    elif n.uses_data:
        parts.append("data (optional, used for BatchNorm statistics)")
    if n.arch:
        parts.append("the architecture (detected from the checkpoint, or named below)")
    return "Needs: " + ", ".join(parts) + "."


def _form() -> QFormLayout:
    """A form whose labels go above their fields when the panel is narrow, instead of
    cutting the fields off."""
    form = QFormLayout()
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


def architecture_choices() -> list[str]:
    """Built-in family names with their options, e.g. mlp, mlp:gelu, vgg."""
    try:
        from core.architectures import FAMILIES
    except ImportError:  # families are optional to the form; the custom picker still works
        return []
    out = []
    for name, family in FAMILIES.items():
        options = tuple(getattr(family, "options", ()) or ())
        out.append(name)
        out.extend(f"{name}:{o}" for o in options[1:])
    return out


@dataclass(frozen=True)
class _MethodValues:
    """One method's form as the user left it: editor values as shown, per-layer overrides."""

    scalars: dict[str, Any]
    per_tensor: dict[str, PerTensor]


class QtOneStopLabel(QLabel):
    """A label whose links Tab reaches in one stop: Qt's label stops on its link, then
    again on the label with nothing selected (the trial's 'twice on the link')."""

    def focusNextPrevChild(self, next: bool) -> bool:  # noqa: N802, A002 - Qt's API
        return QWidget.focusNextPrevChild(self, next)


class QtMethodPanel(QWidget):
    """Method combo, description, needs, parameter form, per-layer values, outputs."""

    method_changed = Signal(object)  # the new MethodSpec
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QtElidingCombo(self)
        self.combo.setObjectName("methodCombo")
        for spec in REGISTRY:
            self.combo.addItem(spec.label, spec.name)
            self.combo.setItemData(
                self.combo.count() - 1, spec.description, Qt.ItemDataRole.ToolTipRole
            )
        self.description = QtOneStopLabel(self)
        self.description.setWordWrap(True)
        self.description.setOpenExternalLinks(True)
        self.description.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.needs = QLabel(self)
        self.needs.setWordWrap(True)
        self.form = QtParamForm(self)
        self.reset_button = QPushButton("Reset to defaults", self)
        self.reset_button.setToolTip("Set every parameter of this method back to its default")
        self.per_tensor = QtPerTensorEditor(self)
        # what each method's form held when another was picked: a parameter's meaning (and
        # default) is the method's own, so values never pass from one method to another
        self._kept: dict[str, _MethodValues] = {}
        self._shown = ""  # the method the form shows now

        self.data_combo = QComboBox(self)
        self.data_combo.setEditable(True)
        self.data_combo.addItems(["", "digits"])  # blank: no data (optional for some methods)
        self.data_combo.setToolTip(
            "Data the models run on: 'digits' (built in) or a .npz file with inputs x "
            "(labels y are not needed here)"
        )
        self.data_browse = QPushButton("Browse…", self)
        self.arch_combo = QComboBox(self)
        self.arch_combo.setEditable(True)
        self.arch_combo.addItems([AUTO_ARCH, *architecture_choices()])
        self.arch_combo.setToolTip("A built-in family, or path/to/model.py:factory for your own")
        self.arch_browse = QPushButton("Browse…", self)
        self.seed = QSpinBox(self)
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Random methods give the same result for the same seed")
        self.out_dtype = QtElidingCombo(self)
        self.out_dtype.addItems([SAME_DTYPE, *DTYPES])
        self.out_dtype.setToolTip(
            "Dtype of the merged tensors, as written. Same as the inputs: each tensor keeps "
            "its dtype in the base model (or the first model); with a compute dtype set, "
            "the merge is written in that dtype (as mergekit's dtype: does)"
        )
        self.compute_dtype = QtElidingCombo(self)
        self.compute_dtype.addItems([AUTO_COMPUTE, *DTYPES])
        self.compute_dtype.setToolTip(
            "Dtype the merge computes in (a recipe's dtype:). Automatic: float32, or "
            "float64 where the models are float64"
        )

        for combo in (self.data_combo, self.arch_combo):  # editable: their text scrolls
            let_shrink(combo)
        self._build_layout()
        self.combo.currentIndexChanged.connect(self._on_method)
        self.form.changed.connect(self.changed)
        self.per_tensor.changed.connect(self.changed)
        self.per_tensor.changed.connect(self._mark_overrides)
        self.reset_button.clicked.connect(self.reset)
        for w in (self.data_combo, self.arch_combo, self.out_dtype, self.compute_dtype):
            w.currentTextChanged.connect(self.changed)
        self.compute_dtype.currentTextChanged.connect(self._name_same_dtype)
        self.arch_combo.currentTextChanged.connect(self._show_auto_from_its_start)
        self._show_auto_from_its_start(self.arch_combo.currentText())
        self.seed.valueChanged.connect(self.changed)
        self.data_browse.clicked.connect(self._browse_data)
        self.arch_browse.clicked.connect(self._browse_arch)
        self._on_method()

    def _show_auto_from_its_start(self, text: str) -> None:
        """A narrow field shows the end of its text (the file name of a path, as wanted);
        the Auto entry reads from its start."""
        edit = self.arch_combo.lineEdit()
        if text == AUTO_ARCH and not edit.hasFocus():
            edit.setCursorPosition(0)

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(QLabel("<b>Method</b>", self))
        top.addWidget(self.combo, 1)
        # What the method needs besides models comes right under the line saying so: in a
        # small window (800×600) it stays in view while the parameters scroll.
        self.inputs = _form()
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_combo, 1)
        data_row.addWidget(self.data_browse)
        arch_row = QHBoxLayout()
        arch_row.addWidget(self.arch_combo, 1)
        arch_row.addWidget(self.arch_browse)
        self._data_label = QLabel("Data:", self)
        self._arch_label = QLabel("Architecture:", self)
        self.inputs.addRow(self._data_label, data_row)
        self.inputs.addRow(self._arch_label, arch_row)
        self._data_row, self._arch_row = data_row, arch_row
        self.extras = _form()
        self._seed_label = QLabel("Seed:", self)
        self.extras.addRow(self._seed_label, self.seed)
        self.extras.addRow(QLabel("Output dtype:", self), self.out_dtype)
        self.extras.addRow(QLabel("Compute dtype:", self), self.compute_dtype)
        reset_row = QHBoxLayout()
        reset_row.addStretch(1)
        reset_row.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.description)
        layout.addWidget(self.needs)
        layout.addLayout(self.inputs)
        layout.addWidget(self.form)
        layout.addLayout(reset_row)
        layout.addWidget(self.per_tensor)
        layout.addLayout(self.extras)
        layout.addStretch(1)

    # -- state --------------------------------------------------------------------------
    def spec(self) -> MethodSpec:
        return REGISTRY.get(self.combo.currentData())

    def set_method(self, name: str) -> None:
        """Select a method by name or alias (RecipeError for an unknown one)."""
        spec = REGISTRY.get(name)
        self.combo.setCurrentIndex(self.combo.findData(spec.name))

    def values(self) -> dict[str, Any]:
        return self.form.values()

    def per_tensor_values(self) -> dict[str, PerTensor]:
        return self.per_tensor.values()

    def focus_chain(self) -> list[QWidget]:
        """The panel's fields in reading order, for the window's Tab order (the form is
        rebuilt per method, so Qt's creation order would put its fields last)."""
        editors = [self.form.editor(p.name) for p in self.form.params]
        return [
            self.combo,
            self.description,  # its Reference link
            self.data_combo,
            self.data_browse,
            self.arch_combo,
            self.arch_browse,
            *editors,
            self.reset_button,
            *self.per_tensor.focus_chain(),
            self.seed,
            self.out_dtype,
            self.compute_dtype,
        ]

    def data(self) -> str | None:
        text = self.data_combo.currentText().strip()
        if text.lower() == "digits" and not Path(text).is_file():
            return "digits"  # the built-in set, typed 'Digits' (core reads it so too)
        return text or None

    def arch(self) -> str | None:
        text = self.arch_combo.currentText().strip()
        return None if not text or text == AUTO_ARCH else text

    def seed_value(self) -> int:
        return self.seed.value()

    def out_dtype_value(self) -> str | None:
        return None if self.out_dtype.currentIndex() == 0 else self.out_dtype.currentText()

    def _name_same_dtype(self) -> None:
        """The first output choice says what it writes: the inputs' dtype, or the compute
        dtype when one is set (a recipe's dtype: is also its output dtype)."""
        compute = self.compute_dtype_value()
        label = SAME_DTYPE if compute is None else f"Same as the compute dtype ({compute})"
        self.out_dtype.setItemText(0, label)

    def compute_dtype_value(self) -> str | None:
        text = self.compute_dtype.currentText()
        return None if text == AUTO_COMPUTE else text

    def reset(self) -> None:
        self.form.reset()
        self.per_tensor.clear()
        self.changed.emit()

    def apply_recipe(self, recipe: Recipe) -> list[str]:
        """Show a recipe's method and global settings; returns what could not be shown."""
        self.set_method(recipe.merge_method)
        self.form.reset()  # exactly the recipe: nothing carried over from before
        self.per_tensor.clear()
        spec = self.spec()
        scalars: dict[str, Any] = {}
        per: dict[str, PerTensor] = {}
        problems = []
        for p in spec.params:
            if p.per_model or p.name not in recipe.parameters:
                continue
            try:
                scalars[p.name], per[p.name] = split_value(recipe.parameters[p.name], p.default)
            except Exception as exc:  # noqa: BLE001 - report, keep the default
                problems.append(f"parameter '{p.name}': {exc}")
        self.form.set_values(scalars)
        self.per_tensor.set_values(per)
        self._mark_overrides()
        self.seed.setValue(recipe.seed)
        self.compute_dtype.setCurrentText(recipe.dtype or AUTO_COMPUTE)
        if recipe.out_dtype:
            self.out_dtype.setCurrentText(recipe.out_dtype)
        else:
            self.out_dtype.setCurrentIndex(0)
        if recipe.data:
            self.data_combo.setCurrentText(recipe.data)
        self.arch_combo.setCurrentText(recipe.arch or AUTO_ARCH)
        return problems

    # -- internals -----------------------------------------------------------------------
    def _keep_shown(self) -> None:
        """Remember the shown method's values, to put back when it is picked again."""
        if self._shown:
            self._kept[self._shown] = _MethodValues(
                self.form.shown_values(), self.per_tensor.kept_values()
            )

    def _show_kept(self, name: str) -> None:
        """The values `name` had when last shown; its defaults the first time."""
        kept = self._kept.get(name)
        if kept is not None:
            self.form.show_values(kept.scalars)
            self.per_tensor.set_values(kept.per_tensor)

    def _mark_overrides(self) -> None:
        """A gradient replaces the form's value; filters use it only where none matches."""
        try:
            per = self.per_tensor.values()
        except MergerError:
            return  # the editor shows its own error; keep the form as it is
        for p in self.spec().params:
            if p.per_model:
                continue
            editor = self.form.editor(p.name)
            over = per.get(p.name)
            editor.setEnabled(not (over and over.gradient))
            if over and over.gradient:
                editor.setToolTip(f"{p.help}\n\nOverridden by the per-layer gradient below.")
            elif over and over.filters:
                editor.setToolTip(f"{p.help}\n\nUsed for tensors that no filter below matches.")
            else:
                editor.setToolTip(p.help)

    def _on_method(self, *_: object) -> None:
        spec = self.spec()
        link = f' <a href="{spec.reference_url}">Reference</a>' if spec.reference_url else ""
        self.description.setText(f"{spec.description}{link}")
        self.needs.setText(needs_text(spec))
        self._keep_shown()
        # λ's ends named where λ is set: at 1 a Re-Basin merge is B aligned to A, not a mix
        notes = {"lambda": LAMBDA_ENDS} if aligns_then_interpolates(spec) else {}
        self.form.set_params(tuple(p for p in spec.params if not p.per_model), notes)
        self.per_tensor.set_params(spec.params)
        self._show_kept(spec.name)
        self._shown = spec.name
        self._mark_overrides()
        for label, row, shown in (
            (self._data_label, self._data_row, spec.needs.data or spec.needs.uses_data),
            (self._arch_label, self._arch_row, spec.needs.arch),
        ):
            label.setVisible(shown)
            for i in range(row.count()):
                row.itemAt(i).widget().setVisible(shown)
        random = is_random(spec)
        self._seed_label.setVisible(random)
        self.seed.setVisible(random)
        self.method_changed.emit(spec)
        self.changed.emit()

    def _browse_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Data the models run on", "", "NumPy arrays (*.npz);;All files (*)"
        )
        if path:
            self.data_combo.setCurrentText(path)

    def _browse_arch(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model definition", "", "Python files (*.py)")
        if path:
            from core.architectures.custom import guess_factory

            # the function that builds the model: guessed from the file, selected to retype
            name = guess_factory(path) or "factory"
            self.arch_combo.setCurrentText(f"{path}:{name}")
            edit = self.arch_combo.lineEdit()
            edit.setFocus()
            edit.setSelection(len(path) + 1, len(name))
