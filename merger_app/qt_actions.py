"""The window's actions, menus and shortcuts, in one place so they are easy to review.

Shortcuts: Ctrl+O add models, Ctrl+Return / Ctrl+M merge, Esc cancel, Ctrl+S save,
Ctrl+Shift+O open recipe, Ctrl+E export recipe, Delete remove selected models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut
from PySide6.QtWidgets import QMainWindow, QMenu, QStyle

from merger_app.qt_settings import DEVICES


@dataclass
class Actions:
    add_models: QAction
    open_recipe: QAction
    export_recipe: QAction
    save: QAction
    demo: QAction
    quit: QAction
    merge: QAction
    cancel: QAction
    remove: QAction
    threads: QAction
    about: QAction
    devices: dict[str, QAction]
    recent_menu: QMenu
    recent_recipes_menu: QMenu


def _action(
    window: QMainWindow,
    text: str,
    shortcuts: list[str],
    tip: str,
    icon: QStyle.StandardPixmap | None = None,
) -> QAction:
    action = QAction(text, window)
    if shortcuts:
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
    action.setStatusTip(tip)
    action.setToolTip(tip)
    if icon is not None:
        action.setIcon(window.style().standardIcon(icon))
    window.addAction(action)  # shortcuts work even when the menu bar is hidden
    return action


def explain_when_disabled(
    window: QMainWindow, action: QAction, explain: Callable[[], None]
) -> list[QShortcut]:
    """Shortcuts that stand in for `action` while it is disabled and call `explain`.

    Qt drops a key press on a disabled action without a sign; a user who presses Ctrl+S
    before merging should hear why nothing happens. Only one of the two is enabled at a
    time, so the keys are never ambiguous."""
    shortcuts = []
    for sequence in action.shortcuts():
        shortcut = QShortcut(sequence, window)
        shortcut.activated.connect(explain)
        shortcuts.append(shortcut)

    def follow() -> None:
        for shortcut in shortcuts:
            shortcut.setEnabled(not action.isEnabled())

    action.changed.connect(follow)
    follow()
    return shortcuts


def build_actions(window: QMainWindow) -> Actions:
    """Create every action and the menu bar of `window`."""
    sp = QStyle.StandardPixmap
    a = Actions(
        add_models=_action(
            window,
            "&Add Models…",
            ["Ctrl+O"],
            "Add checkpoint files or folders",
            sp.SP_DialogOpenButton,
        ),
        open_recipe=_action(
            window,
            "&Open Recipe…",
            ["Ctrl+Shift+O"],
            "Load a YAML recipe (the same files `merger run` takes)",
            sp.SP_FileDialogContentsView,
        ),
        export_recipe=_action(
            window,
            "&Export Recipe…",
            ["Ctrl+E"],
            "Write the current settings as a YAML recipe for `merger run`",
        ),
        save=_action(
            window,
            "&Save Merged Model…",
            ["Ctrl+S"],
            "Write the merged model to a file or folder",
            sp.SP_DialogSaveButton,
        ),
        demo=_action(
            window,
            "Load &Demo Models",
            [],
            "Small models trained on handwritten digits, made on first use",
        ),
        quit=_action(window, "&Quit", ["Ctrl+Q"], "Close the window"),
        merge=_action(
            window,
            "&Merge",
            ["Ctrl+Return", "Ctrl+Enter", "Ctrl+M"],  # Enter: the keypad key
            "Merge the models with the chosen method",
            sp.SP_MediaPlay,
        ),
        cancel=_action(window, "&Cancel", ["Esc"], "Stop the running job", sp.SP_BrowserStop),
        remove=_action(
            window,
            "&Remove Selected Models",
            ["Delete"],
            "Remove the selected models from the list",
        ),
        threads=_action(window, "CPU &Threads…", [], "How many threads a merge may use"),
        about=_action(window, "&About Merger", [], "Version and license"),
        devices={},
        recent_menu=QMenu("Recent &Models", window),
        recent_recipes_menu=QMenu("Recent R&ecipes", window),
    )
    group = QActionGroup(window)
    for device in DEVICES:
        act = QAction(
            {"auto": "&Auto (GPU when present)", "cpu": "&CPU", "cuda": "CU&DA"}[device], window
        )
        act.setCheckable(True)
        act.setData(device)
        group.addAction(act)
        a.devices[device] = act

    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addActions([a.add_models])
    file_menu.addMenu(a.recent_menu)
    file_menu.addSeparator()
    file_menu.addAction(a.open_recipe)
    file_menu.addMenu(a.recent_recipes_menu)
    file_menu.addAction(a.export_recipe)
    file_menu.addSeparator()
    file_menu.addAction(a.save)
    file_menu.addSeparator()
    file_menu.addAction(a.demo)
    file_menu.addSeparator()
    file_menu.addAction(a.quit)
    edit_menu = bar.addMenu("&Edit")
    edit_menu.addAction(a.remove)
    merge_menu = bar.addMenu("&Merge")
    merge_menu.addActions([a.merge, a.cancel])
    settings_menu = bar.addMenu("&Settings")
    device_menu = settings_menu.addMenu("&Device")
    device_menu.addActions(list(a.devices.values()))
    settings_menu.addAction(a.threads)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(a.about)
    return a


def fill_recent(menu: QMenu, paths: list[str], open_path, clear) -> None:
    """Rebuild a Recent menu; entries that no longer exist are shown disabled."""
    menu.clear()
    for path, label in zip(paths, recent_labels(paths), strict=True):
        act = menu.addAction(label)
        act.setToolTip(path)
        act.setStatusTip(path)
        act.setEnabled(Path(path).exists())
        act.triggered.connect(lambda _=False, p=path: open_path(p))
    if paths:
        menu.addSeparator()
    clear_action = menu.addAction("Clear Recent")
    clear_action.setEnabled(bool(paths))
    clear_action.triggered.connect(clear)


def recent_labels(paths: list[str]) -> list[str]:
    """Menu labels: the name the models table shows (a folder's for its model.safetensors),
    with the parent folder added where two entries would read the same."""
    from merger_app._model_rows import display_name

    names = [display_name(p) for p in paths]

    def where(path: str, name: str) -> str:
        folder = Path(path).parent  # the folder holding what the name names
        return (folder.parent if Path(path).name != name else folder).name

    return [
        f"{name} — {where(p, name)}" if names.count(name) > 1 else name
        for p, name in zip(paths, names, strict=True)
    ]
