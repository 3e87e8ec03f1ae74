"""Background work in the real window: cancel, responsiveness, close during a job, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from app_helpers import load_for_method, merge, nan_copy, save_tiny, wait_idle
from PySide6.QtCore import QElapsedTimer, QTimer

from merger_app._session import OWNER
from merger_app.qt_main_window import HINT_LIMIT
from merger_app.qt_worker import live_threads


class EventLoopGaps:
    """A 10 ms timer that records the milliseconds between its ticks while it runs."""

    def __init__(self) -> None:
        self.gaps: list[int] = []
        self._clock = QElapsedTimer()
        self._last = 0
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = self._clock.elapsed()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._clock.start()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()


def merge_with_ticks(window, qtbot) -> tuple[object, float, list[int]]:
    """Merge while an EventLoopGaps ticker runs: (result, seconds, gaps in ms)."""
    ticker = EventLoopGaps()
    ticker.start()
    t0 = time.monotonic()
    result = merge(window, qtbot, timeout=120_000)
    took = time.monotonic() - t0
    ticker.stop()
    return result, took, ticker.gaps


def session_files(window) -> list[str]:
    """What merges left in the session folder (beside the file naming its owner)."""
    return sorted(p.name for p in window._session.iterdir() if p.name != OWNER)


def load_big(window, big) -> None:
    """TIES keeping 30 %: the trim's top-k makes it the slowest tensorwise method."""
    assert not window.add_models([big.base, *big.models.values()])
    window.method.set_method("ties")
    table = window.models.model
    for row in range(table.rowCount()):
        assert table.setData(table.index(row, 3), 0.3)  # density column


def start_big_merge(window, qtbot, big) -> None:
    load_big(window, big)
    with qtbot.waitSignal(window.runner.progress, timeout=30_000):
        assert window.merge()


@pytest.mark.slow
def test_cancel_stops_within_a_second_and_leaves_nothing(window, qtbot, big):
    start_big_merge(window, qtbot, big)
    assert window.actions.cancel.isEnabled() and not window.merge_button.isEnabled()
    t0 = time.monotonic()
    with qtbot.waitSignal(window.merge_finished, timeout=5000) as blocker:
        window.jobs.cancel_button.click()
    assert time.monotonic() - t0 < 1.0
    assert blocker.args == [None]
    wait_idle(window, qtbot)
    assert session_files(window) == []  # no merged model, no temporary file
    assert window.result is None and not window.save_button.isEnabled()
    assert "cancelled" in window.jobs.step.text()
    assert window.merge_button.isEnabled()


@pytest.mark.slow
def test_event_loop_never_stalls_during_a_long_merge(window, qtbot, big):
    """A 10 ms timer keeps firing while the merge runs: no gap over 100 ms."""
    load_big(window, big)
    took, gaps = 0.0, []
    for _ in range(4):  # on a fast machine one merge may end too soon to tell: merge again
        result, seconds, ticks = merge_with_ticks(window, qtbot)
        assert result is not None
        took, gaps = took + seconds, gaps + ticks[1:]
        if took > 1.0:
            break
    assert took > 1.0, f"four merges took only {took:.2f} s; the test needs longer ones"
    assert len(gaps) > 50
    print(f"merge {took:.2f} s, {len(gaps)} ticks, longest gap {max(gaps)} ms")
    assert max(gaps) < 100, f"the event loop stalled for {max(gaps)} ms"


@pytest.mark.slow
def test_closing_during_a_merge_cancels_and_waits(window, qtbot, big):
    start_big_merge(window, qtbot, big)
    session = window._session
    window.close()
    assert not live_threads()  # close waited for the worker
    assert not session.exists()  # and removed the session folder


def test_failed_merge_shows_the_error_and_the_hint_keeps_saying_so(window, qtbot, tiny, tmp_path):
    bad = nan_copy(tiny.models["a"], tmp_path / "bad.safetensors")
    load_for_method(window, tiny, "task_arithmetic")
    assert not window.add_models([bad])
    assert merge(window, qtbot) is None
    box = window.last_error
    assert box is not None and box.isVisible()
    assert "bad.safetensors" in box.text() and "NaN" in box.text()
    assert box.detailedText() == ""  # a user error: its message, no traceback to show
    assert "failed" in window.jobs.step.text()
    box.close()
    # the hint keeps saying so while the settings are the ones that failed
    assert window.hint.text().startswith("⚠ The last merge with these settings failed")
    assert "bad.safetensors" in window.hint.text()
    window.method.form.set_values({"lambda": 0.3})
    assert "failed" not in window.hint.text()
    # nor does the progress line, which would now read as about these settings
    assert window.jobs.step.text() == "Ready."
    assert "Merge failed." in window.jobs.log.toPlainText()  # the log keeps the record


def test_a_model_no_architecture_fits_blocks_merge_with_the_reason(window, qtbot, tmp_path):
    """Auto-detection is asked from model A's headers before Merge: a model no built-in
    family fits keeps Merge off, and the hint says why (short, the whole reason, every
    family's, in its tooltip); naming an architecture that fits clears it."""
    rng = np.random.default_rng(0)
    paths = [
        save_tiny(
            tmp_path / f"odd{i}.safetensors", {"a.weight": rng.random((4, 2, 3, 3, 3), np.float32)}
        )
        for i in range(2)
    ]
    window.method.set_method("weight_matching")
    assert not window.add_models(paths)
    assert not window.merge_button.isEnabled()
    assert not window.merge()
    hint = window.hint.text()
    # what to do is in the short hint; every family's reason in its tooltip
    assert hint.startswith(
        "⚠ odd0.safetensors fits no built-in architecture: pick your model's .py under Architecture"
    )
    assert hint.endswith("…") and len(hint) <= HINT_LIMIT
    assert "resnet50:" in window.hint.toolTip() and "model.py:factory" in window.hint.toolTip()
    window.method.arch_combo.setCurrentText("vgg")  # named, and wrong
    assert window.hint.text().startswith(
        "⚠ odd0.safetensors does not fit 'vgg': pick the architecture it was trained with"
    )
    window.method.set_method("linear")  # no architecture needed: nothing to detect
    assert window.merge_button.isEnabled()


def test_a_long_user_error_is_a_short_hint_and_a_box_without_details(window, qtbot, tmp_path):
    """A user error at merge time (here a model with a NaN weight, under a long name) shows in a box without a traceback; the hint gives a short summary (the layout
    keeps its place), the full message is in the hint's tooltip and in the log."""
    rng = np.random.default_rng(0)
    long_name = "a_model_with_a_rather_long_descriptive_name_" * 3
    paths = [
        save_tiny(tmp_path / f"{long_name}{i}.safetensors", {"w": rng.random((4, 3), np.float32)})
        for i in range(2)
    ]
    nan_copy(paths[1], paths[1])
    window.method.set_method("linear")
    assert not window.add_models(paths)
    assert merge(window, qtbot) is None
    box = window.last_error
    assert f"{long_name}1.safetensors" in box.text()
    assert box.detailedText() == ""
    box.close()
    hint = window.hint.text()
    # what to do first, whole; the reason (the long name) is what gets cut
    assert hint.startswith("⚠ The last merge with these settings failed. This model is broken")
    assert hint.endswith("…") and len(hint) <= 2 * HINT_LIMIT
    assert box.text() in window.hint.toolTip()
    assert box.text() in window.jobs.log.toPlainText()


def parentheses_depth(text: str) -> int:
    """How deeply parentheses nest in `text` ('a (b (c))' → 2)."""
    depth = deepest = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        deepest = max(deepest, depth)
    return deepest


def test_a_data_shape_failure_shows_its_remedy_whole_and_nests_no_parentheses(
    window, qtbot, tiny, tmp_path
):
    """The GUI trial: bad data for activation matching failed at merge time and the hint
    cut off what to do ('…but the…'); the text read '(give data … (x shaped …))'."""
    data = tmp_path / "bad_shape.npz"
    np.savez(data, x=np.zeros((256, 32), np.float32))  # the models take 64 features
    load_for_method(window, tiny, "activation_matching")
    window.method.data_combo.setCurrentText(str(data))
    assert merge(window, qtbot) is None
    box = window.last_error
    remedy = "Give data made for this model (x shaped N×C×H×W for images, N×features otherwise)."
    hint = window.hint.text()
    assert hint.startswith(f"⚠ The last merge with these settings failed. {remedy} Why: ")
    assert "bad_shape.npz" in hint  # and as much of the reason as fits
    log = window.jobs.log.toPlainText()
    for text in (box.text(), hint, window.hint.toolTip(), log):
        assert parentheses_depth(text) == 1, text
    whole = f"{data}: the data's examples are shaped [32], but the model takes 64 features"
    assert box.text().startswith(whole) and box.text().endswith(remedy)
    assert box.text() in window.hint.toolTip() and box.text() in log
    box.close()


def test_unsaved_result_asks_before_closing(window, qtbot, tiny):
    load_for_method(window, tiny, "linear")
    assert merge(window, qtbot) is not None
    asked: list[int] = []
    window.ask_unsaved = lambda: asked.append(1) or "cancel"
    window.close()
    assert asked and window.isVisible()  # Cancel keeps the window open
    window.ask_unsaved = lambda: "discard"
    window.close()
    assert not window.isVisible()


@pytest.mark.slow
def test_event_loop_never_stalls_during_weight_matching(window, qtbot, tmp_path):
    """Weight matching's heavy parts (cost products, compiled assignment solves) run on
    the worker and release the GIL: a 10 ms timer keeps firing, no gap over 100 ms."""
    import numpy as np
    from app_helpers import save_tiny

    from core.alignment.solvers import warm_up

    warm_up()  # as the app does at start (compiling once per machine is a separate cost)
    rng = np.random.default_rng(2)
    sizes = [256, 1536, 1536, 1536, 10]
    paths = []
    for seed in range(2):
        state = {}
        for j, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            state[f"layers.{2 * j}.weight"] = (
                rng.standard_normal((fan_out, fan_in), dtype=np.float32) / fan_in**0.5
            )
            state[f"layers.{2 * j}.bias"] = np.zeros(fan_out, np.float32)
        paths.append(save_tiny(tmp_path / f"wide_{seed}.safetensors", state))
    window.method.set_method("weight_matching")
    assert not window.add_models(paths)
    result, took, gaps = merge_with_ticks(window, qtbot)
    assert result is not None
    assert took > 1.0, f"weight matching took only {took:.2f} s; the test needs a longer one"
    print(f"weight matching {took:.2f} s, {len(gaps)} ticks, longest gap {max(gaps[1:])} ms")
    assert max(gaps[1:]) < 100, f"the event loop stalled for {max(gaps[1:])} ms"


def test_an_open_ended_stage_shows_no_time_left(qtbot):
    """Weight matching's later sweeps run until one changes nothing: the panel says the
    time left is unknown instead of extrapolating (it read '0:07 left' with 35 s to go)."""
    from merger_app.qt_job_panel import QtJobPanel

    panel = QtJobPanel()
    qtbot.addWidget(panel)
    panel.start("Merging")
    panel._started -= 10.0  # ten seconds in
    panel.on_progress(0.5, 1.0, "sweep 1: group 2 of 3")
    assert "about 0:10 left" in panel.times.text()
    panel.on_progress(0.75, 1.0, "sweep 2: objective 3.1, 1 of 3 groups settled", True)
    assert panel.times.text().endswith("time left unknown") and "about" not in panel.times.text()
    panel.finish("Merge cancelled; nothing was written.", complete=False)
    assert panel.bar.value() == 0  # a half-full bar beside 'cancelled' reads as half done
