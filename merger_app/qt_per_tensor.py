"""Per-layer values: name-filter rows and a gradient across layers, per parameter.

The user picks one of the method's per-tensor parameters, then either types a gradient
(`0, 0.5, 1`: first layer to last, linear in between) or adds rows of (tensor-name
substring, value); the first matching row wins, and tensors that match none use the
gradient or the form's value. The result is mergekit's YAML form (see `_recipe_build`).
"""

from __future__ import annotations

import contextlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.errors import RecipeError
from core.methods.registry import Param
from merger_app._format import format_value
from merger_app._recipe_build import PerTensor, parse_gradient
from merger_app.qt_param_form import param_label


class QtPerTensorEditor(QWidget):
    """Edits `{param name: PerTensor}` for the per-tensor numeric global parameters.

    Folded away under a header button until opened, or until a recipe sets overrides:
    most merges use one value everywhere.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.toggle = QToolButton(self)
        self.toggle.setText("Per-layer values (optional)")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.setToolTip("Vary a parameter across layers (a gradient) or by tensor name")
        self.body = QGroupBox(self)
        self._params: dict[str, Param] = {}
        self._data: dict[str, PerTensor] = {}
        self._current = ""
        self._loading = False

        self.param_combo = QComboBox(self.body)
        self.param_combo.setToolTip("The parameter whose value varies by layer or tensor name")
        self.gradient = QLineEdit(self.body)
        self.gradient.setPlaceholderText("e.g. 0, 0.5, 1  (first layer → last)")
        self.gradient.setToolTip(
            "Comma-separated values spread evenly from the first layer to "
            "the last, interpolated in between. Empty: one value everywhere."
        )
        self.table = QTableWidget(0, 2, self.body)
        self.table.setHorizontalHeaderLabels(["Tensor name contains", "Value"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (arrows move in it)
        self.table.setToolTip(
            "Tensors whose name contains the text use the row's value; the first matching row wins."
        )
        self.add_row_button = QPushButton("Add filter", self.body)
        self.remove_row_button = QPushButton("Remove filter", self.body)
        self.error_label = QLabel(self.body)
        self.error_label.setWordWrap(True)
        self.error_label.hide()

        top = QHBoxLayout()
        top.addWidget(QLabel("Parameter:", self.body))
        top.addWidget(self.param_combo, 1)
        grad = QHBoxLayout()
        grad.addWidget(QLabel("Gradient:", self.body))
        grad.addWidget(self.gradient, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_row_button)
        buttons.addWidget(self.remove_row_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self.body)
        layout.addLayout(top)
        layout.addLayout(grad)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.error_label)
        self.table.setMaximumHeight(110)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.toggle)
        outer.addWidget(self.body)
        self.body.hide()
        self.toggle.toggled.connect(self.set_expanded)

        self.param_combo.currentIndexChanged.connect(self._switch)
        self.gradient.textChanged.connect(self._edited)
        self.table.itemChanged.connect(self._edited)
        self.add_row_button.clicked.connect(lambda: self.add_filter("", None))
        self.remove_row_button.clicked.connect(self._remove_selected)

    # -- API -------------------------------------------------------------------------------
    def set_params(self, params: tuple[Param, ...]) -> None:
        """Offer these parameters (only numeric, global, per-tensor ones are kept)."""
        usable = [
            p for p in params if p.per_tensor and not p.per_model and p.type in ("float", "int")
        ]
        self._params = {p.name: p for p in usable}
        self._data = {}
        self._current = ""
        self._loading = True
        self.param_combo.clear()
        for p in usable:
            self.param_combo.addItem(param_label(p), p.name)
        self._loading = False
        self.setVisible(bool(usable))
        self._switch()

    def add_filter(self, text: str, value: float | None) -> None:
        """Add a (name filter, value) row for the shown parameter."""
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, 0, QTableWidgetItem(text))
        self.table.setItem(row, 1, QTableWidgetItem("" if value is None else format_value(value)))
        self.table.setCurrentCell(row, 0)

    def focus_chain(self) -> list[QWidget]:
        """The toggle, then the fields it shows, for the window's Tab order (Tab skips
        them while they are hidden)."""
        return [
            self.toggle,
            self.param_combo,
            self.gradient,
            self.table,
            self.add_row_button,
            self.remove_row_button,
        ]

    def set_expanded(self, expanded: bool) -> None:
        self.toggle.setChecked(expanded)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)

    def select_param(self, name: str) -> None:
        index = self.param_combo.findData(name)
        if index >= 0:
            self.param_combo.setCurrentIndex(index)

    def values(self) -> dict[str, PerTensor]:
        """Overrides by parameter; RecipeError (saying which field) when one is invalid."""
        if self._current:
            self._data[self._current] = self._read_current()
        return {k: v for k, v in self._data.items() if not v.empty}

    def kept_values(self) -> dict[str, PerTensor]:
        """The overrides as last valid, never an error: what a method keeps while another
        one is shown (a half-typed entry is dropped, as switching parameters drops it)."""
        if self._current:
            with contextlib.suppress(RecipeError):
                self._data[self._current] = self._read_current()
        return {k: v for k, v in self._data.items() if not v.empty}

    def set_values(self, values: dict[str, PerTensor]) -> None:
        self._data = {k: v for k, v in values.items() if k in self._params}
        self._current = ""
        first = next((k for k, v in self._data.items() if not v.empty), None)
        if first:
            self.select_param(first)
            self.set_expanded(True)
        self._switch()

    def clear(self) -> None:
        self.set_values({})

    # -- internals --------------------------------------------------------------------------
    def _read_current(self) -> PerTensor:
        param = self._params[self._current]
        gradient = parse_gradient(self.gradient.text(), param=param.name)
        for g in gradient:
            param.coerce(g, where="gradient")
        filters = []
        for r in range(self.table.rowCount()):
            text = (self.table.item(r, 0).text() if self.table.item(r, 0) else "").strip()
            raw = (self.table.item(r, 1).text() if self.table.item(r, 1) else "").strip()
            if not text and not raw:
                continue
            if not text:
                raise RecipeError(
                    f"'{param.name}': a per-layer row has a value but no name "
                    "filter; type part of a tensor name, e.g. attn"
                )
            filters.append((text, param.coerce(raw, where=f"filter '{text}'")))
        return PerTensor(tuple(filters), gradient)

    def _switch(self, *_: object) -> None:
        if self._loading:
            return
        if self._current:
            # On an invalid entry keep the last valid state; the error was shown while typing.
            with contextlib.suppress(RecipeError):
                self._data[self._current] = self._read_current()
        self._current = self.param_combo.currentData() or ""
        per = self._data.get(self._current, PerTensor())
        self._loading = True
        self.gradient.setText(", ".join(format_value(v) for v in per.gradient))
        self.table.setRowCount(0)
        for text, value in per.filters:
            self.add_filter(text, value)
        self._loading = False
        self._edited()

    def _remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for r in rows:
            self.table.removeRow(r)
        self._edited()

    def _edited(self, *_: object) -> None:
        if self._loading or not self._current:
            return
        try:
            self._data[self._current] = self._read_current()
            self.error_label.hide()
        except RecipeError as exc:
            self.error_label.setText(f"⚠ {exc}")
            self.error_label.show()
        self.changed.emit()
