"""The main window: models on the left, the method on the right, progress and log below.

The window holds no merge logic: it snapshots a frozen `Recipe` from its panels, hands
a core job (`run_merge`, `export_checkpoint`, `make_demo`) to the one job runner, and
shows what comes back. Merges go to a session folder first; Save exports from there to
the user's choice of path, format, dtype and shard size.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import (
    QInputDialog,
    QMainWindow,
    QMessageBox,
    QWidget,
)

from core import __version__
from core.devices import available_devices
from core.errors import MergerError
from core.methods import REGISTRY
from core.recipe import Recipe
from merger_app._format import (
    error_text,
    lambda_outcome,
    reason_and_remedy,
    remedy_first,
    shorten_paths,
    summary_line,
)
from merger_app._jobs import demo_folder, demo_job, export_job, merge_job, remove_path
from merger_app._recipe_build import build_recipe, files_stamp, merge_blockers
from merger_app._session import new_session, sweep_stale_sessions
from merger_app.qt_actions import build_actions, explain_when_disabled
from merger_app.qt_dialogs import (
    QtSaveDialog,
    SaveOptions,
    ask_run_code,
    ask_unsaved,
    show_error,
)
from merger_app.qt_files import QtFileActions
from merger_app.qt_job_panel import QtJobPanel
from merger_app.qt_layout import build_window_layout
from merger_app.qt_method_panel import QtMethodPanel
from merger_app.qt_models_panel import QtModelsPanel
from merger_app.qt_settings import QtAppSettings
from merger_app.qt_status import QtStatusFields
from merger_app.qt_wheel import guard_wheel
from merger_app.qt_worker import QtJobRunner

CLOSE_WAIT_MS = 5000
HINT_LIMIT = 120  # characters: about three lines beside Save and Merge at 1280×800
STALE_RESULT = "The models or settings changed since the last merge: merge again to save."
_DONE_TEXT = {"merge": "Merge finished.", "save": "Saved.", "demo": "Demo models ready."}
ICON = Path(__file__).parent / "resources" / "merger.svg"


class QtMainWindow(QtFileActions, QMainWindow):
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
        self._wheel_guard = guard_wheel(self)  # the wheel scrolls forms, not their fields
        self.runner = QtJobRunner(self)
        self.result: Any = None  # the last MergeResult, in the session folder
        self.result_recipe: Recipe | None = None
        self.saved = True
        self._saved_to: Path | None = None  # where the current result was last saved
        self.last_error: QMessageBox | None = None
        # (settings, their files on disk, what went wrong, what to do): said until the
        # settings or the files change
        self._failed_merge: tuple[Recipe | None, tuple, str, str] | None = None
        # (models then listed, what was missing) after a recipe opened without some models
        self.partial_recipe: tuple[tuple, str] | None = None
        sweep_stale_sessions()  # what killed windows left behind
        self._session = new_session()
        self._merge_count = 0
        # model files (`file.py:factory`) the user agreed to run this session
        self.trusted_code: set[str] = set()
        self._on_success: Any = None
        self._outcome: tuple = ("cancelled",)
        self._close_after_save = False
        self._compat_key: tuple = ()

        self.models = QtModelsPanel(self)
        self.method = QtMethodPanel(self)
        self.jobs = QtJobPanel(self)
        self.actions = build_actions(self)
        build_window_layout(self)
        self.status = QtStatusFields(self.statusBar())
        self._connect()
        self._restore_settings()
        self._on_method_changed(self.method.spec())
        self._update_actions()

    # -- layout and wiring ----------------------------------------------------------------
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
        # Delete removes models only while the models table has the focus: elsewhere (the
        # per-layer table, the log, a text field) the key belongs to that widget
        self.removeAction(a.remove)
        a.remove.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.models.view.addAction(a.remove)
        a.threads.triggered.connect(self.choose_threads)
        a.about.triggered.connect(self._about)
        explain_when_disabled(self, a.merge, self._explain_no_merge)
        explain_when_disabled(self, a.save, self._explain_no_save)
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
        self.runner.done.connect(self._job_done)

    def _restore_settings(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.actions.devices[self.settings.device()].setChecked(True)
        self.status.set_device(self.settings.device(), self.settings.threads())
        self._fill_recent()

    def models_key(self) -> tuple:
        """The listed models, in order: what a hint about them stays true for."""
        return tuple(r.path for r in self.models.model.rows())

    def _on_models_changed(self) -> None:
        rows = self.models.model.rows()
        key = (tuple(r.path for r in rows), next((r.path for r in rows if r.role == "base"), None))
        if key != self._compat_key:
            self._compat_key = key
            self.models.refresh_compat()
        self._update_actions()

    def _on_method_changed(self, spec) -> None:
        self.models.set_per_model_params(tuple(p for p in spec.params if p.per_model))
        needs = spec.needs
        self.models.model.set_method_roles(needs.base, needs.min_models == needs.max_models == 2)
        self.models.refresh_summary()
        self._set_tab_order()
        self._update_actions()

    def _set_tab_order(self) -> None:
        """Tab goes through the window as it reads: models and their buttons, the method
        and its fields, Merge and Save, then the log (hidden fields are skipped)."""
        m = self.models
        chain = [
            m.view,
            m.add_button,
            m.remove_button,
            m.up_button,
            m.down_button,
            *self.method.focus_chain(),
            self.merge_button,
            self.save_button,
            self.jobs.cancel_button,
            self.jobs.log,
        ]
        for first, second in zip(chain, chain[1:], strict=False):
            QWidget.setTabOrder(first, second)

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
            dtype=m.compute_dtype_value(),
            data=m.data(),
            arch=m.arch(),
        )

    # -- merge -------------------------------------------------------------------------------
    def blockers(self) -> list[str]:
        """Why Merge is disabled now; [] when it can run."""
        if self.runner.running:
            return [f"{self.runner.name.capitalize()} is running; wait or cancel it (Esc)."]
        m = self.method
        out = merge_blockers(m.spec(), self.models.model.rows(), data=m.data(), arch=m.arch())
        if out:
            return out
        if self.settings.device() == "cuda" and "cuda" not in available_devices():
            return [
                "CUDA is selected but torch sees no GPU; choose Settings ▸ Device ▸ Auto or CPU."
            ]
        try:
            from core.merge import validate_recipe

            validate_recipe(self.current_recipe())
        except MergerError as exc:
            return [remedy_first(*reason_and_remedy(exc))]
        return []

    def merge(self) -> bool:
        """Start merging into the session folder; False when something blocks it."""
        self.models.notice_missing_now()  # a model removed since the watcher last looked
        blockers = self.blockers()
        if blockers:
            self.statusBar().showMessage(blockers[0], 5000)
            return False
        recipe = self.current_recipe()
        allow_code = bool(recipe.arch and ".py:" in recipe.arch)
        if allow_code and recipe.arch not in self.trusted_code:
            if not ask_run_code(self, recipe.arch):
                return False
            self.trusted_code.add(recipe.arch)
        self._merge_count += 1
        out = self._session / f"merged-{self._merge_count}"  # a folder: keeps config + recipe
        device, threads = self.settings.device(), self.settings.threads()

        job = merge_job(recipe, out, device=device, threads=threads, allow_code=allow_code)

        def done(result) -> None:
            old = self.result
            self.result, self.result_recipe, self.saved = result, recipe, False
            self._saved_to = None
            if old is not None and Path(old.out) != Path(result.out):
                remove_path(Path(old.out))
            for note in result.notes:
                self.jobs.append(note)
            self.jobs.append(
                f"Merged with {REGISTRY.get(recipe.merge_method).label}"
                f"{self._result_outcome()} in {result.seconds:.1f} s. "
                "Save it with File ▸ Save Merged Model (Ctrl+S)."
            )
            self.merge_finished.emit(result)

        self._start("merge", f"Merging with {self.method.spec().label}", job, done)
        return True

    def _explain_no_merge(self) -> None:
        """Merge's shortcut while Merge is off: what blocks it."""
        blockers = self.blockers()
        self.statusBar().showMessage(blockers[0] if blockers else "Merge is not available.", 5000)

    def _explain_no_save(self) -> None:
        """Save's shortcut while Save is off: why."""
        why = "Wait for the running job to end." if self.runner.running else None
        self.statusBar().showMessage(why or self._save_tip(self._result_is_current()), 5000)

    def cancel_job(self) -> None:
        if self.runner.running:
            self.jobs.append("Cancelling…")
            self.runner.cancel()

    # -- save --------------------------------------------------------------------------------
    def choose_save(self) -> None:
        if self.result is None or not self._result_is_current():
            self._close_after_save = False
            self.statusBar().showMessage(self._save_tip(False), 5000)
            return
        folder = self.settings.last_folder("save") or str(Path.home())
        suggested = Path(folder) / f"merged-{self.result_recipe.merge_method}.safetensors"
        dialog = QtSaveDialog(self, suggested, [r.path for r in self.models.model.rows()])
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

        job = export_job(
            src,
            options.path,
            dtype=options.dtype,
            shard_size=options.shard_size,
            overwrite=overwrite,
            protect=[r.path for r in self.models.model.rows()],
        )

        def done(files) -> None:
            self.saved = True
            self._saved_to = options.path
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
        job = demo_job(Path(folder) if folder else demo_folder())

        def done(demo) -> None:
            # exactly the recipe it names, so Merge gives what `merger run` gives; the other
            # demo models (a third fine-tune, the Re-Basin seeds) wait in File ▸ Recent Models
            others = [*demo.models.values(), *demo.seeds]
            self.settings.add_recent_models([str(p) for p in others])
            self._fill_recent()
            if self.open_recipe(demo.recipe):
                self.method.data_combo.setCurrentText(str(demo.data))
            self.demo_loaded.emit()

        self._start("demo", "Preparing the demo models", job, done)

    # -- settings ----------------------------------------------------------------------------
    def set_device(self, device: str) -> None:
        self.settings.set_device(device)
        self.actions.devices[self.settings.device()].setChecked(True)
        self.status.set_device(self.settings.device(), self.settings.threads())
        self._update_actions()  # CUDA without a GPU blocks Merge, and the hint says why

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

    # The outcome is kept until the thread has finished (`runner.done`), so that whatever
    # the callbacks and listeners do next (merge again, save, close) finds the runner idle.
    def _job_succeeded(self, name: str, value: object) -> None:
        self._outcome = ("ok", value)

    def _job_failed(self, name: str, message: str, details: str, remedy: str) -> None:
        self._outcome = ("failed", message, details, remedy)

    def _job_cancelled(self, name: str) -> None:
        self._outcome = ("cancelled",)

    def _job_done(self, name: str) -> None:
        outcome, self._outcome = self._outcome, ("cancelled",)
        callback, self._on_success = self._on_success, None
        self._update_actions()
        if outcome[0] == "ok":
            if name == "merge":
                self._failed_merge = None
            if callback is not None:  # its notes go to the log before the closing line
                callback(outcome[1])
            self.jobs.finish(_DONE_TEXT.get(name, f"{name.capitalize()} finished."), complete=True)
            self._update_actions()
            return
        self._close_after_save = False
        if outcome[0] == "failed":
            _, message, details, remedy = outcome
            self.jobs.finish(f"{name.capitalize()} failed.", complete=False)
            self.jobs.append(error_text(message, remedy))
            if name == "merge":  # said in the hint until the settings change
                recipe = self._recipe_or_none()
                self._failed_merge = (recipe, files_stamp(recipe), message, remedy)
                self._update_actions()
            self._error(f"{name.capitalize()} failed", error_text(message, remedy), details)
        elif name == "demo":  # its half-made models are remade next time, not kept
            self.jobs.finish("Demo cancelled; it is prepared anew next time.", complete=False)
        else:
            kept = (  # the hint still offers the earlier result: say which one it means
                " The earlier result is still there to save."
                if name == "merge" and self.result is not None and self._result_is_current()
                else ""
            )
            self.jobs.finish(
                f"{name.capitalize()} cancelled; nothing was written.{kept}", complete=False
            )
        if name == "merge":
            self.merge_finished.emit(None)
        elif name == "save":
            self.save_finished.emit(None)

    def _update_actions(self) -> None:
        blockers = self.blockers()
        running = self.runner.running
        current = self._result_is_current()
        self.merge_button.setEnabled(not blockers)
        self.actions.merge.setEnabled(not blockers)
        self.actions.cancel.setEnabled(running)
        # Save writes the last merge, so only while the window still shows its models and
        # settings: never an earlier result under what the window says now
        can_save = self.result is not None and current and not running
        self.save_button.setEnabled(can_save)
        self.actions.save.setEnabled(can_save)
        self.save_button.setToolTip(self._save_tip(current))
        tip = blockers[0] if blockers else "Merge the models (Ctrl+Return)"
        self.merge_button.setToolTip(tip)
        failed = self._failure_applies()  # reads the recipe's files' stamps: once here
        if failed:
            self._set_failure_hint()
        else:
            self._set_hint(self._hint_text(blockers, current))
        if self._failed_merge is not None and not running and not failed:
            self.jobs.clear_outcome()  # "Merge failed." would now read as about these
        self._mark_batchnorm_setting()

    def _mark_batchnorm_setting(self) -> None:
        """Grey out 'Re-estimate BatchNorm' while model A has no BatchNorm statistics, and
        say so: the setting would do nothing (the merge notes it too)."""
        spec = self.method.spec()
        if not any(p.name == "reset_bn" for p in spec.params):
            return
        editor = self.method.form.editor("reset_bn")
        rows = self.models.model.rows()
        applies = not rows or rows[0].batchnorm
        editor.setEnabled(applies)
        param = spec.param("reset_bn")
        editor.setToolTip(
            param.help
            if applies
            else f"{rows[0].name} has no BatchNorm statistics: there is nothing to re-estimate"
        )

    def _hint_text(self, blockers: list[str], current: bool) -> str:
        """What to do next: what blocks Merge, or what to do with the last result."""
        if blockers:
            return f"⚠ {blockers[0]}"
        partial = self.partial_recipe
        if partial is not None and partial[0] == self.models_key():
            return f"⚠ {partial[1]}"
        if self.result is not None and not self.saved:
            if current:
                return (
                    f"Merged{self._result_outcome()}. Save the result (Ctrl+S), or change "
                    "settings and merge again."
                )
            return STALE_RESULT
        if self.result is not None and current and self._saved_to is not None:
            return (
                f"Saved to {self._saved_to}. Save it elsewhere, or change settings and merge again."
            )
        return "Ready to merge."

    def _result_outcome(self) -> str:
        """' (λ = 1: B aligned to A)' for a Re-Basin result, '' for others."""
        recipe = self.result_recipe
        if recipe is None:
            return ""
        spec = REGISTRY.get(recipe.merge_method)
        outcome = lambda_outcome(spec, recipe.parameters.get("lambda"))
        return f" ({outcome})" if outcome else ""

    def _failure_applies(self) -> bool:
        """Whether the last failed merge had these settings and these files: a model, data
        or architecture file written again since may well work (a file put back, a
        .npz fixed in place), so its failure is no longer this merge's to repeat."""
        failed = self._failed_merge
        if failed is None or failed[0] is None:
            return False
        recipe = self._recipe_or_none()
        return recipe == failed[0] and files_stamp(recipe) == failed[1]

    def _save_tip(self, current: bool) -> str:
        """Why Save is off, or what it does."""
        if self.result is None:
            return "Nothing to save yet: merge first."
        if not current:
            return STALE_RESULT
        return "Write the merged model to a file or folder (Ctrl+S)"

    def _set_failure_hint(self) -> None:
        """The last merge with these settings failed: what to do comes first in the hint,
        whole, then why, cut to fit (the whole message is the tooltip, in the log and in
        the error box)."""
        _, _, message, remedy = self._failed_merge  # type: ignore[misc]
        head = "⚠ The last merge with these settings failed. "
        if not message.strip():
            message = "see the log"
        self._set_hint(
            head + remedy_first(self._short(message), remedy),
            keep=len(head) + len(remedy) + 1,
            tooltip=head + error_text(message, remedy),
        )

    def _set_hint(self, text: str, *, keep: int = 0, tooltip: str | None = None) -> None:
        """A short hint beside the buttons (models by file name, cut to one summary line,
        never within its first `keep` characters) so a long error does not push the
        layout around; the whole text is its tooltip (and, for a failed merge, in the
        log)."""
        keep = min(keep, 2 * HINT_LIMIT)  # and some of the reason after what to do
        short = summary_line(self._short(text), max(HINT_LIMIT, keep + 40), keep=keep)
        self.hint.setText(short)
        whole = tooltip if tooltip is not None else text
        self.hint.setToolTip(whole if short != whole else "")

    def _short(self, text: str) -> str:
        """Models by the names the table shows, other paths cut to their file name (the
        tooltip has them whole): in a hint, what is wrong matters more than the folder."""
        return shorten_paths(self._by_file_name(text), longest=16)

    def _by_file_name(self, text: str) -> str:
        """`text` with each listed model's path shortened to the name the table shows."""
        for row in sorted(self.models.model.rows(), key=lambda r: len(r.path), reverse=True):
            text = text.replace(row.path, row.name)
        return text

    def _recipe_or_none(self) -> Recipe | None:
        """The recipe the panels describe, or None while they describe none."""
        try:
            return self.current_recipe()
        except MergerError:
            return None

    def _result_is_current(self) -> bool:
        """Does the last merge result still match what the panels show?"""
        if self.result is None:
            return False
        try:
            return self.current_recipe() == self.result_recipe
        except MergerError:
            return False

    def _error(self, title: str, message: str, details: str = "") -> None:
        self.last_error = show_error(self, title, message, details)

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About Merger",
            f"<b>Merger</b> {__version__}<br>Merge neural-network checkpoints: "
            "task arithmetic, TIES, DARE, SLERP and more.<br>MIT license.",
        )

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
        """'save', 'discard' or 'cancel'; a separate method so tests can answer it.

        A result the window no longer describes cannot be saved (see `_update_actions`),
        so then the question is only whether to close and discard it."""
        return ask_unsaved(self, can_save=self._result_is_current())
