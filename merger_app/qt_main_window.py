"""The main window: models on the left, the method on the right, progress and log below.

The window holds no merge logic: it snapshots a frozen `Recipe` from its panels, hands
a core job (`run_merge`, `export_checkpoint`, `make_demo`) to the one job runner, and
shows what comes back. Merges go to a session folder first; Save exports from there to
the user's choice of path, format, dtype and shard size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core import __version__
from core.errors import MergerError
from core.recipe import Recipe
from merger_app._model_rows import normalize_path
from merger_app._recipe_build import build_recipe, merge_blockers, rows_from_recipe
from merger_app.qt_actions import build_actions, fill_recent
from merger_app.qt_dialogs import QtSaveDialog, SaveOptions, ask_unsaved, show_error
from merger_app.qt_job_panel import QtJobPanel
from merger_app.qt_method_panel import QtMethodPanel
from merger_app.qt_models_panel import QtModelsPanel
from merger_app.qt_settings import QtAppSettings
from merger_app.qt_status import QtStatusFields
from merger_app.qt_worker import QtJobRunner

RECIPE_SUFFIXES = (".yaml", ".yml")
CLOSE_WAIT_MS = 5000
ICON = Path(__file__).parent / "resources" / "merger.svg"


def demo_folder() -> Path:
    """Where `--demo` keeps its models: $MERGER_CACHE_DIR/demo or ~/.cache/merger/demo."""
    root = os.environ.get("MERGER_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "merger") / "demo"


class QtMainWindow(QMainWindow):
    """The app's one window. Public slots are what the menus call and what tests drive."""

    merge_finished = Signal(object)  # MergeResult, or None when it failed or was cancelled
    save_finished = Signal(object)  # list of written paths, or None
    demo_loaded = Signal()

    def __init__(self, settings: QtAppSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or QtAppSettings()
        self.setWindowTitle("Merger")
        if ICON.exists():
            self.setWindowIcon(QIcon(str(ICON)))
        self.setAcceptDrops(True)
        self.runner = QtJobRunner(self)
        self.result: Any = None  # the last MergeResult, in the session folder
        self.result_recipe: Recipe | None = None
        self.saved = True
        self.last_error: QMessageBox | None = None
        self._session = Path(tempfile.mkdtemp(prefix="merger-session-"))
        self._merge_count = 0
        self._on_success: Any = None
        self._close_after_save = False
        self._compat_key: tuple = ()

        self.models = QtModelsPanel(self)
        self.method = QtMethodPanel(self)
        self.jobs = QtJobPanel(self)
        self.actions = build_actions(self)
        self._build_layout()
        self.status = QtStatusFields(self.statusBar())
        self._connect()
        self._restore_settings()
        self._on_method_changed(self.method.spec())
        self._update_actions()

    # -- layout and wiring ----------------------------------------------------------------
    def _build_layout(self) -> None:
        self.merge_button = QPushButton("Merge", self)
        self.merge_button.setObjectName("mergeButton")
        self.merge_button.setDefault(True)
        self.save_button = QPushButton("Save…", self)
        self.hint = QLabel(self)
        self.hint.setWordWrap(True)
        self.hint.setObjectName("mergeHint")
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.method)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        right = QWidget(self)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(scroll, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.hint, 1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.merge_button)
        right_layout.addLayout(buttons)
        self.top_split = QSplitter(Qt.Orientation.Horizontal, self)
        self.top_split.addWidget(self.models)
        self.top_split.addWidget(right)
        self.top_split.setStretchFactor(0, 3)
        self.top_split.setStretchFactor(1, 2)
        self.main_split = QSplitter(Qt.Orientation.Vertical, self)
        self.main_split.addWidget(self.top_split)
        self.main_split.addWidget(self.jobs)
        self.main_split.setStretchFactor(0, 3)
        self.main_split.setStretchFactor(1, 1)
        self.main_split.setObjectName("mainSplit")
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 4)
        layout.addWidget(self.main_split)
        self.setCentralWidget(central)
        self.resize(1280, 800)
        self.main_split.setSizes([560, 200])
        self.top_split.setSizes([720, 560])

    def _connect(self) -> None:
        a = self.actions
        a.add_models.triggered.connect(self.choose_models)
        a.open_recipe.triggered.connect(self.choose_recipe)
        a.export_recipe.triggered.connect(self.choose_export_recipe)
        a.save.triggered.connect(self.choose_save)
        a.demo.triggered.connect(lambda: self.load_demo())
        a.quit.triggered.connect(self.close)
        a.merge.triggered.connect(self.merge)
        a.cancel.triggered.connect(self.cancel_job)
        a.remove.triggered.connect(self.models.remove_selected)
        a.threads.triggered.connect(self.choose_threads)
        a.about.triggered.connect(self._about)
        for device, act in a.devices.items():
            act.triggered.connect(lambda _=False, d=device: self.set_device(d))
        self.merge_button.clicked.connect(self.merge)
        self.save_button.clicked.connect(self.choose_save)
        self.models.add_requested.connect(self.choose_models)
        self.models.changed.connect(self._on_models_changed)
        self.models.model.rejected.connect(self.statusBar().showMessage)
        self.method.method_changed.connect(self._on_method_changed)
        self.method.changed.connect(self._update_actions)
        self.jobs.cancel_requested.connect(self.cancel_job)
        self.runner.progress.connect(self.jobs.on_progress)
        self.runner.log.connect(self.jobs.append)
        self.runner.warned.connect(lambda w: self.jobs.append(f"warning: {w}"))
        self.runner.succeeded.connect(self._job_succeeded)
        self.runner.failed.connect(self._job_failed)
        self.runner.cancelled.connect(self._job_cancelled)
        self.runner.done.connect(lambda _name: self._update_actions())

    def _restore_settings(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.actions.devices[self.settings.device()].setChecked(True)
        self.status.set_device(self.settings.device(), self.settings.threads())
        self._fill_recent()

    def _fill_recent(self) -> None:
        fill_recent(
            self.actions.recent_menu,
            self.settings.recent_models(),
            lambda p: self.add_models([p]),
            self._clear_recent,
        )

    def _clear_recent(self) -> None:
        self.settings.clear_recent()
        self._fill_recent()

    # -- models ------------------------------------------------------------------------------
    def choose_models(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self,
            "Add models",
            self.settings.last_folder("models"),
            "Checkpoints (*.safetensors *.pt *.pth *.bin *.ckpt *.json);;All files (*)",
        )
        if paths:
            self.add_models(paths)

    def add_models(self, paths: list[str | Path]) -> list[str]:
        """Add checkpoints (files or folders); shows and returns the errors of bad paths."""
        errors = self.models.add_paths(paths)
        loaded = {r.path for r in self.models.model.rows()}
        good = [normalize_path(p) for p in paths if normalize_path(p) in loaded]
        if good:
            self.settings.add_recent_models(good)
            self.settings.set_last_folder("models", good[-1])
            self._fill_recent()
        if errors:
            self._error("Cannot add models", "\n\n".join(errors))
        return errors

    def _on_models_changed(self) -> None:
        rows = self.models.model.rows()
        key = (tuple(r.path for r in rows), next((r.path for r in rows if r.role == "base"), None))
        if key != self._compat_key:
            self._compat_key = key
            self.models.refresh_compat()
        self._update_actions()

    def _on_method_changed(self, spec) -> None:
        self.models.set_per_model_params(tuple(p for p in spec.params if p.per_model))
        self._update_actions()

    # -- recipes -------------------------------------------------------------------------------
    def current_recipe(self) -> Recipe:
        """The frozen recipe the panels describe (RecipeError if a field is invalid)."""
        m = self.method
        return build_recipe(
            m.spec(),
            self.models.model.rows(),
            m.values(),
            m.per_tensor_values(),
            seed=m.seed_value(),
            out_dtype=m.out_dtype_value(),
            data=m.data(),
            arch=m.arch(),
        )

    def choose_recipe(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open recipe",
            self.settings.last_folder("recipes"),
            "Recipes (*.yaml *.yml);;All files (*)",
        )
        if path:
            self.open_recipe(path)

    def open_recipe(self, path: str | Path) -> bool:
        """Replace the models and method with a recipe's; False (and a dialog) on errors."""
        try:
            recipe = Recipe.load(path)
            problems = self.method.apply_recipe(recipe)
        except MergerError as exc:
            self._error("Cannot open the recipe", str(exc))
            return False
        self.settings.set_last_folder("recipes", path)
        self.settings.add_recent_recipe(str(path))
        entries = rows_from_recipe(recipe, self.method.spec())
        self.models.model.set_rows([])
        errors = self.models.add_paths([p for p, _, _ in entries])
        rows = self.models.model.rows()
        by_path = {p: (role, vals) for p, role, vals in entries}
        self.models.model.set_rows(
            [
                r.with_(role=by_path[r.path][0], values=dict(by_path[r.path][1]))
                for r in rows
                if r.path in by_path
            ]
        )
        self.jobs.append(f"Opened recipe {path}")
        if errors or problems:
            self._error("Parts of the recipe could not be loaded", "\n\n".join(errors + problems))
        return not errors and not problems

    def choose_export_recipe(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export recipe", self.settings.last_folder("recipes"), "Recipes (*.yaml *.yml)"
        )
        if path:
            self.export_recipe(path)

    def export_recipe(self, path: str | Path) -> bool:
        try:
            recipe = self.current_recipe()
            recipe.save(path)
        except MergerError as exc:
            self._error("Cannot export the recipe", str(exc))
            return False
        self.settings.set_last_folder("recipes", path)
        self.jobs.append(f"Recipe written to {path}; run it with: merger run {path} -o OUT")
        return True

    # -- merge -------------------------------------------------------------------------------
    def blockers(self) -> list[str]:
        """Why Merge is disabled now; [] when it can run."""
        if self.runner.running:
            return [f"{self.runner.name.capitalize()} is running; wait or cancel it (Esc)."]
        m = self.method
        out = merge_blockers(m.spec(), self.models.model.rows(), data=m.data())
        if out:
            return out
        try:
            from core.merge import validate_recipe

            validate_recipe(self.current_recipe())
        except MergerError as exc:
            return [str(exc)]
        return []

    def merge(self) -> bool:
        """Start merging into the session folder; False when something blocks it."""
        blockers = self.blockers()
        if blockers:
            self.statusBar().showMessage(blockers[0], 5000)
            return False
        recipe = self.current_recipe()
        self._merge_count += 1
        out = self._session / f"merged-{self._merge_count}"  # a folder: keeps config + recipe
        device, threads = self.settings.device(), self.settings.threads()

        def job(progress):
            from core.devices import resolve_device, set_threads
            from core.merge import run_merge

            set_threads(threads)
            return run_merge(
                recipe, out, progress=progress, overwrite=True, device=resolve_device(device)
            )

        def done(result) -> None:
            old = self.result
            self.result, self.result_recipe, self.saved = result, recipe, False
            if old is not None and Path(old.out) != Path(result.out):
                _remove(Path(old.out))
            for note in result.notes:
                self.jobs.append(note)
            self.jobs.append(
                f"Merged with {recipe.merge_method} in {result.seconds:.1f} s. "
                "Save it with File ▸ Save Merged Model (Ctrl+S)."
            )
            self.merge_finished.emit(result)

        self._start("merge", f"Merging with {self.method.spec().label}", job, done)
        return True

    def cancel_job(self) -> None:
        if self.runner.running:
            self.jobs.append("Cancelling…")
            self.runner.cancel()

    # -- save --------------------------------------------------------------------------------
    def choose_save(self) -> None:
        if self.result is None:
            self.statusBar().showMessage("Nothing to save yet: merge first.", 5000)
            return
        folder = self.settings.last_folder("save") or str(Path.home())
        suggested = Path(folder) / f"merged-{self.result_recipe.merge_method}.safetensors"
        dialog = QtSaveDialog(self, suggested)
        if not dialog.exec() or dialog.options is None:
            self._close_after_save = False
            return
        opts = dialog.options
        overwrite = False
        if opts.path.exists():
            answer = QMessageBox.question(self, "Replace?", f"{opts.path} exists. Replace it?")
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.save_to(opts, overwrite=overwrite)

    def save_to(self, options: SaveOptions, *, overwrite: bool = False) -> bool:
        """Export the merged model to `options.path` in the worker; False if impossible."""
        if self.result is None or self.runner.running:
            return False
        src = Path(self.result.out)

        def job(progress):
            from core.merge import export_checkpoint

            return export_checkpoint(
                src,
                options.path,
                dtype=options.dtype,
                shard_size=options.shard_size,
                overwrite=overwrite,
                progress=progress,
            )

        def done(files) -> None:
            self.saved = True
            self.settings.set_last_folder("save", options.path)
            self.jobs.append("Saved " + ", ".join(str(f) for f in files))
            self.save_finished.emit(files)
            if self._close_after_save:
                self.close()

        self._start("save", f"Saving to {options.path}", job, done)
        return True

    # -- demo --------------------------------------------------------------------------------
    def load_demo(self, folder: str | Path | None = None) -> None:
        """Make the demo models if missing (in the worker), then load them."""
        target = Path(folder) if folder else demo_folder()

        def job(progress):
            from core.demo import make_demo

            progress.update(0, 1, "Preparing the demo models")
            demo = make_demo(target, log=progress.log)
            progress.update(1, 1, "Demo models ready")
            return demo

        def done(demo) -> None:
            if self.open_recipe(demo.recipe):
                self.add_models(list(demo.models.values()))  # those the recipe left out
                self.method.data_combo.setCurrentText(str(demo.data))
            self.demo_loaded.emit()

        self._start("demo", "Preparing the demo models", job, done)

    # -- settings ----------------------------------------------------------------------------
    def set_device(self, device: str) -> None:
        self.settings.set_device(device)
        self.actions.devices[self.settings.device()].setChecked(True)
        self.status.set_device(self.settings.device(), self.settings.threads())

    def choose_threads(self) -> None:
        n, ok = QInputDialog.getInt(
            self,
            "CPU threads",
            "Threads for merging (0 = automatic):",
            self.settings.threads(),
            0,
            os.cpu_count() or 64,
        )
        if ok:
            self.set_threads(n)

    def set_threads(self, n: int) -> None:
        self.settings.set_threads(n)
        self.status.set_device(self.settings.device(), self.settings.threads())

    # -- jobs ---------------------------------------------------------------------------------
    def _start(self, name: str, title: str, job, on_success) -> None:
        self._on_success = on_success
        self.jobs.start(title)
        self.runner.start(name, job)
        self._update_actions()

    def _job_succeeded(self, name: str, value: object) -> None:
        self.jobs.finish(f"{name.capitalize()} finished.", complete=True)
        callback, self._on_success = self._on_success, None
        if callback is not None:
            callback(value)
        self._update_actions()

    def _job_failed(self, name: str, message: str, details: str) -> None:
        self._on_success = None
        self._close_after_save = False
        self.jobs.finish(f"{name.capitalize()} failed.", complete=False)
        self.jobs.append(message)
        self._error(f"{name.capitalize()} failed", message, details)
        if name == "merge":
            self.merge_finished.emit(None)
        elif name == "save":
            self.save_finished.emit(None)

    def _job_cancelled(self, name: str) -> None:
        self._on_success = None
        self._close_after_save = False
        self.jobs.finish(f"{name.capitalize()} cancelled; nothing was written.", complete=False)
        if name == "merge":
            self.merge_finished.emit(None)
        elif name == "save":
            self.save_finished.emit(None)

    def _update_actions(self) -> None:
        blockers = self.blockers()
        running = self.runner.running
        self.merge_button.setEnabled(not blockers)
        self.actions.merge.setEnabled(not blockers)
        self.actions.cancel.setEnabled(running)
        can_save = self.result is not None and not running
        self.save_button.setEnabled(can_save)
        self.actions.save.setEnabled(can_save)
        tip = blockers[0] if blockers else "Merge the models (Ctrl+Return)"
        self.merge_button.setToolTip(tip)
        if blockers:
            self.hint.setText(f"⚠ {blockers[0]}")
        elif self.result is not None and not self.saved:
            self.hint.setText(
                "Merged. Save the result (Ctrl+S), or change settings and merge again."
            )
        else:
            self.hint.setText("Ready to merge.")

    def _error(self, title: str, message: str, details: str = "") -> None:
        self.last_error = show_error(self, title, message, details)

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About Merger",
            f"<b>Merger</b> {__version__}<br>Merge neural-network checkpoints: "
            "task arithmetic, TIES, DARE, SLERP and more.<br>MIT license.",
        )

    # -- drag and drop, close ------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self.drop_paths(dropped_paths(event.mimeData()))
        event.acceptProposedAction()

    def drop_paths(self, paths: list[str]) -> None:
        """What a drop does: a recipe opens, checkpoints are added."""
        recipes = [p for p in paths if p.lower().endswith(RECIPE_SUFFIXES)]
        if recipes:
            self.open_recipe(recipes[0])
        models = [p for p in paths if not p.lower().endswith(RECIPE_SUFFIXES)]
        if models:
            self.add_models(models)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.result is not None and not self.saved and not self._close_after_save:
            answer = self.ask_unsaved()
            if answer == "cancel":
                event.ignore()
                return
            if answer == "save":
                event.ignore()
                self._close_after_save = True
                self.choose_save()
                return
        if self.runner.running:
            self.runner.cancel()
            if not self.runner.wait(CLOSE_WAIT_MS):
                self.jobs.append("The job did not stop in time; closing anyway.")
        self.settings.set_geometry(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.status.timer.stop()
        shutil.rmtree(self._session, ignore_errors=True)
        super().closeEvent(event)

    def ask_unsaved(self) -> str:
        """'save', 'discard' or 'cancel'; a separate method so tests can answer it."""
        return ask_unsaved(self)


def dropped_paths(mime) -> list[str]:
    """Local files and folders in a drop that are checkpoints or recipes."""
    from core.checkpoints import is_checkpoint_path

    out = []
    for url in mime.urls() if mime.hasUrls() else []:
        if not url.isLocalFile():
            continue
        path = url.toLocalFile()
        if path.lower().endswith(RECIPE_SUFFIXES) or is_checkpoint_path(path):
            out.append(path)
    return out


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
