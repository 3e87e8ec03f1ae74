"""The window's shell: settings that persist, drag and drop, shortcuts, status bar, sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QMimeData, Qt, QUrl
from PySide6.QtGui import QImage, QKeySequence
from PySide6.QtWidgets import QApplication

from merger_app.qt_files import dropped_paths
from merger_app.qt_main_window import QtMainWindow
from merger_app.qt_settings import QtAppSettings

ROOT = Path(__file__).resolve().parents[2]


def test_settings_persist_across_windows(qtbot, settings, tiny):
    first = QtMainWindow(settings)
    qtbot.addWidget(first)
    first.show()
    first.resize(700, 500)  # within the offscreen screen (restoreGeometry keeps it there)
    first.add_models([tiny.base, tiny.models["a"]])
    first.set_device("cpu")
    first.set_threads(2)
    first.close()

    again = QtMainWindow(QtAppSettings.at(settings.qsettings.fileName()))
    qtbot.addWidget(again)
    again.show()
    assert (again.width(), again.height()) == (700, 500)
    assert again.settings.recent_models()[:2] == [str(tiny.base), str(tiny.models["a"])]
    recent = [a.toolTip() for a in again.actions.recent_menu.actions() if a.toolTip()]
    assert str(tiny.base) in recent
    assert again.actions.devices["cpu"].isChecked()
    assert again.status.device.text() == "Device: CPU · 2 threads"
    assert again.status.memory.text().startswith("Memory: ")
    again.close()


def test_drop_adds_models_and_opens_recipes(window, tiny, tmp_path):
    mime = QMimeData()
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in (tiny.base, tiny.models["a"], notes)])
    mime.setUrls([*mime.urls(), QUrl("https://example.com/model.safetensors")])
    paths = dropped_paths(mime)
    assert paths == [str(tiny.base), str(tiny.models["a"])]  # no text file, no web link
    window.drop_paths(paths)
    assert len(window.models.model.rows()) == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels:\n  - model: {tiny.models['b']}\n")
    window.drop_paths([str(recipe)])
    assert window.method.spec().name == "linear"
    assert [r.path for r in window.models.model.rows()] == [str(tiny.models["b"])]


@pytest.mark.parametrize(
    ("action", "keys"),
    [
        ("add_models", "Ctrl+O"),
        ("merge", "Ctrl+Return"),
        ("merge", "Ctrl+Enter"),  # the keypad's Enter
        ("merge", "Ctrl+M"),
        ("cancel", "Esc"),
        ("save", "Ctrl+S"),
        ("open_recipe", "Ctrl+Shift+O"),
        ("export_recipe", "Ctrl+E"),
    ],
)
def test_shortcuts(window, action, keys):
    assert QKeySequence(keys) in getattr(window.actions, action).shortcuts()


@pytest.mark.parametrize(("w", "h"), [(1280, 800), (1920, 1080)])
def test_layout_fits_common_screens(window, tiny, qtbot, w, h):
    window.add_models([tiny.base, *tiny.models.values()])
    window.resize(w, h)
    qtbot.waitUntil(lambda: window.width() == w)
    for widget in (
        window.models.view,
        window.method.combo,
        window.merge_button,
        window.jobs.log,
        window.jobs.bar,
    ):
        assert widget.isVisible() and widget.width() > 0 and widget.height() > 0
        geo = widget.geometry()
        top_left = widget.mapTo(window, geo.topLeft() - geo.topLeft())
        assert 0 <= top_left.x() < w and 0 <= top_left.y() < h
    assert window.merge_button.sizeHint().width() <= window.merge_button.width()


def test_a_narrow_window_fits_every_methods_form_without_scrolling_sideways(window, tiny, qtbot):
    """Long combo entries (the compute dtype's, the Auto architecture's) once set a minimum
    width that cut the form off at the right below ~1000 px."""
    from PySide6.QtWidgets import QScrollArea

    from core.methods import REGISTRY

    window.add_models([tiny.base, *tiny.models.values()])
    window.resize(800, 600)
    qtbot.waitUntil(lambda: window.width() == 800)
    scroll = next(a for a in window.findChildren(QScrollArea) if a.widget() is window.method)
    for spec in REGISTRY:
        window.method.set_method(spec.name)
        QApplication.processEvents()
        assert scroll.horizontalScrollBar().maximum() == 0, spec.name
        reset = window.method.reset_button
        right = reset.mapTo(scroll.viewport(), reset.rect().topRight()).x()
        assert right <= scroll.viewport().width(), spec.name


def test_names_stay_readable_in_a_narrow_window_and_take_the_room_in_a_wide_one(
    window, tiny, qtbot
):
    """With TIES's extra columns at 800 px the name column once shrank to '…': it keeps
    NAME_MIN_WIDTH (the table scrolls sideways) and stretches again when there is room."""
    from PySide6.QtWidgets import QHeaderView

    from merger_app.qt_models_panel import NAME_MIN_WIDTH

    window.method.set_method("ties")
    window.add_models([tiny.base, *tiny.models.values()])
    header = window.models.view.horizontalHeader()
    window.resize(800, 600)
    qtbot.waitUntil(lambda: header.sectionSize(0) >= NAME_MIN_WIDTH)
    window.resize(1600, 900)
    qtbot.waitUntil(lambda: header.sectionSize(0) > 2 * NAME_MIN_WIDTH)
    assert header.sectionResizeMode(0) == QHeaderView.ResizeMode.Stretch


def run_app(args: list[str], tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MERGER_CACHE_DIR": str(cache),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HOME": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "merger_app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_png(path: Path, size: tuple[int, int]) -> None:
    image = QImage(str(path))
    assert not image.isNull()
    assert (image.width(), image.height()) == size
    w, h = size
    colors = {image.pixel(x, y) for x in range(0, w, 40) for y in range(0, h, 40)}
    assert len(colors) > 5  # a drawn window, not a blank image


@pytest.mark.slow
def test_screenshot_of_a_recipe_at_full_hd(tiny, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"merge_method: task_arithmetic\nbase_model: {tiny.base}\n"
        f"models:\n  - model: {tiny.models['a']}\n"
    )
    out = tmp_path / "shots" / "shot.png"
    proc = run_app(
        [str(recipe), "--screenshot", str(out), "--size", "1920x1080"], tmp_path, tmp_path / "cache"
    )
    assert proc.returncode == 0, proc.stderr
    assert_png(out, (1920, 1080))


@pytest.mark.slow
def test_demo_screenshot_command(demo, tmp_path):
    """The command the README's screenshot comes from."""
    out = tmp_path / "shot.png"
    proc = run_app(["--demo", "--screenshot", str(out)], tmp_path, demo.folder.parent)
    assert proc.returncode == 0, proc.stderr
    assert_png(out, (1280, 800))


def test_opened_recipes_appear_in_recent_recipes(window, tiny, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels: [{tiny.models['a']}, {tiny.models['b']}]\n")
    assert window.open_recipe(recipe)
    menu = window.actions.recent_recipes_menu
    entries = [a for a in menu.actions() if a.toolTip() == str(recipe)]
    assert len(entries) == 1 and entries[0].isEnabled()
    window.models.model.set_rows([])
    entries[0].trigger()  # reopening from the menu loads the recipe's models again
    assert len(window.models.model.rows()) == 2


def test_delete_removes_models_only_from_the_models_table(window, tiny, qtbot):
    """Delete in the per-layer table or the log belongs to them; Tab leaves the table."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    window.add_models([tiny.base, *tiny.models.values()])
    window.show()
    window.activateWindow()
    count = len(window.models.model.rows())
    window.models.view.selectRow(1)
    for widget in (window.method.per_tensor.table, window.jobs.log, window.merge_button):
        widget.setFocus()
        qtbot.waitUntil(lambda w=widget: QApplication.focusWidget() is w)
        qtbot.keyClick(widget, Qt.Key.Key_Delete)
        assert len(window.models.model.rows()) == count, widget
    window.models.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.models.view)
    qtbot.keyClick(window.models.view, Qt.Key.Key_Delete)
    assert len(window.models.model.rows()) == count - 1
    assert not window.models.view.tabKeyNavigation()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_choosing_cuda_without_a_gpu_disables_merge_and_says_why(window, tiny, qtbot):
    from app_helpers import load_for_method

    load_for_method(window, tiny, "linear")
    assert window.merge_button.isEnabled()
    window.set_device("cuda")
    assert not window.merge_button.isEnabled()
    assert "CUDA is selected but torch sees no GPU" in window.hint.text()
    window.set_device("auto")
    assert window.merge_button.isEnabled() and window.hint.text() == "Ready to merge."


def wheel(widget, steps: int = 1) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.rect().center())
    event = QWheelEvent(
        centre,
        QPointF(widget.mapToGlobal(centre.toPoint())),
        QPoint(),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


def test_the_wheel_changes_a_field_only_when_it_has_focus(window, tiny, qtbot):
    """Scrolling the form over a field used to change it (and so turn Save off)."""
    window.method.set_method("ties")
    qtbot.wait(10)  # the new form's fields are polished by the event loop
    lam, trim = window.method.form.editor("lambda"), window.method.form.editor("trim")
    window.merge_button.setFocus()
    before = lam.value(), trim.currentIndex()
    wheel(lam)
    wheel(trim, -1)
    assert (lam.value(), trim.currentIndex()) == before
    assert lam.focusPolicy() == trim.focusPolicy() == Qt.FocusPolicy.StrongFocus
    lam.setFocus()
    qtbot.waitUntil(lam.hasFocus)
    wheel(lam)
    assert lam.value() != before[0]  # a focused field still takes the wheel


def test_a_recipe_opened_by_a_relative_path_is_remembered_absolute(
    window, tiny, tmp_path, monkeypatch
):
    """Recent Recipes must find it again when the app starts from another folder."""
    (tmp_path / "r.yaml").write_text(
        f"merge_method: linear\nmodels: [{tiny.models['a']}, {tiny.models['b']}]\n"
    )
    monkeypatch.chdir(tmp_path)
    assert window.open_recipe(Path("r.yaml"))
    assert window.settings.recent_recipes()[0] == str(tmp_path / "r.yaml")
    assert window.settings.last_folder("recipes") == str(tmp_path)


@pytest.mark.parametrize(
    ("env", "found", "expected"),
    [
        ({"DISPLAY": ":0"}, "libxcb-cursor.so.0", None),
        ({"DISPLAY": ":0"}, None, "sudo apt install libxcb-cursor0"),
        ({}, None, "no display to open a window on"),
        ({"QT_QPA_PLATFORM": "offscreen"}, None, None),
        ({"WAYLAND_DISPLAY": "wayland-0"}, None, None),
        ({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, None, "libxcb-cursor0"),
    ],
)
def test_a_machine_qt_cannot_start_on_gets_a_sentence_not_a_core_dump(env, found, expected):
    from merger_app.main import display_problem

    problem = display_problem(env, "linux", find_library=lambda name: found)
    assert problem is None if expected is None else expected in problem
    assert display_problem({}, "darwin", find_library=lambda name: None) is None


def test_merger_app_without_a_display_says_so_and_exits_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", "merger_app"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "no display to open a window on" in proc.stderr and "Traceback" not in proc.stderr


def test_shortcuts_of_disabled_commands_say_why(window, tiny, qtbot):
    """Ctrl+S before any merge and Ctrl+Return with nothing to merge are not silently
    dropped: the status bar says why. Once Save is on, Ctrl+S saves (no ambiguity)."""
    from PySide6.QtCore import Qt

    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    ctrl = Qt.KeyboardModifier.ControlModifier
    qtbot.keyClick(window, Qt.Key.Key_S, ctrl)
    assert window.statusBar().currentMessage() == "Nothing to save yet: merge first."
    window.statusBar().clearMessage()
    qtbot.keyClick(window, Qt.Key.Key_Return, ctrl)
    assert window.statusBar().currentMessage() == window.blockers()[0]

    saves = []
    window.choose_save = lambda: saves.append(1)  # the dialog itself is tested elsewhere
    window.actions.save.triggered.disconnect()
    window.actions.save.triggered.connect(lambda: window.choose_save())
    window.actions.save.setEnabled(True)
    window.statusBar().clearMessage()
    qtbot.keyClick(window, Qt.Key.Key_S, ctrl)
    assert saves == [1] and window.statusBar().currentMessage() == ""
