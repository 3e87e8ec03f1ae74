"""The one worker: runs any `job(progress) -> result` from core on a QThread.

Wired the textbook way (a QObject moved to a QThread; started→run, finished→quit,
finished→deleteLater, thread.finished→deleteLater). The job gets a `core.jobs.Progress`
whose callback emits Qt signals; those cross to the GUI thread as queued events, so the
job never touches a widget. Cancel sets the Progress flag; the job raises `Cancelled` at
its next `check()` and core removes its temporary output.

`QtJobRunner` owns at most one running job and relays the worker's signals from an
object that lives on the GUI thread, so every slot the window connects runs there.
"""

from __future__ import annotations

import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from core.errors import Cancelled, MergerError
from core.jobs import Progress, ProgressEvent
from merger_app._format import reason_and_remedy

Job = Callable[[Progress], Any]

# Every QThread a runner started and that has not finished yet; tests assert it is empty.
_LIVE_THREADS: weakref.WeakSet[QThread] = weakref.WeakSet()


def live_threads() -> list[QThread]:
    """Threads started by a runner that are still running (for leak checks)."""
    out = []
    for t in list(_LIVE_THREADS):
        try:
            if t.isRunning():
                out.append(t)
        except RuntimeError:  # the C++ object is gone: it finished
            continue
    return out


class QtWorker(QObject):
    """Runs one job in its thread and reports through signals; never touches widgets."""

    progress = Signal(float, float, str, bool)  # done, total, message, open-ended
    log = Signal(str)
    warned = Signal(str)
    result = Signal(object)
    # what is wrong, the details (a bug's traceback, else ""), what to do ("" if unknown)
    error = Signal(str, str, str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, job: Job, *, min_interval: float = 0.05) -> None:
        super().__init__()
        self._job = job
        self.sink = Progress(self._emit_progress, log=self.log.emit, min_interval=min_interval)

    def _emit_progress(self, event: ProgressEvent) -> None:
        self.progress.emit(
            float(event.done), float(event.total), event.message, bool(event.open_ended)
        )

    def cancel(self) -> None:
        """Ask the job to stop; safe from any thread (sets a threading.Event)."""
        self.sink.cancel()

    @Slot()
    def run(self) -> None:
        """Run the job; exactly one of result/error/cancelled, then finished."""
        caught: list[warnings.WarningMessage] = []
        try:
            # Warnings raised in a thread are re-emitted, never printed from it (napari #2598).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("default")
                value = self._job(self.sink)
            for w in caught:
                self.warned.emit(f"{w.category.__name__}: {w.message}")
            self.result.emit(value)
        except Cancelled:
            self.cancelled.emit()
        except MergerError as exc:
            # A user error: its message says what is wrong and what to do; a traceback
            # under it would only suggest a bug in Merger.
            reason, remedy = reason_and_remedy(exc)
            self.error.emit(reason, "", remedy)
        except MemoryError:
            self.error.emit(
                "Out of memory.",
                traceback.format_exc(),
                "close other programs, merge fewer or smaller models, or choose a smaller dtype",
            )
        except Exception as exc:  # noqa: BLE001 - a bug must reach the user, not kill the thread
            self.error.emit(
                f"Unexpected error ({type(exc).__name__}: {exc}). This is a bug in "
                "Merger; please report it with the details below.",
                traceback.format_exc(),
                "",
            )
        finally:
            self.finished.emit()


class QtJobRunner(QObject):
    """Starts jobs one at a time on worker threads and relays their signals.

    Signals are emitted on the GUI thread. `succeeded(name, result)`,
    `failed(name, message, details, remedy)` or `cancelled(name)` comes first, then
    `done(name)` once the thread has finished (`running` is False by then). `message` says
    what is wrong, `remedy` what to do ('' when nothing is known; `_format.error_text`
    joins them); `details` is the traceback of a bug (or of running out of memory), empty
    for a user error (`MergerError`).
    """

    started = Signal(str)
    progress = Signal(float, float, str, bool)  # done, total, message, open-ended
    log = Signal(str)
    warned = Signal(str)
    succeeded = Signal(str, object)
    failed = Signal(str, str, str, str)  # name, message, details, remedy
    cancelled = Signal(str)
    done = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: QtWorker | None = None
        self._sink: Progress | None = None
        self._name = ""
        self.started_at = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def name(self) -> str:
        return self._name

    def start(self, name: str, job: Job) -> None:
        """Run `job` on a new thread; RuntimeError if one is already running."""
        if self.running:
            raise RuntimeError(f"'{self._name}' is still running")
        thread = QThread()
        thread.setObjectName(f"merger-{name}")
        worker = QtWorker(job)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: quit() is thread-safe, and a queued quit would never run while the GUI
        # thread blocks in wait() on close.
        worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        worker.finished.connect(worker.deleteLater)
        thread.finished.connect(thread.deleteLater)
        thread.finished.connect(self._on_thread_finished)
        # Relays: the receiver (self) lives on the GUI thread, so these are queued.
        worker.progress.connect(self.progress)
        worker.log.connect(self.log)
        worker.warned.connect(self.warned)
        worker.result.connect(self._on_result)
        worker.error.connect(self._on_error)
        worker.cancelled.connect(self._on_cancelled)
        self._thread, self._worker, self._sink, self._name = thread, worker, worker.sink, name
        self.started_at = time.monotonic()
        _LIVE_THREADS.add(thread)
        self.started.emit(name)
        thread.start()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check (within a second for core's jobs)."""
        if self._sink is not None:
            self._sink.cancel()

    def wait(self, timeout_ms: int) -> bool:
        """Block until the thread ends (used on close); True if it ended in time."""
        thread = self._thread
        if thread is None:
            return True
        try:
            return thread.wait(timeout_ms)
        except RuntimeError:  # deleted by its deleteLater: it had ended
            return True

    @Slot(object)
    def _on_result(self, value: object) -> None:
        self.succeeded.emit(self._name, value)

    @Slot(str, str, str)
    def _on_error(self, message: str, details: str, remedy: str) -> None:
        self.failed.emit(self._name, message, details, remedy)

    @Slot()
    def _on_cancelled(self) -> None:
        self.cancelled.emit(self._name)

    @Slot()
    def _on_thread_finished(self) -> None:
        # `finished` is emitted just before the thread ends and deletes the worker there
        # (deleteLater). Wait for that before dropping our references, or Python could
        # delete the worker from this thread at the same time (a crash).
        self.wait(10_000)
        name = self._name
        self._thread = self._worker = self._sink = None
        self.done.emit(name)
