"""`merger-app`: open the window; `--demo` loads the demo models; `--screenshot FILE` grabs it.

`--merge` merges once loaded, so a screenshot can show a finished merge.
`--screenshot` renders offscreen (no display needed), waits until loading has finished,
writes a PNG of the window at `--size` and exits 0; any failure exits 1 with a message.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

SCREENSHOT_DELAY_MS = 300


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="merger-app",
        description="Merge neural-network checkpoints in a desktop window.",
    )
    parser.add_argument("paths", nargs="*", help="checkpoints to add, or a recipe (.yaml) to open")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="load the demo models (made on first use, in a cache folder)",
    )
    parser.add_argument(
        "--screenshot",
        metavar="FILE",
        help="render the window offscreen to FILE (PNG) after loading, then exit",
    )
    parser.add_argument(
        "--size",
        default="1280x800",
        metavar="WxH",
        help="window size for --screenshot (default 1280x800)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="merge once the models are loaded (with --screenshot: grab after the merge)",
    )
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 1280x800, not {args.size!r}")
    args.width, args.height = w, h
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError:
        print(
            "merger-app needs PySide6: pip install PySide6-Essentials. "
            "The command line works without it: merger --help",
            file=sys.stderr,
        )
        return 1
    problem = display_problem(os.environ, sys.platform)
    if problem and QApplication.instance() is None:
        print(f"merger-app: {problem}", file=sys.stderr)
        return 1
    from merger_app._collector import freeze_long_lived
    from merger_app.qt_main_window import QtMainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("Merger")
    app.setOrganizationName("Merger")
    app.setStyle("Fusion")  # native-looking everywhere; the palette stays the platform's
    window = QtMainWindow()
    if args.screenshot:
        window.resize(args.width, args.height)
    window.show()
    freeze_long_lived()  # torch, Qt and the window: a full collection no longer walks them
    if not args.screenshot:  # a screenshot run exits as soon as it has drawn
        _warm_up_solvers()
    status = {"code": 0}
    if args.screenshot:
        _arm_screenshot(app, window, Path(args.screenshot), status, wait_demo=args.demo)
    if args.demo:
        if args.merge:
            window.demo_loaded.connect(window.merge)
        window.load_demo()
    _open_paths(window, args.paths)
    if args.merge and not args.demo:
        window.merge()
    quit_timer = _quit_on_signals(app, window, status)  # noqa: F841 - kept alive by name
    code = app.exec()
    return status["code"] or code


def display_problem(env, platform: str, find_library=None) -> str | None:
    """Why Qt would abort on start here (it prints a plugin error and dumps core), or None.

    On Linux under X11 Qt 6.5+ needs libxcb-cursor0, which stock Ubuntu desktops often
    lack; without any display there is nothing to open a window on."""
    if not platform.startswith("linux"):
        return None
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen and not chosen.startswith("xcb"):
        return None  # offscreen, wayland, vnc...: Qt's choice, not X11's libraries
    if not chosen and env.get("WAYLAND_DISPLAY"):
        return None
    if not env.get("DISPLAY"):
        return (
            "no display to open a window on (DISPLAY is not set). Run it in a desktop "
            "session; headless, `merger-app --demo --screenshot shot.png` renders offscreen, "
            "and the command line (merger --help) does everything the window does"
        )
    if find_library is None:
        from ctypes.util import find_library
    if find_library("xcb-cursor") is None:
        return (
            "Qt needs the X11 library libxcb-cursor0, which is not installed: install it "
            "(Debian/Ubuntu: sudo apt install libxcb-cursor0) and start merger-app again"
        )
    return None


def _quit_on_signals(app, window, status: dict):
    """Ctrl+C in the launching terminal and SIGTERM (kill, logout) close the window as
    its Close does, without the unsaved-result question no one is there to answer: the
    running job is cancelled and the session folder removed (exit 130 / 143, as the CLI).

    Python runs signal handlers only between bytecodes, and Qt's event loop is C++: a
    timer that calls into Python every 200 ms gives the handler its chance."""
    import signal

    from PySide6.QtCore import QTimer

    def handler(signum: int, _frame) -> None:
        status["code"] = 128 + signum
        window.ask_unsaved = lambda: "discard"
        window.close()
        app.exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(200)
    return timer


def _warm_up_solvers() -> threading.Thread:
    """Load the compiled assignment solver on a background thread (it releases the GIL
    while it runs; loading takes ~0.5 s, the first compile on a machine a few seconds),
    so the first weight matching starts at once. Nothing in Qt is touched.

    Loading makes ~75,000 objects that live as long as the app: they are then exempt
    from collections too (`_collector`), or each full collection would walk them."""
    from core.alignment.solvers import warm_up
    from merger_app._collector import freeze_long_lived

    def load() -> None:
        warm_up()
        freeze_long_lived()

    thread = threading.Thread(target=load, name="solver-warm-up", daemon=True)
    thread.start()
    return thread


def _open_paths(window, paths: list[str]) -> None:
    recipes = [p for p in paths if p.lower().endswith((".yaml", ".yml"))]
    if recipes:
        window.open_recipe(recipes[0])
    models = [p for p in paths if p not in recipes]
    if models:
        window.add_models(models)


def _arm_screenshot(app, window, out: Path, status: dict, *, wait_demo: bool) -> None:
    """Grab the window once loading is done (or failed), write the PNG and quit."""
    from PySide6.QtCore import QTimer

    def grab() -> None:
        if window.runner.running:  # still loading: look again shortly
            QTimer.singleShot(SCREENSHOT_DELAY_MS, grab)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        pixmap = window.grab()
        if pixmap.isNull() or not pixmap.save(str(out), "PNG"):
            print(f"merger-app: could not write the screenshot {out}", file=sys.stderr)
            status["code"] = 1
        else:
            print(f"wrote {out} ({pixmap.width()}×{pixmap.height()})")
        window.saved = True  # a screenshot run never asks about unsaved merges
        window.close()
        app.exit(status["code"])

    def failed(name: str, message: str, _details: str, remedy: str) -> None:
        from merger_app._format import error_text

        print(f"merger-app: {name} failed: {error_text(message, remedy)}", file=sys.stderr)
        status["code"] = 1

    window.runner.failed.connect(failed)
    if wait_demo:
        window.demo_loaded.connect(lambda: QTimer.singleShot(SCREENSHOT_DELAY_MS, grab))
        window.runner.failed.connect(lambda *_: QTimer.singleShot(0, grab))
    else:
        QTimer.singleShot(SCREENSHOT_DELAY_MS, grab)


if __name__ == "__main__":
    sys.exit(main())
