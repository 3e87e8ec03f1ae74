"""The Qt bindings themselves: a PySide6 that leaks references to None (6.12.0 under
Python 3.11) aborts a long-running window with "Fatal Python error: none_dealloc"."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel


class _Emitter(QObject):
    changed = Signal(bool)


def test_qt_calls_keep_none_true_and_false_alive(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    emitter = _Emitter()
    emitter.changed.connect(lambda value: None)
    before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(2000):
        label.setText("x")  # returns None to Python
        emitter.changed.emit(True)
        QApplication.processEvents()
    lost_none = before[0] - sys.getrefcount(None)
    lost_true = before[1] - sys.getrefcount(True)
    # a few references come and go with caches; a leak loses one per call (thousands)
    assert lost_none < 100 and lost_true < 100, (lost_none, lost_true)
