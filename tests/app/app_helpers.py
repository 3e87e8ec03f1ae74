"""Drive the real window the way its menus and buttons do, and wait for its jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.methods import REGISTRY


def wait_idle(window, qtbot, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not window.runner.running, timeout=timeout)


def merge(window, qtbot, timeout: int = 60_000):
    """Click Merge and wait; returns the MergeResult (None when it failed or was cancelled)."""
    assert window.merge_button.isEnabled(), window.merge_button.toolTip()
    with qtbot.waitSignal(window.merge_finished, timeout=timeout) as blocker:
        window.merge_button.click()
    wait_idle(window, qtbot)
    return blocker.args[0]


def save(window, qtbot, options, *, overwrite: bool = False, timeout: int = 60_000):
    with qtbot.waitSignal(window.save_finished, timeout=timeout) as blocker:
        assert window.save_to(options, overwrite=overwrite)
    wait_idle(window, qtbot)
    return blocker.args[0]


def load_demo(window, qtbot, demo) -> None:
    with qtbot.waitSignal(window.demo_loaded, timeout=60_000):
        window.load_demo(demo.folder)
    wait_idle(window, qtbot)


def load_for_method(window, demo, name: str) -> None:
    """Models a method can merge: seeds for alignment, base + fine-tunes otherwise."""
    spec = REGISTRY.get(name)
    window.models.model.set_rows([])
    window.method.set_method(name)
    if spec.needs.arch or spec.needs.data:  # permutation alignment: independent models
        paths: list[Path] = list(demo.seeds)
    else:
        tuned = list(demo.models.values())
        limit = spec.needs.max_models or len(tuned)
        paths = [demo.base, *tuned[:limit]]
    assert not window.add_models(paths)
    if spec.needs.data:
        window.method.data_combo.setCurrentText(str(demo.data))


def save_tiny(path: Path, tensors: dict) -> Path:
    """Write a small safetensors file (numpy arrays) for tests that need odd models."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def nan_copy(src: Path, dst: Path) -> Path:
    """A copy of a safetensors model with one NaN weight: its headers read fine, so it is
    added without complaint, and only the merge refuses it (a failure at merge time that
    nothing on disk has to change for)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(src))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = np.nan
    return save_tiny(dst, tensors)
