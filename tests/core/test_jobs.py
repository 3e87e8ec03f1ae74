"""`run_cancellable`: Cancel answered while a call that never checks is still running."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import Cancelled
from core.jobs import Progress, run_cancellable


def test_cancel_is_answered_while_the_call_still_runs():
    progress = Progress()
    finished = threading.Event()

    def uninterruptible() -> str:
        time.sleep(3.0)  # releases the GIL, as scipy's solver and compiled kernels do
        finished.set()
        return "late"

    threading.Timer(0.2, progress.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        run_cancellable(uninterruptible, progress, poll=0.05)
    assert time.monotonic() - t0 < 1.0
    assert not finished.is_set()  # the call was left behind, not waited for


def test_results_and_errors_come_back_as_from_a_plain_call():
    progress = Progress()
    assert run_cancellable(lambda: 41 + 1, progress) == 42
    with pytest.raises(ZeroDivisionError):
        run_cancellable(lambda: 1 / 0, progress)
    assert run_cancellable(lambda: "direct", None) == "direct"  # no progress: no thread


def test_a_stage_reports_into_its_share_and_shares_cancel():
    events = []
    whole = Progress(events.append, min_interval=0)
    second = whole.within(0.5, 0.75)
    second.update(0, 4, "start")
    second.update(2, 4, "half")
    second.update(4, 4, "end")
    assert [(e.done, e.total, e.message) for e in events] == [
        (0.5, 1.0, "start"),
        (0.625, 1.0, "half"),
        (0.75, 1.0, "end"),
    ]
    second.cancel()
    assert whole.cancelled
    with pytest.raises(Cancelled):
        whole.check()
