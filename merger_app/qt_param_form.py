"""A form generated from a method's parameter schema (`core.methods.registry.Param`).

One widget per parameter, chosen by type: a range-limited QDoubleSpinBox or QSpinBox,
a QCheckBox, a QComboBox of the choices, or a QLineEdit; the help text is the tooltip.
Values read back are already coerced by `Param.coerce`, so the recipe built from them
passes the engine's checks.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from core.methods.registry import Param
from merger_app.qt_elide import QtElidingCombo
from merger_app.qt_models_panel import make_number_editor


def param_label(param: Param) -> str:
    return param.label or param.name.replace("_", " ").capitalize()


def let_shrink(combo: QComboBox, chars: int = 12) -> None:
    """Let a combo box be narrower than its longest item (its list still shows it whole),
    so a narrow window wraps the method panel instead of cutting it off at the right."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)


def make_editor(param: Param, parent: QWidget | None = None) -> QWidget:
    """The widget for one parameter, set to its default."""
    widget = make_number_editor(param, parent)
    if widget is None:
        if param.type == "bool":
            widget = QCheckBox(parent)
        elif param.type == "choice":
            widget = QtElidingCombo(parent)
            widget.addItems(list(param.choices))
        else:
            widget = QLineEdit(parent)
    widget.setToolTip(param.help)
    widget.setObjectName(f"param_{param.name}")
    set_editor_value(widget, param.default)
    return widget


def set_editor_value(widget: QWidget, value: Any) -> None:
    if isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, QDoubleSpinBox | QSpinBox):
        widget.setValue(value)
    elif isinstance(widget, QComboBox):
        widget.setCurrentText(str(value))
    elif isinstance(widget, QLineEdit):
        widget.setText("" if value is None else str(value))


def editor_value(widget: QWidget) -> Any:
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QDoubleSpinBox | QSpinBox):
        return widget.value()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QLineEdit):
        return widget.text()
    raise TypeError(widget)


class QtParamForm(QWidget):
    """The global (not per-model) parameters of one method."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QFormLayout(self)
        # labels go above their fields when the panel is narrow, instead of cutting it off
        self._layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self._params: tuple[Param, ...] = ()
        self._editors: dict[str, QWidget] = {}
        self._notes: dict[str, QLabel] = {}

    def set_params(self, params: tuple[Param, ...], notes: dict[str, str] | None = None) -> None:
        """Rebuild the form for these parameters, each at its default; `notes` are short
        texts shown beside an editor (what the ends of a range mean)."""
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self._params = tuple(params)
        self._editors = {}
        self._notes: dict[str, QLabel] = {}
        for p in self._params:
            editor = make_editor(p, self)
            self._editors[p.name] = editor
            label = QLabel(param_label(p) + ":", self)
            label.setToolTip(p.help)
            note = (notes or {}).get(p.name)
            self._layout.addRow(label, self._with_note(editor, note, p) if note else editor)
            self._connect(editor)
        if not self._params:
            self._layout.addRow(QLabel("This method has no settings besides the models.", self))

    def _with_note(self, editor: QWidget, note: str, param: Param) -> QWidget:
        """The editor with a note to its right, one field of the form."""
        box = QWidget(self)
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(editor)
        label = QLabel(note, box)
        label.setWordWrap(True)  # a narrow panel wraps it instead of wrapping the row
        label.setToolTip(param.help)
        label.setObjectName(f"note_{param.name}")
        row.addWidget(label)
        row.addStretch(1)
        self._notes[param.name] = label
        return box

    def note(self, name: str) -> QLabel | None:
        """The note beside a parameter's editor, if it has one."""
        return self._notes.get(name)

    def _connect(self, editor: QWidget) -> None:
        if isinstance(editor, QCheckBox):
            editor.toggled.connect(self.changed)
        elif isinstance(editor, QDoubleSpinBox | QSpinBox):
            editor.valueChanged.connect(self.changed)
        elif isinstance(editor, QComboBox):
            editor.currentTextChanged.connect(self.changed)
        elif isinstance(editor, QLineEdit):
            editor.textChanged.connect(self.changed)

    @property
    def params(self) -> tuple[Param, ...]:
        """The parameters shown, in order."""
        return self._params

    def editor(self, name: str) -> QWidget:
        return self._editors[name]

    def values(self) -> dict[str, Any]:
        return {p.name: p.coerce(editor_value(self._editors[p.name])) for p in self._params}

    def shown_values(self) -> dict[str, Any]:
        """What the editors hold, uncoerced: kept per method and put back exactly by
        `show_values`, even a half-typed text that does not parse yet."""
        return {name: editor_value(editor) for name, editor in self._editors.items()}

    def show_values(self, values: dict[str, Any]) -> None:
        """Put back what `shown_values` returned for these parameters (others unchanged)."""
        for name, value in values.items():
            if name in self._editors:
                set_editor_value(self._editors[name], value)

    def set_values(self, values: dict[str, Any]) -> None:
        """Set the given parameters (coerced, so out-of-range values raise RecipeError)."""
        for p in self._params:
            if p.name in values:
                set_editor_value(self._editors[p.name], p.coerce(values[p.name]))

    def reset(self) -> None:
        for p in self._params:
            set_editor_value(self._editors[p.name], p.default)
