"""The main window's layout: models left, method right, Merge/Save under it, log below.

Splitters let people give the table or the log more room; the sizes suit 1280×800 and
scale up to 1920×1080.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from merger_app.qt_elide import QtElidingLabel

MIN_WIDTH, MIN_HEIGHT = 640, 480  # VGA: the smallest screens still sold


def build_window_layout(self: QMainWindow) -> None:
    """Create the buttons and splitters of `self` (a QtMainWindow with its panels made)."""
    self.merge_button = QPushButton("Merge", self)
    self.merge_button.setObjectName("mergeButton")
    self.merge_button.setDefault(True)
    self.save_button = QPushButton("Save…", self)
    self.hint = QtElidingLabel(self, max_lines=3)  # cut with '…' in a small window
    self.hint.setObjectName("mergeHint")
    scroll = QScrollArea(self)
    scroll.setWidgetResizable(True)
    scroll.setWidget(self.method)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # a frame, not a field: Tab skips it
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
    # below this the method panel would show a line or two of its fields: the window
    # stops shrinking instead (texts that do not fit end with '…' down to it)
    self.setMinimumSize(MIN_WIDTH, MIN_HEIGHT)
    self.resize(1280, 800)
    self.main_split.setSizes([560, 200])
    self.top_split.setSizes([720, 560])
