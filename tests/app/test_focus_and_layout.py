"""Keyboard focus and small windows, on the real window (a GUI trial's findings): Tab
stops once on every visible field in reading order, and at 800×600 and below the method
panel stays usable (its required inputs in view, text cut with '…', never clipped)."""

from __future__ import annotations

from app_helpers import load_for_method
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QApplication, QScrollArea, QWidget

from merger_app.qt_elide import fits
from merger_app.qt_layout import MIN_HEIGHT, MIN_WIDTH


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
        m.data_combo,  # what the method needs, under the line saying so
        m.data_browse,
        m.arch_combo,
        m.arch_browse,
        m.form.editor("lambda"),
        m.form.editor("max_iter"),
        m.form.editor("solver"),  # Re-estimate BatchNorm: off, these models have none
        m.reset_button,
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


def in_view(widget, scroll) -> bool:
    """Is `widget` wholly inside the scroll area's visible part (no scrolling needed)?"""
    top_left = widget.mapTo(scroll.viewport(), QPoint(0, 0))
    rect = QRect(top_left, widget.size())
    return widget.isVisible() and scroll.viewport().rect().contains(rect)


def method_scroll(window) -> QScrollArea:
    scroll = window.method.parentWidget().parentWidget()  # viewport, then the area
    assert isinstance(scroll, QScrollArea)
    return scroll


def test_at_800x600_what_the_method_needs_is_in_view_without_scrolling(window, qtbot, tiny):
    """The trial: at 800×600 the Architecture row was below the fold, so the user could
    not see that it needs filling. Data and Architecture now sit under the Needs line."""
    load_for_method(window, tiny, "activation_matching")
    window.method.data_combo.setCurrentText("")  # as the trial had it: to be filled in
    window.resize(800, 600)
    qtbot.waitUntil(lambda: window.width() == 800 and window.height() == 600, timeout=2000)
    QApplication.processEvents()
    scroll, m = method_scroll(window), window.method
    assert scroll.verticalScrollBar().value() == 0
    for field in (m.combo, m.needs, m.data_combo, m.data_browse, m.arch_combo, m.arch_browse):
        assert in_view(field, scroll), field
    for field in (m.data_combo, m.arch_combo):
        assert field.height() >= field.sizeHint().height(), field  # not squeezed
    assert window.merge_button.isVisible() and window.hint.isVisible()


def test_a_small_window_stops_at_a_usable_size_and_cuts_texts_with_an_ellipsis(window, qtbot, tiny):
    """The trial: at 500×300 the hint was clipped mid-line and the method name cut off at
    the combo's edge, without '…'."""
    load_for_method(window, tiny, "activation_matching")
    window.method.data_combo.setCurrentText("")  # a long hint: what Merge still needs
    window.resize(500, 300)
    QApplication.processEvents()
    assert (window.width(), window.height()) == (MIN_WIDTH, MIN_HEIGHT)  # no smaller
    m = window.method
    assert in_view(m.data_combo, method_scroll(window))  # still in view at the minimum
    label = m.combo.currentText()
    assert m.combo.shown_text().endswith("…") and label.startswith(m.combo.shown_text()[:-1])
    hint = window.hint
    whole = "⚠ Git Re-Basin: activation matching needs data to run the models on"
    assert hint.text().startswith(whole)  # the whole text is kept...
    shown = hint.shown_text()
    assert shown.endswith("…") and whole.startswith(shown[:-1].rstrip())  # ...and cut
    assert fits(hint.fontMetrics(), shown, hint.contentsRect().width(), hint.height())
    assert hint.toolTip() == hint.text()  # the whole text where the cut one is
    window.resize(1280, 800)
    QApplication.processEvents()
    assert window.method.combo.shown_text() == label  # whole again when there is room
    assert hint.shown_text() == hint.text()
