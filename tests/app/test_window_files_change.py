"""Rows follow their files: a checkpoint written again, cut short or removed after it was
added is read again, and the window says what happened instead of showing what the file
held when it was added (the trial: a truncated file kept its old Size until Merge failed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from app_helpers import save_tiny

from merger_app._format import human_bytes


def _row(window, name: str):
    return next(r for r in window.models.model.rows() if r.name == name)


def _two_models(window, tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = tuple(
        save_tiny(tmp_path / f"m{i}.safetensors", {"w": rng.random((8, 4), np.float32)})
        for i in range(2)
    )
    window.method.set_method("linear")
    assert not window.add_models(list(paths))
    assert window.merge_button.isEnabled()
    return paths


def test_a_model_removed_after_it_was_added_blocks_merge_until_it_is_back(window, qtbot, tmp_path):
    first, second = _two_models(window, tmp_path)
    kept = shutil.copy(second, tmp_path / "kept.bin")
    second.unlink()
    qtbot.waitUntil(lambda: _row(window, "m1.safetensors").unreadable is not None, timeout=5000)
    assert not window.merge_button.isEnabled()
    hint = window.hint.toolTip() or window.hint.text()
    assert "m1.safetensors: it is no longer on disk. Put it back" in hint
    assert "remove it from the list" in hint
    table = window.models.model
    tip = table.data(table.index(1, 0), 0x03)  # ToolTipRole: the reason, on the row
    assert "⚠" in tip and "m1.safetensors" in tip

    shutil.copy(kept, second)  # put back: its folder is watched while it is gone
    qtbot.waitUntil(lambda: _row(window, "m1.safetensors").unreadable is None, timeout=5000)
    assert window.merge_button.isEnabled()


def test_merge_right_after_a_model_is_removed_is_refused_up_front(window, qtbot, tmp_path):
    """The watcher re-reads a changed file REREAD_DELAY_MS after its last change; a merge
    started in that moment failed with an error box. Merge looks at the files first and
    says what a noticed removal says, without starting."""
    _, second = _two_models(window, tmp_path)
    second.unlink()
    assert _row(window, "m1.safetensors").unreadable is None  # not noticed yet
    assert not window.merge()  # at once, before the watcher's re-read
    assert not window.runner.running and window.last_error is None
    said = "m1.safetensors: it is no longer on disk. Put it back, or remove it from the list."
    assert window.statusBar().currentMessage() == said
    assert window.hint.text() == f"⚠ {said}"
    assert not window.merge_button.isEnabled()


def test_a_model_written_again_shows_its_new_size_and_shape(window, qtbot, tmp_path):
    first, _ = _two_models(window, tmp_path)
    before = _row(window, "m0.safetensors")
    save_tiny(first, {"w": np.zeros((8, 4), np.float32), "b": np.zeros(64, np.float32)})
    qtbot.waitUntil(
        lambda: _row(window, "m0.safetensors").total_bytes != before.total_bytes, timeout=5000
    )
    after = _row(window, "m0.safetensors")
    assert after.total_bytes == (8 * 4 + 64) * 4  # float32 values
    assert after.num_parameters == 8 * 4 + 64
    table = window.models.model
    size_column = table.columnCount() - 1
    assert table.data(table.index(0, size_column), 0) == human_bytes(after.total_bytes)
    # the second model now lacks tensor b: the rows say the two cannot be merged
    qtbot.waitUntil(lambda: any(r.problem for r in window.models.model.rows()), timeout=5000)


def test_a_model_cut_short_after_it_was_added_says_so(window, qtbot, tmp_path):
    first, _ = _two_models(window, tmp_path)
    data = first.read_bytes()
    first.write_bytes(data[: len(data) - 16])  # a copy that stopped early
    qtbot.waitUntil(lambda: _row(window, "m0.safetensors").unreadable is not None, timeout=5000)
    row = _row(window, "m0.safetensors")
    assert row.total_bytes == len(data) - 16  # the size on disk now, not when added
    assert row.unreadable.startswith("it changed on disk and cannot be read now: ")
    assert "m0.safetensors" not in row.unreadable  # the hint names it once, in front
    assert not window.merge_button.isEnabled()
    assert window.hint.text().startswith("⚠ m0.safetensors: it changed on disk")


def test_a_failure_is_forgotten_once_the_files_it_read_change(window, qtbot, tmp_path):
    """The trial: a merge failed on a model removed a moment before; the file came back,
    Merge was on again, but the hint kept saying the last merge with these settings
    failed. The settings are the same; the files are not."""
    from app_helpers import merge, nan_copy

    first, second = _two_models(window, tmp_path)
    good = second.read_bytes()
    nan_copy(second, second)  # a NaN weight: the headers read fine, the merge refuses it
    qtbot.waitUntil(lambda: _row(window, "m1.safetensors").unreadable is None, timeout=5000)
    qtbot.wait(700)  # the watcher's re-read is done
    assert merge(window, qtbot) is None
    window.last_error.close()
    assert window.hint.text().startswith("⚠ The last merge with these settings failed")
    assert window.jobs.step.text() == "Merge failed."
    second.write_bytes(good)  # fixed in place
    qtbot.waitUntil(lambda: "failed" not in window.hint.text(), timeout=5000)
    assert window.jobs.step.text() == "Ready."
    assert window.merge_button.isEnabled()
    assert merge(window, qtbot) is not None
