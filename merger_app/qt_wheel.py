"""The mouse wheel scrolls the panel it is over; it changes a field only with focus.

Qt's spin boxes and combo boxes take wheel events even when the pointer merely passes
over them, so scrolling a long method form changed lambda or trim on the way (and a
changed setting turns Save off, since the result no longer matches the form). Installed
once on the application, this guard turns such events into scrolls of the parent."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QComboBox, QWidget


class WheelGuard(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(watched, QAbstractSpinBox | QComboBox):
            return False
        if event.type() == QEvent.Type.Polish:
            # WheelFocus would give the field focus on the wheel, before this filter runs
            if watched.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                watched.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        elif event.type() == QEvent.Type.Wheel and not watched.hasFocus():
            event.ignore()  # not accepted: Qt hands it on to the parent (the scroll area)
            return True
        return False


def guard_wheel(owner: QWidget) -> WheelGuard:
    """Install the guard on the application for as long as `owner` lives."""
    guard = WheelGuard(owner)
    app = QApplication.instance()
    if app is not None:
        app.installEventFilter(guard)
    return guard
