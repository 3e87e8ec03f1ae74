"""The Qt table model over the loaded models (a list of `ModelRow`).

Columns: name, role, one column per per-model parameter of the current method
(weight, density, ...), then format, parameter count, dtype and size. Rows that
cannot be merged with the others carry a warning icon and the reason as tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QStyle

from core.checkpoints.folder import WEIGHT_EXTENSIONS
from core.errors import RecipeError
from core.methods.registry import Param
from merger_app._format import format_value, human_bytes, human_count, user_text
from merger_app._model_rows import ROLES, ModelRow, move, set_role

NAME, ROLE = 0, 1
_TAIL = ("Format", "Parameters", "Dtype", "Size")
AnyIndex = QModelIndex | QPersistentModelIndex


def shown_name(row: ModelRow, rows: Sequence[ModelRow] = ()) -> str:
    """The row's name without a weight-file extension (`finetuned_0-4`): the Format column
    tells it, and left in, a narrow window's elision hides what tells models apart.

    Among `rows` (the table), a name two models would share is made longer until they
    differ: with its extension (`model.pt`, `model.safetensors`), then with as many of
    its path's last parts as it takes (`run1/model`, `run1/pytorch_model.bin`)."""
    others = [r for r in rows if r.path != row.path]
    short = _without_extension(row.name)
    if all(_without_extension(r.name) != short for r in others):
        return short
    if all(r.name != row.name for r in others):
        return row.name
    # first the path the name is taken from (a model file's folder), then the file itself
    # (two weight files in one folder)
    for path_of in (_named_path, lambda r: Path(r.path)):
        parts = path_of(row).parts
        for depth in range(2, len(parts) + 1):
            tail = "/".join(parts[-depth:])
            if all("/".join(path_of(r).parts[-depth:]) != tail for r in others):
                return tail
    return row.path


def _named_path(row: ModelRow) -> Path:
    """The path whose last part is the row's name: the file, or the folder that a
    `model.safetensors` is named after."""
    path = Path(row.path)
    return path if path.name == row.name else path.parent


def _without_extension(name: str) -> str:
    for suffix in WEIGHT_EXTENSIONS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


class QtModelsTable(QAbstractTableModel):
    """Editable list of models; `changed` fires after any change of rows or values."""

    changed = Signal()
    rejected = Signal(str)  # an edit that was refused, with the reason

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[ModelRow] = []
        self._params: tuple[Param, ...] = ()
        self._uses_base = True  # the current method measures task vectors from a base
        self._pair = False  # the current method takes exactly two models, A and B

    # -- state ---------------------------------------------------------------------
    def rows(self) -> list[ModelRow]:
        return list(self._rows)

    def set_rows(self, rows: list[ModelRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()
        self.changed.emit()

    def add_rows(self, rows: list[ModelRow]) -> None:
        """Append rows; the first model ever added becomes the base when none is set."""
        if not rows:
            return
        new = list(self._rows) + list(rows)
        if not any(r.role == "base" for r in new):
            new = set_role(new, 0, "base")
        self.set_rows(new)

    def remove(self, indices: list[int]) -> None:
        keep = set(range(len(self._rows))) - set(indices)
        self.set_rows([r for i, r in enumerate(self._rows) if i in keep])

    def move(self, index: int, delta: int) -> int:
        """Move a row up (−1) or down (+1); returns its new index."""
        if not 0 <= index < len(self._rows):
            return index
        self.set_rows(move(self._rows, index, delta))
        return max(0, min(len(self._rows) - 1, index + delta))

    def update_rows(self, rows: list[ModelRow]) -> None:
        """The same models described anew (read again from disk): the view keeps its
        selection and scroll position, unlike `set_rows`. Emits no `changed`: the caller
        re-checks the models first, then says so."""
        assert [r.path for r in rows] == [r.path for r in self._rows]
        self._rows = list(rows)
        self._emit_all()

    def set_problems(self, problems: dict[str, str | None]) -> None:
        """Mark rows by path with the reason they cannot be merged (None clears)."""
        updated = [r.with_(problem=problems.get(r.path)) for r in self._rows]
        if updated != self._rows:
            self._rows = updated
            self._emit_all()

    def set_per_model_params(self, params: tuple[Param, ...]) -> None:
        """Show one column per per-model parameter; values of same-named params are kept."""
        if params == self._params:
            return
        self.beginResetModel()
        self._params = tuple(params)
        self.endResetModel()
        self.changed.emit()

    def set_method_roles(self, uses_base: bool, pair: bool) -> None:
        """How the Role column reads for the current method: base/input, A/B, or input."""
        if (uses_base, pair) != (self._uses_base, self._pair):
            self._uses_base, self._pair = uses_base, pair
            self._emit_all()

    def shown_role(self, i: int) -> str:
        """The role as the current method uses row i."""
        if self._uses_base:
            return self._rows[i].role
        if self._pair and i < 2:
            return "AB"[i]
        return "input"

    def role_hint(self) -> str:
        """One sentence on how to change what the current method does with the rows."""
        if self._uses_base:
            return "Double-click a role or value to change it."
        if self._pair:
            return "A is the reference and B is aligned to it; swap them with Up/Down."
        return "Every model listed is combined; double-click a value to change it."

    def _ignored(self, i: int) -> bool:
        """Per-model values of the base are not used by task-vector methods."""
        return self._uses_base and self._rows[i].role == "base"

    def per_model_params(self) -> tuple[Param, ...]:
        return self._params

    def column_param(self, column: int) -> Param | None:
        i = column - 2
        return self._params[i] if 0 <= i < len(self._params) else None

    def _emit_all(self) -> None:
        if self._rows:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self._rows) - 1, self.columnCount() - 1)
            )

    # -- Qt model API ----------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else 2 + len(self._params) + len(_TAIL)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return str(section + 1) if role == Qt.ItemDataRole.DisplayRole else None
        param = self.column_param(section)
        if role == Qt.ItemDataRole.DisplayRole:
            if section == NAME:
                return "Name"
            if section == ROLE:
                return "Role"
            if param is not None:
                return param.label or param.name.replace("_", " ").capitalize()
            return _TAIL[section - 2 - len(self._params)]
        if role == Qt.ItemDataRole.ToolTipRole and param is not None:
            return f"{param.help} (per model; double-click a cell to edit)"
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == ROLE:
            return base | Qt.ItemFlag.ItemIsEditable if self._uses_base else base
        param = self.column_param(index.column())
        if (
            param is not None
            and not self._varies(index.row(), param.name)
            and not self._ignored(index.row())
        ):
            return base | Qt.ItemFlag.ItemIsEditable
        return base

    def _varies(self, row: int, name: str) -> bool:
        """A gradient or filter list from a recipe: a spin box would flatten it to one number,
        so such a cell is shown but not edited here."""
        return row < len(self._rows) and isinstance(self._rows[row].values.get(name), list)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row, col = self._rows[index.row()], index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return self._cell(row, col, edit=role == Qt.ItemDataRole.EditRole)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == NAME:
                lines = [row.path, *(f"ℹ {n}" for n in row.notes)]
                lines += [f"⚠ {row.problem}"] if row.problem else []
                lines += [f"⚠ {row.unreadable}"] if row.unreadable else []
                return "\n".join(lines)
            if col == ROLE and not self._uses_base:
                return (
                    "Model A is the reference; B is aligned to it. Reorder with Up/Down."
                    if self._pair
                    else "This method combines every model listed."
                )
            if col == ROLE:
                return (
                    "The base model is what task vectors are measured from. Double-click to change."
                )
            if self.column_param(col) is not None and self._ignored(index.row()):
                return "Not used: the base is what the others' task vectors are measured from."
            param = self.column_param(col)
            if param is not None and self._varies(index.row(), param.name):
                return (
                    f"{param.name} varies by layer or tensor name here (from the recipe): "
                    f"{row.values[param.name]}. Edit the recipe to change it."
                )
        if (
            role == Qt.ItemDataRole.DecorationRole
            and col == NAME
            and (row.problem or row.unreadable)
        ):
            return QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        if (
            role == Qt.ItemDataRole.FontRole
            and self._uses_base
            and row.role == "base"
            and col in (NAME, ROLE)
        ):
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 2 and col - 2 < len(self._params):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _cell(self, row: ModelRow, col: int, *, edit: bool) -> Any:
        if col == NAME:
            return shown_name(row, self._rows)
        if col == ROLE:
            return row.role if edit else self.shown_role(self._rows.index(row))
        param = self.column_param(col)
        if param is not None and not edit and self._ignored(self._rows.index(row)):
            return "—"
        if param is not None:
            value = row.values.get(param.name, param.default)
            return value if edit else format_value(value)
        tail = col - 2 - len(self._params)
        return (
            row.format,
            human_count(row.num_parameters),
            row.dtype,
            human_bytes(row.total_bytes),
        )[tail]

    def setData(self, index: AnyIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or role != Qt.ItemDataRole.EditRole:
            return False
        i, col = index.row(), index.column()
        if col == ROLE:
            if value not in ROLES:
                self.rejected.emit(f"role must be one of {', '.join(ROLES)}")
                return False
            self._rows = set_role(self._rows, i, value)
            self._emit_all()
            self.changed.emit()
            return True
        param = self.column_param(col)
        if param is None:
            return False
        try:
            coerced = param.coerce(value, where=self._rows[i].name)
        except RecipeError as exc:
            self.rejected.emit(user_text(exc))
            return False
        row = self._rows[i]
        self._rows[i] = row.with_(values={**row.values, param.name: coerced})
        self.dataChanged.emit(index, index)
        self.changed.emit()
        return True
