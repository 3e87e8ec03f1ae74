"""A terminal progress bar fed by `core.jobs.Progress` events (stderr, no dependencies)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from core.jobs import ProgressEvent


class TerminalBar:
    """Redraws one line on a terminal; prints a line per 10% when stderr is not a tty."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1
        self._drawn = False

    def __call__(self, event: ProgressEvent) -> None:
        frac = event.fraction
        elapsed = time.monotonic() - self.start
        if self.tty:
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            known = 0.02 < frac < 1 and not event.open_ended
            eta = f" eta {elapsed / frac - elapsed:5.1f}s" if known else ""
            msg = event.message[:40]
            self.stream.write(f"\r[{bar}] {frac * 100:5.1f}% {elapsed:6.1f}s{eta} {msg:<40}")
            self.stream.flush()
            self._drawn = True
        else:
            decile = int(frac * 10)
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(f"{frac * 100:5.1f}% {elapsed:6.1f}s {event.message}\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
