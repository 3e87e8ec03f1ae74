"""Fixtures for the app's tests: offscreen Qt, settings in tmp, leak checks, demo models.

QT_QPA_PLATFORM is set before anything imports Qt. Every test fails if it leaves a
worker thread running or a visible top-level window behind (Qt's silent failures).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# pytest puts tests/ on sys.path (tests/conftest.py, no __init__.py), where tests/core
# would shadow the real `core` as a namespace package; the repository root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest  # noqa: E402
from app_helpers import save_tiny  # noqa: E402


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
    """The real demo models, trained once per session in <cache>/demo (~35 s of CPU).

    Kept at `$MERGER_CACHE_DIR/demo`'s layout so a `merger-app --demo` subprocess given
    `MERGER_CACHE_DIR=demo.folder.parent` reuses them.
    """
    from core.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("democache") / "demo")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Demo-shaped models in milliseconds: an MLP 64-32-32-10 base, three fine-tunes
    (base + small noise), two independent seeds, and an .npz data set."""
    import numpy as np

    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    shapes = {
        "layers.0.weight": (32, 64),
        "layers.0.bias": (32,),
        "layers.2.weight": (32, 32),
        "layers.2.bias": (32,),
        "layers.4.weight": (10, 32),
        "layers.4.bias": (10,),
    }

    def random_model():
        return {k: rng.standard_normal(s).astype(np.float32) * 0.2 for k, s in shapes.items()}

    base = random_model()
    models = {}
    for key in ("a", "b", "c"):
        tuned = {
            k: v + rng.standard_normal(v.shape).astype(np.float32) * 0.01 for k, v in base.items()
        }
        models[key] = save_tiny(folder / f"finetuned_{key}.safetensors", tuned)
    seeds = tuple(save_tiny(folder / f"seed_{i}.safetensors", random_model()) for i in (1, 2))
    data = folder / "data.npz"
    np.savez(
        data,
        x=rng.standard_normal((256, 64)).astype(np.float32),
        y=rng.integers(0, 10, 256).astype(np.int64),
    )
    return SimpleNamespace(
        folder=folder,
        base=save_tiny(folder / "base.safetensors", base),
        models=models,
        seeds=seeds,
        data=data,
    )


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


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    """Six 96 MB models (24 × 1024² float32 each): merges that take seconds, not ms."""
    import numpy as np

    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        state = {
            f"layers.{j}.weight": rng.standard_normal((1024, 1024), dtype=np.float32)
            for j in range(24)
        }
        paths.append(save_tiny(folder / f"big_{i}.safetensors", state))
    return SimpleNamespace(folder=folder, base=paths[0], models=dict(enumerate(paths[1:])))
