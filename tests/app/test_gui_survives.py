"""The app's job runner survives what the engine throws at it (issue 8.5, runner level).

A bug (any exception) or a user error (MergerError) in a job becomes a `failed` signal,
never a dead thread or a dead app, and the runner takes the next job afterwards. A job
cancelled while running ends with `cancelled`. (Window-level checks — closing during a
job, the unsaved-result prompt — belong with the main window's tests.)
"""

from __future__ import annotations

import time

from core.errors import CheckpointError
from merger_app.qt_worker import QtJobRunner


def _bug(progress):
    raise ZeroDivisionError("a bug inside the worker")


def _user_error(progress):
    raise CheckpointError("the file is empty", file="/tmp/x.safetensors")


def _slow(progress):
    for i in range(200):
        progress.update(i, 200, "working")
        time.sleep(0.01)
    return "finished"


def test_an_exception_in_a_job_is_reported_and_the_runner_goes_on(qtbot):
    runner = QtJobRunner()
    with qtbot.waitSignal(runner.failed, timeout=10_000) as failed:
        runner.start("bug", _bug)
    assert "ZeroDivisionError" in " ".join(map(str, failed.args))
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    with qtbot.waitSignal(runner.succeeded, timeout=10_000) as ok:
        runner.start("next", lambda progress: 42)
    assert ok.args[1] == 42
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)


def test_a_user_error_reaches_the_gui_as_its_message(qtbot):
    runner = QtJobRunner()
    with qtbot.waitSignal(runner.failed, timeout=10_000) as failed:
        runner.start("user", _user_error)
    assert any("x.safetensors: the file is empty" in str(a) for a in failed.args)
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)


def test_cancel_during_a_job_ends_it_cleanly(qtbot):
    runner = QtJobRunner()
    with qtbot.waitSignal(runner.cancelled, timeout=10_000):
        runner.start("slow", _slow)
        qtbot.wait(100)
        runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
