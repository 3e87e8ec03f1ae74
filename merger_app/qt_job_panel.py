"""Progress of the running job (bar, step, elapsed and remaining time), Cancel, and the log.

The panel only shows what the job runner relays; it owns no job. Remaining time is a
linear estimate from elapsed time and the fraction done, shown once there is enough
progress to make it mean something.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from merger_app._format import human_duration, remaining_seconds

_STEPS = 1000


class QtJobPanel(QWidget):
    """Bar + step + times + Cancel over a read-only log pane."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, _STEPS)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.step = QLabel("Ready.", self)
        self.times = QLabel("", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the running job (Esc); nothing is left behind")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setObjectName("logPane")
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log.setPlaceholderText("Messages from merges and saves appear here.")

        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        info = QHBoxLayout()
        info.addWidget(self.step, 1)
        info.addWidget(self.times)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(info)
        layout.addWidget(self.log, 1)

        self._started = 0.0
        self._fraction = 0.0
        self._open_ended = False  # the job cannot tell how long the rest takes
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._show_times)

    def start(self, title: str) -> None:
        self._started = time.monotonic()
        self._fraction = 0.0
        self._open_ended = False
        self.bar.setValue(0)
        self.step.setText(f"{title}…")
        self.cancel_button.setEnabled(True)
        self.append(f"— {title} —")
        self._show_times()
        self._timer.start()

    def on_progress(
        self, done: float, total: float, message: str, open_ended: bool = False
    ) -> None:
        self._fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        self._open_ended = open_ended
        self.bar.setValue(round(self._fraction * _STEPS))
        if message:
            self.step.setText(message)
        self._show_times()

    def finish(self, text: str, *, complete: bool) -> None:
        """Stop the clock and say how the job ended."""
        self._timer.stop()
        # a bar left half full beside "cancelled" or "failed" reads as half done
        self.bar.setValue(_STEPS if complete else 0)
        elapsed = time.monotonic() - self._started
        self.step.setText(text)
        self.times.setText(f"took {human_duration(elapsed)}")
        self.cancel_button.setEnabled(False)
        self.append(f"{text} ({human_duration(elapsed)})")

    def clear_outcome(self) -> None:
        """Show 'Ready.' instead of how the last job ended, once that no longer describes
        what the window shows (a failed merge, after its models or settings changed).
        The log keeps the record."""
        if self._timer.isActive() or self.step.text() == "Ready.":
            return
        self.bar.setValue(0)
        self.step.setText("Ready.")
        self.times.setText("")

    def append(self, line: str) -> None:
        self.log.appendPlainText(line)
        self.log.moveCursor(QTextCursor.MoveOperation.End)

    def _show_times(self) -> None:
        elapsed = time.monotonic() - self._started
        left = None if self._open_ended else remaining_seconds(elapsed, self._fraction)
        text = f"elapsed {human_duration(elapsed)}"
        if left is not None:
            text += f" · about {human_duration(left)} left"
        elif self._open_ended:
            text += " · time left unknown"
        self.times.setText(text)
