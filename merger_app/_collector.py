"""Keep Python's garbage collector from freezing the window.

A full collection walks every container object the process holds, and it holds the GIL
while it walks: with torch, PySide6 and numba loaded that is ~280,000 objects and
150-350 ms on one core, during which the GUI thread cannot run a single slot, however
little it has to do. The worker sets such collections off by making many objects (numba
loading the compiled solver at the start of a wide merge, the merge's own bookkeeping at
its end), which is how a GUI trial saw the window stop for 180-460 ms at both ends of
wide merges while nothing ran on the GUI thread.

What exists once the app has started (modules, classes, the window) lives until it
exits, so collecting it again and again only costs time. `gc.freeze()` moves those
objects out of the collector's sight; later full collections walk only what was made
since, a few milliseconds' work. Nothing else changes: new objects are collected as
before.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Exempt every object alive now from later collections (after a cheap collection of
    the young generations, so that little garbage is kept); returns how many are exempt.

    Call it once what exists will live as long as the process does: after the window is
    built, after the solver is loaded. Not per job: garbage alive at a freeze is never
    freed."""
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()
