"""The GUI never waits on the collector: what the app holds from its start on is exempt
from garbage collection, so a full collection the worker sets off (numba loading the
solver, a wide merge's bookkeeping) walks only what was made since.

Why not a heartbeat with a time limit here: on a loaded one-core machine the scheduler
alone makes a 20 ms timer 100 ms late now and then. `stall_probe.py` beside this file
measures the heartbeat during a real wide merge (numbers in its docstring)."""

from __future__ import annotations

import gc
import weakref

import pytest

from merger_app._collector import freeze_long_lived


@pytest.fixture
def unfrozen():
    """Whatever a test freezes goes back under the collector afterwards (the test process
    keeps running; frozen garbage would never be freed)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def walked_by_a_full_collection() -> int:
    """The objects a full collection walks (and holds the GIL for): every tracked object
    outside the frozen generation."""
    return len(gc.get_objects())


def test_freezing_leaves_a_full_collection_a_fraction_of_the_objects(window, unfrozen):
    before = walked_by_a_full_collection()
    assert before > 100_000  # torch, Qt and the window: ~150-350 ms per full collection

    frozen = freeze_long_lived()

    assert frozen >= before * 0.9  # young garbage collected first, the rest frozen
    assert walked_by_a_full_collection() < before / 20
    assert window.isVisible()  # the window still works: nothing it uses was freed
    assert window.merge_button is not None


def test_objects_made_after_freezing_are_still_collected(unfrozen):
    freeze_long_lived()

    class Cycle:
        pass

    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
    gone = []
    ref = weakref.ref(a, lambda _: gone.append(True))
    del a, b
    gc.collect()
    assert ref() is None and gone == [True]


def test_loading_the_solver_at_start_exempts_what_it_made(unfrozen):
    """The app loads the compiled solver in the background at start; the ~75,000 objects
    numba makes then would otherwise be walked by every full collection after."""
    from merger_app.main import _warm_up_solvers

    _warm_up_solvers().join(120)

    assert gc.get_freeze_count() > 100_000
    assert walked_by_a_full_collection() < gc.get_freeze_count() / 20
