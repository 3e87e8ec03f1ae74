"""How late the GUI thread gets during one real wide merge: a 20 ms QTimer on it measures
its own lateness, and the collector's full collections are timed beside it.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/app/stall_probe.py weight_matching
    ... activation_matching --width 4096 [--no-freeze] [--warm]

The window starts as `merger-app` starts it (`--no-freeze`: as it did before the
collector was told to leave the start-up objects alone). Not a test: on a loaded
one-core machine the scheduler alone makes the timer ~100 ms late now and then.

Measured on the 2-core CI box (one core free), two 4096-wide MLPs (147 MB each), first
merge after start, solver not yet loaded:
    weight matching      before: late 102-304 ms twice at the start (full collections of
                         108-311 ms on the worker); after: 23 ms at most (collections of
                         13-34 ms)
    activation matching  before: late 146 and 133 ms at the start (collections of 136
                         and 150 ms); after: the start stays under 25 ms; ~100 ms spikes
                         mid-merge remain in both (CPU contention, no collection then)
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def make_models(folder: Path, width: int) -> tuple[Path, Path, Path]:
    """Two independently initialised MLPs 784-w-w-w-10 and 3000 inputs for them."""
    import numpy as np
    from safetensors.numpy import save_file

    dims = [784, width, width, width, 10]
    paths = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        tensors = {}
        for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
            tensors[f"layers.{2 * i}.weight"] = (rng.standard_normal((b, a)) / a**0.5).astype(
                np.float32
            )
            tensors[f"layers.{2 * i}.bias"] = (rng.standard_normal(b) * 0.01).astype(np.float32)
        path = folder / f"wide_{seed}.safetensors"
        save_file(tensors, str(path))
        paths.append(path)
    data = folder / "data.npz"
    np.savez(data, x=np.random.default_rng(3).standard_normal((3000, 784)).astype(np.float32))
    return paths[0], paths[1], data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method", choices=["weight_matching", "activation_matching"])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--no-freeze", action="store_true", help="start as before the fix")
    parser.add_argument("--warm", action="store_true", help="wait for the solver to load")
    args = parser.parse_args()

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from merger_app._collector import freeze_long_lived
    from merger_app.main import _warm_up_solvers
    from merger_app.qt_main_window import QtMainWindow
    from merger_app.qt_settings import QtAppSettings

    app = QApplication.instance() or QApplication([sys.argv[0]])
    folder = Path(tempfile.mkdtemp(prefix="stall-probe-"))
    a, b, data = make_models(folder, args.width)
    window = QtMainWindow(QtAppSettings.at(folder / "settings.ini"))
    window.show()
    if not args.no_freeze:
        freeze_long_lived()
    if args.warm:
        _warm_up_solvers().join()
    window.method.set_method(args.method)
    window.add_models([a, b])
    if args.method == "activation_matching":
        window.method.data_combo.setCurrentText(str(data))
        window.method.form.editor("batches").setValue(1)
    app.processEvents()

    collections: list[tuple[float, float, str]] = []
    started: dict[str, float] = {}

    def timed(phase: str, info: dict) -> None:
        if info["generation"] < 2:
            return
        if phase == "start":
            started["t"] = time.monotonic()
        else:
            took = time.monotonic() - started["t"]
            collections.append((started["t"] - t0, took, threading.current_thread().name))

    late: list[tuple[float, float]] = []
    last = [0.0]

    def beat() -> None:
        now = time.monotonic()
        late.append((now - t0, now - last[0] - 0.020))
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(20)
    heartbeat.timeout.connect(beat)
    loop = QEventLoop()
    window.runner.done.connect(lambda *_: loop.quit())
    gc.callbacks.append(timed)
    t0 = last[0] = time.monotonic()
    heartbeat.start()
    window.merge_button.click()
    loop.exec()
    heartbeat.stop()
    gc.callbacks.remove(timed)

    print(f"{args.method}, width {args.width}, freeze {not args.no_freeze}, warm {args.warm}:")
    print(f"  merge took {time.monotonic() - t0:.1f} s; {window.jobs.step.text()}")
    worst = sorted(late, key=lambda x: -x[1])[:5]
    print("  latest heartbeats (at s: late ms):", [f"{t:.1f}: {d * 1000:.0f}" for t, d in worst])
    print("  full collections (at s: ms, thread):")
    for at, took, thread in collections:
        print(f"    {at:.1f}: {took * 1000:.0f} ({thread})")
    window.saved = True
    window.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
