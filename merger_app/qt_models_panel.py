"""The models panel: the table of loaded checkpoints and the buttons that edit it.

Adding reads headers only (instant even for large sharded folders); the compatibility
check (`core.merge.check_models`) also works from headers and marks rows that cannot be
merged with the reason. Per-model parameters are edited in place with editors built
from the parameter schema (range-checked spin boxes), the role with a combo box.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QEvent, QFileSystemWatcher, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSpinBox,
    QStyle,
    QStyledItemDelegate,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.errors import MergerError
from core.methods.registry import Param
from merger_app._format import human_bytes, user_text
from merger_app._model_rows import ROLES, ModelRow, normalize_path, reread, summarize
from merger_app.qt_models_table import ROLE, QtModelsTable


class QtModelsDelegate(QStyledItemDelegate):
    """Editors from the schema: a role combo, spin boxes with the parameter's range."""

    def createEditor(self, parent, option, index):  # noqa: N802 - Qt API
        model: QtModelsTable = index.model()
        if index.column() == ROLE:
            combo = QComboBox(parent)
            combo.addItems(list(ROLES))
            return combo
        param = model.column_param(index.column())
        if param is None:
            return super().createEditor(parent, option, index)
        return make_number_editor(param, parent) or super().createEditor(parent, option, index)

    def setEditorData(self, editor, index) -> None:  # noqa: N802
        value = index.data(Qt.ItemDataRole.EditRole)
        if isinstance(editor, QComboBox):
            editor.setCurrentText(str(value))
        elif isinstance(editor, QDoubleSpinBox | QSpinBox) and isinstance(value, int | float):
            editor.setValue(value)
        else:
            super().setEditorData(editor, index)

    def setModelData(self, editor, model, index) -> None:  # noqa: N802
        if isinstance(editor, QComboBox):
            model.setData(index, editor.currentText())
        elif isinstance(editor, QDoubleSpinBox | QSpinBox):
            editor.interpretText()
            model.setData(index, editor.value())
        else:
            super().setModelData(editor, model, index)


def make_number_editor(param: Param, parent: QWidget | None = None) -> QWidget | None:
    """A spin box with the parameter's range and help, or None for non-numbers."""
    if param.type == "float":
        box = QDoubleSpinBox(parent)
        box.setDecimals(4)
        box.setRange(
            param.min if param.min is not None else -1e9,
            param.max if param.max is not None else 1e9,
        )
        span = (param.max - param.min) if param.min is not None and param.max is not None else 1
        box.setSingleStep(0.05 if span <= 2 else 0.1)
    elif param.type == "int":
        box = QSpinBox(parent)
        box.setRange(
            int(param.min) if param.min is not None else -(2**31),
            int(param.max) if param.max is not None else 2**31 - 1,
        )
    else:
        return None
    box.setToolTip(param.help)
    return box


NAME_MIN_WIDTH = 120  # pixels: enough for a dozen characters of a model's name
# A changed model file is read again this long after its last change: a writer (a training
# run saving a checkpoint, a copy) changes it many times in a row.
REREAD_DELAY_MS = 500


class QtModelsPanel(QWidget):
    """Table + Add/Remove/Up/Down; `add_requested` asks the window for a file dialog."""

    add_requested = Signal()
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QtModelsTable(self)
        self.view = QTableView(self)
        self.view.installEventFilter(self)  # re-fit the columns when the table resizes
        self.view.setModel(self.model)
        self.view.setItemDelegate(QtModelsDelegate(self.view))
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setStretchLastSection(False)
        self.view.setWordWrap(False)
        self.view.setTabKeyNavigation(False)  # Tab leaves the table (arrows move in it)
        # ends of names tell fine-tunes apart (…-seed-1, …-seed-2): cut in the middle
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.setObjectName("modelsTable")

        sp = QStyle.StandardPixmap
        self.add_button = self._button(
            "Add…", sp.SP_DialogOpenButton, "Add checkpoint files or folders (Ctrl+O)"
        )
        self.remove_button = self._button(
            "Remove", sp.SP_TrashIcon, "Remove the selected models (Delete)"
        )
        self.up_button = self._button("Up", sp.SP_ArrowUp, "Move the selected model up (Alt+Up)")
        self.down_button = self._button(
            "Down", sp.SP_ArrowDown, "Move the selected model down (Alt+Down)"
        )
        # from the keyboard, in the table: the order matters (A and B of an alignment)
        for keys, step in (("Alt+Up", -1), ("Alt+Down", +1)):
            shortcut = QShortcut(QKeySequence(keys), self.view)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(lambda step=step: self.move_selected(step))
        self.add_button.clicked.connect(self.add_requested)
        self.remove_button.clicked.connect(self.remove_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(+1))

        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        title = QLabel("<b>Models</b>", self)
        bar = QHBoxLayout()
        bar.addWidget(title)
        bar.addStretch(1)
        for b in (self.add_button, self.remove_button, self.up_button, self.down_button):
            bar.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)

        # Rows follow their files: a checkpoint written again, cut short or removed after it
        # was added is read again, so Size and the rest never describe a file that is gone.
        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_file_changed)
        self._watcher.directoryChanged.connect(self._on_folder_changed)
        self._changed_files: set[str] = set()
        self._reread_timer = QTimer(self)
        self._reread_timer.setSingleShot(True)
        self._reread_timer.setInterval(REREAD_DELAY_MS)
        self._reread_timer.timeout.connect(self._reread_changed)

        self.model.changed.connect(self._on_changed)
        self.view.selectionModel().selectionChanged.connect(self._update_buttons)
        self.model.modelReset.connect(self._update_buttons)
        self._on_changed()

    def _button(self, text: str, icon: QStyle.StandardPixmap, tip: str) -> QToolButton:
        b = QToolButton(self)
        b.setText(text)
        b.setIcon(self.style().standardIcon(icon))
        b.setToolTip(tip)
        b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        b.setAutoRaise(True)
        b.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # reachable with Tab, not only the mouse
        return b

    # -- slots the window and the buttons use ------------------------------------------
    def add_paths(self, paths: list[str | Path]) -> list[str]:
        """Add checkpoints by path; returns an error message per path that is no model."""
        known = {r.path for r in self.model.rows()}
        weights = {r.files for r in self.model.rows() if r.files}
        rows: list[ModelRow] = []
        errors = []
        for path in paths:
            text = normalize_path(path)
            if text in known:
                continue
            known.add(text)
            try:
                row = summarize(text)
            except MergerError as exc:
                errors.append(user_text(exc))
                continue
            if row.files in weights:  # `hf_model/` and `hf_model/model.safetensors`
                continue
            weights.add(row.files)
            rows.append(row)
        self.model.add_rows(rows)
        return errors

    def selected_rows(self) -> list[int]:
        return sorted({i.row() for i in self.view.selectionModel().selectedRows()})

    def remove_selected(self) -> None:
        self.model.remove(self.selected_rows())

    def move_selected(self, delta: int) -> None:
        rows = self.selected_rows()
        if len(rows) != 1:
            return
        new = self.model.move(rows[0], delta)
        self.view.selectRow(new)

    def set_per_model_params(self, params: tuple[Param, ...]) -> None:
        self.model.set_per_model_params(params)
        self._fit_columns()

    def refresh_summary(self) -> None:
        """Re-say the summary line (the method, and so what roles mean, may have changed)."""
        if not self.summary.text().startswith("⚠"):
            self._show_summary(None)

    def refresh_compat(self) -> None:
        """Mark rows that cannot be merged, from headers (`core.merge.check_models`)."""
        from core.merge import check_models

        rows = self.model.rows()
        if len(rows) < 2:
            self.model.set_problems({})
            self._show_summary(None)
            return
        base = next((r.path for r in rows if r.role == "base"), None)
        try:
            report = check_models([r.path for r in rows], base)
        except MergerError as exc:
            self.model.set_problems({})
            self._show_summary(user_text(exc))
            return
        self.model.set_problems({p: "; ".join(rs) for p, rs in report.problems.items() if rs})
        # one line per problem, by file name (the row's tooltip has the full path)
        lines = [f"{Path(p).name}: {r}" for p, rs in report.problems.items() for r in rs]
        self._show_summary("\n".join(lines) if lines and not report.ok else None)

    # -- following the files ------------------------------------------------------------------
    def _watch_files(self) -> None:
        """Watch exactly the listed models' files, and the folder of any that is gone, to
        see it come back. A file removed or replaced by a rename (an atomic save) drops
        out of the watcher, so this also re-adds paths that exist again."""
        files = {f for r in self.model.rows() for f in r.disk_files}
        wanted = {f for f in files if os.path.isfile(f)}
        wanted |= {os.path.dirname(f) for f in files - wanted if os.path.isdir(os.path.dirname(f))}
        watched = set(self._watcher.files()) | set(self._watcher.directories())
        if watched - wanted:
            self._watcher.removePaths(sorted(watched - wanted))
        if wanted - watched:
            self._watcher.addPaths(sorted(wanted - watched))

    def notice_missing_now(self) -> bool:
        """Read again, now, the rows whose files are gone but not noticed yet (the watcher's
        re-read waits REREAD_DELAY_MS for a writer to finish). Merge asks this first, so
        that a model removed a moment before is refused up front, in the words a noticed
        removal gets, instead of failing the merge. A stat per file; True if any was gone."""
        missing = {
            f
            for r in self.model.rows()
            if not r.unreadable
            for f in r.disk_files
            if not os.path.exists(f)
        }
        if not missing:
            return False
        self._changed_files |= missing
        self._reread_timer.stop()
        self._reread_changed()
        return True

    def _on_file_changed(self, path: str) -> None:
        self._changed_files.add(path)
        self._reread_timer.start()  # restarts: read once the writer is done

    def _on_folder_changed(self, folder: str) -> None:
        """A folder holding a missing model changed: perhaps the model is back."""
        rows = self.model.rows()
        self._changed_files |= {
            f for r in rows for f in r.disk_files if os.path.dirname(f) == folder
        }
        self._reread_timer.start()

    def _reread_changed(self) -> None:
        """Read again the rows whose files changed, then check the models anew."""
        changed, self._changed_files = self._changed_files, set()
        rows = self.model.rows()
        fresh = [reread(r) if changed & set(r.disk_files) else r for r in rows]
        if fresh != rows:
            self.model.update_rows(fresh)
        self.refresh_compat()
        self._on_changed()

    # -- internals ------------------------------------------------------------------------
    def _show_summary(self, problem: str | None) -> None:
        rows = self.model.rows()
        if problem:
            self.summary.setText("\n".join(f"⚠ {line}" for line in problem.splitlines()))
        elif rows:
            total = sum(r.total_bytes or 0 for r in rows)
            self.summary.setText(
                f"{len(rows)} model(s), {human_bytes(total)} on disk. {self.model.role_hint()}"
            )
        else:
            self.summary.setText("Drop checkpoint files or folders here, or click Add.")

    def _on_changed(self) -> None:
        self._watch_files()
        if len(self.model.rows()) < 2:
            self.model.set_problems({})
            self._show_summary(None)
        self._fit_columns()
        self._update_buttons()
        self.changed.emit()

    def _fit_columns(self) -> None:
        """Every column as wide as its contents; the name takes the rest, but never less
        than NAME_MIN_WIDTH: in a narrow window the table scrolls sideways instead of
        showing every name as '…' (the names are what tells the rows apart)."""
        header = self.view.horizontalHeader()
        for c in range(1, self.model.columnCount()):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        others = sum(header.sectionSize(c) for c in range(1, self.model.columnCount()))
        if self.view.viewport().width() - others >= NAME_MIN_WIDTH:
            header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        else:
            header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(0, NAME_MIN_WIDTH)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.view and event.type() == QEvent.Type.Resize:
            # after the view's own resize handling: its viewport has the new width then
            QTimer.singleShot(0, self, self._fit_columns)
        return super().eventFilter(watched, event)

    def _update_buttons(self, *_: object) -> None:
        sel = self.selected_rows()
        self.remove_button.setEnabled(bool(sel))
        self.up_button.setEnabled(len(sel) == 1 and sel[0] > 0)
        self.down_button.setEnabled(len(sel) == 1 and sel[0] < self.model.rowCount() - 1)
