"""Files in and out of the window: add models, recent files, drag and drop, recipes.

A mixin of `QtMainWindow`, kept apart so the window module stays about layout and jobs.
It uses the window's `settings`, `models`, `method`, `jobs`, `current_recipe` and `_error`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFileDialog

from core.errors import MergerError
from core.merge import validate_recipe
from core.provenance import absolute_recipe
from core.recipe import Recipe
from merger_app._format import user_text
from merger_app._model_rows import normalize_path
from merger_app._recipe_build import rows_from_recipe
from merger_app.qt_actions import fill_recent

RECIPE_SUFFIXES = (".yaml", ".yml")


class QtFileActions:
    """Slots for the File menu and drops; mixed into the main window."""

    def _fill_recent(self) -> None:
        fill_recent(
            self.actions.recent_menu,
            self.settings.recent_models(),
            lambda p: self.add_models([p]),
            self._clear_recent,
        )
        fill_recent(
            self.actions.recent_recipes_menu,
            self.settings.recent_recipes(),
            self.open_recipe,
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
            validate_recipe(recipe)  # refuse bad values here, not later in the form
            problems = self.method.apply_recipe(recipe)
        except MergerError as exc:
            self.jobs.append(f"Cannot open the recipe: {user_text(exc)}")
            self._error("Cannot open the recipe", user_text(exc))
            return False
        self.settings.set_last_folder("recipes", path)
        self.settings.add_recent_recipe(str(path))
        self._fill_recent()
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
        loaded = {r.path for r in self.models.model.rows()}
        missing = [Path(p).name for p, _, _ in entries if p not in loaded]
        if missing:  # said beside Merge until the models change: the merge is not the recipe's
            self.partial_recipe = (
                self.models_key(),
                f"The recipe was opened without {len(missing)} of its models "
                f"({', '.join(missing)}): a merge now uses only the models listed",
            )
            self.jobs.append(self.partial_recipe[1])
            self._update_actions()
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
        path = Path(path)
        if path.suffix.lower() not in (".yaml", ".yml"):  # Open Recipe lists *.yaml only
            path = path.with_name(path.name + ".yaml")
        try:
            recipe = self.current_recipe()
            validate_recipe(recipe)  # one `merger run` would refuse is no recipe to keep
            # absolute paths (models, data, architecture file): it runs from any folder
            absolute_recipe(recipe).save(path)
        except MergerError as exc:
            self._error("Cannot export the recipe", user_text(exc))
            return False
        self.settings.set_last_folder("recipes", path)
        self.jobs.append(f"Recipe written to {path}; run it with: merger run {path} -o OUT")
        return True

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
