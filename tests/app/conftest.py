"""Fixtures for the app's tests: offscreen Qt, settings in tmp, leak checks, demo models.

QT_QPA_PLATFORM is set before anything imports Qt. Every test fails if it leaves a
worker thread running or a visible top-level window behind (Qt's silent failures).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_qt_leaks(qapp):
    """Fail on a runner thread still running or a window still shown after the test."""
    yield
    from PySide6.QtWidgets import QApplication

    from merger_app.qt_worker import live_threads

    leaked = live_threads()
    for thread in leaked:  # stop them so one leak does not cascade into later tests
        thread.wait(10_000)
    assert not leaked, f"worker threads left running: {[t.objectName() for t in leaked]}"
    QApplication.processEvents()
    shown = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    for w in shown:
        w.close()
    assert not shown, f"windows left open: {[type(w).__name__ for w in shown]}"


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Hash caches and demo folders of core go to tmp, never to the user's home."""
    monkeypatch.setenv("MERGER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def settings(tmp_path):
    from merger_app.qt_settings import QtAppSettings

    return QtAppSettings.at(tmp_path / "settings.ini")


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The real demo models (trained once per test session, a few seconds)."""
    from core.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def window(qtbot, settings):
    """The real main window, shown offscreen; closing it never asks about unsaved work."""
    from merger_app.qt_main_window import QtMainWindow

    w = QtMainWindow(settings)
    w.ask_unsaved = lambda: "discard"  # the answer a user would click when closing
    qtbot.addWidget(w)
    w.show()
    yield w
    if w.last_error is not None and w.last_error.isVisible():
        w.last_error.close()


def save_tiny(path: Path, tensors: dict) -> Path:
    """Write a small safetensors file (numpy arrays) for tests that need odd models."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
