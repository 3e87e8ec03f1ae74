"""The one worker on a real QThread: signal order, errors with details, cancel, warnings."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from core.errors import CheckpointError
from merger_app.qt_worker import QtJobRunner, live_threads


@pytest.fixture
def runner(qapp):
    r = QtJobRunner()
    yield r
    r.cancel()
    r.wait(5000)


def test_result_comes_after_progress_on_the_gui_thread(qtbot, runner):
    gui = threading.get_ident()
    seen: list[tuple] = []
    runner.progress.connect(lambda d, t, m: seen.append(("progress", d, t, threading.get_ident())))
    runner.log.connect(lambda line: seen.append(("log", line, threading.get_ident())))
    ran_on: list[int] = []

    def job(progress):
        ran_on.append(threading.get_ident())
        progress.log("hello")
        for i in range(3):
            progress.update(i + 1, 3, f"step {i + 1}")
        return 42

    results: list[tuple] = []
    runner.succeeded.connect(lambda name, value: results.append((name, value)))
    with qtbot.waitSignals([runner.succeeded, runner.done], order="strict", timeout=5000):
        runner.start("test", job)
    assert results == [("test", 42)]
    assert ran_on and ran_on[0] != gui  # the job ran on the worker thread
    assert ("log", "hello", gui) in seen  # ...and its reports arrived on the GUI thread
    assert seen[-1][:3] == ("progress", 3.0, 3.0)  # the final update always goes through
    assert all(s[-1] == gui for s in seen)
    assert not runner.running
    assert not live_threads()


def test_a_user_error_carries_its_message_and_no_traceback(qtbot, runner):
    def job(progress):
        raise CheckpointError("the file is truncated", file="a.safetensors")

    failures: list[tuple] = []
    runner.failed.connect(lambda *args: failures.append(args))
    with qtbot.waitSignals([runner.failed, runner.done], order="strict", timeout=5000):
        runner.start("merge", job)
    [(name, message, details, remedy)] = failures
    assert name == "merge"
    assert message == "a.safetensors: the file is truncated"
    assert details == ""  # the message says what to do; a traceback would suggest a bug
    assert remedy == ""  # core gave none


def test_a_user_errors_remedy_comes_apart_from_its_reason(qtbot, runner):
    """Core's str() appends the remedy in parentheses; the window wants them apart (to
    put the remedy first where the text may be cut, and to nest no parentheses)."""

    def job(progress):
        raise CheckpointError(
            "the file is truncated", file="a.safetensors", hint="save it again (all of it)"
        )

    with qtbot.waitSignal(runner.failed, timeout=5000) as failed:
        runner.start("merge", job)
    assert failed.args == [
        "merge",
        "a.safetensors: the file is truncated",
        "",
        "save it again (all of it)",
    ]
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)


def test_unexpected_exception_is_reported_as_a_bug(qtbot, runner):
    def job(progress):
        return 1 / 0

    with qtbot.waitSignal(runner.failed, timeout=5000) as b:
        runner.start("merge", job)
    assert "ZeroDivisionError" in b.args[1] and "bug" in b.args[1]
    assert "Traceback" in b.args[2]  # the details a bug report needs
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)


def test_cancel_stops_a_job_within_a_second(qtbot, runner):
    started = threading.Event()

    def job(progress):
        started.set()
        while True:  # a job that would run forever but checks for cancel
            progress.check()
            time.sleep(0.01)

    with qtbot.waitSignal(runner.started, timeout=1000):
        runner.start("merge", job)
    assert started.wait(5)
    t0 = time.monotonic()
    with qtbot.waitSignals([runner.cancelled, runner.done], order="strict", timeout=1000):
        runner.cancel()
    assert time.monotonic() - t0 < 1.0


def test_second_job_is_refused_while_one_runs(qtbot, runner):
    gate = threading.Event()
    runner.start("a", lambda p: gate.wait(5))
    with pytest.raises(RuntimeError, match="still running"):
        runner.start("b", lambda p: None)
    gate.set()
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)


def test_warnings_in_the_job_are_relayed_not_printed(qtbot, runner):
    def job(progress):
        warnings.warn("lossy cast", UserWarning, stacklevel=1)
        return None

    messages: list[str] = []
    runner.warned.connect(messages.append)
    with qtbot.waitSignal(runner.done, timeout=5000):
        runner.start("merge", job)
    assert messages == ["UserWarning: lossy cast"]


def test_wait_blocks_until_a_cancelled_job_has_ended(qtbot, runner):
    """What closing the window does: cancel, then wait with a timeout (no event loop)."""

    def job(progress):
        while True:
            progress.check()
            time.sleep(0.01)

    runner.start("merge", job)
    qtbot.waitUntil(lambda: bool(live_threads()), timeout=2000)
    runner.cancel()
    assert runner.wait(2000)
    assert not live_threads()
    qtbot.waitUntil(lambda: not runner.running, timeout=2000)
