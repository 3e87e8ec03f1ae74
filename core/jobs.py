"""Progress reporting and cooperative cancellation, shared by the CLI and the GUI.

A long operation receives a `Progress` and calls `update(done, total, message)` as it
goes and `check()` at points where stopping is safe; `check()` raises `Cancelled` once
`cancel()` was called (from any thread). The front decides how to show progress by the
callback it passes in: a terminal bar in the CLI, a Qt signal in the GUI. Callbacks are
rate-limited so a tight loop does not flood a GUI event queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from core.errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: `done` of `total` units, with a human message."""

    done: float
    total: float
    message: str = ""
    # How long the rest takes cannot be told (coordinate descent runs until a sweep changes
    # nothing): fronts show the bar and the elapsed time, but no estimate of time left.
    open_ended: bool = False

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))


ProgressCallback = Callable[[ProgressEvent], None]
LogCallback = Callable[[str], None]


class Progress:
    """Thread-safe progress sink with cooperative cancel.

    `min_interval` (seconds) limits how often the callback fires; the first and the final
    (done == total) updates always go through.
    """

    def __init__(
        self,
        callback: ProgressCallback | None = None,
        *,
        log: LogCallback | None = None,
        min_interval: float = 0.05,
    ) -> None:
        self._callback = callback
        self._log = log
        self._min_interval = min_interval
        self._cancel = threading.Event()
        self._last_emit = 0.0
        self._lock = threading.Lock()
        self.last: ProgressEvent | None = None

    # -- reporting -------------------------------------------------------------
    def update(
        self, done: float, total: float, message: str = "", *, open_ended: bool = False
    ) -> None:
        """Report progress; also a cancellation point. `open_ended`: see ProgressEvent."""
        event = ProgressEvent(done, total, message, open_ended)
        with self._lock:
            self.last = event
            now = time.monotonic()
            due = (
                now - self._last_emit >= self._min_interval
                or done >= total
                or self._last_emit == 0.0
            )
            if due:
                self._last_emit = now
        if due and self._callback is not None:
            self._callback(event)
        self.check()

    def within(self, start: float, stop: float) -> Progress:
        """A view reporting into [start, stop] of this progress (fractions of the whole),
        for one stage of a job with several passes: the bar goes through the stages once
        instead of restarting at 0 for each. Cancel and the log are shared."""
        return _Stage(self, start, stop)

    def log(self, message: str) -> None:
        """Send one line to the log pane or the terminal."""
        if self._log is not None:
            self._log(message)

    # -- cancellation ----------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop at its next `check()`; safe from any thread."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if cancel was requested."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")


class _Stage(Progress):
    """`Progress.within`'s view: updates are scaled into the parent's [start, stop]."""

    def __init__(self, parent: Progress, start: float, stop: float) -> None:
        self._parent, self._start, self._stop = parent, start, stop

    @property
    def last(self) -> ProgressEvent | None:  # type: ignore[override]
        return self._parent.last

    def update(
        self, done: float, total: float, message: str = "", *, open_ended: bool = False
    ) -> None:
        fraction = min(1.0, done / total) if total > 0 else 1.0
        self._parent.update(
            self._start + (self._stop - self._start) * fraction,
            1.0,
            message,
            open_ended=open_ended,
        )

    def log(self, message: str) -> None:
        self._parent.log(message)

    def cancel(self) -> None:
        self._parent.cancel()

    @property
    def cancelled(self) -> bool:
        return self._parent.cancelled

    def check(self) -> None:
        self._parent.check()


def run_cancellable(fn: Callable[[], T], progress: Progress | None, *, poll: float = 0.1) -> T:
    """`fn()`, answering Cancel within `poll` seconds though `fn` itself never checks.

    For single long calls into code that cannot be interrupted (scipy's assignment solver
    on a hard 4096-wide problem takes tens of seconds). `fn` runs on a helper thread while
    this one waits and checks; on cancel, `Cancelled` is raised at once and `fn` is
    abandoned: it runs to its end in the background and its result is dropped, so it must
    not change anything the caller keeps. Needs `fn` to release the GIL (scipy's solver
    and our compiled kernels do), or the checks wait for it."""
    if progress is None:
        return fn()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    helper = threading.Thread(target=target, name="merger-uninterruptible", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(poll)
        progress.check()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
