"""The dialogs: errors with folded details, Save (path, format, dtype, shard size), unsaved prompt.

Error boxes are opened window-modal with `open()`, not `exec()`, so a failing job never
blocks the event loop (and tests can inspect and close the box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.errors import MergerError, OutputError
from core.recipe import DTYPES

FILE_FORMAT = "safetensors file"
FOLDER_FORMAT = "Hugging Face-style folder"
KEEP_DTYPE = "Keep (as merged)"


def show_error(parent: QWidget, title: str, message: str, details: str = "") -> QMessageBox:
    """A warning box with the message; a bug's traceback goes under 'Show Details…' (a user
    error comes without details: its message and hint say all there is to do)."""
    box = QMessageBox(
        QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent
    )
    box.setObjectName("errorBox")
    if details:
        box.setDetailedText(details)
    box.open()
    return box


def ask_unsaved(parent: QWidget, *, can_save: bool = True) -> str:
    """'save', 'discard' or 'cancel' for a merged model that was not saved.

    With `can_save` False (the models or settings changed since that merge, so Save is
    off) the choice is only to discard it or keep the window open."""
    buttons = QMessageBox.StandardButton
    if not can_save:
        answer = QMessageBox.question(
            parent,
            "Unsaved merge",
            "The last merged model has not been saved, and the models or settings changed "
            "since, so it cannot be saved. Close and discard it?",
            buttons.Discard | buttons.Cancel,
            buttons.Cancel,
        )
        return "discard" if answer == buttons.Discard else "cancel"
    answer = QMessageBox.question(
        parent,
        "Unsaved merge",
        "The merged model has not been saved. Save it before closing?",
        buttons.Save | buttons.Discard | buttons.Cancel,
        buttons.Save,
    )
    if answer == buttons.Save:
        return "save"
    if answer == buttons.Discard:
        return "discard"
    return "cancel"


def ask_run_code(parent: QWidget, arch: str) -> bool:
    """Consent before importing a user's model file: it runs whatever code it holds."""
    answer = QMessageBox.warning(
        parent,
        "Run this Python file?",
        f"The architecture {arch} is Python code. Merging imports the file and runs it, "
        "with your permissions.\n\nOnly continue if you trust this file.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel,
    )
    return answer == QMessageBox.StandardButton.Yes


@dataclass(frozen=True)
class SaveOptions:
    """Where and how to write the merged model."""

    path: Path
    dtype: str | None = None
    shard_size: int | None = None


def normalize_save_path(text: str, fmt: str) -> Path:
    """A file path ends in .safetensors; a folder path does not (the writer decides by it)."""
    path = Path(text.strip()).expanduser()
    if fmt == FILE_FORMAT and path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if fmt == FOLDER_FORMAT and path.suffix == ".safetensors":
        path = path.with_suffix("")
    return path


def save_options(
    path_text: str,
    fmt: str,
    dtype_text: str,
    shard_text: str,
    *,
    protect: Sequence[str] = (),
    folder: Path | None = None,
) -> SaveOptions:
    """Validate the dialog's fields; MergerError saying which field is wrong.

    A relative path is taken in `folder` (where the dialog suggested saving), not in the
    app's working folder, which a desktop user never chose. An output that would replace
    one of the models in `protect` (or a folder that is not a model) is refused here,
    before anyone is asked whether to replace it."""
    from core.checkpoints import parse_size
    from core.checkpoints.output_paths import check_output_path

    if not path_text.strip():
        raise OutputError("choose where to save the merged model")
    path = normalize_save_path(path_text, fmt)
    if not path.is_absolute() and folder is not None:
        path = folder / path
    check_output_path(path, protect, overwrite=True)
    shard = None
    if shard_text.strip():
        try:
            shard = parse_size(shard_text.strip())
        except (MergerError, ValueError) as exc:
            raise OutputError(f"shard size: {exc}") from None  # core's message says how
        if fmt == FILE_FORMAT:
            raise OutputError(
                "a single .safetensors file cannot be split into shards",
                hint=f"choose '{FOLDER_FORMAT}' or leave the shard size empty",
            )
    dtype = None if dtype_text == KEEP_DTYPE else dtype_text
    return SaveOptions(path, dtype, shard)


class QtSaveDialog(QDialog):
    """Asks for path, format, dtype and shard size; `options` is set when accepted."""

    def __init__(
        self, parent: QWidget | None, suggested: Path, protect: Sequence[str] = ()
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Save merged model")
        self.options: SaveOptions | None = None
        self._folder = suggested.parent
        self._protect = tuple(protect)
        self.path = QLineEdit(str(suggested), self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        self.format = QComboBox(self)
        self.format.addItems([FILE_FORMAT, FOLDER_FORMAT])
        self.format.setToolTip(
            "One .safetensors file, or a folder with model.safetensors (or "
            "shards and an index), config.json and the recipe"
        )
        self.dtype = QComboBox(self)
        self.dtype.addItems([KEEP_DTYPE, *DTYPES])
        self.shard = QLineEdit(self)
        self.shard.setPlaceholderText("e.g. 5GB (folder only; empty = one file)")
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.hide()
        self.format.currentTextChanged.connect(self._format_changed)
        self.shard.setEnabled(self.format.currentText() == FOLDER_FORMAT)

        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Save to:", row)
        form.addRow("Format:", self.format)
        form.addRow("Dtype:", self.dtype)
        form.addRow("Shard size:", self.shard)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.resize(560, self.sizeHint().height())

    def _format_changed(self, fmt: str) -> None:
        self.path.setText(str(normalize_save_path(self.path.text(), fmt)))
        self.shard.setEnabled(fmt == FOLDER_FORMAT)

    def _browse(self) -> None:
        if self.format.currentText() == FILE_FORMAT:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save merged model", self.path.text(), "safetensors (*.safetensors)"
            )
        else:
            path = QFileDialog.getExistingDirectory(
                self, "Parent folder", str(Path(self.path.text()).parent)
            )
            if path:
                path = str(Path(path) / Path(self.path.text()).name)
        if path:
            self.path.setText(path)

    def accept(self) -> None:
        try:
            self.options = save_options(
                self.path.text(),
                self.format.currentText(),
                self.dtype.currentText(),
                # a size typed for a folder, then left behind when File was picked: unused
                self.shard.text() if self.shard.isEnabled() else "",
                protect=self._protect,
                folder=self._folder,
            )
        except MergerError as exc:
            self.error.setText(f"⚠ {exc}")
            self.error.show()
            return
        super().accept()
