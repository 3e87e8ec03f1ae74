"""Keyboard focus and small windows, on the real window (a GUI trial's findings): Tab
stops once on every visible field in reading order, and at 800×600 and below the method
panel stays usable (its required inputs in view, text cut with '…', never clipped)."""

from __future__ import annotations

from app_helpers import load_for_method
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget


def tab_walk(window, qtbot, key=Qt.Key.Key_Tab, limit: int = 80) -> list[QWidget]:
    """The widgets Tab (or Backtab) stops on, from the models table round to it again."""
    start = window.models.view
    QApplication.processEvents()  # a layout shows the fields of a new method queued
    window.activateWindow()
    start.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is start, timeout=2000)
    stops: list[QWidget] = []
    for _ in range(limit):
        stops.append(QApplication.focusWidget())
        qtbot.keyClick(stops[-1], key)
        if QApplication.focusWidget() is start:
            return stops
    raise AssertionError(f"Tab never came back to the models table: {stops}")


def test_tab_stops_once_on_each_visible_field_in_reading_order(window, qtbot, tiny):
    """The trial: Tab stopped twice on the description's link and on the invisible
    scroll area around the method panel."""
    load_for_method(window, tiny, "weight_matching")
    m = window.method
    expected = [
        window.models.view,
        window.models.add_button,  # Remove, Up, Down: off while no row is selected
        m.combo,
        m.description,  # one stop: its Reference link (Enter opens it)
        m.form.editor("lambda"),
        m.form.editor("max_iter"),
        m.form.editor("solver"),  # Re-estimate BatchNorm: off, these models have none
        m.reset_button,
        m.data_combo,
        m.data_browse,
        m.arch_combo,
        m.arch_browse,
        m.out_dtype,
        m.compute_dtype,
        window.merge_button,  # Save and Cancel: off until there is something to do
        window.jobs.log,
    ]
    stops = tab_walk(window, qtbot)
    assert stops == expected, [f"{type(w).__name__}:{w.objectName()}" for w in stops]
    assert all(w.isVisible() and w.isEnabled() for w in stops)
    back = tab_walk(window, qtbot, Qt.Key.Key_Backtab)
    assert back == [expected[0], *reversed(expected[1:])]


def test_the_per_layer_fields_are_tab_stops_where_they_show(window, qtbot, tiny):
    load_for_method(window, tiny, "task_arithmetic")
    editor = window.method.per_tensor
    editor.toggle.click()
    qtbot.waitUntil(editor.gradient.isVisible, timeout=2000)
    stops = tab_walk(window, qtbot)
    at = stops.index(editor.toggle)
    assert stops[at + 1 : at + 3] == [editor.param_combo, editor.gradient]
    assert len(stops) == len(set(stops))
